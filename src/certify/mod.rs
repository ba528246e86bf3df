//! The sound checker: certified enclosures of margins, loss, homogeneity and KKT quantities.
