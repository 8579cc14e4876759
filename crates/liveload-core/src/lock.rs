//! One run of a scenario at a time per machine (`scenario_is_already_running`).
//!
//! The lock is an advisory `flock` on a file named after the scenario. The kernel drops it when
//! the holding process exits for any reason, SIGKILL included, so a crashed run never leaves a
//! stale lock behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Where liveload keeps local state (locks, local runs' records): `LIVELOAD_STATE_DIR`, else
/// `$XDG_RUNTIME_DIR/liveload`, else `/tmp/liveload-<uid>`.
pub fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LIVELOAD_STATE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        return PathBuf::from(dir).join("liveload");
    }
    let uid = rustix::process::getuid().as_raw();
    std::env::temp_dir().join(format!("liveload-{uid}"))
}

/// A held scenario lock; released on drop (or when the process dies).
#[derive(Debug)]
pub struct ScenarioLock {
    _file: File,
    path: PathBuf,
}

impl ScenarioLock {
    /// Take the lock for `scenario` under `state_dir`, or fail with
    /// [`Error::ScenarioIsAlreadyRunning`].
    pub fn acquire(state_dir: &Path, scenario: &str) -> Result<ScenarioLock> {
        crate::state::private_dir(state_dir)?;
        let dir = state_dir.join("locks");
        crate::state::private_dir(&dir)?;
        // Scenario names are free text; keep the file name safe and still readable.
        let safe: String = scenario
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = dir.join(format!("{safe}.lock"));
        // Never through a symlink (the directory is ours alone; this is belt and braces).
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        match file.try_lock() {
            Ok(()) => Ok(ScenarioLock { _file: file, path }),
            Err(TryLockError::WouldBlock) => Err(Error::ScenarioIsAlreadyRunning {
                scenario: scenario.to_string(),
                lock: path,
            }),
            Err(TryLockError::Error(e)) => Err(Error::io(format!("locking {}", path.display()), e)),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_until_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = ScenarioLock::acquire(dir.path(), "checkout flow").unwrap();
        match ScenarioLock::acquire(dir.path(), "checkout flow") {
            Err(e @ Error::ScenarioIsAlreadyRunning { .. }) => {
                assert_eq!(e.code(), "scenario_is_already_running")
            }
            other => panic!("{other:?}"),
        }
        // Another scenario is independent.
        ScenarioLock::acquire(dir.path(), "other").unwrap();
        drop(first);
        ScenarioLock::acquire(dir.path(), "checkout flow").unwrap();
    }
}
