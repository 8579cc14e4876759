//! The endpoint-override hook: how tests (and `liveload --ec2-test-local-agents`) stand in for
//! the network path to instances that an emulator only pretends to run.
//!
//! Without a hook the backend dials each running instance's IP on the agent port. With one, it
//! hands the instance's id and user data to the hook, which starts (or finds) an agent for it
//! and answers the address to dial. [`LocalAgents`] starts a real `liveload-agent` on this
//! machine from the user data — the same settings the AMI's systemd unit would use — and stops
//! it when the instance is terminated, as powering off would.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use liveload_core::{BackendErrorKind, Error, Result};
use tokio::time::Instant;

use crate::user_data::{LAUNCH_DIR, UserData};

/// Maps an instance to the address of its agent.
#[async_trait]
pub trait AgentHook: Send + Sync + std::fmt::Debug {
    /// Instance `id` is running with `user_data` (decoded): return the `host:port` to dial, by
    /// `deadline`.
    async fn agent_address(
        &self,
        id: &str,
        launch_index: u32,
        user_data: &str,
        deadline: Instant,
    ) -> Result<String>;
    /// Instance `id` was terminated.
    async fn terminated(&self, id: &str);
}

/// Real agents on this machine, one per instance, configured from its user data.
#[derive(Debug)]
pub struct LocalAgents {
    agent: PathBuf,
    dir: PathBuf,
    agents: Mutex<HashMap<String, Child>>,
}

impl LocalAgents {
    /// Agents run from `agent`; their files go under `dir`.
    pub fn new(agent: impl Into<PathBuf>, dir: impl Into<PathBuf>) -> Self {
        LocalAgents {
            agent: agent.into(),
            dir: dir.into(),
            agents: Mutex::default(),
        }
    }

    fn stop(child: &mut Child) {
        // The agent leads its own process group: end it and its Chromium.
        let group = rustix::process::Pid::from_raw(child.id() as i32);
        let signal = |signal| {
            if let Some(group) = group {
                let _ = rustix::process::kill_process_group(group, signal);
            }
        };
        signal(rustix::process::Signal::TERM);
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < end {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        signal(rustix::process::Signal::KILL);
        let _ = child.wait();
    }
}

impl Drop for LocalAgents {
    fn drop(&mut self) {
        for (_, mut child) in self.agents.lock().expect("not poisoned").drain() {
            Self::stop(&mut child);
        }
    }
}

fn failed(id: &str, message: String) -> Error {
    Error::from(liveload_core::BackendError::new(
        "ec2",
        BackendErrorKind::NodeFailed,
        format!("instance {id}: {message}"),
    ))
}

#[async_trait]
impl AgentHook for LocalAgents {
    async fn agent_address(
        &self,
        id: &str,
        launch_index: u32,
        user_data: &str,
        deadline: Instant,
    ) -> Result<String> {
        let mut data = UserData::parse(user_data)
            .ok_or_else(|| failed(id, "its user data is not liveload's".into()))?;
        // A batch's user data carries every node's token: keep this instance's, as the script
        // does on a real instance with its launch index.
        let own = crate::user_data::indexed_token_name(launch_index);
        if data.launch.files.iter().any(|f| f.name == own) {
            data.launch
                .files
                .retain(|f| !f.name.starts_with("token.") || f.name == own);
            if let Some(token) = data.launch.files.iter_mut().find(|f| f.name == own) {
                token.name = liveload_core::launch::file::TOKEN.to_string();
            }
        }
        let dir = self.dir.join(id);
        let _ = std::fs::remove_dir_all(&dir);
        liveload_core::backend::write_launch_files(&dir, &data.launch.files)
            .map_err(|e| Error::io("writing an agent's launch files", e))?;
        // The files live in this stand-in's directory instead of the instance's.
        let launch = data
            .launch
            .relocated(LAUNCH_DIR, &dir.display().to_string());
        let ready = dir.join("ready");
        let mut command = Command::new(&self.agent);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(launch.env.iter().map(|(k, v)| (*k, v)))
            // On an instance the agent listens on every address; here, on loopback.
            .env(liveload_core::launch::var::LISTEN, "127.0.0.1:0")
            .arg("--ready-file")
            .arg(&ready)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = command
            .spawn()
            .map_err(|e| failed(id, format!("cannot start {}: {e}", self.agent.display())))?;
        self.agents
            .lock()
            .expect("not poisoned")
            .insert(id.to_string(), child);
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready)
                && let Ok(json) = serde_json::from_str::<serde_json::Value>(&text)
                && let Some(address) = json["address"].as_str()
            {
                return Ok(address.to_string());
            }
            if Instant::now() >= deadline {
                return Err(liveload_core::BackendError::new(
                    "ec2",
                    BackendErrorKind::NotReady,
                    format!("instance {id}: the agent has not written its ready file"),
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn terminated(&self, id: &str) {
        let child = self.agents.lock().expect("not poisoned").remove(id);
        if let Some(mut child) = child {
            let _ = tokio::task::spawn_blocking(move || Self::stop(&mut child)).await;
        }
        let _ = std::fs::remove_dir_all(self.dir.join(id));
    }
}
