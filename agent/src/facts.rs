//! What this node really is: memory, cores, cgroup limits, Chromium.
//!
//! The controller sizes the cluster from these figures, so they must be the ones that bind: a
//! container's cgroup limit, not the host's RAM; a local agent's share of the host, not the
//! whole host. The cgroup limits (v1 and v2) come from [`crate::cgroup`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use liveload_proto::{BrowserInfo, NodeFacts};

use crate::cgroup::CgroupLimits;

/// Find the Chromium to launch: an explicit path, else Debian's `chromium-headless-shell`, else
/// `chromium` (and the usual other names) on `PATH`.
pub fn find_chromium(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = explicit {
        return Some(path.to_path_buf());
    }
    let names = [
        "chromium-headless-shell",
        "chromium",
        "chromium-browser",
        "google-chrome",
    ];
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    for name in names {
        for dir in std::env::split_paths(&path_var) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    let debian = Path::new("/usr/lib/chromium/chromium-headless-shell");
    debian.is_file().then(|| debian.to_path_buf())
}

/// Ask a Chromium executable for its version (`--version`).
pub fn chromium_version(path: &Path) -> Option<String> {
    let mut child = std::process::Command::new(path)
        .arg("--version")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    // A wedged binary must not hang the agent's start.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take()?, &mut out).ok()?;
    let version = out.trim().to_string();
    (!version.is_empty()).then_some(version)
}

/// Measure this node's facts.
pub fn measure(host_share: Option<u32>, chromium: Option<BrowserInfo>) -> NodeFacts {
    let mut system = sysinfo::System::new();
    system.refresh_memory();
    let total = system.total_memory();
    let available = system.available_memory();
    // Logical cores this process may be scheduled on (CPU affinity respected); the cgroup
    // quota is applied separately below, so it shows in the facts.
    let logical_cores = sched_cpu_count().unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1)
    });
    let cgroup = crate::cgroup::read();
    tracing::info!(
        version = ?cgroup.version,
        memory_max = ?cgroup.memory_max,
        cpu_max = ?cgroup.cpu_max,
        "cgroup limits"
    );
    let share = host_share.unwrap_or(1).max(1);
    derive_facts(
        RawFacts {
            total,
            available,
            logical_cores,
            cgroup,
        },
        host_share,
        share,
        chromium,
    )
}

/// CPUs in this process's affinity mask.
fn sched_cpu_count() -> Option<u32> {
    rustix::thread::sched_getaffinity(None)
        .ok()
        .map(|set| set.count())
}

/// The raw figures [`measure`] reads.
#[derive(Debug, Clone, Copy)]
pub struct RawFacts {
    /// Host memory, bytes.
    pub total: u64,
    /// Host available memory, bytes.
    pub available: u64,
    /// Logical cores this process may run on.
    pub logical_cores: u32,
    /// cgroup limits.
    pub cgroup: CgroupLimits,
}

/// Combine raw figures into facts: cgroup limits win over the host, then the share divides.
pub fn derive_facts(
    raw: RawFacts,
    host_share: Option<u32>,
    share: u32,
    chromium: Option<BrowserInfo>,
) -> NodeFacts {
    let mut memory = raw.available;
    if let Some(max) = raw.cgroup.memory_max {
        let free_in_cgroup = max.saturating_sub(raw.cgroup.memory_current.unwrap_or(0));
        memory = memory.min(free_in_cgroup);
    }
    let mut cores = raw.logical_cores as f64;
    if let Some(limit) = raw.cgroup.cpu_max {
        cores = cores.min(limit);
    }
    NodeFacts {
        hostname: sysinfo::System::host_name().unwrap_or_else(|| "unknown".into()),
        arch: std::env::consts::ARCH.to_string(),
        total_memory_bytes: raw.total,
        available_memory_bytes: raw.available,
        logical_cores: raw.logical_cores,
        cgroup_memory_limit_bytes: raw.cgroup.memory_max,
        cgroup_cpu_limit: raw.cgroup.cpu_max,
        host_share,
        effective_memory_bytes: memory / share as u64,
        effective_cores: cores / share as f64,
        chromium,
        max_users: None,
    }
}

/// Memory per user in the agent's own bound: a sixth of what sizing plans per browser context
/// (24 MiB), so the bound never refuses what sizing assigned, yet refuses absurd counts.
pub const BOUND_BYTES_PER_USER: u64 = 4 << 20;

/// The most users this agent accepts at once, from its own facts: the operator's `max_users`
/// when set, else its memory (`effective_memory_bytes`) / 4 MiB (16 KiB for protocol users),
/// and never less than 1. The
/// controller sizes nodes well below it; a token holder talking to the agent directly cannot
/// make it create more contexts than the node could ever hold.
pub fn user_bound(facts: &NodeFacts, per_user: u64) -> u64 {
    let per_user = per_user.max(1);
    match facts.max_users {
        Some(max) => u64::from(max),
        None => (facts.effective_memory_bytes / per_user).max(1),
    }
}

/// The bound's memory per user of an engine: [`BOUND_BYTES_PER_USER`] for a browser user,
/// [`BOUND_BYTES_PER_PROTOCOL_USER`] for the others.
pub fn bound_bytes_per_user(engine: liveload_proto::Engine) -> u64 {
    match engine {
        liveload_proto::Engine::Browser => BOUND_BYTES_PER_USER,
        liveload_proto::Engine::Http | liveload_proto::Engine::Liveview => {
            BOUND_BYTES_PER_PROTOCOL_USER
        }
    }
}

/// The bound's memory per user of an assignment: its engine's, or a mixed run's average over
/// its groups' users (a node holding 200 browsers and 20,000 protocol users is bounded by
/// what they cost together, not as 20,200 browsers).
pub fn assignment_bytes_per_user(assignment: &liveload_proto::Assignment) -> u64 {
    let users: u64 = assignment.groups.iter().map(|g| g.users).sum();
    if users == 0 {
        return bound_bytes_per_user(assignment.engine);
    }
    let total: u128 = assignment
        .groups
        .iter()
        .map(|g| u128::from(g.users) * u128::from(bound_bytes_per_user(g.engine)))
        .sum();
    u64::try_from(total / u128::from(users)).unwrap_or(u64::MAX)
}

/// Memory per protocol user (`engine: http`) in the agent's own bound: a sixteenth of what
/// sizing plans per protocol user (256 KiB), a few times what one measured (18-24 KiB).
pub const BOUND_BYTES_PER_PROTOCOL_USER: u64 = 16 << 10;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_limits_win_over_the_host() {
        let limits = CgroupLimits {
            memory_max: Some(2 << 30),
            memory_current: Some(512 << 20),
            memory_inactive_file: None,
            cpu_max: Some(2.0),
            version: Some(crate::cgroup::Version::V1),
        };
        let facts = derive_facts(
            RawFacts {
                total: 64 << 30,
                available: 60 << 30,
                logical_cores: 16,
                cgroup: limits,
            },
            None,
            1,
            None,
        );
        assert_eq!(facts.cgroup_memory_limit_bytes, Some(2 << 30));
        assert_eq!(facts.cgroup_cpu_limit, Some(2.0));
        assert_eq!(facts.effective_memory_bytes, (2 << 30) - (512 << 20));
        assert_eq!(facts.effective_cores, 2.0);
        // 1.5 GiB / 4 MiB (16 KiB for protocol users); an operator's cap replaces the memory
        // rule.
        use liveload_proto::Engine;
        let per = bound_bytes_per_user;
        assert_eq!(user_bound(&facts, per(Engine::Browser)), 384);
        assert_eq!(user_bound(&facts, per(Engine::Http)), 98_304);
        // A mix: 1 browser and 3 protocol users cost (4 MiB + 3 x 16 KiB) / 4 each.
        let mut mixed = liveload_proto::Assignment::new("r", "m", "http://x", 4, vec![]);
        let group = |engine, first, users| liveload_proto::UserGroup {
            name: format!("{engine:?}"),
            engine,
            first_user_id: first,
            users,
            steps: vec![],
            user_loop: Default::default(),
        };
        mixed.groups = vec![group(Engine::Browser, 0, 1), group(Engine::Http, 1, 3)];
        assert_eq!(
            assignment_bytes_per_user(&mixed),
            ((4 << 20) + 3 * (16 << 10)) / 4
        );
        let capped = NodeFacts {
            max_users: Some(10),
            ..facts.clone()
        };
        assert_eq!(user_bound(&capped, per(Engine::Http)), 10);
        let tiny = NodeFacts {
            effective_memory_bytes: 1 << 20,
            ..facts
        };
        assert_eq!(user_bound(&tiny, per(Engine::Browser)), 1);
    }

    #[test]
    fn share_divides_the_host() {
        let facts = derive_facts(
            RawFacts {
                total: 8 << 30,
                available: 8 << 30,
                logical_cores: 4,
                cgroup: CgroupLimits::default(),
            },
            Some(4),
            4,
            None,
        );
        assert_eq!(facts.effective_memory_bytes, 2 << 30);
        assert_eq!(facts.effective_cores, 1.0);
    }

    #[test]
    fn measures_this_machine() {
        let facts = measure(None, None);
        assert!(facts.total_memory_bytes > 0);
        assert!(facts.effective_memory_bytes <= facts.available_memory_bytes);
        assert!(facts.logical_cores >= 1);
    }
}
