//! The HTTP API under `/api/v1`, and the app that serves it with the dashboard.
//!
//! Every route is registered through `utoipa_axum`'s router together with its OpenAPI
//! operation, so the document served at `/api/v1/openapi.json` cannot miss a route (and a
//! test walks it to check each operation answers). Errors are [`ErrorBody`]: the CLI's own
//! codes and messages (`liveload_core::Error::to_json`), so a scenario error carries its
//! `line` and `column` here as it does on the terminal.

mod events;
mod other;
mod run_routes;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use liveload_core::Error;
use utoipa::OpenApi as _;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{AuthState, HostGuard, require_token};
use crate::control::ErrorBody;
use crate::runs::Runs;
use crate::store::Store;

pub use other::NodesOfBackend;
pub use run_routes::RunView;

/// What every handler sees.
#[derive(Clone)]
pub struct AppState {
    /// The server's runs.
    pub runs: Arc<Runs>,
    /// The run history.
    pub store: Arc<dyn Store>,
    /// The `Host` check.
    pub guard: Arc<HostGuard>,
}

/// The OpenAPI document's fixed parts; the operations come from the routes.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "liveload server API",
        description = "Start, watch, change and stop load tests; read their history. \
            Every route but `POST /session` needs `Authorization: Bearer <token>` \
            (`liveload serve token create NAME`)."
    ),
    servers((url = "/api/v1")),
    modifiers(&BearerScheme),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API's routes (paths relative to `/api/v1`) with their OpenAPI document.
pub fn api_router(state: &AppState) -> OpenApiRouter<AppState> {
    let auth = AuthState {
        store: state.store.clone(),
        guard: state.guard.clone(),
    };
    let authenticated = OpenApiRouter::new()
        .routes(routes!(run_routes::list_runs, run_routes::create_run))
        .routes(routes!(run_routes::get_run, run_routes::stop_run))
        .routes(routes!(run_routes::change_users))
        .routes(routes!(run_routes::run_status))
        .routes(routes!(run_routes::run_points))
        .routes(routes!(run_routes::run_charts))
        .routes(routes!(run_routes::run_result))
        .routes(routes!(run_routes::run_report))
        .routes(routes!(events::run_events))
        .routes(routes!(other::list_nodes))
        .routes(routes!(other::metrics))
        .routes(routes!(other::list_backends))
        .routes(routes!(other::list_scenarios))
        .routes(routes!(other::get_scenario, other::put_scenario))
        .route_layer(from_fn_with_state(auth, require_token));
    let public = OpenApiRouter::new().routes(routes!(other::login, other::logout));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(authenticated)
        .merge(public)
}

/// The OpenAPI document alone.
pub fn openapi(state: &AppState) -> utoipa::openapi::OpenApi {
    api_router(state).into_openapi()
}

/// The whole app: the API under `/api/v1`, its document, and the dashboard.
pub fn app(state: AppState) -> Router {
    let guard = state.guard.clone();
    let (api, document) = api_router(&state).split_for_parts();
    let document = Arc::new(document.to_json().expect("the OpenAPI document serialises"));
    let api = api
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let document = document.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        document.as_str().to_string(),
                    )
                }
            }),
        )
        .with_state(state);
    Router::new()
        .nest("/api/v1", api)
        .merge(crate::dashboard::routes())
        .layer(from_fn_with_state(guard, crate::auth::require_own_host))
}

/// The HTTP status of an error: the request's fault (422), a conflict with what runs (409),
/// or the server's or a provider's (500/502).
pub fn status_of(error: &Error) -> StatusCode {
    match error {
        Error::Scenario { .. }
        | Error::InvalidOption { .. }
        | Error::ClusterNameInvalid { .. }
        | Error::MaxAllowedNodesInvalid { .. }
        | Error::DataRowsTooFew { .. }
        | Error::AssignmentTooLarge { .. }
        | Error::ConfirmationRequired { .. }
        | Error::CostCapExceeded { .. }
        | Error::CostUnknown { .. }
        | Error::InsecureLink { .. }
        | Error::NecessaryNodesExceedsMaxAllowedNodes { .. }
        | Error::NodeTooSmall { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        Error::ScenarioIsAlreadyRunning { .. } => StatusCode::CONFLICT,
        Error::Backend(_) | Error::AgentConnection { .. } | Error::AgentRejected { .. } => {
            StatusCode::BAD_GATEWAY
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error as the API answers it: the CLI's JSON document for it.
pub fn error_response(error: &Error) -> Response {
    (status_of(error), axum::Json(error.to_json())).into_response()
}

/// A plain refusal in the API's error shape.
pub fn refuse(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, axum::Json(ErrorBody::new(code, message))).into_response()
}

/// "No such run" (404).
pub fn no_such_run(id: &str) -> Response {
    refuse(
        StatusCode::NOT_FOUND,
        "run_not_found",
        format!("no run has id '{id}'"),
    )
}

/// The run `id` from the history, or the answer to give instead (404, or 503).
pub async fn run_or_answer(
    state: &AppState,
    id: &str,
) -> Result<crate::store::RunRecord, Response> {
    match state.store.run(id).await {
        Ok(Some(run)) => Ok(run),
        Ok(None) => Err(no_such_run(id)),
        Err(e) => Err(store_failed(&e)),
    }
}

/// The history could not be read or written (503). The database's own words (its host, its
/// database's name) go to the server's log, not to the client.
pub fn store_failed(error: &crate::store::StoreError) -> Response {
    tracing::error!(%error, "run history");
    refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        "the run history cannot be read or written now; the server's log says why",
    )
}
