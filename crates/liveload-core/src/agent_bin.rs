//! Finding the `liveload-agent` executable on this machine: the local backend starts it, the SSH
//! backend uploads it, test stand-ins for cloud machines run it.

use std::path::PathBuf;

/// `LIVELOAD_AGENT_BIN`, else `liveload-agent` next to the running executable (or one level up,
/// where cargo puts binaries relative to test executables), else on `PATH`.
pub fn find() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("LIVELOAD_AGENT_BIN") {
        return Some(PathBuf::from(path));
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    for candidate in [
        dir.join("liveload-agent"),
        dir.parent()?.join("liveload-agent"),
    ] {
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    let path_var = std::env::var_os("PATH")?;
    std::env::split_paths(&path_var)
        .map(|d| d.join("liveload-agent"))
        .find(|p| p.is_file())
}
