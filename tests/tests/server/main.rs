//! Server mode (`liveload serve`) end to end: the real binary on a free port, runs on the
//! local backend against the demo target, the history in SQLite and PostgreSQL, and the
//! dashboard driven in real Chromium. What the server claims is checked against what the
//! provider (the local backend's process groups) and the target saw.

mod api;
mod dashboard;
mod history;
mod safety;

/// A protocol-user scenario (no browser: fast) that keeps `users` busy for `duration`.
fn scenario(name: &str, target: &str, users: u64, duration: &str) -> String {
    format!(
        "name: {name}\nengine: http\nbase_url: {target}\nusers: {users}\nduration: {duration}\n\
         steps:\n  - request: /seen?v={name}\n  - think: 100ms\n"
    )
}

/// A run request for `yaml`.
fn request(yaml: &str) -> String {
    serde_json::json!({ "scenario_yaml": yaml }).to_string()
}

/// Every route the API serves: the OpenAPI document must list exactly these.
const ROUTES: &[(&str, &str)] = &[
    ("delete", "/runs/{id}"),
    ("delete", "/session"),
    ("get", "/backends"),
    ("get", "/metrics"),
    ("get", "/nodes"),
    ("get", "/runs"),
    ("get", "/runs/{id}"),
    ("get", "/runs/{id}/charts"),
    ("get", "/runs/{id}/events"),
    ("get", "/runs/{id}/points"),
    ("get", "/runs/{id}/report"),
    ("get", "/runs/{id}/result"),
    ("get", "/runs/{id}/status"),
    ("get", "/scenarios"),
    ("get", "/scenarios/{name}"),
    ("post", "/runs"),
    ("post", "/runs/{id}/users"),
    ("post", "/session"),
    ("put", "/scenarios/{name}"),
];
