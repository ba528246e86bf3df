//! `margincert inspect`: show a model spec (preset, spec file or checkpoint).

use std::path::PathBuf;

use clap::Args;

use margincert::checkpoint::Checkpoint;
use margincert::error::Result;
use margincert::model::{ModelSpec, presets};

// `margincert inspect` flags.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A preset name, a spec file, or a checkpoint (.safetensors).
    pub target: String,
    /// Print the spec as JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// `margincert inspect`.
pub fn cmd(a: &InspectArgs) -> Result<()> {
    let path = PathBuf::from(&a.target);
    let (spec, params) = if a.target.ends_with(".safetensors") {
        let c = Checkpoint::load(&path)?;
        (c.spec, Some(c.params))
    } else if path.exists() {
        (ModelSpec::from_file(&path)?, None)
    } else {
        (presets::by_name_natural(&a.target)?, None)
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&spec).expect("serializes")
        );
        return Ok(());
    }
    println!("model {} — input {}", spec.name, spec.input);
    for p in spec.plan()? {
        println!(
            "  {:>3}  {:<40} {} -> {}",
            p.index,
            p.layer.describe(),
            p.input,
            p.output
        );
    }
    println!("parameters: {}", spec.num_params()?);
    let h = spec.homogeneity();
    match h.degree {
        Some(l) => println!("homogeneous of degree L = {l} (structural proof):"),
        None => println!("NOT homogeneous:"),
    }
    for r in &h.reasons {
        println!("  - {r}");
    }
    if let Some(p) = params {
        println!("rho = ||theta|| = {:.6e} (f64 estimate)", p.norm());
    }
    Ok(())
}
