//! The parts of Fly's Machines API liveload uses, as typed requests and responses.
//!
//! Field names follow Fly's published OpenAPI description (`tests/fixtures/fly-machines-openapi.json`),
//! which the contract tests validate every request against.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `POST /apps/{app}/machines`.
#[derive(Debug, Clone, Serialize)]
pub struct CreateMachineRequest {
    /// Unique within the app: liveload derives it from run id and node index, so a retried
    /// create after a lost response finds the first machine instead of making a second.
    pub name: String,
    /// Region code (`iad`, `fra`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The machine's configuration.
    pub config: MachineConfig,
    /// Create it stopped (warm pools).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_launch: Option<bool>,
}

/// `POST /apps/{app}/machines/{id}`: replace a machine's configuration.
#[derive(Debug, Clone, Serialize)]
pub struct UpdateMachineRequest {
    /// The new configuration.
    pub config: MachineConfig,
    /// Leave it stopped instead of (re)starting it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_launch: Option<bool>,
}

/// `fly.MachineConfig`, the fields liveload sets.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct MachineConfig {
    /// Container image.
    #[serde(default)]
    pub image: String,
    /// Environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// CPU and memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<Guest>,
    /// Free-form tags: liveload's run id, node index and expiry live here.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Destroy the machine when its main process exits.
    #[serde(default)]
    pub auto_destroy: bool,
    /// Restart policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<Restart>,
    /// Ports Fly's proxy exposes on the app's public address (public mode only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<MachineService>,
    /// Files Fly writes into the machine before starting it (the agent's secret files).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<MachineFile>,
}

/// `fly.File`: a file written into the machine at boot.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MachineFile {
    /// Absolute path inside the machine.
    pub guest_path: String,
    /// The contents, base64.
    pub raw_value: String,
    /// Permission bits (chmod(2)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

impl std::fmt::Debug for MachineFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The contents may be the run token: the path only.
        write!(f, "MachineFile({})", self.guest_path)
    }
}

/// `fly.MachineService`: one internal port exposed through Fly's proxy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MachineService {
    /// `tcp`.
    pub protocol: String,
    /// The port the agent listens on inside the machine.
    pub internal_port: u16,
    /// Public ports and how the proxy handles them.
    pub ports: Vec<MachinePort>,
    /// Never let the proxy start a machine (a stopped agent machine is finished or pooled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autostart: Option<bool>,
    /// `off`: never let the proxy stop a machine mid-run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autostop: Option<String>,
}

/// `fly.MachinePort`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MachinePort {
    /// The public port.
    pub port: u16,
    /// `tls` terminates TLS at Fly's edge, `http` lets it route by header
    /// (`fly-force-instance-id`) and carry WebSocket upgrades.
    pub handlers: Vec<String>,
}

/// `fly.MachineGuest`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Guest {
    /// `shared` or `performance`.
    pub cpu_kind: CpuKind,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Memory in MiB.
    pub memory_mb: u32,
}

/// Fly's CPU kinds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CpuKind {
    /// Shared vCPUs.
    Shared,
    /// Dedicated vCPUs.
    Performance,
    /// A kind this version does not know (read from responses only).
    #[serde(other)]
    Other,
}

/// `fly.MachineRestart`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Restart {
    /// `no`: an agent that exits is done; the machine then destroys itself.
    pub policy: String,
}

/// A machine as the API describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct Machine {
    /// Its id.
    pub id: String,
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// `created`, `starting`, `started`, `stopping`, `stopped`, `destroying`, `destroyed`, ...
    #[serde(default)]
    pub state: String,
    /// Its region.
    #[serde(default)]
    pub region: String,
    /// Its address on the organisation's private network (6PN).
    #[serde(default)]
    pub private_ip: Option<String>,
    /// Its configuration (carries the metadata).
    #[serde(default)]
    pub config: Option<MachineConfig>,
}

impl Machine {
    /// A metadata value.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.config.as_ref()?.metadata.get(key).map(String::as_str)
    }

    /// Gone, or on its way there.
    pub fn is_gone(&self) -> bool {
        matches!(self.state.as_str(), "destroying" | "destroyed")
    }
}

/// The error body Fly returns.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct ErrorBody {
    /// What went wrong.
    #[serde(default)]
    pub error: String,
}
