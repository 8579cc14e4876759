//! `/runs` and `/runs/{id}/…`: start, list, read, change and stop runs.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{AppState, error_response, no_such_run, refuse, run_or_answer, store_failed};
use crate::auth::Caller;
use crate::control::{self, ErrorBody, UsersAnswer, UsersChange};
use crate::runs::{LivePoint, RunRequest};
use crate::store::{Artifact, RunRecord};

/// A run with what is known of it now.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunView {
    /// The history's record.
    #[serde(flatten)]
    pub run: RunRecord,
    /// While it runs: its live status (users, nodes, counters, latency summaries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub live: Option<serde_json::Value>,
    /// Once it has a result: each threshold's verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub thresholds: Option<serde_json::Value>,
    /// Once it has a result: its plan (nodes, users per node, the facts used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub plan: Option<serde_json::Value>,
}

/// Start a run.
#[utoipa::path(post, path = "/runs", request_body = RunRequest, tag = "runs",
    responses(
        (status = 201, description = "Started: nodes are being created", body = RunRecord),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 409, description = "A run of this scenario is in progress", body = ErrorBody),
        (status = 422, description = "Invalid scenario or options (a scenario error has its line and column)", body = ErrorBody),
    ))]
pub(super) async fn create_run(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Response {
    let request: RunRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                format!("the request body is not a run request: {e}"),
            );
        }
    };
    // On a task of its own: a client that hangs up mid-request must not cancel a start half
    // done (a run recorded but never launched).
    let runs = state.runs.clone();
    let by = caller.0.clone();
    let started = tokio::spawn(async move { runs.start(request, &by).await }).await;
    let started = started.unwrap_or_else(|e| {
        Err(liveload_core::Error::RunFailed {
            message: format!("starting the run failed: {e}"),
        })
    });
    match started {
        Ok(record) => {
            tracing::info!(run = %record.id, by = %caller.0, "run started");
            (StatusCode::CREATED, axum::Json(record)).into_response()
        }
        Err(e) => error_response(&e),
    }
}

/// Every run, newest first.
#[utoipa::path(get, path = "/runs", tag = "runs",
    responses((status = 200, body = Vec<RunRecord>), (status = 401, body = ErrorBody)))]
pub(super) async fn list_runs(State(state): State<AppState>) -> Response {
    match state.store.runs().await {
        Ok(runs) => axum::Json(runs).into_response(),
        Err(e) => store_failed(&e),
    }
}

/// One run: its record, its live status while it runs, its thresholds and plan once it ends.
#[utoipa::path(get, path = "/runs/{id}", tag = "runs", params(("id" = String, Path, description = "The run's id")),
    responses((status = 200, body = RunView), (status = 404, body = ErrorBody)))]
pub(super) async fn get_run(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let run = match run_or_answer(&state, &id).await {
        Ok(run) => run,
        Err(answer) => return answer,
    };
    let live = state
        .runs
        .active(&id)
        .map(|a| serde_json::to_value(&*a.control.status.borrow()).unwrap_or_default());
    let result = match state.store.artifact(&id, Artifact::Result).await {
        Ok(result) => result.and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok()),
        Err(e) => return store_failed(&e),
    };
    let view = RunView {
        run,
        live,
        thresholds: result.as_ref().map(|r| r["thresholds"].clone()),
        plan: result.as_ref().map(|r| r["plan"].clone()),
    };
    axum::Json(view).into_response()
}

/// Stop a run: its users stop, every node is torn down, it ends as `stopped`.
#[utoipa::path(delete, path = "/runs/{id}", tag = "runs", params(("id" = String, Path, description = "The run's id")),
    responses(
        (status = 202, description = "Stopping; it ends once torn down", body = RunRecord),
        (status = 404, body = ErrorBody),
        (status = 409, description = "It has already ended", body = ErrorBody),
    ))]
pub(super) async fn stop_run(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let run = match run_or_answer(&state, &id).await {
        Ok(run) => run,
        Err(answer) => return answer,
    };
    if !state.runs.stop(&id) {
        return refuse(
            StatusCode::CONFLICT,
            "run_ended",
            format!("run '{id}' has already ended ({})", run.status.as_str()),
        );
    }
    (StatusCode::ACCEPTED, axum::Json(run)).into_response()
}

/// Add or remove users of a running (closed-model) run.
#[utoipa::path(post, path = "/runs/{id}/users", tag = "runs", request_body = UsersChange,
    params(("id" = String, Path, description = "The run's id")),
    responses(
        (status = 200, body = UsersAnswer),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Refused (no room, open model, ended)", body = ErrorBody),
    ))]
pub(super) async fn change_users(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let Some(run) = state.runs.active(&id) else {
        return not_running(&state, &id).await;
    };
    let change: UsersChange = match serde_json::from_slice(&body) {
        Ok(change) => change,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "invalid_users_change",
                format!("send {{\"add\": N}} or {{\"remove\": N}}: {e}"),
            );
        }
    };
    match control::change_users(&run.control, &change).await {
        Ok(target_users) => axum::Json(UsersAnswer { target_users }).into_response(),
        Err(refusal) => (refusal.status, axum::Json(refusal.body)).into_response(),
    }
}

/// 409 for a run that has ended, 404 for none.
async fn not_running(state: &AppState, id: &str) -> Response {
    match state.store.run(id).await {
        Ok(Some(run)) => refuse(
            StatusCode::CONFLICT,
            "run_ended",
            format!("run '{id}' has ended ({})", run.status.as_str()),
        ),
        Ok(None) => no_such_run(id),
        Err(e) => store_failed(&e),
    }
}

/// A running run's live status: the same document as the CLI's control endpoint's `/status`.
#[utoipa::path(get, path = "/runs/{id}/status", tag = "runs", params(("id" = String, Path, description = "The run's id")),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn run_status(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.runs.active(&id) {
        Some(run) => axum::Json(run.control.status.borrow().clone()).into_response(),
        None => not_running(&state, &id).await,
    }
}

/// A run's per-second points so far (what `/events` streams).
#[utoipa::path(get, path = "/runs/{id}/points", tag = "runs", params(("id" = String, Path, description = "The run's id")),
    responses((status = 200, body = Vec<LivePoint>), (status = 404, body = ErrorBody)))]
pub(super) async fn run_points(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    if let Err(answer) = run_or_answer(&state, &id).await {
        return answer;
    }
    match state.store.points(&id).await {
        Ok(points) => json_array(&points),
        Err(e) => store_failed(&e),
    }
}

/// The report's charts over the run's seconds so far (the dashboard shows them while it
/// runs), as a page of their own.
#[utoipa::path(get, path = "/runs/{id}/charts", tag = "runs", params(("id" = String, Path, description = "The run's id")),
    responses((status = 200, content_type = "text/html", body = String), (status = 404, body = ErrorBody)))]
pub(super) async fn run_charts(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    if let Err(answer) = run_or_answer(&state, &id).await {
        return answer;
    }
    // A finished run: the seconds its result holds (every one, as its report draws them).
    if let Ok(Some(result)) = state.store.artifact(&id, Artifact::Result).await
        && let Ok(report) = serde_json::from_str::<liveload_core::run::RunReport>(&result)
    {
        return document(
            liveload_core::report::live_charts(&report.series),
            "text/html; charset=utf-8",
        );
    }
    let points = match state.store.points(&id).await {
        Ok(points) => points,
        Err(e) => return store_failed(&e),
    };
    // A running one: the seconds closed so far, each once (a tick that found no newly closed
    // second repeats the last one).
    let mut seconds: Vec<liveload_core::metrics::SecondPoint> = Vec::new();
    for point in points
        .iter()
        .filter_map(|p| serde_json::from_str::<LivePoint>(p).ok())
    {
        if let Some(step) = point.step
            && seconds.last().is_none_or(|last| last.second < step.second)
        {
            seconds.push(step);
        }
    }
    document(
        liveload_core::report::live_charts(&seconds),
        "text/html; charset=utf-8",
    )
}

/// A document of the server's own making (a report, charts, a result), shown in the
/// dashboard's frames: sandboxed, it runs no script and reaches no cookie, whatever a run's
/// names put in it.
fn document(text: String, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (
                header::CONTENT_SECURITY_POLICY,
                "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:",
            ),
        ],
        text,
    )
        .into_response()
}

/// Stored JSON documents as one JSON array, without parsing them again.
fn json_array(items: &[String]) -> Response {
    let body = format!("[{}]", items.join(","));
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A finished run's `result.json` (schema as the CLI writes it).
#[utoipa::path(get, path = "/runs/{id}/result", tag = "runs", params(("id" = String, Path, description = "The run's id")),
    responses((status = 200, body = Object), (status = 404, description = "No such run, or it left no result", body = ErrorBody)))]
pub(super) async fn run_result(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    artifact(&state, &id, Artifact::Result, "application/json").await
}

/// A finished run's `report.html`.
#[utoipa::path(get, path = "/runs/{id}/report", tag = "runs", params(("id" = String, Path, description = "The run's id")),
    responses((status = 200, content_type = "text/html", body = String), (status = 404, body = ErrorBody)))]
pub(super) async fn run_report(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    artifact(&state, &id, Artifact::Report, "text/html; charset=utf-8").await
}

async fn artifact(
    state: &AppState,
    id: &str,
    which: Artifact,
    content_type: &'static str,
) -> Response {
    match state.store.artifact(id, which).await {
        Ok(Some(text)) => document(text, content_type),
        Ok(None) => match state.store.run(id).await {
            Ok(Some(run)) => refuse(
                StatusCode::NOT_FOUND,
                "no_result",
                if run.status.ended() {
                    format!(
                        "run '{id}' ended without a result ({})",
                        run.status.as_str()
                    )
                } else {
                    format!("run '{id}' is still running: its result comes when it ends")
                },
            ),
            Ok(None) => no_such_run(id),
            Err(e) => store_failed(&e),
        },
        Err(e) => store_failed(&e),
    }
}
