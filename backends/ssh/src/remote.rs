//! The shell commands liveload runs on a host, in one place (POSIX `sh`, Linux `/proc`).
//!
//! Layout under the remote directory (`~/.liveload` unless told otherwise):
//! ```text
//! bin/liveload-agent-<sha256>      the agent, named by its checksum (uploaded once per version;
//!                                  written under a temporary name, then renamed)
//! runs/<run id>/<node index>/pid   the agent's pid (it leads its own session and group)
//!                          /ready  what the agent writes once listening: {"address", "pid"}
//!                          /log    its stderr
//! ```
//! An agent is recognised as a run's by `LIVELOAD_AGENT_RUN_ID=<run>` in its `/proc/PID/environ`, so
//! a recycled pid is never signalled.

/// Quote `value` for `sh`: `'...'` with every `'` written as `'\''`.
pub fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// The remote directory as a shell word: a leading `~/` becomes `"$HOME"/`.
pub fn dir_word(dir: &str) -> String {
    match dir.strip_prefix("~/") {
        Some(rest) => format!("\"$HOME\"/{}", quote(rest)),
        None => quote(dir),
    }
}

/// Print the host's architecture, then the first Chromium found on its PATH (or an empty
/// line), then the agent versions already uploaded (one file name a line). One command: each
/// costs a round trip and a session on the host.
pub fn inspect(root: &str) -> String {
    format!(
        "uname -m; p=; for c in chromium-headless-shell chromium chromium-browser google-chrome; do \
         p=$(command -v \"$c\" 2>/dev/null) && break; p=; done; echo \"$p\"; \
         ls {root}/bin 2>/dev/null; true"
    )
}

/// Write standard input to `bin/<bin>` atomically (a temporary name, then a rename).
pub fn upload(root: &str, bin: &str) -> String {
    format!(
        "set -e; mkdir -p {root}/bin; b={root}/bin/{bin}; t=\"$b.tmp.$$\"; \
         cat > \"$t\"; chmod 700 \"$t\"; mv -f \"$t\" \"$b\"",
        bin = quote(bin)
    )
}

/// Start the agent for node `index` of `run` after sourcing the setup read from standard input
/// (the launch files written with `printf`, then `KEY='value'` lines: the token never appears
/// on a command line), in its own session, detached from the SSH channel. The setup file is
/// private (umask 077) and removed before the agent starts; the agent deletes its secret files
/// once read.
pub fn start(root: &str, bin: &str, run: &str, index: u32) -> String {
    format!(
        "set -e; umask 077; d={root}/runs/{run}/{index}; mkdir -p \"$d\"; cd \"$d\"; \
         cat > env; rm -f ready; \
         ( set -a; . ./env; set +a; rm -f env; exec setsid {root}/bin/{bin} --ready-file \"$d/ready\" ) \
           </dev/null >log 2>&1 & \
         echo $! > pid; \
         i=0; while [ ! -s ready ] && [ $i -lt 100 ] && kill -0 \"$(cat pid)\" 2>/dev/null; do \
           sleep 0.02; i=$((i+1)); done; \
         rm -f env",
        run = quote(run),
        bin = quote(bin)
    )
}

/// Wait up to `tenths` tenths of a second for node `index`'s agent to be listening; print its
/// `ready` file, or exit 3 with the log's tail when the agent died, or 4 on time-out.
pub fn wait_ready(root: &str, run: &str, index: u32, tenths: u64) -> String {
    format!(
        "d={root}/runs/{run}/{index}; i=0; \
         while [ ! -s \"$d/ready\" ]; do \
           if ! kill -0 \"$(cat \"$d/pid\" 2>/dev/null)\" 2>/dev/null; then \
             tail -n 20 \"$d/log\" >&2 2>/dev/null; exit 3; fi; \
           [ $i -ge {tenths} ] && exit 4; sleep 0.1; i=$((i+1)); done; \
         cat \"$d/ready\"",
        run = quote(run),
    )
}

/// Stop node `index`'s agent (TERM to its group, KILL after 5 s) and remove its directory.
/// Idempotent: a missing directory or a dead agent is fine.
pub fn stop(root: &str, run: &str, index: u32) -> String {
    format!(
        "r={root}/runs/{run}; d=\"$r\"/{index}; \
         if [ -f \"$d/pid\" ]; then pid=$(cat \"$d/pid\"); \
           if tr '\\0' '\\n' < /proc/\"$pid\"/environ 2>/dev/null | grep -qx {env}; then \
             kill -TERM -- -\"$pid\" 2>/dev/null || kill -TERM \"$pid\" 2>/dev/null || true; \
             i=0; while kill -0 \"$pid\" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; \
             kill -KILL -- -\"$pid\" 2>/dev/null || true; fi; fi; \
         rm -rf \"$d\"; rmdir \"$r\" 2>/dev/null; true",
        run = quote(run),
        env = quote(&format!("{}={run}", liveload_core::launch::var::RUN_ID)),
    )
}

/// One line per node directory: `<run> <index> <pid or -> <1 if the agent is alive, else 0>
/// <expires-at Unix seconds or ->`.
pub fn list(root: &str) -> String {
    format!(
        "for d in {root}/runs/*/*/; do [ -d \"$d\" ] || continue; d=${{d%/}}; \
           index=${{d##*/}}; r=${{d%/*}}; run=${{r##*/}}; pid=$(cat \"$d/pid\" 2>/dev/null || echo -); \
           alive=0; tr '\\0' '\\n' < /proc/\"$pid\"/environ 2>/dev/null | grep -qx \"LIVELOAD_AGENT_RUN_ID=$run\" && alive=1; \
           exp=$(cat \"$d/expires\" 2>/dev/null || echo -); \
           echo \"$run $index $pid $alive $exp\"; done; true"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_quotes_and_spaces() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(dir_word("~/.liveload"), "\"$HOME\"/'.liveload'");
        assert_eq!(dir_word("/tmp/x y"), "'/tmp/x y'");
    }

    /// The scripts are valid `sh` (parsed, not run).
    #[test]
    fn every_script_parses() {
        let root = dir_word("~/.liveload");
        for script in [
            inspect(&root),
            upload(&root, "liveload-agent-abc"),
            start(&root, "liveload-agent-abc", "run-1", 0),
            wait_ready(&root, "run-1", 0, 50),
            stop(&root, "run-1", 0),
            list(&root),
        ] {
            let out = std::process::Command::new("sh")
                .args(["-n", "-c", &script])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{script}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
