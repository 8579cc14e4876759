//! Mixed runs: a run file whose `mix:` names several scenarios and their users,
//!
//! ```yaml
//! name: shop
//! duration: 60s
//! mix:
//!   - { scenario: browse.yaml, users: 200 }     # engine: browser
//!   - { scenario: socket.yaml, users: 20000 }   # engine: liveview
//! ```
//!
//! runs them at once on one cluster: every node holds a share of each scenario's users (its
//! own steps, engine and user loop), and sizing counts both engines' costs
//! ([`mixed_profile`]). The run file gives the run's name, timing, ramp, targets, thresholds
//! and sizing; each scenario gives its users' behaviour. Each scenario's step metrics start
//! with its name (`step:browse/click #buy`) and its iterations are also timed as
//! `iteration:<name>`, so the report separates them.
//!
//! Not mixed yet (each is refused naming the scenario): the open model, CSV data, throttles,
//! host rules and several targets inside a mixed scenario.

use std::path::{Path, PathBuf};

use liveload_proto::{Engine, Step, StepKind, UserGroup, UserLoop};

use super::{Load, Scenario};
use crate::Result;
use crate::error::Error;
use crate::sizing::BrowserProfile;

/// One scenario of a mixed run.
#[derive(Debug, Clone, PartialEq)]
pub struct MixPart {
    /// The scenario's name (unique in the mix).
    pub name: String,
    /// Its file.
    pub file: PathBuf,
    /// What its users are.
    pub engine: Engine,
    /// How many of the run's users it has (scaled when `--users` changes the total).
    pub users: u64,
    /// Its steps, named `<scenario>/<step>`.
    pub steps: Vec<Step>,
    /// Its users' loop, its steps named likewise.
    pub user_loop: UserLoop,
    /// What one of its users costs: its engine's built-in profile under its `sizing:`.
    pub profile: BrowserProfile,
}

/// `{scenario: FILE, users: N}` as written.
#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMixPart {
    /// The scenario file, relative to the run file's folder.
    pub(super) scenario: String,
    /// Its users.
    pub(super) users: u64,
}

/// Load the scenarios a run file mixes and make `run` hold them: its users are their sum,
/// its engine a browser's when any of them is one.
pub(super) fn load(path: &Path, run: &mut Scenario, parts: Vec<RawMixPart>) -> Result<()> {
    let folder = path.parent().unwrap_or(Path::new("."));
    let refuse = |file: &Path, message: String| Error::Scenario {
        file: file.to_path_buf(),
        line: 1,
        column: 1,
        message,
    };
    if !matches!(run.load, Load::Closed { .. }) {
        return Err(refuse(
            path,
            "mix: runs the closed model only (no load: arrivals)".into(),
        ));
    }
    let mut mix: Vec<MixPart> = Vec::with_capacity(parts.len());
    for part in parts {
        let file = folder.join(&part.scenario);
        if part.users == 0 {
            return Err(refuse(path, format!("mix: {} has no users", part.scenario)));
        }
        let scenario = Scenario::from_file(&file)?;
        if let Some(problem) = not_mixable(&scenario) {
            return Err(refuse(&file, format!("cannot be mixed yet: {problem}")));
        }
        if mix.iter().any(|p| p.name == scenario.name) {
            return Err(refuse(
                path,
                format!(
                    "mix: two scenarios are named '{}' (their metrics would merge)",
                    scenario.name
                ),
            ));
        }
        let prefix = |steps: &[Step]| named(steps, &scenario.name);
        mix.push(MixPart {
            profile: scenario
                .sizing
                .apply(BrowserProfile::for_engine(scenario.engine))?,
            name: scenario.name.clone(),
            file,
            engine: scenario.engine,
            users: part.users,
            steps: prefix(&scenario.steps),
            user_loop: UserLoop {
                on_start: prefix(&scenario.user_loop.on_start),
                on_stop: prefix(&scenario.user_loop.on_stop),
                ..scenario.user_loop.clone()
            },
        });
    }
    run.users = mix.iter().map(|p| p.users).sum();
    run.engine = match mix.iter().find(|p| p.engine == Engine::Browser) {
        Some(_) => Engine::Browser,
        None => mix.first().map_or(Engine::Browser, |p| p.engine),
    };
    run.mix = mix;
    Ok(())
}

/// Why a scenario cannot be part of a mix, if it cannot.
fn not_mixable(scenario: &Scenario) -> Option<&'static str> {
    if !matches!(scenario.load, Load::Closed { .. }) {
        Some("its workload is the open model (load: arrivals); mixes are closed-model")
    } else if scenario.data.is_some() {
        Some("it reads a CSV data file")
    } else if scenario.throttle != Default::default() {
        Some("it has a throttle")
    } else if !scenario.host_rules.is_empty() {
        Some("it has host rules (block_hosts, allow_hosts, map_hosts)")
    } else if scenario.base_urls.len() > 1 {
        Some("it has several base_urls")
    } else if !scenario.mix.is_empty() {
        Some("it is itself a mix")
    } else {
        None
    }
}

/// `steps` with every name (nested ones included) as `<scenario>/<name>`.
fn named(steps: &[Step], scenario: &str) -> Vec<Step> {
    steps
        .iter()
        .map(|step| {
            let kind = match &step.kind {
                StepKind::Group { steps } => StepKind::Group {
                    steps: named(steps, scenario),
                },
                StepKind::Repeat { times, steps } => StepKind::Repeat {
                    times: *times,
                    steps: named(steps, scenario),
                },
                other => other.clone(),
            };
            Step {
                name: format!("{scenario}/{}", step.name),
                kind,
            }
        })
        .collect()
}

/// The profile of a mix's average user: each node holds the scenarios in the run's
/// proportions, so a node of N users holds `N * users_i / total` of scenario i. Its memory per
/// user is the users' average; its users per core the total over the cores each scenario's
/// users take; its fixed cost the largest (a browser's, when any scenario has one).
pub fn mixed_profile(mix: &[MixPart]) -> BrowserProfile {
    let total: f64 = mix.iter().map(|p| p.users as f64).sum::<f64>().max(1.0);
    let memory: f64 = mix
        .iter()
        .map(|p| p.users as f64 * p.profile.context_memory_usage_bytes as f64)
        .sum();
    let cores: f64 = mix
        .iter()
        .map(|p| p.users as f64 / p.profile.browser_contexts_per_core.max(f64::MIN_POSITIVE))
        .sum();
    BrowserProfile {
        browser_memory_usage_bytes: mix
            .iter()
            .map(|p| p.profile.browser_memory_usage_bytes)
            .max()
            .unwrap_or(0),
        context_memory_usage_bytes: (memory / total).ceil() as u64,
        browser_contexts_per_core: if cores > 0.0 { total / cores } else { 1.0 },
    }
}

/// The groups of the node holding users `first .. first + users` of a run of `total` users.
///
/// Each user id of the run belongs to one scenario by a fixed rule: id `u` is placed at
/// `u * stride mod total` (a stride coprime with `total`, near 0.618 of it, so consecutive
/// ids spread over the whole range), and scenario `i` owns the positions from
/// `total * users_before_i / mix_total` up to the next scenario's. Every id is owned once, so
/// the scenarios' users add up exactly (in proportion when `--users` changed the total), and
/// any node's run of consecutive ids holds each scenario in about its share. The node's
/// counts are then laid out as consecutive ranges of its ids, one per scenario, in the mix's
/// order. The cost is one step per user of the node.
pub fn node_groups(mix: &[MixPart], (first, users): (u64, u64), total: u64) -> Vec<UserGroup> {
    if mix.is_empty() {
        return Vec::new();
    }
    let counts = node_counts(mix, (first, users), total);
    let mut next_id = first;
    mix.iter()
        .zip(counts)
        .map(|(part, count)| {
            let group = UserGroup {
                name: part.name.clone(),
                engine: part.engine,
                first_user_id: next_id,
                users: count,
                steps: part.steps.clone(),
                user_loop: part.user_loop.clone(),
            };
            next_id += count;
            group
        })
        .collect()
}

/// How many of the node's users each scenario has (see [`node_groups`]).
fn node_counts(mix: &[MixPart], (first, users): (u64, u64), total: u64) -> Vec<u64> {
    let total = u128::from(total.max(first.saturating_add(users)).max(1));
    let mix_total: u128 = mix.iter().map(|p| u128::from(p.users)).sum::<u128>().max(1);
    // Where each scenario's positions end.
    let mut before = 0u128;
    let ends: Vec<u128> = mix
        .iter()
        .map(|p| {
            before += u128::from(p.users);
            total * before / mix_total
        })
        .collect();
    let stride = coprime_stride(total);
    let mut counts = vec![0u64; mix.len()];
    for id in first..first.saturating_add(users) {
        let position = u128::from(id) * stride % total;
        let owner = ends
            .partition_point(|&end| end <= position)
            .min(mix.len() - 1);
        counts[owner] += 1;
    }
    counts
}

/// A stride near 0.618 of `total` that shares no factor with it (a permutation of the ids).
fn coprime_stride(total: u128) -> u128 {
    fn gcd(a: u128, b: u128) -> u128 {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let mut stride = (total * 618 / 1000).max(1);
    while gcd(stride, total) != 1 {
        stride += 1;
    }
    stride
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(name: &str, engine: Engine, users: u64) -> MixPart {
        MixPart {
            name: name.into(),
            file: PathBuf::from(format!("{name}.yaml")),
            engine,
            users,
            steps: named(
                &[Step {
                    name: "go".into(),
                    kind: StepKind::Group {
                        steps: vec![Step {
                            name: "in".into(),
                            kind: StepKind::Halt,
                        }],
                    },
                }],
                name,
            ),
            user_loop: UserLoop::default(),
            profile: BrowserProfile::for_engine(engine),
        }
    }

    #[test]
    fn steps_are_named_after_their_scenario_nested_ones_too() {
        let steps = part("browse", Engine::Browser, 1).steps;
        assert_eq!(steps[0].name, "browse/go");
        let StepKind::Group { steps } = &steps[0].kind else {
            panic!("a group")
        };
        assert_eq!(steps[0].name, "browse/in");
    }

    #[test]
    fn the_mixed_profile_counts_each_engine_in_its_share() {
        let mix = [
            part("b", Engine::Browser, 2),
            part("p", Engine::Liveview, 40),
        ];
        let profile = mixed_profile(&mix);
        let (browser, protocol) = (
            BrowserProfile::default(),
            BrowserProfile::for_engine(Engine::Liveview),
        );
        assert_eq!(
            profile.browser_memory_usage_bytes,
            browser.browser_memory_usage_bytes
        );
        let memory =
            2 * browser.context_memory_usage_bytes + 40 * protocol.context_memory_usage_bytes;
        assert_eq!(profile.context_memory_usage_bytes, memory.div_ceil(42));
        let cores =
            2.0 / browser.browser_contexts_per_core + 40.0 / protocol.browser_contexts_per_core;
        assert!((profile.browser_contexts_per_core - 42.0 / cores).abs() < 1e-9);
        // Protocol users only: the agent's own cost, their memory and cores.
        let protocol_only = mixed_profile(&[part("p", Engine::Http, 5)]);
        assert_eq!(protocol_only, BrowserProfile::for_engine(Engine::Http));
    }

    #[test]
    fn nodes_hold_each_scenario_in_proportion_and_the_sums_are_exact() {
        // A node's share is near its proportion: 120 users in 2 nodes of 60.
        let mix2 = [part("a", Engine::Browser, 20), part("b", Engine::Http, 100)];
        let half = node_groups(&mix2, (0, 60), 120);
        assert!((8..=12).contains(&half[0].users), "{half:?}");
        let mix = [
            part("a", Engine::Browser, 3),
            part("b", Engine::Http, 100),
            part("c", Engine::Liveview, 17),
        ];
        for nodes in [1u64, 2, 3, 7, 120] {
            let total = 120u64;
            let mut sums = [0u64; 3];
            let mut next = 0;
            for n in 0..nodes {
                let first = total * n / nodes;
                let users = total * (n + 1) / nodes - first;
                let groups = node_groups(&mix, (first, users), total);
                assert_eq!(groups.iter().map(|g| g.users).sum::<u64>(), users);
                for (i, group) in groups.iter().enumerate() {
                    assert_eq!(group.first_user_id, next, "contiguous ids");
                    next += group.users;
                    sums[i] += group.users;
                }
            }
            assert_eq!(sums, [3, 100, 17], "{nodes} nodes");
        }
        // `--users` halving the total halves each share (cumulative rounding down).
        let groups = node_groups(&mix, (0, 60), 60);
        let counts: Vec<u64> = groups.iter().map(|g| g.users).collect();
        assert_eq!(counts, [1, 50, 9]);
        // The review's counter-examples of a rule that was not monotone: three or more
        // scenarios over many nodes never give a node a negative count, and add up.
        for (sizes, nodes) in [(vec![1000u64, 10, 500], 26u64), (vec![100, 20, 1000], 31)] {
            let mix: Vec<MixPart> = sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| part(&format!("s{i}"), Engine::Http, n))
                .collect();
            let total: u64 = sizes.iter().sum();
            let mut sums = vec![0u64; sizes.len()];
            for n in 0..nodes {
                let first = total * n / nodes;
                let users = total * (n + 1) / nodes - first;
                for (i, group) in node_groups(&mix, (first, users), total).iter().enumerate() {
                    assert!(group.users <= users);
                    sums[i] += group.users;
                }
            }
            assert_eq!(sums, sizes);
        }
    }
}
