//! `/seen?v=VALUE`: a page that records the value it was opened with, and `/seen/list` (one
//! `MS VALUE` line per visit, in arrival order; `MS`: milliseconds since the server started):
//! what the server saw of the users' data, and when. Tests use it to prove which CSV row,
//! generated value, `on_start`/`on_stop` step or coordinated group reached the server.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::response::Html;
use axum::routing::get;

/// The values seen, in arrival order, each with its time (ms since the server started).
type Seen = Arc<Mutex<Vec<(u128, String)>>>;

/// The most values kept: a load test can open this page without bound.
const MAX_SEEN: usize = 100_000;

#[derive(serde::Deserialize)]
struct Value {
    v: Option<String>,
}

/// `/seen` and `/seen/list`.
pub(crate) fn routes() -> Router {
    let seen: Seen = Arc::default();
    let started = std::time::Instant::now();
    Router::new()
        .route(
            "/seen",
            get(
                move |State(seen): State<Seen>, Query(value): Query<Value>| async move {
                    // Bounded: a load test can open this page without end.
                    let value: String = value.v.unwrap_or_default().chars().take(256).collect();
                    let mut list = seen.lock().expect("not poisoned");
                    if list.len() < MAX_SEEN {
                        list.push((started.elapsed().as_millis(), value.clone()));
                    }
                    // Only letters, digits and a few marks go back into the page.
                    let shown: String = value
                        .chars()
                        .filter(|c| c.is_ascii_alphanumeric() || "-_.@".contains(*c))
                        .collect();
                    Html(format!(
                        "<!doctype html><title>Seen</title><p id=\"seen\">seen {shown}</p>"
                    ))
                },
            ),
        )
        .route(
            "/seen/list",
            get(|State(seen): State<Seen>| async move {
                let list = seen.lock().expect("not poisoned");
                list.iter()
                    .map(|(ms, v)| format!("{ms} {v}\n"))
                    .collect::<String>()
            }),
        )
        .with_state(seen)
}
