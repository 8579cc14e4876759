//! What this node really is: memory, cores, cgroup limits, Chromium.
//!
//! The controller sizes the cluster from these figures, so they must be the ones that bind: a
//! container's cgroup limit, not the host's RAM; a local agent's share of the host, not the
//! whole host.

use std::path::{Path, PathBuf};
use std::time::Duration;

use liveload_proto::{BrowserInfo, NodeFacts};

/// cgroup v2 limits that apply to this process (the smallest along its cgroup path).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct CgroupLimits {
    /// `memory.max`, bytes.
    pub memory_max: Option<u64>,
    /// `memory.current` of the leaf cgroup, bytes.
    pub memory_current: Option<u64>,
    /// `cpu.max` as cores.
    pub cpu_max: Option<f64>,
}

/// Read cgroup v2 limits for this process from `root` (normally `/sys/fs/cgroup`), using the
/// path in `proc_self_cgroup` (the text of `/proc/self/cgroup`).
pub fn cgroup_limits(root: &Path, proc_self_cgroup: &str) -> CgroupLimits {
    // cgroup v2 has one line: "0::/some/path".
    let Some(path) = proc_self_cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
    else {
        return CgroupLimits::default();
    };
    let leaf = root.join(path.trim().trim_start_matches('/'));
    let mut limits = CgroupLimits {
        memory_current: read_number(&leaf.join("memory.current")),
        ..Default::default()
    };
    // Walk from the leaf to the root: a parent's limit binds its children too.
    let mut dir = Some(leaf.as_path());
    while let Some(d) = dir {
        if !d.starts_with(root) {
            break;
        }
        if let Some(max) = read_number(&d.join("memory.max")) {
            limits.memory_max = Some(limits.memory_max.map_or(max, |m| m.min(max)));
        }
        if let Some(cores) = read_cpu_max(&d.join("cpu.max")) {
            limits.cpu_max = Some(limits.cpu_max.map_or(cores, |c| c.min(cores)));
        }
        dir = d.parent();
    }
    limits
}

/// A number file; `max` (no limit) and missing files give `None`.
fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `cpu.max` is `"<quota> <period>"` or `"max <period>"`.
fn read_cpu_max(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut parts = text.split_whitespace();
    let quota: f64 = parts.next()?.parse().ok()?;
    let period: f64 = parts.next()?.parse().ok()?;
    (period > 0.0).then_some(quota / period)
}

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
    let proc_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let cgroup = cgroup_limits(Path::new("/sys/fs/cgroup"), &proc_cgroup);
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
/// when set, else its memory (`effective_memory_bytes`) / 4 MiB, and never less than 1. The
/// controller sizes nodes well below it; a token holder talking to the agent directly cannot
/// make it create more contexts than the node could ever hold.
pub fn user_bound(facts: &NodeFacts) -> u64 {
    match facts.max_users {
        Some(max) => u64::from(max),
        None => (facts.effective_memory_bytes / BOUND_BYTES_PER_USER).max(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn container_limits_win_over_the_host() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        write(&r.join("kubepods/memory.max"), "max\n");
        write(&r.join("kubepods/cpu.max"), "200000 100000\n");
        write(&r.join("kubepods/pod1/memory.max"), "2147483648\n");
        write(&r.join("kubepods/pod1/memory.current"), "536870912\n");
        write(&r.join("kubepods/pod1/cpu.max"), "max 100000\n");
        let limits = cgroup_limits(r, "0::/kubepods/pod1\n");
        assert_eq!(limits.memory_max, Some(2 << 30));
        assert_eq!(limits.memory_current, Some(512 << 20));
        assert_eq!(limits.cpu_max, Some(2.0));

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
        assert_eq!(facts.effective_memory_bytes, (2 << 30) - (512 << 20));
        assert_eq!(facts.effective_cores, 2.0);
        // 1.5 GiB / 4 MiB; an operator's cap replaces the memory rule.
        assert_eq!(user_bound(&facts), 384);
        let capped = NodeFacts {
            max_users: Some(10),
            ..facts.clone()
        };
        assert_eq!(user_bound(&capped), 10);
        let tiny = NodeFacts {
            effective_memory_bytes: 1 << 20,
            ..facts
        };
        assert_eq!(user_bound(&tiny), 1);
    }

    #[test]
    fn no_cgroup_v2_means_no_limits() {
        let root = tempfile::tempdir().unwrap();
        let limits = cgroup_limits(root.path(), "12:memory:/foo\n");
        assert_eq!(limits, CgroupLimits::default());
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
