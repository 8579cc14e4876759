//! `/vitals`: a page with known Web Vitals, for the tests of `page.lcp`, `page.cls` and
//! `page.inp`. Its largest paint is a heading; 300 ms after load a banner pushes the button
//! below it down (a layout shift no input caused: CLS above 0; `body.shifted` then); a click
//! on the button blocks the main thread for 120 ms before the page reacts (an interaction of at
//! least 120 ms: INP; `body.clicked` then).

use axum::Router;
use axum::response::Html;
use axum::routing::get;

/// The page.
pub(crate) const VITALS: &str = r#"<!doctype html>
<html><head><title>Vitals</title></head>
<body>
<h1 style="font-size: 64px; margin: 0">Largest paint</h1>
<div id="banner" style="height: 0"></div>
<p>Below the banner, pushed down when it opens.</p>
<button id="slow" style="font-size: 24px">Slow button</button>
<script>
setTimeout(() => {
  document.getElementById("banner").style.height = "300px";
  requestAnimationFrame(() => setTimeout(() => document.body.classList.add("shifted"), 50));
}, 300);
document.getElementById("slow").addEventListener("click", () => {
  const start = performance.now();
  while (performance.now() - start < 120) {}
  document.body.classList.add("clicked");
});
</script>
</body></html>
"#;

/// `/vitals`.
pub(crate) fn routes() -> Router {
    Router::new().route("/vitals", get(|| async { Html(VITALS) }))
}
