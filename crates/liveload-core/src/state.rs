//! liveload's local state directory (locks, local runs' records, the control endpoint's
//! record and token) made safe against other users of the machine.
//!
//! The default falls back to `/tmp/liveload-<uid>`, a predictable name in a directory everyone
//! can write. Another local user could create it first, or plant a symlink there, and make a
//! run write where they choose. So every directory liveload keeps state in is created with mode
//! 0700 and then checked: it must be a real directory (not a symlink), owned by us, and neither
//! group- nor world-writable; and files are created new with mode 0600 without following
//! symlinks.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::Path;

use crate::{Error, Result};

/// Create `dir` (and its parents) with mode 0700 if missing, then refuse it unless it is a
/// directory of ours that nobody else can write.
pub fn private_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    check_private_dir(dir)
}

/// Refuse `dir` unless it is a real directory owned by this user and not writable by group or
/// others.
pub fn check_private_dir(dir: &Path) -> Result<()> {
    let refuse = |why: String| Error::InvalidOption {
        option: "--state-dir (LIVELOAD_STATE_DIR)".into(),
        message: format!(
            "refusing {} as liveload's state directory: {why}; remove it or point --state-dir at a directory of yours",
            dir.display()
        ),
    };
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| Error::io(format!("checking {}", dir.display()), e))?;
    if meta.file_type().is_symlink() {
        return Err(refuse("it is a symbolic link".into()));
    }
    if !meta.is_dir() {
        return Err(refuse("it is not a directory".into()));
    }
    let me = rustix::process::getuid().as_raw();
    if meta.uid() != me {
        return Err(refuse(format!(
            "it belongs to uid {}, not to you (uid {me})",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(refuse(format!(
            "others can write into it (mode {:o})",
            meta.mode() & 0o777
        )));
    }
    Ok(())
}

/// Write `contents` to `path` as a new file of mode 0600, replacing any old one atomically: a
/// temporary file created with `O_CREAT | O_EXCL` (which never follows a symlink) and renamed
/// over `path` (which replaces a symlink rather than writing through it).
pub fn write_private_file(path: &Path, contents: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut file| file.write_all(contents))
        .and_then(|()| std::fs::rename(&tmp, path));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(format!("writing {}", path.display()), e)
    })
}

/// A run's liveness, as a lock its controller holds for the run's whole life: `liveload cleanup
/// --all` on the same machine skips the nodes of runs whose lock is held (they are not
/// leftovers, they are running). The kernel drops the lock when the controller exits for any
/// reason, SIGKILL included.
#[derive(Debug)]
pub struct RunAlive {
    _file: std::fs::File,
}

impl RunAlive {
    /// Hold the liveness lock of `run_id` under `state_dir`.
    pub fn hold(state_dir: &Path, run_id: &str) -> Result<RunAlive> {
        let file = alive_file(state_dir, run_id, true)?;
        file.lock()
            .map_err(|e| Error::io(format!("locking the liveness of run {run_id}"), e))?;
        Ok(RunAlive { _file: file })
    }

    /// Is run `run_id` still running from this machine (its controller holds its lock)?
    pub fn is_held(state_dir: &Path, run_id: &str) -> bool {
        let Ok(file) = alive_file(state_dir, run_id, false) else {
            return false;
        };
        matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
    }
}

fn alive_file(state_dir: &Path, run_id: &str, create: bool) -> Result<std::fs::File> {
    let dir = state_dir.join("alive");
    if create {
        private_dir(&dir)?;
    }
    // Run ids are [a-z0-9-]; anything else never names a file here.
    if run_id.is_empty()
        || !run_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(Error::InvalidOption {
            option: "--run".into(),
            message: format!("'{run_id}' is not a run id"),
        });
    }
    let path = dir.join(format!("{run_id}.lock"));
    std::fs::OpenOptions::new()
        .create(create)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn a_planted_or_loose_directory_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let fresh = root.path().join("fresh/state");
        private_dir(&fresh).unwrap();
        assert_eq!(
            std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777,
            0o700
        );
        // World-writable, as an attacker's pre-created /tmp directory would be.
        let loose = root.path().join("loose");
        std::fs::create_dir(&loose).unwrap();
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = private_dir(&loose).unwrap_err().to_string();
        assert!(err.contains("others can write"), "{err}");
        // A symlink planted where the state directory should be.
        let planted = root.path().join("planted");
        std::os::unix::fs::symlink(&fresh, &planted).unwrap();
        let err = private_dir(&planted).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
    }

    #[test]
    fn a_held_run_is_alive_until_its_lock_goes() {
        let state = tempfile::tempdir().unwrap();
        assert!(!RunAlive::is_held(state.path(), "run-1"));
        let alive = RunAlive::hold(state.path(), "run-1").unwrap();
        assert!(RunAlive::is_held(state.path(), "run-1"));
        assert!(!RunAlive::is_held(state.path(), "run-2"));
        drop(alive);
        assert!(!RunAlive::is_held(state.path(), "run-1"));
        assert!(RunAlive::hold(state.path(), "../x").is_err());
    }

    #[test]
    fn private_files_replace_a_planted_symlink_instead_of_writing_through_it() {
        let root = tempfile::tempdir().unwrap();
        let victim = root.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let path = root.path().join("record.json");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        write_private_file(&path, b"{}").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{}");
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
}
