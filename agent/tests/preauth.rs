//! What a stranger on the agent's port can cost before logging in: one deadline over TLS, the
//! upgrade and the `Hello`; a cap on connections waiting for login; small frames until login;
//! and no spinning when `accept` fails. Its own binary: the flood test runs for ~15 s and
//! measures the agent's CPU time, best not shared with heavy tests.

mod support;

use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use liveload_core::Secret;
use liveload_core::agent_client::AgentConnection;
use liveload_core::proto::{AgentMessage, ControllerMessage};
use liveload_core::tls::Pin;
use support::{TOKEN, assignment, cpu_time, deadline, endpoint, start, start_agent};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// The agent's pre-login deadline (`HELLO_TIMEOUT_MS`).
const DEADLINE: Duration = Duration::from_secs(10);

/// Lift this process's descriptor limit to its hard limit: the test holds 500+ sockets.
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    setrlimit(Resource::Nofile, limit).expect("raising RLIMIT_NOFILE");
}

/// Has the agent closed `stream`? (EOF or reset; bytes or silence mean still open.)
fn closed(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.try_read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// A slowloris: TLS done at once, then one byte of an upgrade request a second, on a new
/// connection whenever the agent closes the last one, until `until`. Returns how long each
/// closed connection lived.
async fn slowloris(address: String, pin: Pin, until: Instant) -> Vec<Duration> {
    let request = b"GET /agent HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n";
    let connector = tokio_rustls::TlsConnector::from(liveload_core::tls::client_config(&pin));
    let mut lives = Vec::new();
    while Instant::now() < until {
        let opened = Instant::now();
        let tls = async {
            let tcp = TcpStream::connect(&address).await?;
            connector
                .connect(liveload_core::tls::agent_server_name(), tcp)
                .await
        };
        let Ok(mut stream) = tls.await else {
            lives.push(opened.elapsed()); // Closed during TLS (at the cap, say).
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        for byte in request.iter().cycle() {
            let mut buf = [0u8; 64];
            tokio::select! {
                _ = stream.read(&mut buf) => break, // Closed (or answered: both end it).
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if Instant::now() >= until {
                return lives;
            }
            if stream.write_all(&[*byte]).await.is_err() {
                break;
            }
        }
        lives.push(opened.elapsed());
    }
    lives
}

/// Log in, prepare and start one user, and wait for `Finished`.
async fn run_one_user(agent: &support::Agent, base_url: &str) {
    let (mut link, _) =
        AgentConnection::connect("n", &endpoint(agent), &Secret::new(TOKEN), deadline())
            .await
            .expect("the controller logs in through the flood");
    let steps = "  - navigate: /\n  - think: 500ms\n";
    let assignment = assignment(base_url, steps, 1, Duration::from_secs(3));
    link.send(&ControllerMessage::Prepare(Box::new(assignment)))
        .await
        .unwrap();
    let mut started = false;
    let mut iterations = 0;
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), link.recv())
            .await
            .expect("the agent answers")
            .unwrap();
        match message {
            AgentMessage::Prepared { .. } if !started => {
                started = true;
                link.send(&ControllerMessage::Start).await.unwrap();
            }
            AgentMessage::Snapshot(delta) => {
                iterations += delta.counters.get("iterations_ok").copied().unwrap_or(0);
            }
            AgentMessage::Finished(last) => {
                iterations += last.counters.get("iterations_ok").copied().unwrap_or(0);
                assert!(iterations > 0, "the user completed iterations");
                break;
            }
            AgentMessage::Failed { message } => panic!("{message}"),
            _ => {}
        }
    }
    // Hang up without a Shutdown: the agent stays up for the rest of the window.
    link.close().await;
}

/// 500 idle connections and a slowloris are open while the controller logs in over TLS and
/// runs a user. The agent closes the idle connections beyond its cap at once and the rest by
/// the deadline, closes every slowloris connection by the deadline (the upgrade is inside
/// it), lets the controller in, and spends under 0.5 s of CPU over the 10 s window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_before_login_costs_little_and_does_not_lock_the_controller_out() {
    raise_fd_limit();
    let target = demo_target::spawn(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let tls = liveload_core::tls::generate_run_certificate().unwrap();
    let pin = tls.1.clone();
    let agent = start(&[], &[], Some(tls));
    let pid = agent.child.id();
    let opened = Instant::now();
    let slow = tokio::spawn(slowloris(
        agent.address.clone(),
        pin,
        opened + DEADLINE + Duration::from_secs(4),
    ));
    tokio::time::sleep(Duration::from_millis(200)).await; // The slowloris is the oldest.
    let mut idle = Vec::new();
    for _ in 0..500 {
        idle.push(TcpStream::connect(&agent.address).await.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let closed_at_once = idle.iter().filter(|s| closed(s)).count();
    assert!(
        closed_at_once >= 500 - 64,
        "only {closed_at_once} of 500 idle connections closed beyond the cap"
    );

    let cpu_before = cpu_time(pid);
    let window = Instant::now();
    run_one_user(&agent, &format!("http://{target}")).await;
    let ran_for = window.elapsed();
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(ran_for)).await;
    let cpu = cpu_time(pid) - cpu_before;
    let measured = window.elapsed();
    let waited = opened.elapsed();
    let still_open = idle.iter().filter(|s| !closed(s)).count();
    let lives = slow.await.unwrap();
    eprintln!(
        "agent CPU over {measured:?}: {cpu:?} (the run took {ran_for:?}); idle connections \
         closed at once: {closed_at_once}; slowloris connections lived {lives:?}"
    );
    assert!(cpu < Duration::from_millis(500), "the agent used {cpu:?}");
    assert!(waited > DEADLINE + Duration::from_secs(1));
    assert_eq!(still_open, 0, "idle connections outlived the deadline");
    assert!(!lives.is_empty(), "the slowloris was never closed");
    // Every slowloris connection ends by the deadline; one that no newcomer evicted lives
    // until it (the upgrade is inside the deadline: it once started after it).
    let longest = *lives.iter().max().unwrap();
    assert!(longest <= DEADLINE + Duration::from_secs(2), "{lives:?}");
    assert!(longest >= DEADLINE - Duration::from_secs(1), "{lives:?}");
}

/// Before login a frame may be 64 KiB: a `Hello` of 100 KiB is dropped without an answer.
/// After login the limit is the full `MAX_FRAME_BYTES`: a 1 MiB frame is read and answered.
#[tokio::test]
async fn frames_are_small_until_login_then_full_size() {
    let agent = start_agent(&[]);
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/agent", agent.address))
        .await
        .unwrap();
    let big_hello = ControllerMessage::Hello {
        protocol_version: liveload_core::proto::PROTOCOL_VERSION,
        token: "x".repeat(100 * 1024),
        controller_version: "test".into(),
    };
    let frame = liveload_core::proto::encode(&big_hello);
    ws.send(Message::text(frame)).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
    match answer {
        Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => {}
        other => panic!("a 100 KiB frame before login was answered: {other:?}"),
    }

    let (mut link, _) =
        AgentConnection::connect("n", &endpoint(&agent), &Secret::new(TOKEN), deadline())
            .await
            .unwrap();
    let mut big_hello = big_hello;
    if let ControllerMessage::Hello { token, .. } = &mut big_hello {
        *token = "x".repeat(1024 * 1024);
    }
    link.send(&big_hello).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), link.recv())
        .await
        .expect("an answer")
        .unwrap();
    assert!(
        matches!(&reply, AgentMessage::Failed { message } if message.contains("already greeted")),
        "{reply:?}"
    );
}

/// Out of descriptors, `accept` fails at once for as long as connections wait in the backlog:
/// the agent pauses between tries instead of spinning on the error.
#[tokio::test]
async fn out_of_descriptors_the_agent_backs_off_instead_of_spinning() {
    let agent = start(
        &["prlimit", "--nofile=40:40", "--"],
        &["--no-browser"],
        None,
    );
    let pid = agent.child.id();
    let mut held = Vec::new();
    for _ in 0..80 {
        // The kernel completes connections into the backlog whether or not the agent accepts.
        match TcpStream::connect(&agent.address).await {
            Ok(stream) => held.push(stream),
            Err(_) => break,
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = cpu_time(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu = cpu_time(pid) - before;
    eprintln!("agent CPU over 2 s out of descriptors: {cpu:?}");
    assert!(cpu < Duration::from_millis(200), "the agent spun: {cpu:?}");
    let log = std::fs::read_to_string(&agent.log).unwrap();
    assert!(log.contains("accept failed"), "descriptors ran out: {log}");
    // Once the pending connections time out, descriptors free up and a controller gets in.
    drop(held);
    let login = AgentConnection::connect(
        "n",
        &endpoint(&agent),
        &Secret::new(TOKEN),
        tokio::time::Instant::now() + DEADLINE + Duration::from_secs(5),
    )
    .await;
    assert!(login.is_ok(), "{:?}", login.map(|(_, w)| w));
}
