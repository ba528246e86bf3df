//! Checkpoints in safetensors format, written atomically.
