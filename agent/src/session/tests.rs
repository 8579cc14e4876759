//! The browser contexts Chromium holds match the agent's live users, counted by Chromium itself
//! (`Target.getBrowserContexts`): none made ahead for the open model's arrivals, a waiting
//! user's disposed when it is removed or the run stops, every one gone when the session ends.

use std::sync::atomic::{AtomicBool, AtomicU32};

use liveload_proto::{Step, StepKind};

use crate::browser::NodeBrowser;

use super::*;

/// An agent's state on this machine, with its Chromium.
fn agent_state() -> Arc<AgentState> {
    let path = crate::facts::find_chromium(None)
        .expect("no Chromium on PATH: run scripts/test.sh, which installs it");
    let version = crate::facts::chromium_version(&path).expect("Chromium reports its version");
    let chromium = liveload_proto::BrowserInfo {
        path: path.display().to_string(),
        version,
    };
    let (stop, _) = watch::channel(StopSignal::Run);
    let (shutdown, _) = watch::channel(None);
    Arc::new(AgentState {
        token: "t".repeat(16),
        facts: crate::facts::measure(None, Some(chromium)),
        no_sandbox: rustix::process::geteuid().is_root(),
        busy: AtomicBool::new(false),
        last_heard: std::sync::Mutex::new(Instant::now()),
        stop,
        shutdown,
        browser: tokio::sync::Mutex::new(None),
        browser_pid: AtomicU32::new(0),
        run_active: AtomicBool::new(false),
        retired: AtomicBool::new(false),
    })
}

/// `users` users thinking 100 ms per iteration for `duration`, with a browser.
fn assignment(users: u64, duration: Duration) -> Assignment {
    let think = Step {
        name: "think".into(),
        kind: StepKind::Think {
            min_ms: 100,
            max_ms: 100,
        },
    };
    Assignment {
        duration_ms: duration.as_millis() as u64,
        iteration_timeout_ms: 10_000,
        step_timeout_ms: 5_000,
        ..Assignment::new("t", "t", "http://127.0.0.1", users, vec![think])
    }
}

/// Wait until Chromium holds `expected` contexts (at most 10 s); the last count otherwise.
async fn contexts_become(browser: &NodeBrowser, expected: usize) -> usize {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let count = browser
            .context_count()
            .await
            .expect("Chromium lists contexts");
        if count == expected || Instant::now() >= end {
            return count;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn browser_of(state: &AgentState) -> Arc<NodeBrowser> {
    state
        .browser
        .lock()
        .await
        .clone()
        .expect("prepare launched it")
}

/// Before: `Prepare` made a context per user even for the open model, which never used them
/// (every arrival takes a fresh one), and held them to the end: 4 here, all run long.
#[tokio::test(flavor = "multi_thread")]
async fn the_open_model_holds_contexts_only_for_visitors_in_progress() {
    let state = agent_state();
    let mut open = assignment(4, Duration::from_millis(1500));
    open.workload = Workload::Open {
        rate_per_s: 4.0,
        ramp_to_per_s: 4.0,
    };
    let (_, run) = prepare(&state, open).await.expect("prepared");
    let browser = browser_of(&state).await;
    assert_eq!(browser.context_count().await.unwrap(), 0, "none made ahead");
    let (out, mut replies) = mpsc::unbounded_channel();
    let (_commands, commands_rx) = mpsc::unbounded_channel();
    let coordination = Arc::new(crate::coordination::Coordination::new(out.clone()));
    run_users(state.clone(), run, (out, commands_rx, coordination)).await;
    let mut arrivals = 0;
    while let Ok(reply) = replies.try_recv() {
        if let AgentMessage::Snapshot(s) | AgentMessage::Finished(s) = reply {
            arrivals += s.counters.get("users_started").copied().unwrap_or(0);
        }
    }
    assert!(arrivals >= 4, "visitors arrived: {arrivals}");
    assert_eq!(contexts_become(&browser, 0).await, 0);
}

/// Before: removing users who had not started yet dropped their contexts undisposed, and a
/// session that ended left its waiting users to start later, each holding a context.
#[tokio::test(flavor = "multi_thread")]
async fn removed_and_abandoned_users_leave_no_context_behind() {
    let state = agent_state();
    claim_run(&state).expect("the session's first Prepare takes the run");
    let mut closed = assignment(4, Duration::from_secs(120));
    closed.start_interval_ms = 60_000; // The first user starts; three wait a minute each.
    let (_, run) = prepare(&state, closed).await.expect("prepared");
    let browser = browser_of(&state).await;
    assert_eq!(browser.context_count().await.unwrap(), 4);
    let (out, _replies) = mpsc::unbounded_channel();
    let (commands, commands_rx) = mpsc::unbounded_channel();
    let coordination = Arc::new(crate::coordination::Coordination::new(out.clone()));
    let users = tokio::spawn(run_users(
        state.clone(),
        run,
        (out, commands_rx, coordination),
    ));
    let remove = UserCommand::Remove {
        count: 2,
        force: true,
    };
    assert!(commands.send(remove).is_ok());
    assert_eq!(contexts_become(&browser, 2).await, 2, "two removed");
    // The session ends with one user running and one waiting.
    let mut session = RunControl::default();
    session.owner = Some(state.clone());
    session.users = Some(commands);
    drop(session);
    tokio::time::timeout(Duration::from_secs(20), users)
        .await
        .expect("the users end when their session does")
        .unwrap();
    assert_eq!(contexts_become(&browser, 0).await, 0);
    // And the agent takes no further run: its controller's session is gone.
    let refusal = claim_run(&state).expect_err("retired with its session");
    assert!(refusal.contains("takes no further run"), "{refusal}");
}

/// Runs follow one another within one session (`--reuse-cluster`), never overlap, and end
/// with it: a `Prepare` while a run is under way is refused, one after its `Finished` is taken
/// (a stop signal of the first run does not stop the second), and none after the session.
#[tokio::test(flavor = "multi_thread")]
async fn runs_follow_one_another_within_a_session_and_never_overlap() {
    let state = agent_state();
    let (out, mut replies) = mpsc::unbounded_channel();
    let mut session = RunControl::default();
    let mut browserless = assignment(1, Duration::from_millis(300));
    browserless.no_browser = true;
    for run in 0..2 {
        let prepare = ControllerMessage::Prepare(Box::new(browserless.clone()));
        session.handle(prepare, &state, &out);
        let prepared = next_reply(&mut replies).await;
        assert!(
            matches!(prepared, AgentMessage::Prepared { .. }),
            "run {run}: {prepared:?}"
        );
        session.handle(ControllerMessage::Start, &state, &out);
        let again = ControllerMessage::Prepare(Box::new(browserless.clone()));
        session.handle(again, &state, &out);
        match next_reply(&mut replies).await {
            AgentMessage::Failed { message } => assert!(message.contains("under way"), "{message}"),
            other => panic!("run {run}: a second run beside the first: {other:?}"),
        }
        match next_reply(&mut replies).await {
            AgentMessage::Finished(s) => assert_eq!(s.counters.get("users_started"), Some(&1)),
            other => panic!("run {run}: {other:?}"),
        }
        // A stop of this run must not stop the next one.
        session.handle(ControllerMessage::Stop { force: true }, &state, &out);
    }
    drop(session);
    let refusal = claim_run(&state).expect_err("retired with its session");
    assert!(refusal.contains("takes no further run"), "{refusal}");
}

/// The session's next answer other than a snapshot (at most 10 s).
async fn next_reply(replies: &mut mpsc::UnboundedReceiver<AgentMessage>) -> AgentMessage {
    let wanted = async {
        loop {
            match replies.recv().await.expect("the session answers") {
                AgentMessage::Snapshot(_) => continue,
                other => return other,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wanted)
        .await
        .expect("an answer in time")
}
