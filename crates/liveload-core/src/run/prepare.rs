//! Phase 5, dispatch: send every node its assignment, wait until each has prepared (browser
//! launched, contexts ready, users not started), then start them together.
//!
//! Preparing before starting keeps the start simultaneous: a node that is slow to launch its
//! browser does not start its users seconds after the others.

use std::collections::HashMap;

use liveload_proto::{AgentMessage, Assignment, ControllerMessage, MAX_FRAME_BYTES};
use tokio::time::Instant;

use super::boot::{Inbox, LiveNode};
use super::terms::{NodeTerms, node_terms};
use super::{RunOptions, next_message, send};
use crate::agent_client::message_name;
use crate::scenario::Scenario;
use crate::{Error, Result};

/// Where each node sits among the nodes kept, by the index its messages carry.
pub(super) type Positions = HashMap<usize, usize>;

/// The positions of `live`'s nodes by their node index.
pub(super) fn positions(live: &[LiveNode]) -> Positions {
    live.iter()
        .enumerate()
        .map(|(i, n)| (n.report.index as usize, i))
        .collect()
}

/// Send each node its assignment and wait for every `Prepared`; then send `Start` to all.
pub(super) async fn prepare_and_start(
    live: &[LiveNode],
    positions: &Positions,
    inbox: &mut Inbox,
    scenario: &Scenario,
    options: &RunOptions,
    run_id: &str,
) -> Result<()> {
    let users_per_node: Vec<u64> = live.iter().map(|n| n.report.users).collect();
    let terms = node_terms(scenario, options, &users_per_node);
    // Every frame is built and measured before any is sent: a node never prepares for a run
    // that another node's frame is about to fail.
    let frames = live
        .iter()
        .zip(terms)
        .enumerate()
        .map(|(position, (node, terms))| {
            let (first_user_id, users) = (node.report.first_user_id, node.report.users);
            let users = (first_user_id, users);
            let mut frame = prepare_frame(scenario, options, run_id, position, users, terms);
            if let ControllerMessage::Prepare(assignment) = &mut frame {
                assignment.memory_budget_bytes = Some(memory_budget(&node.report.facts, options));
            }
            check_frame_size(&frame, scenario).map(|()| frame)
        })
        .collect::<Result<Vec<_>>>()?;
    for (node, frame) in live.iter().zip(frames) {
        send(node, frame)?;
    }
    let mut prepared = 0;
    let deadline = super::deadline_after(Instant::now(), options.creation_timeout);
    while prepared < live.len() {
        let (position, message) = next_message(inbox, deadline, "prepare").await?;
        let Some(&i) = positions.get(&position) else {
            continue;
        };
        match message? {
            AgentMessage::Prepared { .. } => prepared += 1,
            AgentMessage::Failed { message } => {
                return Err(Error::RunFailed {
                    message: format!("node {} could not prepare: {message}", live[i].report.id),
                });
            }
            other => {
                return Err(Error::AgentConnection {
                    node: live[i].report.id.clone(),
                    message: format!("expected prepared, got {}", message_name(&other)),
                });
            }
        }
    }
    for node in live {
        send(node, ControllerMessage::Start)?;
    }
    Ok(())
}

/// The `Prepare` frame of the node at `position` among those that booted (which spreads
/// `per_node` targets): users `first_user_id ..` (`users` of them) on `terms`.
fn prepare_frame(
    scenario: &Scenario,
    options: &RunOptions,
    run_id: &str,
    position: usize,
    (first_user_id, users): (u64, u64),
    terms: NodeTerms,
) -> ControllerMessage {
    // Durations are bounded (`MAX_DURATION`, about 3e11 ms), so `as u64` never truncates.
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    ControllerMessage::Prepare(Box::new(Assignment {
        run_id: run_id.to_string(),
        scenario: scenario.name.clone(),
        base_url: scenario.base_url().to_string(),
        first_user_id,
        users,
        duration_ms: ms(options.duration),
        iteration_timeout_ms: ms(scenario.iteration_timeout),
        start_interval_ms: ms(terms.start_interval),
        start_batch: terms.start_batch,
        steps: scenario.steps.clone(),
        step_timeout_ms: ms(scenario.step_timeout),
        data: scenario.data.as_ref().map(|table| {
            crate::scenario::rows_for_node(table, scenario.data_mode, first_user_id, users)
        }),
        workload: terms.workload,
        throttle: terms.throttle,
        // Protocol users never have a browser, whatever the options say (a mix's engine is a
        // browser's when any of its scenarios' is).
        no_browser: options.no_browser || scenario.engine.is_protocol(),
        diagnostics: scenario.diagnostics(),
        allow_schemes: scenario.allow_schemes.clone(),
        memory_budget_bytes: None,
        user_loop: scenario.user_loop.clone(),
        trace_file: options.trace.as_ref().map(|t| liveload_proto::TraceFile {
            sample: t.sample,
            bytes_per_s: t.bytes_per_s,
        }),
        base_urls: crate::scenario::targets_for_node(
            &scenario.base_urls,
            scenario.target_distribution,
            position,
        ),
        host_rules: scenario.host_rules.clone(),
        engine: scenario.engine,
        groups: crate::scenario::node_groups(&scenario.mix, (first_user_id, users), options.users),
    }))
}

/// The memory watchdog's budget for a node: its memory times the sizing's safety factor — all
/// the plan let the browser and the agent use, the headroom for the system's own included.
fn memory_budget(facts: &liveload_proto::NodeFacts, options: &RunOptions) -> u64 {
    (facts.effective_memory_bytes as f64 * options.sizing.memory_safety_factor) as u64
}

/// Refuse a frame the agent would refuse: larger than [`MAX_FRAME_BYTES`] once encoded.
///
/// Without this check the agent drops the link on reading the frame, and all the controller
/// sees is a closed connection. The culprit is nearly always the data file (it travels whole
/// to every node, and JSON can make it several times larger: quotes around every cell,
/// six bytes for a control character), so the error names it and its share.
fn check_frame_size(frame: &ControllerMessage, scenario: &Scenario) -> Result<()> {
    let encoded_bytes = liveload_proto::encode(frame).len();
    if encoded_bytes <= MAX_FRAME_BYTES {
        return Ok(());
    }
    Err(Error::AssignmentTooLarge {
        data_file: scenario.data_file.clone(),
        data_bytes: scenario
            .data
            .as_ref()
            .map_or(0, |data| liveload_proto::encode(data).len()),
        encoded_bytes,
        limit: MAX_FRAME_BYTES,
    })
}

/// Check, before any machine is created, that the scenario fits in a `Prepare` frame.
///
/// The frame is the one-node frame for every user: nodes' frames differ from it only in a few
/// numbers (user range, rates), tens of bytes at most, and `prepare_and_start` checks each
/// node's exact frame again before sending.
pub(super) fn check_scenario_fits(
    scenario: &Scenario,
    options: &RunOptions,
    run_id: &str,
) -> Result<()> {
    check_unique_rows(scenario, options.users)?;
    let terms = node_terms(scenario, options, &[options.users]);
    let terms = terms.into_iter().next().expect("one node, one share");
    let frame = prepare_frame(scenario, options, run_id, 0, (0, options.users), terms);
    check_frame_size(&frame, scenario)
}

/// Refuse a run whose data has fewer rows than users when each user must have its own row
/// (`data: { mode: unique }`).
pub fn check_unique_rows(scenario: &Scenario, users: u64) -> Result<()> {
    match (&scenario.data, scenario.data_mode) {
        (Some(table), crate::scenario::DataMode::Unique) if (table.rows.len() as u64) < users => {
            Err(Error::DataRowsTooFew {
                data_file: scenario.data_file.clone().unwrap_or_default(),
                rows: table.rows.len() as u64,
                users,
            })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use liveload_proto::{DataTable, Step, StepKind};

    use super::*;

    fn scenario_with(cell: &str, rows: usize) -> Scenario {
        let mut scenario = Scenario::new(
            "big",
            "http://x",
            vec![Step {
                name: "n".into(),
                kind: StepKind::Navigate { url: "/".into() },
            }],
        );
        scenario.data = Some(DataTable {
            columns: vec!["c".into()],
            rows: vec![vec![cell.to_string()]; rows],
            secret_columns: Vec::new(),
        });
        scenario.data_file = Some("data/users.csv".into());
        scenario
    }

    /// Regression (issue 12): a data file under its 4 MiB limit encoded past the 8 MiB frame
    /// limit, and the agent dropped the link. Control characters take six bytes in JSON.
    #[test]
    fn an_assignment_past_the_frame_limit_names_the_data_file_and_sizes() {
        // As many users as rows: a node running them all receives the whole table.
        let options = RunOptions::new("big", 3 * 1024, Duration::from_secs(1));
        // 3 MiB of control characters in 1 KiB cells: under the CSV limit, ~18 MiB in JSON.
        let scenario = scenario_with(&"\u{1}".repeat(1024), 3 * 1024);
        let err = check_scenario_fits(&scenario, &options, "big-r1").unwrap_err();
        let Error::AssignmentTooLarge {
            data_file,
            data_bytes,
            encoded_bytes,
            limit,
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!(
            data_file.as_deref(),
            Some(std::path::Path::new("data/users.csv"))
        );
        assert_eq!(*limit, MAX_FRAME_BYTES);
        assert!(*data_bytes > 6 * 3 * 1024 * 1024, "{data_bytes}");
        assert!(encoded_bytes > data_bytes, "{encoded_bytes} {data_bytes}");
        let message = err.to_string();
        for needle in ["data/users.csv", &encoded_bytes.to_string(), "8388608"] {
            assert!(message.contains(needle), "{needle}: {message}");
        }
        assert_eq!(err.code(), "assignment_too_large");
        // The same data as plain letters fits (3 MiB plus quotes).
        let fits = scenario_with(&"a".repeat(1024), 3 * 1024);
        check_scenario_fits(&fits, &options, "big-r1").unwrap();
    }

    /// Each node receives only its users' rows: bytes proportional to its users, and under
    /// `mode: unique` every row to exactly one user of the cluster.
    #[test]
    fn nodes_receive_their_users_rows_only() {
        let mut scenario = scenario_with("cell", 30);
        if let Some(table) = scenario.data.as_mut() {
            table.rows = (0..30).map(|r| vec![format!("row{r:02}")]).collect();
        }
        scenario.data_mode = crate::scenario::DataMode::Unique;
        let options = RunOptions::new("big", 30, Duration::from_secs(1));
        let shares = [5u64, 10, 15];
        let terms = node_terms(&scenario, &options, &shares);
        let mut first = 0;
        let mut dealt = Vec::new();
        for (users, terms) in shares.iter().zip(terms) {
            let frame = prepare_frame(&scenario, &options, "r", 0, (first, *users), terms);
            let ControllerMessage::Prepare(assignment) = frame else {
                panic!()
            };
            let rows = &assignment.data.as_ref().unwrap().rows;
            assert_eq!(rows.len() as u64, *users, "bytes follow the node's users");
            dealt.extend(rows.iter().map(|r| r[0].clone()));
            first += users;
        }
        dealt.sort();
        dealt.dedup();
        assert_eq!(dealt.len(), 30, "every row dealt once");
        assert!(check_unique_rows(&scenario, 30).is_ok());
        let err = check_unique_rows(&scenario, 31).unwrap_err();
        assert_eq!(err.code(), "data_rows_too_few");
        assert!(
            err.to_string()
                .contains("30 rows, fewer than the run's 31 users"),
            "{err}"
        );
    }

    /// `per_node` gives each node one target, in turn; `round_robin` gives every node all of
    /// them (its users pick by their cluster-wide id).
    #[test]
    fn nodes_receive_their_targets() {
        use crate::scenario::TargetDistribution;
        let mut scenario = scenario_with("cell", 1);
        scenario.base_urls = vec!["http://a".into(), "http://b".into()];
        let options = RunOptions::new("t", 3, Duration::from_secs(1));
        let targets = |scenario: &Scenario| -> Vec<Vec<String>> {
            let terms = node_terms(scenario, &options, &[1, 1, 1]);
            (0..3)
                .zip(terms)
                .map(|(position, terms)| {
                    let users = (position as u64, 1);
                    match prepare_frame(scenario, &options, "r", position, users, terms) {
                        ControllerMessage::Prepare(a) => a.base_urls,
                        _ => panic!(),
                    }
                })
                .collect()
        };
        let both = vec!["http://a".to_string(), "http://b".to_string()];
        assert_eq!(targets(&scenario), [both.clone(), both.clone(), both]);
        scenario.target_distribution = TargetDistribution::PerNode;
        let one = |u: &str| vec![u.to_string()];
        assert_eq!(
            targets(&scenario),
            [one("http://a"), one("http://b"), one("http://a")]
        );
    }
}
