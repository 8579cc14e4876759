//! The run history's conformance suite: one set of checks, run against both stores — SQLite
//! (a file in a temp dir) and PostgreSQL (a private server, `liveload-test-support`'s) — so
//! the two cannot differ in what a caller sees.

use std::sync::Arc;

use liveload_server::store::postgres::PostgresStore;
use liveload_server::store::sqlite::SqliteStore;
use liveload_server::store::{Artifact, RunEnd, RunRecord, RunStatus, Store};
use liveload_test_support::postgres::Postgres;

fn running(id: &str, created_unix_s: u64) -> RunRecord {
    RunRecord {
        id: id.to_string(),
        scenario: "checkout".to_string(),
        backend: "local".to_string(),
        status: RunStatus::Running,
        users: 25,
        created_unix_s,
        ended_unix_s: None,
        message: None,
        server: "ci-server".to_string(),
        exit_code: None,
    }
}

fn ids(runs: &[RunRecord]) -> Vec<&str> {
    runs.iter().map(|r| r.id.as_str()).collect()
}

async fn tokens(store: &dyn Store) {
    store.put_token("ci", "hash-ci").await.unwrap();
    store.put_token("alice", "hash-alice").await.unwrap();
    assert_eq!(
        store.token_name("hash-ci").await.unwrap().as_deref(),
        Some("ci")
    );
    assert_eq!(store.token_name("hash-unknown").await.unwrap(), None);

    // The same name again replaces the token: the old hash no longer opens anything.
    store.put_token("ci", "hash-ci-2").await.unwrap();
    assert_eq!(store.token_name("hash-ci").await.unwrap(), None);
    assert_eq!(
        store.token_name("hash-ci-2").await.unwrap().as_deref(),
        Some("ci")
    );
    assert_eq!(store.token_names().await.unwrap(), ["alice", "ci"]);

    assert!(store.delete_token("ci").await.unwrap());
    assert!(!store.delete_token("ci").await.unwrap());
    assert_eq!(store.token_name("hash-ci-2").await.unwrap(), None);
    assert_eq!(store.token_names().await.unwrap(), ["alice"]);
}

async fn scenarios(store: &dyn Store) {
    assert_eq!(store.scenario("smoke").await.unwrap(), None);
    store.put_scenario("smoke", "users: 1\n").await.unwrap();
    store.put_scenario("checkout", "users: 5\n").await.unwrap();
    store.put_scenario("smoke", "users: 2\n").await.unwrap();
    assert_eq!(
        store.scenario("smoke").await.unwrap().as_deref(),
        Some("users: 2\n")
    );
    assert_eq!(store.scenario_names().await.unwrap(), ["checkout", "smoke"]);
}

async fn runs(store: &dyn Store) {
    let older = running("run-older", 1_700_000_000);
    let newer = running("run-newer", 1_700_000_100);
    store.insert_run(&older, "users: 25\n").await.unwrap();
    store.insert_run(&newer, "users: 50\n").await.unwrap();
    assert_eq!(store.run("run-older").await.unwrap(), Some(older.clone()));
    assert_eq!(store.run("run-none").await.unwrap(), None);
    assert_eq!(
        ids(&store.runs().await.unwrap()),
        ["run-newer", "run-older"]
    );

    // Points come back in time order, whatever order they were written in.
    store.add_point("run-older", 2, r#"{"s":2}"#).await.unwrap();
    store.add_point("run-older", 0, r#"{"s":0}"#).await.unwrap();
    store.add_point("run-older", 1, r#"{"s":1}"#).await.unwrap();
    assert_eq!(
        store.points("run-older").await.unwrap(),
        [r#"{"s":0}"#, r#"{"s":1}"#, r#"{"s":2}"#]
    );
    assert!(store.points("run-newer").await.unwrap().is_empty());

    // Before it ends, a run has its scenario but no result or report.
    assert_eq!(
        store
            .artifact("run-older", Artifact::Scenario)
            .await
            .unwrap()
            .as_deref(),
        Some("users: 25\n")
    );
    assert_eq!(
        store.artifact("run-older", Artifact::Result).await.unwrap(),
        None
    );

    let end = RunEnd {
        status: Some(RunStatus::Passed),
        message: None,
        result_json: Some(r#"{"passed":true}"#.to_string()),
        report_html: Some("<html>report</html>".to_string()),
        exit_code: Some(0),
    };
    store
        .end_run("run-older", &end, 1_700_000_060)
        .await
        .unwrap();
    let ended = store.run("run-older").await.unwrap().unwrap();
    assert_eq!(ended.status, RunStatus::Passed);
    assert_eq!(ended.ended_unix_s, Some(1_700_000_060));
    assert_eq!(ended.message, None);
    assert_eq!(
        store
            .artifact("run-older", Artifact::Result)
            .await
            .unwrap()
            .as_deref(),
        Some(r#"{"passed":true}"#)
    );
    assert_eq!(
        store
            .artifact("run-older", Artifact::Report)
            .await
            .unwrap()
            .as_deref(),
        Some("<html>report</html>")
    );
    assert_eq!(
        store
            .artifact("run-older", Artifact::Scenario)
            .await
            .unwrap()
            .as_deref(),
        Some("users: 25\n")
    );
    assert_eq!(
        store
            .artifact("run-none", Artifact::Scenario)
            .await
            .unwrap(),
        None
    );

    // An error keeps its message.
    let failed = RunEnd {
        status: Some(RunStatus::Error),
        message: Some("no nodes".to_string()),
        ..RunEnd::default()
    };
    store
        .insert_run(&running("run-error", 1_700_000_050), "x")
        .await
        .unwrap();
    store
        .end_run("run-error", &failed, 1_700_000_051)
        .await
        .unwrap();
    let errored = store.run("run-error").await.unwrap().unwrap();
    assert_eq!(errored.status, RunStatus::Error);
    assert_eq!(errored.message.as_deref(), Some("no nodes"));
    assert_eq!(
        store.artifact("run-error", Artifact::Report).await.unwrap(),
        None
    );
}

async fn interrupted(store: &dyn Store) {
    // run-newer is still running (from `runs`); one more, and the ended ones stay as they are.
    store
        .insert_run(&running("run-late", 1_700_000_200), "users: 1\n")
        .await
        .unwrap();
    // Another server's run in a shared history: not this server's to interrupt.
    let mut theirs = running("run-theirs", 1_700_000_250);
    theirs.server = "other-server".into();
    store.insert_run(&theirs, "users: 1\n").await.unwrap();
    let mut unfinished = store.unfinished("ci-server").await.unwrap();
    unfinished.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(ids(&unfinished), ["run-late", "run-newer"]);
    // Each is ended once its nodes are gone (as the server's recovery does).
    let end = RunEnd {
        status: Some(RunStatus::Interrupted),
        message: Some("torn down at start-up".into()),
        ..RunEnd::default()
    };
    for id in ["run-late", "run-newer"] {
        store.end_run(id, &end, 1_700_000_300).await.unwrap();
        let run = store.run(id).await.unwrap().unwrap();
        assert_eq!(run.status, RunStatus::Interrupted, "{id}");
        assert_eq!(run.ended_unix_s, Some(1_700_000_300), "{id}");
    }
    assert_eq!(
        store.run("run-older").await.unwrap().unwrap().status,
        RunStatus::Passed
    );
    assert_eq!(
        store.run("run-theirs").await.unwrap().unwrap().status,
        RunStatus::Running,
        "another server's run is left alone"
    );
    assert_eq!(
        store.run("run-error").await.unwrap().unwrap().status,
        RunStatus::Error
    );
    assert!(store.unfinished("ci-server").await.unwrap().is_empty());
    assert_eq!(
        ids(&store.runs().await.unwrap()),
        [
            "run-theirs",
            "run-late",
            "run-newer",
            "run-error",
            "run-older"
        ]
    );
}

/// Every check, on an empty history.
async fn conformance(store: Arc<dyn Store>) {
    tokens(&*store).await;
    scenarios(&*store).await;
    runs(&*store).await;
    interrupted(&*store).await;
}

/// Write to a fresh history through one store, read it through another.
async fn write_history(store: &dyn Store) {
    store.put_token("ci", "hash-ci").await.unwrap();
    store.put_scenario("smoke", "users: 1\n").await.unwrap();
    store
        .insert_run(&running("run-1", 1_700_000_000), "users: 1\n")
        .await
        .unwrap();
    store.add_point("run-1", 0, "{}").await.unwrap();
}

async fn read_history(store: &dyn Store) {
    assert_eq!(
        store.token_name("hash-ci").await.unwrap().as_deref(),
        Some("ci")
    );
    assert_eq!(
        store.scenario("smoke").await.unwrap().as_deref(),
        Some("users: 1\n")
    );
    assert_eq!(
        store.run("run-1").await.unwrap(),
        Some(running("run-1", 1_700_000_000))
    );
    assert_eq!(store.points("run-1").await.unwrap(), ["{}"]);
}

#[tokio::test]
async fn sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("history.db")).unwrap();
    conformance(Arc::new(store)).await;
}

#[tokio::test]
async fn sqlite_history_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.db");
    write_history(&SqliteStore::open(&path).unwrap()).await;
    read_history(&SqliteStore::open(&path).unwrap()).await;
}

/// One server for the whole PostgreSQL suite (starting one takes seconds), stopped at the end:
/// each part gets a database of its own.
#[tokio::test]
async fn postgres_store() {
    let server = Postgres::start();
    let store = PostgresStore::connect(&server.url).await.unwrap();
    conformance(Arc::new(store)).await;

    // The history survives reconnecting, and connecting again to a database that has the
    // tables already is fine.
    let url = server.fresh_database("reopen");
    write_history(&PostgresStore::connect(&url).await.unwrap()).await;
    read_history(&PostgresStore::connect(&url).await.unwrap()).await;
    drop(server);
}

/// A PostgreSQL URL may carry a password: an error names where it tried, never the password.
#[tokio::test]
async fn postgres_errors_never_show_the_password() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://liveload:sup3r-s3cret@127.0.0.1:{port}/history");
    let Err(error) = PostgresStore::connect(&url).await else {
        panic!("nothing listens on port {port}, yet connecting succeeded");
    };
    let error = error.to_string();
    assert!(!error.contains("sup3r-s3cret"), "{error}");
    assert!(
        error.contains(&format!("127.0.0.1:{port}/history")),
        "{error}"
    );
}

/// The PostgreSQL link has no TLS: a database on another machine is refused before any
/// connection (its password would cross the network in clear).
#[tokio::test]
async fn postgres_on_another_machine_is_refused() {
    let error = liveload_server::store::postgres::PostgresStore::connect(
        "postgres://liveload:hunter2@db.example.com:5432/history",
    )
    .await
    .err()
    .expect("refused");
    assert!(error.0.contains("another machine"), "{error}");
    assert!(!error.0.contains("hunter2"), "{error}");
}
