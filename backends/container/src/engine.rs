//! The Docker-compatible engine: where its socket is, which engine answers, and what its
//! errors mean.
//!
//! Only a unix socket is accepted. The published agent ports are on this host's 127.0.0.1, so
//! the engine must run on this host too; a socket is also the only way to it that needs no
//! TLS of its own (whoever can open the socket is already as powerful as root here).

use std::path::{Path, PathBuf};

use bollard::Docker;
use bollard::errors::Error as EngineError;
use liveload_core::{BackendError, BackendErrorKind, Error};

/// The Docker Engine API version liveload speaks: podman 4.3 serves 1.41, Docker has served it
/// since 20.10. Fixed rather than negotiated, so every engine gets the same requests.
pub(crate) const API_VERSION: bollard::ClientVersion = bollard::ClientVersion {
    major_version: 1,
    minor_version: 41,
};

/// Seconds before a call to the engine gives up (a container create or removal can take a few
/// seconds on a loaded host).
const CALL_TIMEOUT_S: u64 = 120;

/// Which engine answers: they differ in one place liveload uses (how a seccomp profile is
/// named).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Docker Engine (Moby).
    Docker,
    /// podman's Docker-compatible service (`podman system service`).
    Podman,
}

/// The socket to use: `explicit` (a path or `unix://` URL), else `DOCKER_HOST`, else the first
/// that exists of Docker's and podman's usual sockets.
pub fn find_socket(explicit: Option<&str>) -> Result<PathBuf, Error> {
    let from_env = std::env::var("DOCKER_HOST").ok().filter(|v| !v.is_empty());
    if let Some(value) = explicit.map(str::to_string).or(from_env) {
        return unix_path(&value).ok_or_else(|| Error::InvalidOption {
            option: "--container-socket".into(),
            message: format!(
                "{value}: only a unix socket on this host is supported (unix:///path or a \
                 path): the agents' ports are published on this host's 127.0.0.1"
            ),
        });
    }
    let mut candidates = vec![
        PathBuf::from("/var/run/docker.sock"),
        PathBuf::from("/run/podman/podman.sock"),
    ];
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR") {
        candidates.push(Path::new(&runtime).join("podman/podman.sock"));
        candidates.push(Path::new(&runtime).join("docker.sock"));
    }
    candidates.into_iter().find(|p| p.exists()).ok_or_else(|| {
        BackendError::new(
            "container",
            BackendErrorKind::Unreachable,
            "no container engine socket found (DOCKER_HOST is unset, and neither \
                 /var/run/docker.sock nor podman's socket exists)",
        )
        .hint(
            "start Docker, or podman's API service (`podman system service --time=0 \
                 unix:///run/podman/podman.sock`), or point --container-socket at its socket",
        )
        .into()
    })
}

/// The path of a `unix://` URL or a plain path; `None` for any other scheme.
fn unix_path(value: &str) -> Option<PathBuf> {
    if let Some(path) = value.strip_prefix("unix://") {
        return Some(PathBuf::from(path));
    }
    (!value.contains("://")).then(|| PathBuf::from(value))
}

/// A client for the engine at `socket`.
pub fn connect(socket: &Path) -> Result<Docker, Error> {
    Docker::connect_with_unix(&socket.display().to_string(), CALL_TIMEOUT_S, &API_VERSION)
        .map_err(|e| engine_error("connecting to the container engine", e))
}

/// Ask the engine what it is.
pub async fn flavor(docker: &Docker) -> Result<Flavor, Error> {
    let version = docker
        .version()
        .await
        .map_err(|e| engine_error("asking the container engine for its version", e))?;
    let podman = version
        .components
        .unwrap_or_default()
        .iter()
        .any(|c| c.name.to_ascii_lowercase().contains("podman"));
    Ok(if podman {
        Flavor::Podman
    } else {
        Flavor::Docker
    })
}

/// The HTTP status of an engine error, if the engine answered.
pub fn status(error: &EngineError) -> Option<u16> {
    match error {
        EngineError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// An engine error as liveload's error, saying what was being done.
pub fn engine_error(doing: &str, error: EngineError) -> Error {
    let (kind, hint) = match status(&error) {
        Some(404) => (
            BackendErrorKind::BadImage,
            Some(
                "build the agent image first: docker build -f images/agent/Dockerfile \
                 -t liveload-agent . (or podman build), then pass --container-image",
            ),
        ),
        Some(409) => (BackendErrorKind::Other, None),
        Some(400) => (BackendErrorKind::Other, None),
        Some(code) if code >= 500 => (BackendErrorKind::Transient, None),
        Some(_) => (BackendErrorKind::Other, None),
        None => (
            BackendErrorKind::Unreachable,
            Some(
                "is the engine running? (Docker, or `podman system service`); \
                 check --container-socket / DOCKER_HOST",
            ),
        ),
    };
    BackendError::new("container", kind, format!("{doing}: {error}"))
        .maybe_hint(hint)
        .source(error)
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unix_sockets_are_accepted() {
        assert_eq!(
            unix_path("unix:///run/podman/podman.sock"),
            Some(PathBuf::from("/run/podman/podman.sock"))
        );
        assert_eq!(
            unix_path("/var/run/docker.sock"),
            Some(PathBuf::from("/var/run/docker.sock"))
        );
        assert_eq!(unix_path("tcp://10.0.0.5:2375"), None);
        assert_eq!(unix_path("ssh://me@host"), None);
        let refused = find_socket(Some("tcp://127.0.0.1:2375")).unwrap_err();
        assert_eq!(refused.code(), "invalid_option");
    }
}
