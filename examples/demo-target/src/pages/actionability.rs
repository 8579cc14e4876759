//! `/actionability`: one element per way an element can be unready for a user, for the tests of
//! the element steps' checks and of their failure messages.
//!
//! Each element below fails exactly one check, for as long as the page lives (`#late` and
//! `#veiled` become ready after a moment, to prove that steps wait instead of failing):
//!
//! | element | what is wrong |
//! | --- | --- |
//! | `#hidden` | `display: none` |
//! | `#invisible` | `visibility: hidden` |
//! | `#empty` | no size |
//! | `#moving` | slides back and forth forever (never stable) |
//! | `#disabled`, `#aria-disabled` | disabled (attribute, `aria-disabled` ancestor) |
//! | `#covered` | under a fixed overlay, a sibling drawn after it (`<div class="overlay">`) |
//! | `#readonly` | a read-only input (cannot be filled) |
//! | `#late` | appears 400 ms after load |
//! | `#veiled` | covered for 400 ms after load, then free |
//! | `#far` | 3000 px down the page (must be scrolled to) |
//! | `#swap` | replaces its label on `mousedown`, so the browser sends no `click` for a press on it |
//!
//! Clicks on the clickable elements are logged into `#log` (`click:<id>`), presses on `#ready`
//! with the buttons held and the pointer type (`pointerdown:<buttons>:<type>`), and the text inputs
//! log their `beforeinput` and `input` events (`beforeinput:<id>`), so tests can see what a
//! user's action made the page receive. `#password` and `#token` are there for the secret
//! redaction tests.

use axum::Router;
use axum::response::Html;
use axum::routing::get;

/// `GET /actionability`.
pub(crate) const ACTIONABILITY: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Actionability</title>
<style>
  body { font-family: sans-serif; margin: 1rem; }
  button { margin: .2rem; }
  #hidden { display: none; }
  #invisible { visibility: hidden; }
  #empty { display: inline-block; width: 0; height: 0; padding: 0; border: 0; overflow: hidden; }
  @keyframes slide { from { transform: translateX(0); } to { transform: translateX(200px); } }
  #moving { animation: slide 1s linear infinite alternate; }
  #covered { position: fixed; right: 2rem; bottom: 2rem; }
  .overlay { position: fixed; right: 0; bottom: 0; width: 12rem; height: 6rem; background: rgba(0,0,0,.3); }
  #veil { position: absolute; background: rgba(255,0,0,.3); }
  #spacer { height: 3000px; }
</style>
</head>
<body>
<div id="row">
  <button id="ready" type="button">ready</button>
  <button id="hidden" type="button">hidden</button>
  <button id="invisible" type="button">invisible</button>
  <button id="empty" type="button">empty</button>
  <button id="moving" type="button">moving</button>
  <button id="disabled" type="button" disabled>disabled</button>
  <span aria-disabled="true"><button id="aria-disabled" type="button">aria-disabled</button></span>
  <button id="veiled" type="button">veiled</button>
  <button id="swap" type="button"><span>swap</span></button>
</div>
<p>
  <input id="text" type="text" value="old">
  <input id="readonly" type="text" value="fixed" readonly>
  <input id="password" type="password">
  <input id="token" type="text">
  <input id="agree" type="checkbox">
  <select id="plan"><option value="free">Free</option><option value="pro">Pro</option></select>
</p>
<p id="log"></p>
<div id="spacer"></div>
<button id="far" type="button">far</button>
<button id="covered" type="button">covered</button>
<div class="overlay"></div>
<script>
  const log = (entry) => { document.getElementById("log").textContent += entry + " "; };
  document.addEventListener("click", (e) => { if (e.target.id) log("click:" + e.target.id); });
  document.getElementById("ready").addEventListener("pointerdown", (e) => log("pointerdown:" + e.buttons + ":" + e.pointerType));
  // A label re-rendered on press: the node under the pointer is gone before the release.
  const swap = document.getElementById("swap");
  swap.addEventListener("mousedown", () => { swap.firstElementChild.replaceWith(Object.assign(document.createElement("span"), { textContent: "swap" })); });
  for (const id of ["text", "password", "token"]) {
    const input = document.getElementById(id);
    input.addEventListener("beforeinput", () => log("beforeinput:" + id));
    input.addEventListener("input", () => log("input:" + id));
  }
  // `#veiled` is covered for 400 ms, like a toast that goes away.
  const veiled = document.getElementById("veiled").getBoundingClientRect();
  const veil = document.createElement("div");
  veil.id = "veil";
  Object.assign(veil.style, { left: veiled.left + "px", top: veiled.top + "px", width: veiled.width + "px", height: veiled.height + "px" });
  document.body.appendChild(veil);
  setTimeout(() => veil.remove(), 400);
  setTimeout(() => {
    const late = document.createElement("button");
    late.id = "late";
    late.type = "button";
    late.textContent = "late";
    document.getElementById("row").appendChild(late);
  }, 400);
</script>
</body>
</html>
"#;

/// `/actionability`.
pub(crate) fn routes() -> Router {
    Router::new().route("/actionability", get(|| async { Html(ACTIONABILITY) }))
}
