//! `/about`: a second, static page, for scenarios that navigate between pages (the home page
//! links here, and this page links back).

use axum::Router;
use axum::response::Html;
use axum::routing::get;

/// `GET /about`.
pub(crate) const ABOUT: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>About the demo</title></head>
<body><h1>About</h1><p>The liveload demo target.</p><a id="home" href="/">home</a></body></html>
"#;

/// `/about`.
pub(crate) fn routes() -> Router {
    Router::new().route("/about", get(|| async { Html(ABOUT) }))
}
