//! `/table`: a heavy page, like a large LiveView list or a dashboard — 2,000 rows (`?rows=N`,
//! up to 20,000) of 8 cells, every row re-rendered once a second with new values. It costs a
//! browser several times the home page's memory and CPU, so calibration and sizing can be
//! shown to matter: the calibrated memory per user on it is several times the demo page's.
//!
//! `#rows` carries `data-count` (rows rendered) and `data-renders` (renders so far) once the
//! first render is done.

use axum::Router;
use axum::extract::Query;
use axum::response::Html;
use axum::routing::get;

/// The page; `__ROWS__` is replaced by the row count.
const TABLE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Live table</title>
<style>td{padding:2px 6px;font:12px monospace}tr:nth-child(odd){background:#f4f6f8}</style></head>
<body><h1>Orders</h1><table><thead><tr><th>#</th><th>customer</th><th>item</th><th>qty</th>
<th>price</th><th>total</th><th>status</th><th>updated</th></tr></thead><tbody id="rows"></tbody></table>
<script>
const rows = __ROWS__, body = document.getElementById('rows');
const names = ['Ada','Grace','Linus','Barbara','Ken','Margaret','Dennis','Frances'];
const items = ['widget','gadget','sprocket','flange','gizmo','doohickey'];
const states = ['new','paid','packed','shipped','delivered'];
let renders = 0;
function render() {
  const html = [];
  for (let i = 0; i < rows; i++) {
    const qty = 1 + ((i * 7 + renders * 13) % 9), price = (5 + (i * 31 + renders) % 200) / 2;
    html.push('<tr data-id="' + i + '"><td>' + i + '</td><td>' + names[(i + renders) % 8] +
      '</td><td>' + items[(i * 3 + renders) % 6] + '</td><td>' + qty + '</td><td>' +
      price.toFixed(2) + '</td><td>' + (qty * price).toFixed(2) + '</td><td>' +
      states[(i + renders) % 5] + '</td><td>' + new Date().toISOString() + '</td></tr>');
  }
  body.innerHTML = html.join('');
  renders++;
  body.dataset.count = rows;
  body.dataset.renders = renders;
}
render();
setInterval(render, 1000);
</script></body></html>
"#;

/// How many rows `/table` renders.
#[derive(serde::Deserialize)]
struct Rows {
    rows: Option<u32>,
}

/// `/table`.
pub(crate) fn routes() -> Router {
    Router::new().route(
        "/table",
        get(|Query(q): Query<Rows>| async move {
            let rows = q.rows.unwrap_or(2000).clamp(1, 20_000);
            Html(TABLE.replace("__ROWS__", &rows.to_string()))
        }),
    )
}
