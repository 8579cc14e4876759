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
