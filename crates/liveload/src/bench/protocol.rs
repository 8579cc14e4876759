//! `liveload bench protocol`: what a protocol user (`engine: http`) costs the agent.
//!
//! One local agent (no browser) runs N users against the bundled demo target, started in this
//! process. Each user opens the demo's WebSocket (`/live`, which pushes a tick a second to every
//! socket) and then either stays, reading its pushes (`idle`), or also sends a message and
//! waits for its reply once a second (`active`: one `ws_send` + `ws_expect` per second). The
//! figures: the agent's RSS with N users, the marginal KiB per user against 0 users, the
//! agent's CPU over a window at steady state, the share of users connected, and `ws.reply`'s
//! p50/p99 for active users.

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
pub(super) async fn bench(counts: &[u64], active: bool, window: Duration) -> Result<(), Error> {
    // The demo target runs in this process and holds the server side of every socket.
    let mut limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    limit.current = limit.maximum;
    let _ = rustix::process::setrlimit(rustix::process::Resource::Nofile, limit);
    let address = demo_target::spawn(([127, 0, 0, 1], 0).into())
        .await
        .map_err(|e| Error::io("starting the demo target", e))?;
    let url = format!("http://{address}");
    let kind = if active { "active" } else { "idle" };
    println!(
        "protocol users ({kind}: a WebSocket each{}), demo target {url}",
        if active {
            ", one message and reply a second"
        } else {
            ", its pushes read"
        }
    );
    println!(
        "{:>7} {:>10} {:>12} {:>13} {:>9} {:>11} {:>11} {:>7}",
        "USERS", "CONNECTED", "AGENT RSS", "KiB/USER", "CPU %", "REPLY p50", "REPLY p99", "FAILED"
    );
    let mut baseline: Option<f64> = None;
    for &users in counts {
        let figure = measure(users, active, window, &url).await?;
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

/// The steps of one protocol user: connect, then stay (reading pushes) or talk once a second,
/// for `seconds`.
fn steps(active: bool, seconds: u64) -> Vec<Step> {
    let step = |name: &str, kind: StepKind| Step {
        name: name.into(),
        kind,
    };
    let think = |ms: u64| StepKind::Think {
        min_ms: ms,
        max_ms: ms,
    };
    let mut steps = vec![step(
        "connect",
        StepKind::WsConnect {
            url: "/live".into(),
            timeout_ms: Some(30_000),
        },
    )];
    if active {
        let talk = vec![
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
            step("pause", think(1_000)),
        ];
        let times = u32::try_from(seconds).unwrap_or(u32::MAX);
        steps.push(step("talk", StepKind::Repeat { times, steps: talk }));
    } else {
        steps.push(step("stay", think(seconds * 1000)));
    }
    steps
}

async fn measure(
    users: u64,
    active: bool,
    window: Duration,
    url: &str,
) -> Result<ProtocolFigure, Error> {
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
                engine: Engine::Http,
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
                    steps(active, seconds),
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
                |m: &MetricsAggregate| m.counters.get("ws.connections").copied().unwrap_or(0);
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
            let reply = metrics.histograms.get("ws.reply").filter(|h| !h.is_empty());
            let ms = |q: f64| reply.map(|h| h.value_at_quantile(q) as f64 / 1000.0);
            let failed = ["iterations_failed", "users_failed"]
                .iter()
                .filter_map(|name| metrics.counters.get(*name))
                .sum();
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
