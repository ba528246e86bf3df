//! The metrics log `metrics.jsonl`: one JSON object per accepted epoch, each line written
//! whole (one `write_all` of the line and its newline on an append-only file) and synced
//! before the epoch's checkpoint is renamed into place; on resume, cut back to the
//! checkpoint's epoch.
//!
//! Why a kill at any point resumes to the uninterrupted record: line `e` is appended and
//! synced before checkpoint `e` is renamed over `last.safetensors`, and line `e + 1` only
//! after that rename. So when `last.safetensors` is at epoch `E`, the log holds lines
//! `0..=E` whole, then possibly line `E + 1` (whole or torn), and nothing else. Cutting the
//! log after line `E` ([`cut_point`]) leaves exactly the lines the uninterrupted run had at
//! that point, and the resumed run appends the same lines `E + 1, …` (the training is
//! deterministic). A whole line beyond `E + 1` cannot come from an interruption: it means the
//! checkpoint is older than the log (resuming an earlier checkpoint in the same directory),
//! and the resume is refused rather than discarding the later record.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::fault::{Faults, Point};
use crate::error::{Error, Result};
use crate::train::EpochMetrics;

/// An open metrics log.
///
/// Invariant: the file holds whole lines only, each synced, except at worst one torn line at
/// the end after an interruption (appends are single writes at the end of the file, and a
/// resumed log starts cut back to its last whole line of the checkpoint's epoch).
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

/// Where the log of a run resumed at epoch `E` is cut.
#[derive(Clone, Debug, PartialEq)]
pub struct Cut {
    /// Bytes kept: whole lines with epochs up to `E`.
    pub keep: usize,
    /// The kept line of epoch `E` (absent when the log does not reach it).
    pub last: Option<EpochMetrics>,
    /// The largest epoch of a whole, valid line after the cut (an interruption leaves at
    /// most `E + 1` there).
    pub beyond: Option<usize>,
}

/// The cut of log `bytes` for a run resumed at epoch `epoch`: the longest prefix of whole
/// (newline-terminated) lines that parse with epochs up to `epoch`. An unterminated tail, a
/// line that does not parse and every line after either are dropped.
pub fn cut_point(bytes: &[u8], epoch: usize) -> Cut {
    let mut keep = 0;
    let mut last = None;
    let mut beyond = None;
    let mut cut = false;
    let mut pos = 0;
    while let Some(nl) = bytes[pos..].iter().position(|&b| b == b'\n') {
        let line = &bytes[pos..pos + nl];
        pos += nl + 1;
        let parsed = serde_json::from_slice::<EpochMetrics>(line).ok();
        match parsed {
            Some(m) if !cut && m.epoch <= epoch => {
                keep = pos;
                last = (m.epoch == epoch).then_some(m);
            }
            Some(m) => {
                cut = true;
                if m.epoch > epoch {
                    beyond = beyond.max(Some(m.epoch));
                }
            }
            None => cut = true,
        }
    }
    Cut { keep, last, beyond }
}

impl MetricsLog {
    /// Creates (or empties) the log of a fresh run at `path`.
    pub fn create(path: &Path) -> Result<Self> {
        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Opens the log at `path` (created if missing) for a run resumed at epoch `epoch`,
    /// cut back to that epoch ([`cut_point`]); returns it with the log's line of `epoch`
    /// (absent when the log does not reach it, e.g. a run resumed into a new directory) and
    /// the number of bytes dropped. Refuses a log that records whole epochs past `epoch + 1`.
    pub fn resume(path: &Path, epoch: usize) -> Result<(Self, Option<EpochMetrics>, usize)> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let bytes = crate::io::read_file_limited(path, &crate::limits::FILE_BYTES)?;
        let cut = cut_point(&bytes, epoch);
        if let Some(b) = cut.beyond.filter(|&b| b > epoch + 1) {
            return Err(Error::Invalid(format!(
                "{} records epochs up to {b}, but the checkpoint is at epoch {epoch}: resuming \
                 it here would discard the later record. Resume from the directory's \
                 last.safetensors, or resume into another --out",
                path.display()
            )));
        }
        let dropped = bytes.len() - cut.keep;
        if dropped > 0 {
            file.set_len(cut.keep as u64)
                .and_then(|()| file.sync_data())
                .map_err(|e| Error::io(path, e))?;
        }
        let log = Self {
            path: path.to_path_buf(),
            file,
        };
        Ok((log, cut.last, dropped))
    }

    /// Appends `m` as one line, in one write (`faults` may tear it, for the tests), and
    /// syncs it to disk.
    pub fn append(&mut self, m: &EpochMetrics, faults: &Faults) -> Result<()> {
        let mut line = serde_json::to_vec(m).map_err(|e| Error::Invalid(e.to_string()))?;
        line.push(b'\n');
        if faults.armed(Point::TornMetrics, m.epoch) {
            let _ = self.file.write_all(&line[..line.len() / 2]);
            let _ = self.file.sync_data();
            faults.hit(Point::TornMetrics, m.epoch);
        }
        self.file
            .write_all(&line)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| Error::io(&self.path, e))
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(epoch: usize) -> String {
        let m = EpochMetrics {
            epoch,
            retries: 0,
            lr: 0.1,
            log10_loss: -(epoch as f64),
            log10_loss_sum: 1.0,
            train_accuracy: 1.0,
            test_accuracy: None,
            q_min: 0.5,
            q_max: 1.0,
            rho: 2.0,
            layer_norms: vec![1.0],
            norm_product: 1.0,
            normalized_margin: None,
            layer_normalized_margin: None,
            smoothed_margin: None,
            near_min: vec![1; 5],
            seconds: 0.0,
        };
        serde_json::to_string(&m).unwrap() + "\n"
    }

    #[test]
    fn cuts_after_the_checkpoint_epoch_and_a_torn_tail() {
        let whole: String = (0..=3).map(line).collect();
        let upto2: String = (0..=2).map(line).collect();
        let c = cut_point(whole.as_bytes(), 2);
        assert_eq!((c.keep, c.beyond), (upto2.len(), Some(3)));
        assert_eq!(c.last.unwrap().epoch, 2);
        // A torn line 3 (no newline) goes.
        let torn = format!("{upto2}{}", &line(3)[..40]);
        let c = cut_point(torn.as_bytes(), 2);
        assert_eq!((c.keep, c.beyond), (upto2.len(), None));
        // The old two-write bug: a torn line with the next line appended onto it.
        let glued = format!("{}{}{}", upto2, &line(3)[..40], line(3));
        assert_eq!(cut_point(glued.as_bytes(), 2).keep, upto2.len());
        // Nothing to cut.
        assert_eq!(cut_point(upto2.as_bytes(), 2).keep, upto2.len());
        assert_eq!(cut_point(b"", 0).keep, 0);
    }

    #[test]
    fn resume_truncates_and_refuses_a_later_record() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        let whole: String = (0..=5).map(line).collect();
        std::fs::write(&p, &whole).unwrap();
        let e = MetricsLog::resume(&p, 3).unwrap_err().to_string();
        assert!(e.contains("up to 5") && e.contains("epoch 3"), "{e}");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), whole);
        let (_, last, dropped) = MetricsLog::resume(&p, 4).unwrap();
        assert_eq!((last.unwrap().epoch, dropped), (4, line(5).len()));
        let upto4: String = (0..=4).map(line).collect();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), upto4);
    }
}
