//! Helpers for liveload's end-to-end tests: locate the built binaries, run the CLI, watch
//! processes. The tests themselves are in `tests/tests/`.

pub mod server;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// A binary of this workspace, next to the test executable's target directory.
///
/// `cargo test --workspace` builds them (the CLI and agent crates have integration tests);
/// the README's test command also runs `cargo build --workspace --bins` first.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A `liveload` command using `state` as its state directory.
pub fn liveload(state: &Path) -> Command {
    let mut command = Command::new(bin("liveload"));
    // Run inside the test's directory: report files land there, not in the repository.
    command
        .current_dir(state)
        .env("LIVELOAD_STATE_DIR", state)
        .env("LIVELOAD_AGENT_BIN", bin("liveload-agent"));
    command
}

/// Run `liveload` with `state` as its state directory to completion, off the async runtime (the
/// command may take seconds; tests' servers keep serving meanwhile).
pub async fn liveload_output(state: &Path, env: &[(&str, &str)], args: Vec<String>) -> Output {
    let mut command = liveload(state);
    command.envs(env.iter().copied()).args(args);
    tokio::task::spawn_blocking(move || command.output().expect("liveload runs"))
        .await
        .expect("the command thread")
}

/// Owned copies of `words`, for building argument lists.
pub fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

/// Run to completion and parse stdout as JSON.
pub fn json_output(command: &mut Command) -> (i32, serde_json::Value, Output) {
    let out = command.output().expect("liveload runs");
    let code = out.status.code().unwrap_or(-1);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, value, out)
}

/// Start the demo target on a free port in a background thread; returns its base URL.
pub fn demo_target() -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let address = demo_target::spawn(([127, 0, 0, 1], 0).into())
                .await
                .unwrap();
            tx.send(address).unwrap();
            std::future::pending::<()>().await;
        });
    });
    format!("http://{}", rx.recv().unwrap())
}

/// Write a scenario file into `dir`.
pub fn scenario_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Run ids that have records in a local state directory.
pub fn local_runs(state: &Path) -> Vec<String> {
    std::fs::read_dir(state.join("runs"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Agent pids (which are also their process group ids) recorded for `run_id`.
pub fn agent_pids(state: &Path, run_id: &str) -> Vec<i32> {
    std::fs::read_dir(state.join("runs").join(run_id))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .filter_map(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .filter_map(|v| v["pid"].as_i64().map(|p| p as i32))
                .collect()
        })
        .unwrap_or_default()
}

/// Every live process whose process group is one of `groups`, with its command line.
pub fn processes_in_groups(groups: &[i32]) -> Vec<(i32, String)> {
    liveload_local::procfs::processes()
        .into_iter()
        .filter(|p| groups.contains(&p.pgrp) && p.state != 'Z')
        .map(|p| (p.pid, p.cmdline()))
        .collect()
}

/// Poll `check` until it holds or `timeout` passes; returns whether it held.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait until a run started by `child` has agents recorded in `state`; returns the run id and
/// the agent pids.
pub fn wait_for_agents(state: &Path, child: &mut Child, count: usize) -> (String, Vec<i32>) {
    let mut result = None;
    let ok = eventually(Duration::from_secs(60), || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("liveload exited early with {status}");
        }
        for run in local_runs(state) {
            let pids = agent_pids(state, &run);
            if pids.len() >= count {
                result = Some((run, pids));
                return true;
            }
        }
        false
    });
    assert!(ok, "agents did not appear");
    result.unwrap()
}

/// The Chromium the tests render pages with (the one the agents use).
pub fn chromium() -> PathBuf {
    for name in ["chromium-headless-shell", "chromium"] {
        if let Some(path) = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        }) {
            return path;
        }
    }
    panic!("no Chromium on PATH: run scripts/test.sh, which installs it");
}

/// Send a signal to a process.
pub fn signal(pid: u32, signal: i32) {
    // SAFETY: sending a signal has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

/// Send a signal to every process of a process group.
pub fn signal_group(group: i32, signal: i32) {
    // SAFETY: sending a signal has no memory-safety preconditions.
    unsafe {
        libc::kill(-group, signal);
    }
}

/// Serialises the tests that run many real Chromium contexts, so they do not starve each
/// other of the machine's cores. A lock on a file, not a mutex: `cargo nextest` runs every test
/// in its own process, `cargo test` runs them as threads of one; a file lock holds in both.
/// Released when the returned file is dropped (or the process dies).
pub fn heavy() -> std::fs::File {
    let path = std::env::temp_dir().join("liveload-tests-heavy.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .expect("the heavy-test lock file");
    file.lock().expect("locking the heavy-test lock file");
    file
}

/// `GET path` from a local HTTP server; returns the body.
pub fn http_get(address: &str, path: &str) -> String {
    http_request(address, path, &[]).1
}

/// `GET path` with extra request header lines (`Authorization: ...`); returns the status code
/// and the body. `Host` is `address` unless a header line sets it.
pub fn http_request(address: &str, path: &str, headers: &[&str]) -> (u16, String) {
    status_and_body(&http_exchange(address, "GET", path, headers, None))
}

/// One HTTP/1.1 request (a JSON body when given) on its own connection; the whole response,
/// headers included. `Host` is `address` unless a header line sets it.
pub fn http_exchange(
    address: &str,
    method: &str,
    path: &str,
    headers: &[&str],
    body: Option<&str>,
) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("connects");
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let host = if extra.to_ascii_lowercase().contains("host:") {
        String::new()
    } else {
        format!("Host: {address}\r\n")
    };
    let body_headers = match body {
        Some(body) => format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ),
        None => String::new(),
    };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\n{host}{extra}{body_headers}Connection: close\r\n\r\n{}",
        body.unwrap_or("")
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// A response's status code and body.
pub fn status_and_body(response: &str) -> (u16, String) {
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

/// The bearer token of the control endpoint of run `cluster` in `state`.
pub fn control_token(state: &Path, cluster: &str) -> String {
    std::fs::read_to_string(state.join("control").join(format!("{cluster}.token")))
        .expect("the control endpoint's token file")
}

/// The control endpoint address of the run in `state`, once it is up.
pub fn control_address(state: &Path) -> String {
    let mut address = String::new();
    assert!(
        eventually(Duration::from_secs(60), || {
            let Ok(entries) = std::fs::read_dir(state.join("control")) else {
                return false;
            };
            for entry in entries.flatten() {
                if entry.path().extension().is_some_and(|e| e == "json")
                    && let Ok(text) = std::fs::read_to_string(entry.path())
                    && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
                {
                    address = v["address"].as_str().unwrap_or("").to_string();
                    return !address.is_empty();
                }
            }
            false
        }),
        "no control endpoint"
    );
    address
}

/// An agent executable for `LIVELOAD_AGENT_BIN` that copies its token file to `captured`
/// before starting the real agent (which deletes the file once read): how a test learns the
/// run token without the token ever being anywhere else. Named `liveload-agent` like the real
/// one, in `dir`.
pub fn token_capturing_agent(dir: &Path) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt as _;
    let wrapper = dir.join("liveload-agent");
    let captured = dir.join("captured-token");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ncp \"$LIVELOAD_AGENT_TOKEN_FILE\" '{}'\nexec '{}' \"$@\"\n",
            captured.display(),
            bin("liveload-agent").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    (wrapper, captured)
}

/// The TCP ports (IPv4 and IPv6) that `pid` listens on: the listening sockets of
/// `/proc/net/tcp*` matched by inode against the process's descriptors.
pub fn listening_ports(pid: i32) -> Vec<u16> {
    let mut listening = std::collections::HashMap::new(); // inode -> port
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st ... inode (field 9); st 0A is LISTEN.
            if f.len() > 9 && f[3] == "0A" {
                let port = f[1].rsplit(':').next().unwrap_or("0");
                let port = u16::from_str_radix(port, 16).unwrap_or(0);
                listening.insert(f[9].to_string(), port);
            }
        }
    }
    let mut ports: Vec<u16> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            let inode = link
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .to_string();
            listening.get(&inode).copied()
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// What another local user (`nobody`, no groups) reads back for `GET path` on
/// `127.0.0.1:port`, through bash's `/dev/tcp` under `setpriv`. The first line is that
/// process's uid, so a caller can check who asked.
pub fn get_as_nobody(port: u16, path: &str) -> String {
    let script = format!(
        "id -u; exec 3<>/dev/tcp/127.0.0.1/{port} || exit 0; \
         printf 'GET {path} HTTP/1.1\\r\\nHost: 127.0.0.1:{port}\\r\\nConnection: close\\r\\n\\r\\n' >&3; \
         timeout 3 cat <&3"
    );
    let out = Command::new("setpriv")
        .args([
            "--reuid",
            "nobody",
            "--regid",
            "nogroup",
            "--clear-groups",
            "--",
        ])
        .args(["bash", "-c", &script])
        .output()
        .expect("setpriv runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `liveload run FILE --base-url TARGET --output json` with `extra` arguments, in `state`.
pub fn run_json(
    state: &std::path::Path,
    file: &std::path::Path,
    target: &str,
    extra: &[&str],
) -> (i32, serde_json::Value, std::process::Output) {
    let mut args = vec![
        "run",
        file.to_str().unwrap(),
        "--base-url",
        target,
        "--output",
        "json",
    ];
    args.extend_from_slice(extra);
    json_output(liveload(state).args(args))
}
