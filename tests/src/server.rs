//! A `liveload serve` process for the server tests: started on a free port of 127.0.0.1 with a
//! test's state directory (its SQLite history is `server.db` there unless `LIVELOAD_DATABASE`
//! says otherwise), its stderr kept in a file the tests read (to prove no token is logged),
//! and killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::{eventually, liveload};

/// A running server.
pub struct Served {
    /// `127.0.0.1:PORT`.
    pub address: String,
    /// Its stderr, as a file.
    pub log: PathBuf,
    child: Child,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    /// Start `liveload serve` with `state` as its state directory and `env` added, at debug
    /// log level (everything it could log, it logs).
    pub fn start(state: &Path, env: &[(&str, &str)], args: &[&str]) -> Served {
        let log = state.join(format!("serve-{}.log", rand_suffix()));
        let child = liveload(state)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .envs(env.iter().copied())
            .env("LIVELOAD_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("liveload serve starts");
        let mut address = String::new();
        let listening = eventually(Duration::from_secs(60), || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            match text.split("liveload server on http://").nth(1) {
                Some(rest) => {
                    address = rest.split_whitespace().next().unwrap_or("").to_string();
                    true
                }
                None => false,
            }
        });
        assert!(
            listening,
            "the server did not start:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Served {
            address,
            log,
            child,
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait until it has exited by itself; whether it did within `timeout`.
    pub fn wait_exit(&self, timeout: Duration) -> bool {
        let pid = self.child.id();
        eventually(timeout, || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map_or(true, |stat| stat.contains(") Z "))
        })
    }

    /// Kill it with SIGKILL, as a crash would, and wait for it.
    pub fn crash(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A request to the API (`path` under `/api/v1`) with `token` (none when empty); the
    /// status and the body.
    pub fn call(&self, method: &str, path: &str, token: &str, body: Option<&str>) -> (u16, String) {
        let mut headers = Vec::new();
        if !token.is_empty() {
            headers.push(format!("Authorization: Bearer {token}"));
        }
        self.raw(method, &format!("/api/v1{path}"), &headers, body)
    }

    /// A request with these header lines; the status and the body.
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[String],
        body: Option<&str>,
    ) -> (u16, String) {
        crate::status_and_body(&self.exchange(method, path, headers, body))
    }

    /// A request with these header lines (`Host` is the server's unless one is given); the
    /// whole response, headers included.
    pub fn exchange(
        &self,
        method: &str,
        path: &str,
        headers: &[String],
        body: Option<&str>,
    ) -> String {
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        // Every API request carries a body (empty when none), as a client library's would.
        crate::http_exchange(
            &self.address,
            method,
            path,
            &headers,
            Some(body.unwrap_or("")),
        )
    }

    /// `call`, expecting `status`, the body as JSON.
    pub fn json(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&str>,
        status: u16,
    ) -> serde_json::Value {
        let (got, text) = self.call(method, path, token, body);
        assert_eq!(got, status, "{method} {path}: {text}");
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"))
    }

    /// Wait until run `id` has ended; its record.
    pub fn wait_ended(&self, id: &str, token: &str, timeout: Duration) -> serde_json::Value {
        let mut record = serde_json::Value::Null;
        let ended = eventually(timeout, || {
            record = self.json("GET", &format!("/runs/{id}"), token, None, 200);
            record["status"] != "running"
        });
        assert!(ended, "run {id} did not end: {record}");
        record
    }
}

/// Create a token named `name` in the history of the server of `state` (with `env`).
pub fn create_token(state: &Path, env: &[(&str, &str)], name: &str) -> String {
    let output = liveload(state)
        .args(["serve", "token", "create", name])
        .envs(env.iter().copied())
        .output()
        .expect("liveload serve token create runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        % 1_000_000_007
}
