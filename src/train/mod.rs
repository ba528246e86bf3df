//! Training in memory: minibatch SGD / full-batch GD on a loss relative to a loss frame, the
//! paper's loss-based learning-rate schedule, and per-epoch metrics.
//!
//! The loop keeps a frame `F = ln(previous mean training loss)`. Each epoch trains on the
//! relative loss `R = Loss · e^{-F}` (every factor formed in the log domain, see
//! [`crate::loss`]), so that training continues when the loss is far below what f32 or f64 can
//! represent. The true loss is tracked as `F + ln R` and reported as `log10`.
//!
//! This module knows nothing of files: a run on disk (metrics log, checkpoints, plots,
//! resumption) is [`crate::run`].

pub mod metrics;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::loss::LossKind;
use crate::model::{ModelSpec, Params};
use crate::nn::{Network, Workspace};
pub use metrics::{EpochMetrics, Evaluation};

/// How the step size is chosen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Schedule {
    /// A constant learning rate on the (mean) loss.
    Constant {
        /// Learning rate.
        lr: f64,
    },
    /// The paper's loss-based schedule: train on the relative loss `Loss / Loss_prev` with
    /// step `alpha`; after a failed epoch divide `alpha` by `r_down`, restore and retry;
    /// after a good one multiply it by `r_up`. Stop once `alpha < min_alpha`.
    LossBased {
        /// Initial `alpha` (paper: 0.1).
        alpha0: f64,
        /// Growth factor after a good epoch (paper: 2^(1/5)).
        r_up: f64,
        /// Shrink factor after a failed epoch (paper: 2^(1/10)).
        r_down: f64,
        /// Stop below this `alpha` (paper: 1e-50).
        min_alpha: f64,
    },
}

impl Schedule {
    /// The paper's loss-based schedule with its constants.
    pub fn paper_loss_based() -> Self {
        Self::loss_based(0.1)
    }

    /// The paper's loss-based schedule (r_u = 2^(1/5), r_d = 2^(1/10), stop below 1e-50)
    /// starting from `alpha0`.
    pub fn loss_based(alpha0: f64) -> Self {
        Schedule::LossBased {
            alpha0,
            r_up: 2f64.powf(0.2),
            r_down: 2f64.powf(0.1),
            min_alpha: 1e-50,
        }
    }
}

/// Everything that defines a training run besides the model and data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The loss.
    pub loss: LossKind,
    /// Minibatch size; `0` or any value `>= N` means full-batch gradient descent.
    pub batch: usize,
    /// Number of (successful) epochs to run.
    pub epochs: usize,
    /// Seed of the data permutations (and of the initialisation, recorded here).
    pub seed: u64,
    /// Step-size schedule.
    pub schedule: Schedule,
    /// `log10` loss thresholds at which a checkpoint is kept when the mean training loss
    /// first falls below them (the paper: -10, -15, -20, -120).
    #[serde(default)]
    pub save_at_log10: Vec<f64>,
    /// Stop once the mean training loss is below `10^stop_log10_loss`.
    #[serde(default)]
    pub stop_log10_loss: Option<f64>,
}

impl TrainConfig {
    /// Checks the settings: a constant rate or initial step that is finite and positive (a
    /// negative one climbs the loss, NaN poisons the weights), growth and shrink factors
    /// above 1, a finite non-negative minimum step, and finite loss levels.
    pub fn validate(&self) -> Result<()> {
        let positive = |what: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(Error::Invalid(format!(
                    "{what} must be a finite number > 0, not {v}"
                )))
            }
        };
        match &self.schedule {
            Schedule::Constant { lr } => positive("the learning rate (--lr, schedule.lr)", *lr)?,
            Schedule::LossBased {
                alpha0,
                r_up,
                r_down,
                min_alpha,
            } => {
                positive("the initial step (--alpha0, schedule.alpha0)", *alpha0)?;
                for (name, v) in [("schedule.r_up", *r_up), ("schedule.r_down", *r_down)] {
                    if !(v.is_finite() && v > 1.0) {
                        return Err(Error::Invalid(format!(
                            "{name} must be a finite number > 1, not {v}"
                        )));
                    }
                }
                if !(min_alpha.is_finite() && *min_alpha >= 0.0) {
                    return Err(Error::Invalid(format!(
                        "schedule.min_alpha must be a finite number >= 0, not {min_alpha}"
                    )));
                }
            }
        }
        let levels = self.save_at_log10.iter().chain(&self.stop_log10_loss);
        if let Some(v) = levels.into_iter().find(|v| !v.is_finite()) {
            return Err(Error::Invalid(format!(
                "a loss level (save_at_log10, stop_log10_loss) is not finite: {v}"
            )));
        }
        Ok(())
    }
}

/// The state that, with the parameters and the config, resumes a run exactly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Completed (successful) epochs.
    pub epoch: usize,
    /// Failed attempts of the current epoch (they change its data permutation).
    pub retries: usize,
    /// Total failed attempts so far.
    pub total_retries: usize,
    /// Current step size (`alpha` or the constant learning rate).
    pub lr: f64,
    /// The loss frame `F = ln(mean training loss)` after the last completed epoch.
    pub frame: f64,
    /// Thresholds (`log10`) already passed and saved.
    pub saved_thresholds: Vec<f64>,
}

/// What a finished epoch attempt did.
#[derive(Clone, Debug, PartialEq)]
pub enum EpochOutcome {
    /// The epoch was accepted; metrics after it.
    Done(Box<EpochMetrics>),
    /// The epoch failed (loss rose or exploded) and was rolled back; the step was reduced.
    RolledBack {
        /// Why it failed.
        reason: String,
        /// The new step size.
        lr: f64,
    },
    /// The run is over (epochs done, loss target reached, or step below its minimum).
    Finished(String),
}

/// A training run in memory: model, data, parameters and state.
pub struct Trainer<'a> {
    net: Network,
    spec: ModelSpec,
    degree: Option<u32>,
    cfg: TrainConfig,
    train: &'a Dataset,
    test: Option<&'a Dataset>,
    x_train: Vec<f32>,
    x_test: Vec<f32>,
    params: Params,
    grads: Params,
    ws: Workspace,
    state: TrainState,
    last: Option<Evaluation>,
}

/// Examples per chunk when evaluating a whole split.
const EVAL_CHUNK: usize = 1000;

/// Deterministic per-(seed, epoch, retry) permutation seed.
fn permutation_seed(seed: u64, epoch: usize, retry: usize) -> u64 {
    seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (retry as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03)
}

impl<'a> Trainer<'a> {
    /// Sets a run up. `state` is `None` for a fresh run, or the state of a checkpoint to
    /// resume from. Checks that the model, the data and the loss fit together.
    pub fn new(
        spec: &ModelSpec,
        params: Params,
        cfg: TrainConfig,
        train: &'a Dataset,
        test: Option<&'a Dataset>,
        state: Option<TrainState>,
    ) -> Result<Self> {
        cfg.validate()?;
        params.check(spec)?;
        let net = Network::new(spec)?;
        check_fit(spec, net.outputs(), &cfg, train)?;
        if let Some(t) = test {
            check_fit(spec, net.outputs(), &cfg, t)?;
        }
        if train.is_empty() {
            return Err(Error::Invalid("the training set is empty".into()));
        }
        let batch = effective_batch(cfg.batch, train.len());
        // Before any buffer is sized: activations and their gradients for a batch, and the
        // activations of an evaluation chunk.
        let plan = spec.plan()?;
        crate::model::check_batch(&plan, batch, 8, "a training batch")?;
        crate::model::check_batch(&plan, EVAL_CHUNK, 4, "an evaluation chunk")?;
        let ws = Workspace::new(&net, batch);
        let grads = params.zeros_like();
        let mut me = Self {
            degree: spec.homogeneity().degree,
            spec: spec.clone(),
            net,
            train,
            test,
            x_train: train.to_f32(),
            x_test: test.map(Dataset::to_f32).unwrap_or_default(),
            params,
            grads,
            ws,
            state: TrainState {
                epoch: 0,
                retries: 0,
                total_retries: 0,
                lr: 0.0,
                frame: 0.0,
                saved_thresholds: Vec::new(),
            },
            last: None,
            cfg,
        };
        me.state = match state {
            Some(s) => s,
            None => {
                let ev = me.evaluate_train()?;
                let lr = match me.cfg.schedule {
                    Schedule::Constant { lr } => lr,
                    Schedule::LossBased { alpha0, .. } => alpha0,
                };
                TrainState {
                    epoch: 0,
                    retries: 0,
                    total_retries: 0,
                    lr,
                    frame: ev.ln_mean_loss(),
                    saved_thresholds: Vec::new(),
                }
            }
        };
        Ok(me)
    }

    /// The current parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }
    /// The current state.
    pub fn state(&self) -> &TrainState {
        &self.state
    }
    /// The config.
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }
    /// The model spec.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    fn evaluate_split(&self, x: &[f32], data: &Dataset) -> Result<Evaluation> {
        let d = data.shape.len();
        let k = self.net.outputs();
        let mut logits = Vec::with_capacity(data.len() * k);
        for start in (0..data.len()).step_by(EVAL_CHUNK) {
            let n = EVAL_CHUNK.min(data.len() - start);
            logits.extend(
                self.net
                    .forward(&self.params, &x[start * d..(start + n) * d], n)?,
            );
        }
        Ok(Evaluation::new(self.cfg.loss, &logits, &data.labels, k))
    }

    /// Loss, margins and accuracy on the training set at the current parameters.
    pub fn evaluate_train(&self) -> Result<Evaluation> {
        self.evaluate_split(&self.x_train, self.train)
    }

    /// The same on the test set, if there is one.
    pub fn evaluate_test(&self) -> Result<Option<Evaluation>> {
        self.test
            .map(|t| self.evaluate_split(&self.x_test, t))
            .transpose()
    }

    /// Metrics of the current parameters (evaluates the training and test sets).
    pub fn metrics(&mut self, seconds: f64) -> Result<EpochMetrics> {
        let ev = match self.last.take() {
            Some(e) => e,
            None => self.evaluate_train()?,
        };
        let test = self.evaluate_test()?;
        let m = EpochMetrics::new(
            &self.state,
            &ev,
            test.as_ref(),
            &self.params,
            self.degree,
            self.cfg.loss,
            seconds,
        );
        self.last = Some(ev);
        Ok(m)
    }

    /// One pass over the training data with step `step` on the relative loss. Returns an
    /// error message when a minibatch loss explodes.
    fn sgd_epoch(&mut self, step: f64) -> Result<Option<String>> {
        let n = self.train.len();
        let d = self.train.shape.len();
        let k = self.net.outputs();
        let batch = effective_batch(self.cfg.batch, n);
        let mut order: Vec<usize> = (0..n).collect();
        if batch < n {
            let mut rng = ChaCha8Rng::seed_from_u64(permutation_seed(
                self.cfg.seed,
                self.state.epoch,
                self.state.retries,
            ));
            order.shuffle(&mut rng);
        }
        let mut xb = vec![0f32; batch * d];
        let mut dlogits = vec![0f32; batch * k];
        // A minibatch's mean relative loss can reach N / B when the full mean is 1; beyond
        // a thousand times that, the step has exploded.
        let explode = 1e3 * n as f64 / batch as f64;
        for chunk in order.chunks(batch) {
            let b = chunk.len();
            for (row, &i) in chunk.iter().enumerate() {
                xb[row * d..(row + 1) * d].copy_from_slice(&self.x_train[i * d..(i + 1) * d]);
            }
            let logits = self
                .net
                .forward_train(&self.params, &xb[..b * d], b, &mut self.ws)?;
            let mut rel = 0.0;
            for (row, &i) in chunk.iter().enumerate() {
                let z = &logits[row * k..(row + 1) * k];
                let label = self.train.labels[i];
                rel += (self.cfg.loss.example(z, label).log_loss - self.state.frame).exp();
                self.cfg.loss.example_grad(
                    z,
                    label,
                    self.state.frame,
                    1.0 / b as f64,
                    &mut dlogits[row * k..(row + 1) * k],
                );
            }
            rel /= b as f64;
            if !rel.is_finite() || rel > explode {
                return Ok(Some(format!(
                    "a minibatch relative loss exploded to {rel:.3e}"
                )));
            }
            self.net.backward(
                &self.params,
                &mut self.ws,
                &dlogits[..b * k],
                &mut self.grads,
            )?;
            for (p, g) in self.params.values_mut().zip(self.grads.values()) {
                *p = (*p as f64 - step * *g as f64) as f32;
            }
        }
        Ok(None)
    }

    /// Runs one epoch attempt: an accepted epoch, a rolled-back one, or the end of the run.
    pub fn step_epoch(&mut self, started: std::time::Instant) -> Result<EpochOutcome> {
        if self.state.epoch >= self.cfg.epochs {
            return Ok(EpochOutcome::Finished(format!(
                "ran {} epochs",
                self.cfg.epochs
            )));
        }
        if let Some(target) = self.cfg.stop_log10_loss {
            let ln = self.state.frame;
            if ln / std::f64::consts::LN_10 < target {
                return Ok(EpochOutcome::Finished(format!(
                    "the training loss is below 1e{target}"
                )));
            }
        }
        match self.cfg.schedule.clone() {
            Schedule::Constant { lr } => {
                // The real step on the mean loss is lr; on the relative loss it is lr e^F
                // (which underflows to 0 once the loss is far below f64 — then GD with a
                // constant rate has really stopped moving).
                let step = lr * self.state.frame.exp();
                if let Some(why) = self.sgd_epoch(step)? {
                    return Err(Error::Invalid(format!(
                        "epoch {}: {why} with a constant learning rate {lr}; lower it",
                        self.state.epoch + 1
                    )));
                }
                let ev = self.evaluate_train()?;
                if !ev.ln_mean_loss().is_finite() {
                    return Err(Error::NonFinite(format!(
                        "epoch {}: the training loss is not finite",
                        self.state.epoch + 1
                    )));
                }
                self.accept(ev, lr, started)
            }
            Schedule::LossBased {
                r_up,
                r_down,
                min_alpha,
                ..
            } => {
                if self.state.lr < min_alpha {
                    return Ok(EpochOutcome::Finished(format!(
                        "the step fell below {min_alpha:e}"
                    )));
                }
                let saved = self.params.clone();
                let failure = match self.sgd_epoch(self.state.lr)? {
                    Some(why) => Some(why),
                    None => {
                        let ev = self.evaluate_train()?;
                        let rel = (ev.ln_mean_loss() - self.state.frame).exp();
                        if !rel.is_finite() || rel > 1.0 {
                            Some(format!("the relative training loss rose to {rel:.4}"))
                        } else {
                            let lr = self.state.lr * r_up;
                            return self.accept(ev, lr, started);
                        }
                    }
                };
                self.params = saved;
                self.state.lr /= r_down;
                self.state.retries += 1;
                self.state.total_retries += 1;
                Ok(EpochOutcome::RolledBack {
                    reason: failure.unwrap_or_default(),
                    lr: self.state.lr,
                })
            }
        }
    }

    fn accept(
        &mut self,
        ev: Evaluation,
        next_lr: f64,
        started: std::time::Instant,
    ) -> Result<EpochOutcome> {
        self.state.epoch += 1;
        self.state.retries = 0;
        self.state.frame = ev.ln_mean_loss();
        let used_lr = self.state.lr;
        self.last = Some(ev);
        let mut m = self.metrics(started.elapsed().as_secs_f64())?;
        m.lr = used_lr;
        self.state.lr = next_lr;
        Ok(EpochOutcome::Done(Box::new(m)))
    }

    /// Thresholds of [`TrainConfig::save_at_log10`] newly passed by the current loss; marks
    /// them as saved.
    pub fn newly_passed_thresholds(&mut self) -> Vec<f64> {
        let now = self.state.frame / std::f64::consts::LN_10;
        let mut out = Vec::new();
        for &t in &self.cfg.save_at_log10 {
            if now < t && !self.state.saved_thresholds.contains(&t) {
                self.state.saved_thresholds.push(t);
                out.push(t);
            }
        }
        out
    }
}

fn effective_batch(batch: usize, n: usize) -> usize {
    if batch == 0 || batch >= n { n } else { batch }
}

fn check_fit(spec: &ModelSpec, outputs: usize, cfg: &TrainConfig, data: &Dataset) -> Result<()> {
    if data.shape != spec.input {
        return Err(Error::Shape(format!(
            "the model takes inputs of shape {}, the data '{}' has {}",
            spec.input, data.name, data.shape
        )));
    }
    if cfg.loss.is_binary() {
        if outputs != 1 || data.classes != 2 {
            return Err(Error::Invalid(format!(
                "the {:?} loss is binary: it needs a model with one output (has {outputs}) and \
                 a two-class task (the data has {} classes; choose two with --binary POS,NEG)",
                cfg.loss, data.classes
            )));
        }
    } else if outputs != data.classes {
        return Err(Error::Shape(format!(
            "the model has {outputs} outputs, the data '{}' {} classes",
            data.name, data.classes
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(schedule: Schedule) -> TrainConfig {
        TrainConfig {
            loss: LossKind::CrossEntropy,
            batch: 10,
            epochs: 1,
            seed: 0,
            schedule,
            save_at_log10: vec![-10.0],
            stop_log10_loss: None,
        }
    }

    #[test]
    fn steps_must_be_finite_and_positive() {
        cfg(Schedule::paper_loss_based()).validate().unwrap();
        cfg(Schedule::Constant { lr: 0.5 }).validate().unwrap();
        for (s, needle) in [
            (Schedule::Constant { lr: -0.5 }, "--lr"),
            (Schedule::Constant { lr: 0.0 }, "--lr"),
            (Schedule::loss_based(-1.0), "--alpha0"),
            (Schedule::loss_based(f64::NAN), "--alpha0"),
        ] {
            let e = cfg(s).validate().unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
        let mut c = cfg(Schedule::paper_loss_based());
        c.stop_log10_loss = Some(f64::NAN);
        assert!(c.validate().is_err());
    }
}
