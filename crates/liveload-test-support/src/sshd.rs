//! A private OpenSSH server for the SSH backend's tests: its own config, host key and
//! authorized_keys in a temporary directory, listening on a free port of 127.0.0.1, run as the
//! current user, stopped (with every session it forked) when dropped.
//!
//! `scripts/test.sh` installs Debian's `openssh-server` when it is missing; its system service
//! is never started.

use crate::free_port;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use liveload_ssh::{Auth, Host, SshBackend, SshBackendBuilder};

/// A running sshd.
pub struct Sshd {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its config, keys and logs.
    pub dir: tempfile::TempDir,
    /// The key `authorized_keys` accepts.
    pub user_key: PathBuf,
    /// A `known_hosts` file that already holds this server's key.
    pub known_hosts: PathBuf,
    /// Where liveload keeps its files on this "host".
    pub remote_dir: PathBuf,
    child: Child,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill_sessions();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A new ed25519 key pair at `path` (and `path.pub`).
pub fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "liveload-test", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen runs (Debian's openssh-client)");
    assert!(status.success());
}

/// The login name of this process's user.
pub fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The agent binary the tests upload.
pub fn agent_bin() -> PathBuf {
    liveload_core::agent_bin::find().expect("liveload-agent is built (cargo build --bins)")
}

impl Sshd {
    /// Start a server; `extra` lines are appended to its config.
    pub fn start_with(extra: &str) -> Sshd {
        let sshd = Path::new("/usr/sbin/sshd");
        assert!(
            sshd.exists(),
            "sshd is missing: run scripts/test.sh, which installs Debian's openssh-server"
        );
        // Started by root, sshd wants its privilege-separation directory.
        if current_user() == "root" && !Path::new("/run/sshd").exists() {
            std::fs::create_dir_all("/run/sshd").unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        keygen(&d.join("host_ed25519"));
        keygen(&d.join("user_ed25519"));
        std::fs::copy(d.join("user_ed25519.pub"), d.join("authorized_keys")).unwrap();
        let remote_dir = d.join("remote");
        let port = free_port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_ed25519\n\
             AuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd.pid\nStrictModes no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
             PermitRootLogin prohibit-password\nAllowTcpForwarding local\nMaxSessions 100\n\
             MaxStartups 100:30:200\nLogLevel ERROR\n{extra}\n",
            d = d.display()
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        let log = std::fs::File::create(d.join("sshd.log")).unwrap();
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("sshd starts");
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < end,
                "sshd did not listen: {}",
                std::fs::read_to_string(d.join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let host_pub = std::fs::read_to_string(d.join("host_ed25519.pub")).unwrap();
        let key: Vec<&str> = host_pub.split_whitespace().take(2).collect();
        let known_hosts = d.join("known_hosts");
        std::fs::write(
            &known_hosts,
            format!("[127.0.0.1]:{port} {} {}\n", key[0], key[1]),
        )
        .unwrap();
        Sshd {
            port,
            user_key: d.join("user_ed25519"),
            known_hosts,
            remote_dir,
            dir,
            child,
        }
    }

    /// Start a server.
    pub fn start() -> Sshd {
        Sshd::start_with("")
    }

    /// `n` hosts (`h0` ...), all this server, logging in with the authorized key.
    pub fn hosts(&self, n: usize) -> Vec<Host> {
        (0..n)
            .map(|i| Host {
                name: format!("h{i}"),
                address: "127.0.0.1".into(),
                port: self.port,
                user: current_user(),
                auth: Auth::IdentityFile(self.user_key.clone()),
                max_users: None,
                jump: None,
            })
            .collect()
    }

    /// The same hosts as a hosts file, for the CLI.
    pub fn hosts_file(&self, n: usize) -> PathBuf {
        let mut text = String::new();
        for host in self.hosts(n) {
            text.push_str(&format!(
                "[[host]]\nname = \"{}\"\naddress = \"127.0.0.1\"\nport = {}\nuser = \"{}\"\nidentity = \"{}\"\n\n",
                host.name,
                self.port,
                host.user,
                self.user_key.display()
            ));
        }
        let path = self.dir.path().join("hosts.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A backend builder for `hosts`, checking keys against this server's known_hosts,
    /// uploading the built agent, keeping its files in this server's remote directory.
    pub fn builder(&self, hosts: Vec<Host>) -> SshBackendBuilder {
        SshBackend::builder()
            .hosts(hosts)
            .known_hosts(&self.known_hosts)
            .agent_binary(std::env::consts::ARCH, agent_bin())
            .remote_dir(self.remote_dir.display().to_string())
    }

    /// A backend on `n` hosts of this server.
    pub fn backend(&self, n: usize) -> SshBackend {
        self.builder(self.hosts(n)).build().unwrap()
    }

    /// End every SSH session this server forked (as if the network between controller and
    /// host died), leaving the listener up.
    pub fn kill_sessions(&self) {
        let _ = Command::new("pkill")
            .args(["-KILL", "-P", &self.child.id().to_string()])
            .status();
    }
}

/// Is a process with `LIVELOAD_AGENT_RUN_ID=run` in its environment alive on this machine?
pub fn agents_of_run(run: &str) -> Vec<u32> {
    let needle = format!("{}={run}", liveload_core::launch::var::RUN_ID);
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(environ) = std::fs::read(entry.path().join("environ"))
            && environ
                .split(|b| *b == 0)
                .any(|var| var == needle.as_bytes())
        {
            pids.push(pid);
        }
    }
    pids
}
