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

/// The groups of the node holding users `first .. first + users` of a run of `total` users:
/// scenario i takes the share `users_i / mix_total` of the ids, by cumulative rounding, so the
/// nodes' groups add up to each scenario's users exactly (in proportion when `--users`
/// changed the total).
pub fn node_groups(mix: &[MixPart], (first, users): (u64, u64)) -> Vec<UserGroup> {
    let mix_total: u128 = mix.iter().map(|p| u128::from(p.users)).sum::<u128>().max(1);
    // The ids below `at` that belong to the first `i` scenarios, cluster-wide.
    let below = |at: u64, parts: &[MixPart]| -> u64 {
        let share: u128 = parts.iter().map(|p| u128::from(p.users)).sum();
        let scaled = u128::from(at) * share / mix_total;
        u64::try_from(scaled).unwrap_or(u64::MAX)
    };
    let end = first.saturating_add(users);
    let mut groups = Vec::new();
    let mut next_id = first;
    for i in 0..mix.len() {
        // Users of scenario i on this node: its share of [first, end).
        let upto = |at: u64| below(at, &mix[..=i]) - below(at, &mix[..i]);
        let count = if i + 1 == mix.len() {
            end - next_id
        } else {
            upto(end) - upto(first)
        };
        let part = &mix[i];
        groups.push(UserGroup {
            name: part.name.clone(),
            engine: part.engine,
            first_user_id: next_id,
            users: count,
            steps: part.steps.clone(),
            user_loop: part.user_loop.clone(),
        });
        next_id += count;
    }
    groups
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
                let groups = node_groups(&mix, (first, users));
                assert_eq!(groups.iter().map(|g| g.users).sum::<u64>(), users);
                for (i, group) in groups.iter().enumerate() {
                    assert_eq!(group.first_user_id, next, "contiguous ids");
                    next += group.users;
                    sums[i] += group.users;
                }
            }
            assert_eq!(sums, [3, 100, 17], "{nodes} nodes");
        }
        // `--users` halving the total halves each share (within one user).
        let groups = node_groups(&mix, (0, 60));
        let counts: Vec<u64> = groups.iter().map(|g| g.users).collect();
        assert_eq!(counts, [1, 50, 9]);
    }
}
