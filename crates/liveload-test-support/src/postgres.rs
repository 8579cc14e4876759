//! A private PostgreSQL server for the PostgreSQL store's tests: a cluster made by `initdb` in
//! a temporary directory (user `liveload`, trust authentication, fsync off), listening on a
//! free port of 127.0.0.1 (and a Unix socket in that directory, nowhere else), stopped and
//! deleted when dropped. [`Postgres::fresh_database`] gives each test an empty database on
//! one server, since a server takes a second or two to start.
//!
//! Debian's own binaries (`/usr/lib/postgresql/<version>/bin`, the highest version; or the
//! directory `LIVELOAD_PG_BIN` names). `scripts/test.sh` installs Debian's `postgresql` when
//! it is missing; its system service is never started. PostgreSQL refuses to run as root, so
//! under root the cluster belongs to, and the server runs as, the `postgres` system user.

use crate::free_port;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running PostgreSQL server.
pub struct Postgres {
    /// The URL of its (empty at the start) database `liveload`, as user `liveload`.
    pub url: String,
    /// Its port on 127.0.0.1.
    pub port: u16,
    bin: PathBuf,
    child: Child,
    /// The cluster, its socket and its log; deleted after the server stopped.
    dir: tempfile::TempDir,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT is PostgreSQL's fast shutdown: clients are disconnected, not waited for.
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
        }
        let end = Instant::now() + Duration::from_secs(30);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The directory with `initdb`, `postgres`, `pg_isready` and `createdb`.
fn pg_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("LIVELOAD_PG_BIN") {
        return dir.into();
    }
    // The highest version Debian installed (`15`, `16`, …; `9.6` once).
    let version = |name: &str| -> Vec<u32> {
        name.split('.')
            .map(|part| part.parse().unwrap_or(0))
            .collect()
    };
    std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|dir| dir.join("bin/initdb").exists())
        .max_by_key(|dir| version(&dir.file_name().unwrap_or_default().to_string_lossy()))
        .map(|dir| dir.join("bin"))
        .expect("PostgreSQL is missing: run scripts/test.sh, which installs Debian's postgresql")
}

/// Who owns the cluster and runs the server: `None` for this process's own user, or the
/// `postgres` system user's (uid, gid) when this process is root.
fn server_user() -> Option<(u32, u32)> {
    if !rustix::process::geteuid().is_root() {
        return None;
    }
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("id runs");
        assert!(
            out.status.success(),
            "there is no postgres user (PostgreSQL refuses to run as root): run scripts/test.sh, \
             which installs Debian's postgresql (it creates the user)"
        );
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    Some((id("-u"), id("-g")))
}

/// A command for one of the server's programs, run as `user`.
fn as_user(program: PathBuf, user: Option<(u32, u32)>, cwd: &Path) -> Command {
    let mut command = Command::new(program);
    command.current_dir(cwd).stdin(Stdio::null());
    if let Some((uid, gid)) = user {
        // Set in the child itself (not through runuser): the child *is* the server, so a
        // signal to it reaches PostgreSQL, and nothing is left behind when it stops.
        command.uid(uid).gid(gid);
    }
    command
}

/// Run a client program to completion; panic with its words if it fails.
fn run(command: &mut Command, what: &str) {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Postgres {
    /// Make a cluster and start a server on it, with an empty database `liveload`.
    pub fn start() -> Postgres {
        let bin = pg_bin();
        assert!(
            bin.join("initdb").exists() && bin.join("postgres").exists(),
            "PostgreSQL is missing from {}: run scripts/test.sh, which installs Debian's \
             postgresql (or point LIVELOAD_PG_BIN at a directory with initdb and postgres)",
            bin.display()
        );
        let user = server_user();
        // Under root, in /tmp (every user can reach it), not wherever TMPDIR points.
        let dir = match user {
            Some(_) => tempfile::Builder::new()
                .prefix("liveload-pg")
                .tempdir_in("/tmp"),
            None => tempfile::Builder::new().prefix("liveload-pg").tempdir(),
        }
        .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let data = dir.path().join("data");

        run(
            as_user(bin.join("initdb"), user, dir.path())
                .arg("-D")
                .arg(&data)
                .args(["-U", "liveload", "--auth=trust", "-E", "UTF8"])
                // Not the environment's locale: it may not be installed.
                .args(["--locale=C", "--no-sync"]),
            "initdb",
        );

        let port = free_port();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path().join("server.log"), Some(uid), Some(gid)).unwrap();
        }
        let child = as_user(bin.join("postgres"), user, dir.path())
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-h", "127.0.0.1", "-k"])
            .arg(dir.path())
            // No fsync: the cluster is thrown away.
            .arg("-F")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("postgres starts");
        let mut server = Postgres {
            url: format!("postgres://liveload@127.0.0.1:{port}/liveload"),
            port,
            bin,
            child,
            dir,
        };
        server.wait_ready();
        run(&mut server.createdb("liveload"), "createdb liveload");
        server
    }

    /// Wait until the server accepts connections (it listens before it has recovered).
    fn wait_ready(&mut self) {
        // Seconds on an idle machine; longer while other tests keep every core busy.
        let end = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "postgres exited ({status}) before it accepted connections: {}",
                    std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
                );
            }
            let listening = std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok();
            if listening
                && Command::new(self.bin.join("pg_isready"))
                    .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                    .status()
                    .is_ok_and(|s| s.success())
            {
                return;
            }
            assert!(
                Instant::now() < end,
                "postgres did not accept connections: {}",
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn createdb(&self, name: &str) -> Command {
        let mut command = Command::new(self.bin.join("createdb"));
        command
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "liveload",
            ])
            .arg(name)
            .stdin(Stdio::null());
        command
    }

    /// Create another (empty) database on this server; its URL.
    pub fn fresh_database(&self, name: &str) -> String {
        run(&mut self.createdb(name), &format!("createdb {name}"));
        format!("postgres://liveload@127.0.0.1:{}/{name}", self.port)
    }
}
