//! Run configurations: a TOML file that names the model, the data and the training settings
//! of an experiment, so that a run is reproduced by one file (`margincert train --config`,
//! which runs it with [`crate::run::train_from_scratch`]).
//!
//! ```toml
//! [model]
//! preset = "mnist-cnn"          # or: spec = "path/to/spec.toml"
//! [data]
//! source = "embedded"           # embedded | mnist:DIR | fashion-mnist:DIR | cifar10:DIR | DIR
//! train_subset = 100            # optional
//! test_subset = 200             # optional
//! binary = [3, 5]               # optional: two classes, for the binary losses
//! [train]
//! loss = "cross-entropy"        # cross-entropy | logistic | exponential
//! batch = 10                    # 0 = full batch
//! epochs = 2000
//! seed = 0
//! schedule = { type = "loss-based", alpha0 = 0.1, r_up = 1.148698354997035, r_down = 1.0717734625362931, min_alpha = 1e-50 }
//! save_at_log10 = [-10, -20]
//! stop_log10_loss = -100
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::{DataChoice, Split};
use crate::error::{Error, Result};
use crate::model::{ModelSpec, presets};
use crate::train::TrainConfig;

/// Which model to train.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelChoice {
    /// A preset name (see [`presets::NAMES`]).
    #[serde(default)]
    pub preset: Option<String>,
    /// A spec file, relative to the config file.
    #[serde(default)]
    pub spec: Option<PathBuf>,
}

/// A whole experiment: model, data, training settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Free text: what the run is for and how big it is.
    #[serde(default)]
    pub description: String,
    /// The model.
    pub model: ModelChoice,
    /// The data.
    pub data: DataChoice,
    /// The training settings.
    pub train: TrainConfig,
    /// Where the file was read from (spec paths are relative to its directory).
    #[serde(skip)]
    pub origin: Option<PathBuf>,
}

impl RunConfig {
    /// Reads and checks a TOML config.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = crate::io::read_text_limited(path, &crate::limits::TEXT_BYTES)?;
        let mut c: RunConfig = toml::from_str(&text)
            .map_err(|e| Error::format(path, format!("invalid run config: {e}")))?;
        c.origin = Some(path.to_path_buf());
        if c.model.preset.is_some() == c.model.spec.is_some() {
            return Err(Error::format(
                path,
                "[model] needs exactly one of `preset` or `spec`",
            ));
        }
        for (key, v) in [
            ("train_subset", c.data.train_subset),
            ("test_subset", c.data.test_subset),
        ] {
            if v == Some(0) {
                return Err(Error::format(
                    path,
                    format!("[data] {key} = 0 selects no examples: give N >= 1 or remove it"),
                ));
            }
        }
        c.train
            .validate()
            .map_err(|e| Error::format(path, format!("[train]: {e}")))?;
        Ok(c)
    }

    /// The model spec for data of this shape and class count.
    pub fn spec(&self, split: &Split) -> Result<ModelSpec> {
        match (&self.model.preset, &self.model.spec) {
            (Some(name), _) => {
                let outputs = if self.train.loss.is_binary() {
                    1
                } else {
                    split.train.classes
                };
                presets::by_name(name, split.train.shape, outputs)
            }
            (None, Some(p)) => {
                let base = self
                    .origin
                    .as_ref()
                    .and_then(|o| o.parent())
                    .unwrap_or(Path::new("."));
                ModelSpec::from_file(&base.join(p))
            }
            (None, None) => Err(Error::Invalid("no model in the config".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fixture_config_parses_and_resolves() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/configs");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                let c = RunConfig::from_file(&p).unwrap_or_else(|e| panic!("{e}"));
                assert!(!c.description.is_empty(), "{}: say what it is", p.display());
                if c.data.source == "embedded" {
                    let split = c.data.load().unwrap();
                    c.spec(&split).unwrap().validate().unwrap();
                }
                n += 1;
            }
        }
        assert!(n >= 2, "expected fixture configs in {}", dir.display());
    }

    #[test]
    fn unknown_keys_and_two_models_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[model]\npreset='mlp'\nspec='x'\n[data]\nsource='embedded'\n[train]\nloss='cross-entropy'\nbatch=1\nepochs=1\nseed=0\nschedule={type='constant',lr=0.1}\n").unwrap();
        assert!(RunConfig::from_file(&p).is_err());
        std::fs::write(&p, "[model]\npreset='mlp'\nwidth=3\n").unwrap();
        assert!(RunConfig::from_file(&p).is_err());
    }
}
