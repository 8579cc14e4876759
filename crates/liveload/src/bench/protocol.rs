//! `liveload bench protocol`: what a protocol user (`engine: http` or `engine: liveview`)
//! costs the agent.
//!
//! One local agent (no browser) runs N users against the bundled demo target, started in this
//! process. With `--engine http`, each user opens the demo's WebSocket (`/live`, which pushes a
//! tick a second to every socket) and then either stays, reading its pushes (`idle`), or also
//! sends a message and waits for its reply once a second (`active`: one `ws_send` +
//! `ws_expect` per second). With `--engine liveview`, each user loads the demo's LiveView
//! (`/lv`), joins it and stays (`idle`: its socket kept alive by heartbeats), or clicks its
//! `phx-click` button once a second (`active`: an event pushed, its diff merged). The
//! figures: the agent's RSS with N users, the marginal KiB per user against 0 users, the
//! agent's CPU over a window at steady state, the users connected, and the reply latency's
//! p50/p99 for active users (`ws.reply`, or `liveview.event`).

use std::time::Duration;

use liveload_core::Error;
use liveload_core::metrics::MetricsAggregate;
use liveload_core::proto::{AnswerCheck, Assignment, ControllerMessage, Engine, Step, StepKind};
use liveload_local::LocalBackend;
use tokio::time::Instant;

use super::link::{clock_ticks_per_second, expect_prepared, sample_group, settle, with_agent};

/// One measured user count.
struct ProtocolFigure {
    users: u64,
    connected: u64,
    agent_rss_mib: f64,
    cpu_percent: f64,
    reply_p50_ms: Option<f64>,
    reply_p99_ms: Option<f64>,
    failed: u64,
}

/// Measure each of `counts`, idle or `active`, over `window` at steady state; print a table.
pub(super) async fn bench(
    counts: &[u64],
    (engine, active): (Engine, bool),
    window: Duration,
) -> Result<(), Error> {
    // The demo target runs in this process and holds the server side of every socket.
    let mut limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    limit.current = limit.maximum;
    let _ = rustix::process::setrlimit(rustix::process::Resource::Nofile, limit);
    let address = demo_target::spawn(([127, 0, 0, 1], 0).into())
        .await
        .map_err(|e| Error::io("starting the demo target", e))?;
    let url = format!("http://{address}");
    let kind = if active { "active" } else { "idle" };
    let what = match (engine, active) {
        (Engine::Liveview, true) => "a joined LiveView each, one phx-click event a second",
        (Engine::Liveview, false) => "a joined LiveView each, kept alive by heartbeats",
        (_, true) => "a WebSocket each, one message and reply a second",
        (_, false) => "a WebSocket each, its pushes read",
    };
    println!("protocol users, engine {engine:?} ({kind}: {what}), demo target {url}");
    println!(
        "{:>7} {:>10} {:>12} {:>13} {:>9} {:>11} {:>11} {:>7}",
        "USERS", "CONNECTED", "AGENT RSS", "KiB/USER", "CPU %", "REPLY p50", "REPLY p99", "FAILED"
    );
    let mut baseline: Option<f64> = None;
    for &users in counts {
        let figure = measure(users, (engine, active), window, &url).await?;
        let per_user = match (baseline, users) {
            (Some(base), 1..) => format!(
                "{:.1}",
                (figure.agent_rss_mib - base) * 1024.0 / users as f64
            ),
            _ => "-".into(),
        };
        if users == 0 {
            baseline = Some(figure.agent_rss_mib);
        }
        let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1} ms"));
        println!(
            "{:>7} {:>10} {:>9.1} MiB {:>13} {:>9.1} {:>11} {:>11} {:>7}",
            figure.users,
            figure.connected,
            figure.agent_rss_mib,
            per_user,
            figure.cpu_percent,
            ms(figure.reply_p50_ms),
            ms(figure.reply_p99_ms),
            figure.failed
        );
    }
    Ok(())
}

/// A step named `name`.
fn step(name: &str, kind: StepKind) -> Step {
    Step {
        name: name.into(),
        kind,
    }
}

/// A fixed pause.
fn think(ms: u64) -> StepKind {
    StepKind::Think {
        min_ms: ms,
        max_ms: ms,
    }
}

/// The steps of one protocol user: connect, then stay (reading pushes) or talk once a second,
/// for `seconds`.
fn steps(engine: Engine, active: bool, seconds: u64) -> Vec<Step> {
    let (connect, talk) = match engine {
        Engine::Liveview => (
            step("join", StepKind::Navigate { url: "/lv".into() }),
            vec![step(
                "click",
                StepKind::Click {
                    selector: "#inc".into(),
                },
            )],
        ),
        _ => (
            step(
                "connect",
                StepKind::WsConnect {
                    url: "/live".into(),
                    timeout_ms: Some(30_000),
                },
            ),
            vec![
                step(
                    "send",
                    StepKind::WsSend {
                        text: r#"{"submit": "u{{user_id}}"}"#.into(),
                    },
                ),
                step(
                    "reply",
                    StepKind::WsExpect {
                        expect: AnswerCheck {
                            contains: Some("\"saved\"".into()),
                            ..AnswerCheck::default()
                        },
                        timeout_ms: Some(10_000),
                    },
                ),
            ],
        ),
    };
    let mut steps = vec![connect];
    if active {
        let mut talk = talk;
        talk.push(step("pause", think(1_000)));
        let times = u32::try_from(seconds).unwrap_or(u32::MAX);
        steps.push(step("talk", StepKind::Repeat { times, steps: talk }));
    } else {
        steps.push(step("stay", think(seconds * 1000)));
    }
    steps
}

async fn measure(
    users: u64,
    (engine, active): (Engine, bool),
    window: Duration,
    url: &str,
) -> Result<ProtocolFigure, Error> {
    // What says a user is connected, and its reply latency.
    let (connections, reply_metric) = match engine {
        Engine::Liveview => ("liveview.joins", "liveview.event"),
        _ => ("ws.connections", "ws.reply"),
    };
    // Users start 5,000 a second; they stay connected through the ramp, 5 s of settling, the
    // window and a margin.
    let ramp_s = users / 5_000 + 1;
    let seconds = ramp_s + 5 + window.as_secs() + 10;
    let state = super::bench_state_dir()?;
    let backend = LocalBackend::builder().state_dir(state.path()).build()?;
    with_agent(
        &backend,
        ("bench-protocol", Duration::from_secs(seconds + 300), true),
        async |agent| {
            let (connection, agent_pid, run_id) =
                (&mut agent.connection, agent.pid, agent.run_id.clone());
            let assignment = Assignment {
                engine,
                duration_ms: seconds * 1000,
                iteration_timeout_ms: (seconds + 60) * 1000,
                start_interval_ms: 10,
                start_batch: 50,
                step_timeout_ms: 30_000,
                no_browser: true,
                ..Assignment::new(
                    &run_id,
                    "bench-protocol",
                    url,
                    users,
                    steps(engine, active, seconds),
                )
            };
            connection
                .send(&ControllerMessage::Prepare(Box::new(assignment)))
                .await?;
            expect_prepared(connection).await?;
            let mut metrics = MetricsAggregate::default();
            if users > 0 {
                connection.send(&ControllerMessage::Start).await?;
            }
            let connected =
                |m: &MetricsAggregate| m.counters.get(connections).copied().unwrap_or(0);
            let ramp_end = Instant::now() + Duration::from_secs(ramp_s + 30);
            while connected(&metrics) < users && Instant::now() < ramp_end {
                settle(connection, &mut metrics, Duration::from_secs(1)).await?;
            }
            settle(connection, &mut metrics, Duration::from_secs(5)).await?;
            let before = sample_group(agent_pid);
            let started = Instant::now();
            settle(connection, &mut metrics, window).await?;
            let after = sample_group(agent_pid);
            let elapsed = started.elapsed().as_secs_f64();
            let ticks = after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64;
            let reply = metrics
                .histograms
                .get(reply_metric)
                .filter(|h| !h.is_empty());
            let ms = |q: f64| reply.map(|h| h.value_at_quantile(q) as f64 / 1000.0);
            let failed = ["iterations_failed", "users_failed"]
                .iter()
                .filter_map(|name| metrics.counters.get(*name))
                .sum();
            if failed > 0
                && let Some((error, count)) = metrics
                    .counters
                    .iter()
                    .filter(|(name, _)| name.starts_with("error:"))
                    .max_by_key(|(_, count)| **count)
            {
                eprintln!("  most frequent failure ({count}x): {error}");
            }
            let _ = connection.send(&ControllerMessage::Shutdown).await;
            Ok(ProtocolFigure {
                users,
                connected: connected(&metrics),
                agent_rss_mib: after.agent_rss_kib as f64 / 1024.0,
                cpu_percent: ticks / clock_ticks_per_second() / elapsed * 100.0,
                reply_p50_ms: ms(0.5),
                reply_p99_ms: ms(0.99),
                failed,
            })
        },
    )
    .await
}
