//! The run directory: one writer at a time, no orphaned temporary files, and no mixing of two
//! runs.
//!
//! A [`RunDir`] holds an exclusive advisory lock on [`LOCK_FILE`] in the directory for as long
//! as it lives (the lock is released by the operating system when the process ends, killed or
//! not, so a crash never leaves a stale lock). Only the holder writes the run's files; a second
//! run into the same directory is refused at once with an error that names the lock file and
//! the holder's process id.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::io::is_temp_file;

/// The lock file of a run directory (kept between runs: deleting a lock file while another
/// process may be opening it would let two writers in).
pub const LOCK_FILE: &str = ".margincert.lock";

/// The metrics log of a run.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// The latest checkpoint of a run.
pub const LAST_FILE: &str = "last.safetensors";

/// The training plots of a run.
pub const PLOT_FILES: [&str; 2] = ["loss.svg", "margin.svg"];

/// True for the name of a file that a run writes: the metrics log, the latest checkpoint,
/// a threshold checkpoint `loss-1e*.safetensors` (see [`super::threshold_file`]) or a plot.
pub fn is_run_file(name: &str) -> bool {
    name == METRICS_FILE
        || name == LAST_FILE
        || PLOT_FILES.contains(&name)
        || (name.starts_with("loss-1e") && name.ends_with(".safetensors"))
}

/// A run directory, locked for writing.
///
/// Invariant: while the value lives, this process holds the exclusive lock on
/// `path/`[`LOCK_FILE`], so no other margincert run writes into `path`.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    // Holds the lock; the lock goes with the file handle.
    _lock: File,
}

impl RunDir {
    /// Creates `path` if missing, takes its lock (failing at once when another run holds it),
    /// records this process's id in the lock file, and removes orphaned temporary files of an
    /// interrupted earlier run.
    pub fn lock(path: &Path) -> Result<Self> {
        std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
        let lock_path = path.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => String::new(),
                    pid => format!(" (process {pid})"),
                };
                return Err(Error::Invalid(format!(
                    "{} is in use: another margincert run holds its lock {}{holder}; two runs \
                     in one directory would corrupt each other. Wait for that run to end, or \
                     choose another output directory (--out)",
                    path.display(),
                    lock_path.display()
                )));
            }
            Err(TryLockError::Error(e)) => return Err(Error::io(&lock_path, e)),
        }
        // The holder's id, for the message above; a failure here is only cosmetic.
        if file.set_len(0).is_ok() {
            let _ = writeln!(file, "{}", std::process::id());
        }
        let dir = Self {
            path: path.to_path_buf(),
            _lock: file,
        };
        dir.remove_orphans()?;
        Ok(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the orphaned temporary files (`.margincert-*.tmp`) of interrupted atomic
    /// writes; returns them. Safe only under the lock: the temporary files of a live run
    /// would otherwise go too.
    pub fn remove_orphans(&self) -> Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        for p in self.files_where(is_temp_file)? {
            std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
            removed.push(p);
        }
        Ok(removed)
    }

    /// The files of a previous run in the directory ([`is_run_file`]), sorted.
    pub fn previous_run_files(&self) -> Result<Vec<PathBuf>> {
        self.files_where(is_run_file)
    }

    /// Refuses a fresh run when the directory holds a previous run's files: the two would
    /// mix (old threshold checkpoints and plots beside the new run's).
    pub fn ensure_fresh(&self) -> Result<()> {
        let old = self.previous_run_files()?;
        if old.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = old
            .iter()
            .take(4)
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        let more = if old.len() > names.len() { ", …" } else { "" };
        Err(Error::Invalid(format!(
            "{} holds a previous run ({}{more}): continue it with --resume {}, replace it with \
             --overwrite (deletes those files), or choose another --out",
            self.path.display(),
            names.join(", "),
            self.path.join(LAST_FILE).display()
        )))
    }

    /// Refuses to resume the checkpoint `ckpt` here when the directory holds another run:
    /// resuming is continuing the run whose `last.safetensors` this is, or starting a
    /// continuation in a directory without a run. (Resuming an earlier checkpoint over a
    /// later run would overwrite its `last.safetensors` and cut its record.)
    pub fn ensure_resumable_from(&self, ckpt: &Path) -> Result<()> {
        let last = self.path.join(LAST_FILE);
        if same_file::is_same_file(&last, ckpt).unwrap_or(false) {
            return Ok(());
        }
        if self.previous_run_files()?.is_empty() {
            return Ok(());
        }
        Err(Error::Invalid(format!(
            "{} holds a run whose checkpoint is {}, not {}: resume from {1} to continue that \
             run, or give an empty --out to continue {2} there",
            self.path.display(),
            last.display(),
            ckpt.display()
        )))
    }

    /// Deletes the previous run's files ([`Self::previous_run_files`], and nothing else);
    /// returns them.
    pub fn clear_previous(&self) -> Result<Vec<PathBuf>> {
        let old = self.previous_run_files()?;
        for p in &old {
            std::fs::remove_file(p).map_err(|e| Error::io(p, e))?;
        }
        self.sync()?;
        Ok(old)
    }

    /// Makes the directory's entries durable (renames and removals), where the platform
    /// allows it.
    pub fn sync(&self) -> Result<()> {
        #[cfg(unix)]
        {
            let d = File::open(&self.path).map_err(|e| Error::io(&self.path, e))?;
            d.sync_all().map_err(|e| Error::io(&self.path, e))?;
        }
        Ok(())
    }

    /// The regular files of the directory whose names satisfy `keep`, sorted.
    fn files_where(&self, keep: impl Fn(&str) -> bool) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        let entries = std::fs::read_dir(&self.path).map_err(|e| Error::io(&self.path, e))?;
        for e in entries {
            let e = e.map_err(|e| Error::io(&self.path, e))?;
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if keep(name) && e.file_type().is_ok_and(|t| t.is_file()) {
                out.push(e.path());
            }
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_run_file("loss-1e-10.safetensors"));
        assert!(is_run_file("metrics.jsonl") && is_run_file("margin.svg"));
        assert!(!is_run_file("cert.json") && !is_run_file("notes.txt"));
        assert!(!is_run_file(LOCK_FILE));
        assert!(is_temp_file(".margincert-Ab12x.tmp"));
        assert!(!is_temp_file(".margincert-.tmp") && !is_temp_file("margincert-a.tmp"));
        assert!(!is_temp_file(LOCK_FILE));
    }

    #[test]
    fn one_holder_at_a_time() {
        let tmp = tempfile::tempdir().unwrap();
        let a = RunDir::lock(tmp.path()).unwrap();
        let e = RunDir::lock(tmp.path()).unwrap_err().to_string();
        assert!(e.contains(LOCK_FILE) && e.contains("in use"), "{e}");
        assert!(
            e.contains(&format!("process {}", std::process::id())),
            "{e}"
        );
        drop(a);
        RunDir::lock(tmp.path()).unwrap();
    }
}
