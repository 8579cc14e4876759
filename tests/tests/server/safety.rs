//! What the server refuses: cross-site use of its cookie, reading its own files for a request,
//! requests beyond its limits, serving in clear, and secrets on command lines.

use liveload_e2e::server::{Served, create_token};
use liveload_e2e::*;

use crate::{request, scenario};

/// The dashboard's cookie cannot be used from another site, requests never read the server's
/// files, and the server's limits hold whatever a request asks.
#[test]
fn cookies_files_and_limits_are_held_by_the_server() {
    let state = tempfile::tempdir().unwrap();
    let token = create_token(state.path(), &[], "ci");
    let server = Served::start(state.path(), &[], &["--max-allowed-nodes", "3"]);
    let login = serde_json::json!({ "token": token }).to_string();
    // Login needs the dashboard's header (a cross-site form cannot send it).
    assert_eq!(server.call("POST", "/session", "", Some(&login)).0, 403);
    let dashboard = "X-Liveload-Dashboard: 1".to_string();
    let answer = server.exchange(
        "POST",
        "/api/v1/session",
        std::slice::from_ref(&dashboard),
        Some(&login),
    );
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    let cookie_line = answer
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap();
    assert!(cookie_line.contains("HttpOnly") && cookie_line.contains("SameSite=Strict"));
    let cookie = format!("Cookie: liveload_token={token}");
    assert_eq!(
        server
            .raw("GET", "/api/v1/runs", std::slice::from_ref(&cookie), None)
            .0,
        200
    );
    // A change with the cookie alone is refused; with the header it is heard.
    let change = Some(r#"{"scenario": "none"}"#);
    assert_eq!(
        server
            .raw(
                "POST",
                "/api/v1/runs",
                std::slice::from_ref(&cookie),
                change
            )
            .0,
        403
    );
    assert_eq!(
        server
            .raw("POST", "/api/v1/runs", &[cookie, dashboard], change)
            .0,
        422
    );

    // A scenario sent over the API cannot make the server read a file.
    let secret = state.path().join("secret.csv");
    std::fs::write(&secret, "password\nhunter2\n").unwrap();
    let reads = format!(
        "name: reads\nbase_url: http://127.0.0.1:1\nusers: 1\nduration: 1s\ndata:\n  file: {}\nsteps:\n  - request: /\n",
        secret.display()
    );
    let refused = server.json("POST", "/runs", &token, Some(&request(&reads)), 422);
    assert_eq!(refused["error"], "scenario_invalid");
    assert_eq!(refused["line"], 5, "{refused}");
    assert!(!refused.to_string().contains("hunter2"));
    let stored = server.call("PUT", "/scenarios/..%2Fetc", &token, Some("name: x\n"));
    assert_eq!(stored.0, 422, "{stored:?}");

    // The server's node cap is a ceiling.
    let over = serde_json::json!({
        "scenario_yaml": scenario("over", "http://127.0.0.1:1", 1, "1s"),
        "max_allowed_nodes": 4
    });
    let refused = server.json("POST", "/runs", &token, Some(&over.to_string()), 422);
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("at most 3 nodes"),
        "{refused}"
    );
}

/// `liveload serve` refuses to serve beyond loopback without TLS, and a database password on
/// its command line; `--server` refuses plain HTTP to another machine.
#[test]
fn serve_refuses_what_would_expose_a_secret() {
    let state = tempfile::tempdir().unwrap();
    let open = liveload(state.path())
        .args(["serve", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(open.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&open.stderr).contains("--tls-cert"));
    let password = liveload(state.path())
        .args(["serve", "--database", "postgres://u:hunter2@127.0.0.1:1/x"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&password.stderr);
    assert_eq!(password.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("LIVELOAD_DATABASE") && !stderr.contains("hunter2"),
        "{stderr}"
    );
    let remote = liveload(state.path())
        .args(["nodes", "--server", "http://192.0.2.1:7654"])
        .env("LIVELOAD_SERVER_TOKEN", "x")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&remote.stderr).contains("https://"));
}
