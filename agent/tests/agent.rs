//! The agent binary on its own: handshake refusals, the dead-man switch, the TTL, and secrets
//! kept out of its logs.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use liveload_core::agent_client::AgentConnection;
use liveload_core::proto::AgentMessage;
use liveload_core::proto::ControllerMessage;
use liveload_core::{Error, Secret};
use support::{TOKEN, assignment, deadline, endpoint, start_agent, wait_exit};

#[tokio::test]
async fn mismatched_protocol_version_is_refused_with_both_versions() {
    let agent = start_agent(&[]);
    let result = AgentConnection::connect_speaking(
        "n",
        &endpoint(&agent),
        &Secret::new(TOKEN),
        deadline(),
        999,
    )
    .await;
    match result {
        Err(e @ Error::AgentRejected { .. }) => {
            let text = e.to_string();
            assert!(text.contains("protocol mismatch"), "{text}");
            assert!(
                text.contains(&format!(
                    "version {}",
                    liveload_core::proto::PROTOCOL_VERSION
                )) && text.contains("version 999"),
                "{text}"
            );
            assert_eq!(e.code(), "agent_rejected");
        }
        other => panic!("{:?}", other.map(|(_, w)| w)),
    }
}

#[tokio::test]
async fn wrong_token_is_refused_and_no_token_reaches_the_log() {
    let agent = start_agent(&[]);
    let guess = "ffffffffffffffffffffffffffffffff";
    let result =
        AgentConnection::connect("n", &endpoint(&agent), &Secret::new(guess), deadline()).await;
    assert!(
        matches!(&result, Err(Error::AgentRejected { reason, .. }) if reason.contains("token")),
        "{:?}",
        result.map(|(_, w)| w)
    );
    // A right connection, a run of messages, then read the debug log.
    let (mut connection, _) =
        AgentConnection::connect("n", &endpoint(&agent), &Secret::new(TOKEN), deadline())
            .await
            .unwrap();
    connection
        .send(&ControllerMessage::Heartbeat)
        .await
        .unwrap();
    connection.send(&ControllerMessage::Shutdown).await.unwrap();
    let mut agent = agent;
    wait_exit(&mut agent, Duration::from_secs(10)).expect("shutdown ends the agent");
    let log = std::fs::read_to_string(&agent.log).unwrap();
    assert!(log.contains("agent listening"), "{log}");
    assert!(!log.contains(TOKEN), "the run token leaked into the log");
    assert!(!log.contains(guess), "a guessed token leaked into the log");
}

#[tokio::test]
async fn a_second_controller_is_told_the_agent_is_busy() {
    let agent = start_agent(&[]);
    let (_first, _) =
        AgentConnection::connect("n", &endpoint(&agent), &Secret::new(TOKEN), deadline())
            .await
            .unwrap();
    let second =
        AgentConnection::connect("n", &endpoint(&agent), &Secret::new(TOKEN), deadline()).await;
    assert!(
        matches!(&second, Err(Error::AgentRejected { reason, .. }) if reason.contains("another controller")),
        "{:?}",
        second.map(|(_, w)| w)
    );
}

#[tokio::test]
async fn garbage_instead_of_hello_is_refused() {
    use futures_util::{SinkExt, StreamExt};
    let agent = start_agent(&[]);
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/agent", agent.address))
        .await
        .unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        "{\"type\":\"start\"}",
    ))
    .await
    .unwrap();
    let reply = ws.next().await.unwrap().unwrap().into_text().unwrap();
    assert!(reply.contains("expected_hello"), "{reply}");
}

#[test]
fn silent_controller_triggers_the_dead_man_switch() {
    let mut agent = start_agent(&["--grace", "1"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Connect, then say nothing more.
    let _connection = runtime.block_on(async {
        AgentConnection::connect("n", &endpoint(&agent), &Secret::new(TOKEN), deadline())
            .await
            .unwrap()
    });
    let took = wait_exit(&mut agent, Duration::from_secs(10)).expect("the agent exits");
    assert!(took < Duration::from_secs(5), "exited after {took:?}");
    let log = std::fs::read_to_string(&agent.log).unwrap();
    assert!(log.contains("silent past the grace period"), "{log}");
}

#[test]
fn heartbeats_keep_the_agent_alive_until_its_ttl() {
    let mut agent = start_agent(&["--grace", "1", "--ttl", "3"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let started = Instant::now();
    runtime.block_on(async {
        let (mut connection, _) =
            AgentConnection::connect("n", &endpoint(&agent), &Secret::new(TOKEN), deadline())
                .await
                .unwrap();
        // Heartbeats every 200 ms: the grace never runs out, only the TTL can end the agent.
        while connection.send(&ControllerMessage::Heartbeat).await.is_ok()
            && started.elapsed() < Duration::from_secs(15)
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    wait_exit(&mut agent, Duration::from_secs(10)).expect("the agent exits");
    let lived = started.elapsed();
    assert!(
        lived >= Duration::from_millis(1500),
        "lived only {lived:?}: grace fired?"
    );
    let log = std::fs::read_to_string(&agent.log).unwrap();
    assert!(log.contains("TTL reached"), "{log}");
}

#[test]
fn a_missing_token_stops_the_agent_at_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_liveload-agent"))
        .env_remove("LIVELOAD_AGENT_TOKEN_FILE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("LIVELOAD_AGENT_TOKEN_FILE"));
}

/// The next `Failed` message's text, skipping snapshots; panics on anything else or silence.
async fn next_failure(link: &mut AgentConnection) -> String {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), link.recv())
            .await
            .expect("an answer")
            .unwrap();
        match message {
            AgentMessage::Failed { message } => return message,
            AgentMessage::Snapshot(_) => {}
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}

/// The agent holds users to its own bound, whatever a token holder asks: `Prepare` and
/// `AddUsers` past `--max-users` are refused saying why, and so is a count past memory / 4 MiB
/// when no cap is set; counts within the bound are taken.
#[tokio::test]
async fn user_counts_past_the_nodes_own_bound_are_refused() {
    let think = "  - think: 100ms\n";
    let long = Duration::from_secs(30);
    let agent = start_agent(&["--max-users", "2", "--no-browser"]);
    let (mut link, _) =
        AgentConnection::connect("n", &endpoint(&agent), &Secret::new(TOKEN), deadline())
            .await
            .unwrap();
    let prepare =
        |users| ControllerMessage::Prepare(Box::new(assignment("http://x", think, users, long)));
    link.send(&prepare(3)).await.unwrap();
    let refusal = next_failure(&mut link).await;
    assert!(
        refusal.contains("3 users exceed this node's bound of 2"),
        "{refusal}"
    );
    assert!(refusal.contains("max_users (2)"), "{refusal}");
    link.send(&prepare(2)).await.unwrap();
    let prepared = link.recv().await.unwrap();
    assert!(
        matches!(prepared, AgentMessage::Prepared { users: 2, .. }),
        "{prepared:?}"
    );
    link.send(&ControllerMessage::Start).await.unwrap();
    let add = ControllerMessage::AddUsers {
        first_user_id: 2,
        count: 1,
    };
    link.send(&add).await.unwrap();
    let refusal = next_failure(&mut link).await;
    assert!(refusal.contains("3 users exceed"), "{refusal}");
    // After removing one, there is room for one again.
    let remove = ControllerMessage::RemoveUsers {
        count: 1,
        force: true,
    };
    link.send(&remove).await.unwrap();
    link.send(&add).await.unwrap();
    let quiet = tokio::time::timeout(Duration::from_secs(2), next_failure(&mut link)).await;
    assert!(
        quiet.is_err(),
        "a user within the bound was refused: {quiet:?}"
    );
    drop(link);

    let agent = start_agent(&["--no-browser"]);
    let (mut link, welcome) =
        AgentConnection::connect("n", &endpoint(&agent), &Secret::new(TOKEN), deadline())
            .await
            .unwrap();
    let bound = welcome.facts.effective_memory_bytes / (4 << 20);
    link.send(&prepare(bound + 1)).await.unwrap();
    let refusal = next_failure(&mut link).await;
    assert!(
        refusal.contains(&format!("bound of {bound} users")),
        "{refusal}"
    );
    assert!(refusal.contains("4096 KiB per user"), "{refusal}");
}
