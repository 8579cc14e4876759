//! Starting Chromium: its command line, its DevTools pipe, its stderr.
//!
//! The agent starts Chromium itself (chromiumoxide's launcher always opens a DevTools TCP port,
//! which any local process could drive). Chromium gets `--remote-debugging-pipe` and the two
//! ends of two pipes as its descriptors 3 and 4; it then listens on no port at all.

use std::collections::VecDeque;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result};
use command_fds::{CommandFdExt as _, FdMapping};
use tokio::io::AsyncBufReadExt as _;
use tokio::net::unix::pipe;
use tokio::process::Child;

/// Chromium's command line for a profile in `profile_dir`.
pub fn args(profile_dir: &Path, no_sandbox: bool, tuning: &crate::switches::Tuning) -> Vec<String> {
    let mut args = crate::switches::command_line(tuning);
    args.push(format!("--user-data-dir={}", profile_dir.display()));
    if no_sandbox {
        args.extend(["--no-sandbox".into(), "--disable-setuid-sandbox".into()]);
    }
    args
}

/// A started Chromium: the process, the agent's ends of its DevTools pipe, and the last lines
/// it wrote on stderr (to explain a browser that dies while starting).
pub struct Spawned {
    /// The browser process (killed if dropped).
    pub child: Child,
    /// Write end of the pipe Chromium reads commands from (its descriptor 3).
    pub to_chromium: pipe::Sender,
    /// Read end of the pipe Chromium writes answers and events to (its descriptor 4).
    pub from_chromium: pipe::Receiver,
    /// Chromium's last lines on stderr.
    pub stderr_tail: StderrTail,
}

/// The last lines of Chromium's stderr, kept while a task drains the rest (a pipe nobody
/// reads would block Chromium once full).
#[derive(Clone, Default)]
pub struct StderrTail(Arc<Mutex<VecDeque<String>>>);

impl StderrTail {
    const LINES: usize = 12;

    /// The kept lines, oldest first, one per line.
    pub fn text(&self) -> String {
        let lines = self.0.lock().expect("not poisoned");
        lines.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    fn push(&self, line: String) {
        let mut lines = self.0.lock().expect("not poisoned");
        if lines.len() == Self::LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }
}

/// Start `executable` with `args`, its DevTools pipe on descriptors 3 and 4. Chromium stays in
/// the agent's process group (swept at the agent's exit), is killed if the returned child is
/// dropped, and exits by itself when the agent's ends of the pipe close — even when the agent
/// is killed outright.
pub fn spawn(executable: &Path, args: &[String]) -> Result<Spawned> {
    // Blocking pipes: Chromium reads and writes them from a thread of its own and would fail
    // on EAGAIN. Close-on-exec, so no other child inherits them; only the copies moved to 3
    // and 4 (by dup2, which clears the flag) reach Chromium.
    let (commands_read, commands_write) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).context("creating a pipe")?;
    let (answers_read, answers_write) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).context("creating a pipe")?;
    let mut command = tokio::process::Command::new(executable);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
        .fd_mappings(vec![
            FdMapping {
                parent_fd: commands_read,
                child_fd: 3,
            },
            FdMapping {
                parent_fd: answers_write,
                child_fd: 4,
            },
        ])
        .context("mapping Chromium's DevTools descriptors")?;
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {}", executable.display()))?;
    // The command holds Chromium's ends of the pipes: drop it so that, in the agent, only our
    // ends stay open, and the reading end sees EOF when Chromium exits.
    drop(command);
    let stderr_tail = StderrTail::default();
    if let Some(stderr) = child.stderr.take() {
        let tail = stderr_tail.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(target: "chromium", "{line}");
                tail.push(line);
            }
        });
    }
    Ok(Spawned {
        child,
        to_chromium: pipe::Sender::from_owned_fd(commands_write)
            .context("the command pipe to Chromium")?,
        from_chromium: pipe::Receiver::from_owned_fd(answers_read)
            .context("the answer pipe from Chromium")?,
        stderr_tail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Chromium exits by itself once the agent's ends of its pipe close — as they do when the
    /// agent dies, even by SIGKILL — so no browser outlives its agent.
    #[tokio::test]
    async fn chromium_exits_when_its_pipe_closes() {
        let path = crate::facts::find_chromium(None).expect("Chromium on PATH");
        let profile = tempfile::tempdir().unwrap();
        let as_root = rustix::process::geteuid().is_root();
        let mut spawned =
            spawn(&path, &args(profile.path(), as_root, &Default::default())).unwrap();
        // Chromium is up and reading: one command, one answer.
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let command = b"{\"id\":1,\"method\":\"Browser.getVersion\"}\0";
        spawned.to_chromium.write_all(command).await.unwrap();
        let mut answer = vec![0u8; 4096];
        let n = spawned.from_chromium.read(&mut answer).await.unwrap();
        assert!(answer[..n].starts_with(b"{\"id\":1,\"result\""));
        drop(spawned.to_chromium);
        drop(spawned.from_chromium);
        let exited = tokio::time::timeout(Duration::from_secs(10), spawned.child.wait()).await;
        assert!(exited.is_ok(), "Chromium still runs with its pipe closed");
    }
}
