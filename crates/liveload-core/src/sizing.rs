//! How many users a node can host, and how many nodes a run needs.
//!
//! The formula is DESIGN.md's, applied to each node's own measured facts:
//!
//! ```text
//! usable         = available_memory * memory_safety_factor - reserved_headroom
//! by_memory      = max(0, usable - browser_memory) / context_memory
//! by_cpu         = cores * browser_contexts_per_core
//! users_per_node = min(by_memory, by_cpu)              # 0 -> node_too_small
//! necessary      = ceil(users / users_per_node)        # > max_allowed_nodes -> error
//! ```

use liveload_proto::NodeFacts;
use serde::Serialize;

use crate::backend::NodeSize;
use crate::{Error, Result};

const MIB: u64 = 1024 * 1024;

/// What one browser and each of its contexts cost on a node.
///
/// The defaults were measured with `liveload bench users` on Debian's `chromium-headless-shell`
/// 156 against the demo page (README, "Measured figures"), with a margin on top:
/// - browser alone: 133.5 MiB PSS (6 processes) -> 160 MiB;
/// - each user (context + page + its renderer): 14.8-18.8 MiB PSS marginal -> 24 MiB;
/// - CPU: users looping navigate / wait / think 1-2 s kept 2 cores 37 % busy at 10 users per
///   core and 72 % busy at 20 per core, where navigation p95 tripled; 15 per core (~55 %)
///   leaves the browser headroom so it measures the target, not itself.
///
/// Heavier pages cost more: measure yours with `liveload bench users --url URL` and pass the
/// figures with `--browser-memory-mib`, `--context-memory-mib`, `--contexts-per-core`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct BrowserProfile {
    /// Memory of a browser with no context open (PSS of its process tree), in bytes.
    pub browser_memory_usage_bytes: u64,
    /// Memory each additional context with one page adds, in bytes.
    pub context_memory_usage_bytes: u64,
    /// Contexts one core can drive while the page stays responsive.
    pub browser_contexts_per_core: f64,
}

impl Default for BrowserProfile {
    fn default() -> Self {
        BrowserProfile {
            browser_memory_usage_bytes: 160 * MIB,
            context_memory_usage_bytes: 24 * MIB,
            browser_contexts_per_core: 15.0,
        }
    }
}

/// What a protocol-users agent costs before its first user (see [`BrowserProfile::for_engine`]).
pub const PROTOCOL_AGENT_BYTES: u64 = 32 << 20;

impl BrowserProfile {
    /// The built-in profile of an engine's users. Protocol users (`engine: http`) have no
    /// browser; each is an HTTP client with its own connection pool and cookie jar, and a
    /// WebSocket. `liveload bench protocol` measured 18 KiB of the agent's memory per idle
    /// user and 24 KiB per active one (a message and its reply a second), and 5,000 active
    /// users took 37 % of one core (README, "Density"). Counted here: 256 KiB per user (room
    /// for real answers' bodies, up to 1 MiB kept per request) and 1,000 users per core
    /// (room for TLS and JSON, which the bench's plain `ws://` does not cost). LiveView users
    /// (`engine: liveview`) are protocol users too, with the view's merged tree and a task
    /// that keeps their socket alive: see the README's density table.
    pub fn for_engine(engine: liveload_proto::Engine) -> Self {
        match engine {
            liveload_proto::Engine::Browser => BrowserProfile::default(),
            liveload_proto::Engine::Http | liveload_proto::Engine::Liveview => BrowserProfile {
                // No browser: the fixed cost is the agent's own (its runtime, one TLS
                // configuration), 20-25 MiB measured with one user. Counting it keeps the
                // memory watchdog from charging it to the first users.
                browser_memory_usage_bytes: PROTOCOL_AGENT_BYTES,
                context_memory_usage_bytes: 256 * 1024,
                browser_contexts_per_core: 1_000.0,
            },
        }
    }
}

/// Every knob of the sizing formula.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct SizingConfig {
    /// Fraction of available memory liveload lets itself use (default 0.8).
    pub memory_safety_factor: f64,
    /// Memory kept free for the OS and the agent, in bytes (default 512 MiB).
    pub reserved_headroom_bytes: u64,
    /// The browser's costs.
    pub profile: BrowserProfile,
}

impl Default for SizingConfig {
    fn default() -> Self {
        SizingConfig {
            memory_safety_factor: 0.8,
            reserved_headroom_bytes: 512 * MIB,
            profile: BrowserProfile::default(),
        }
    }
}

/// The result of sizing one node, with the intermediate figures (`liveload plan` shows them).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct NodeCapacity {
    /// Memory users may take, after the safety factor and headroom, in bytes.
    pub usable_memory_bytes: u64,
    /// Users memory allows.
    pub by_memory: u64,
    /// Users cores allow.
    pub by_cpu: u64,
    /// `min(by_memory, by_cpu)`, and never above the node's `max_users` cap.
    pub users: u64,
}

impl SizingConfig {
    /// Check the knobs are sane.
    pub fn validate(&self) -> Result<()> {
        let bad = |option: &str, message: &str| {
            Err(Error::InvalidOption {
                option: option.into(),
                message: message.into(),
            })
        };
        if !(self.memory_safety_factor > 0.0 && self.memory_safety_factor <= 1.0) {
            return bad("--memory-safety-factor", "must be in (0, 1]");
        }
        if self.profile.context_memory_usage_bytes == 0 {
            return bad("--context-memory-mib", "must be more than 0");
        }
        if !(self.profile.browser_contexts_per_core > 0.0
            && self.profile.browser_contexts_per_core.is_finite())
        {
            return bad("--contexts-per-core", "must be more than 0");
        }
        Ok(())
    }

    /// Users a node of this memory and core count can host.
    pub fn capacity(&self, memory_bytes: u64, cores: f64) -> NodeCapacity {
        let usable = (memory_bytes as f64 * self.memory_safety_factor) as u64;
        let usable = usable.saturating_sub(self.reserved_headroom_bytes);
        let by_memory = usable.saturating_sub(self.profile.browser_memory_usage_bytes)
            / self.profile.context_memory_usage_bytes;
        let by_cpu = (cores * self.profile.browser_contexts_per_core)
            .floor()
            .max(0.0) as u64;
        NodeCapacity {
            usable_memory_bytes: usable,
            by_memory,
            by_cpu,
            users: by_memory.min(by_cpu),
        }
    }

    /// Users a node can host, from its measured facts.
    pub fn capacity_of(&self, facts: &NodeFacts) -> NodeCapacity {
        let mut capacity = self.capacity(facts.effective_memory_bytes, facts.effective_cores);
        if let Some(cap) = facts.max_users {
            capacity.users = capacity.users.min(u64::from(cap));
        }
        capacity
    }

    /// Users a node of the catalogue size can host (planning only).
    pub fn capacity_of_size(&self, size: &NodeSize) -> NodeCapacity {
        self.capacity(size.memory_bytes, size.cores)
    }

    /// [`capacity_of`](Self::capacity_of), or `node_too_small` when it is 0.
    pub fn check_node(&self, node: &str, facts: &NodeFacts) -> Result<NodeCapacity> {
        let capacity = self.capacity_of(facts);
        if capacity.users == 0 {
            return Err(Error::NodeTooSmall {
                node: node.to_string(),
                memory_mib: capacity.usable_memory_bytes / MIB,
                cores: facts.effective_cores,
                needed_mib: (self.profile.browser_memory_usage_bytes
                    + self.profile.context_memory_usage_bytes)
                    / MIB,
            });
        }
        Ok(capacity)
    }
}

/// Nodes needed for `users` at `users_per_node` each, checked against `max_allowed`.
pub fn necessary_nodes(users: u64, users_per_node: u64, max_allowed: u64) -> Result<u64> {
    debug_assert!(users_per_node > 0);
    let necessary = users.div_ceil(users_per_node.max(1)).max(1);
    if necessary > max_allowed {
        return Err(Error::NecessaryNodesExceedsMaxAllowedNodes {
            necessary,
            max_allowed,
            users,
            users_per_node,
        });
    }
    Ok(necessary)
}

/// Spread `users` over nodes in proportion to their capacities, never above a node's capacity.
///
/// Returns the user count per node, in the order of `capacities`. The caller has checked that
/// the capacities add up to at least `users`.
pub fn assign_users(users: u64, capacities: &[u64]) -> Vec<u64> {
    let total: u64 = capacities.iter().sum();
    if total == 0 {
        return vec![0; capacities.len()];
    }
    let users = users.min(total);
    // Largest-remainder method: floor of each proportional share, then hand the leftover users
    // one by one to the nodes with the largest remainders that still have room.
    let mut shares: Vec<u64> = capacities
        .iter()
        .map(|&c| ((users as u128 * c as u128) / total as u128) as u64)
        .collect();
    let mut left = users - shares.iter().sum::<u64>();
    let mut order: Vec<usize> = (0..capacities.len()).collect();
    order.sort_by_key(|&i| {
        std::cmp::Reverse((users as u128 * capacities[i] as u128) % total as u128)
    });
    while left > 0 {
        for &i in &order {
            if left == 0 {
                break;
            }
            if shares[i] < capacities[i] {
                shares[i] += 1;
                left -= 1;
            }
        }
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GIB: u64 = 1024 * MIB;

    fn config() -> SizingConfig {
        SizingConfig {
            memory_safety_factor: 0.8,
            reserved_headroom_bytes: 512 * MIB,
            profile: BrowserProfile {
                browser_memory_usage_bytes: 200 * MIB,
                context_memory_usage_bytes: 50 * MIB,
                browser_contexts_per_core: 10.0,
            },
        }
    }

    #[test]
    fn formula_matches_design() {
        // 4 GiB: usable = 3276.8 - 512 = 2764 MiB; by_memory = (2764 - 200) / 50 = 51.
        let c = config().capacity(4 * GIB, 8.0);
        assert_eq!(c.by_memory, 51);
        assert_eq!(c.by_cpu, 80);
        assert_eq!(c.users, 51);
        // CPU-bound: 2 cores * 10.
        assert_eq!(config().capacity(64 * GIB, 2.0).users, 20);
        // Fractional cgroup cores floor.
        assert_eq!(config().capacity(64 * GIB, 1.55).users, 15);
    }

    #[test]
    fn an_operators_cap_lowers_a_nodes_capacity_but_never_raises_it() {
        let mut facts = NodeFacts {
            hostname: "lab-1".into(),
            arch: "x86_64".into(),
            total_memory_bytes: 64 * GIB,
            available_memory_bytes: 64 * GIB,
            logical_cores: 8,
            cgroup_memory_limit_bytes: None,
            cgroup_cpu_limit: None,
            host_share: None,
            effective_memory_bytes: 64 * GIB,
            effective_cores: 8.0,
            chromium: None,
            max_users: None,
        };
        assert_eq!(config().capacity_of(&facts).users, 80);
        facts.max_users = Some(25);
        assert_eq!(config().capacity_of(&facts).users, 25);
        facts.max_users = Some(500);
        assert_eq!(config().capacity_of(&facts).users, 80);
    }

    #[test]
    fn tiny_node_has_no_capacity() {
        assert_eq!(config().capacity(512 * MIB, 4.0).users, 0);
        assert_eq!(config().capacity(64 * GIB, 0.05).users, 0);
    }

    #[test]
    fn necessary_nodes_rounds_up_and_checks_limit() {
        assert_eq!(necessary_nodes(100, 30, 10).unwrap(), 4);
        assert_eq!(necessary_nodes(1, 30, 1).unwrap(), 1);
        match necessary_nodes(100, 10, 5) {
            Err(Error::NecessaryNodesExceedsMaxAllowedNodes { necessary, .. }) => {
                assert_eq!(necessary, 10)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn heterogeneous_nodes_get_users_by_capacity() {
        assert_eq!(assign_users(30, &[10, 20]), vec![10, 20]);
        assert_eq!(assign_users(15, &[10, 20]), vec![5, 10]);
        // Proportional: tiny nodes get nothing rather than a share beyond their weight.
        assert_eq!(assign_users(7, &[1, 1, 100]), vec![0, 0, 7]);
        assert_eq!(assign_users(102, &[1, 1, 100]), vec![1, 1, 100]);
    }

    proptest! {
        #[test]
        fn assignment_is_complete_and_within_capacity(
            caps in proptest::collection::vec(0u64..500, 1..40),
            frac in 0.0f64..=1.0,
        ) {
            let total: u64 = caps.iter().sum();
            let users = (total as f64 * frac) as u64;
            let shares = assign_users(users, &caps);
            prop_assert_eq!(shares.iter().sum::<u64>(), users);
            for (s, c) in shares.iter().zip(&caps) {
                prop_assert!(s <= c);
            }
        }
    }
}
