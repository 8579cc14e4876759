//! `GET /runs/{id}/events`: the run's per-second points as Server-Sent Events.
//!
//! A subscriber first gets every point the history holds (a page opened mid-run draws the
//! whole run so far), then each new one as it is taken, then one `end` event with the run's
//! final record. It subscribes to the live points *before* reading the history, and skips
//! live points it already replayed, so none is lost or doubled at the seam.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream, StreamExt as _};
use tokio::sync::{broadcast, watch};

use super::{AppState, run_or_answer, store_failed};
use crate::control::ErrorBody;
use crate::runs::LivePoint;

/// A run's points, live.
#[utoipa::path(get, path = "/runs/{id}/events", tag = "runs", params(("id" = String, Path, description = "The run's id")),
    responses(
        (status = 200, description = "`point` events (a LivePoint each), then one `end` event (the run's record)", content_type = "text/event-stream", body = LivePoint),
        (status = 404, body = ErrorBody),
    ))]
pub(super) async fn run_events(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    // Subscribe first: a point taken while the history is read still arrives.
    let live = state
        .runs
        .active(&id)
        .map(|run| (run.points.subscribe(), run.ended.clone()));
    if let Err(answer) = run_or_answer(&state, &id).await {
        return answer;
    }
    let stored = match state.store.points(&id).await {
        Ok(points) => points,
        Err(e) => return store_failed(&e),
    };
    let last = stored.last().and_then(|p| second_of(p));
    let replay = stream::iter(stored).map(|p| Event::default().event("point").data(p));
    let live_points = match live {
        Some((points, ended)) => live_stream(points, ended, last).boxed(),
        None => stream::empty().boxed(),
    };
    let store = state.store.clone();
    let end = stream::once(async move {
        let record = store.run(&id).await.ok().flatten();
        Event::default()
            .event("end")
            .data(serde_json::to_string(&record).unwrap_or_default())
    });
    let events = replay
        .chain(live_points)
        .chain(end)
        .map(Ok::<_, Infallible>);
    sse(events)
}

fn sse(events: impl Stream<Item = Result<Event, Infallible>> + Send + 'static) -> Response {
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// The `second` of a stored point.
fn second_of(point: &str) -> Option<u64> {
    serde_json::from_str::<LivePoint>(point)
        .ok()
        .map(|p| p.second)
}

/// New points until the run ends, skipping those at or before `after`.
fn live_stream(
    points: broadcast::Receiver<std::sync::Arc<str>>,
    ended: watch::Receiver<bool>,
    after: Option<u64>,
) -> impl Stream<Item = Event> + Send {
    stream::unfold(
        (points, ended, after),
        |(mut points, mut ended, after)| async move {
            loop {
                if *ended.borrow() {
                    return None;
                }
                tokio::select! {
                    point = points.recv() => match point {
                        Ok(point) => {
                            let second = second_of(&point);
                            if after.is_some() && second <= after {
                                continue;
                            }
                            let event = Event::default().event("point").data(&*point);
                            return Some((event, (points, ended, second.or(after))));
                        }
                        // A slow reader missed some: go on with the newest.
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return None,
                    },
                    changed = ended.changed() => {
                        if changed.is_err() {
                            return None;
                        }
                    }
                }
            }
        },
    )
}
