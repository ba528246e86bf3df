//! Training: losses relative to a loss frame, SGD, the loss-based schedule, metrics.
