//! The steps against real Chromium and the demo target's `/actionability` page: every
//! actionability check's failure message, steps that wait for elements to become ready, typing
//! that the page sees as typing, every wait honouring its timeout, and readable exceptions.

use std::time::{Duration, Instant};

use crate::testkit::Browser;

const MS_600: Duration = Duration::from_millis(600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_actionability_check_says_why_it_failed() {
    let b = Browser::launch().await;
    b.run(MS_600, "  - navigate: /actionability\n")
        .await
        .unwrap();
    for (step, expected) in [
        (
            "click: '#nothing'",
            "'#nothing' matches no element (waited 600ms)",
        ),
        (
            "click: '#hidden'",
            "'#hidden' is not visible (display: none, on it or an ancestor)",
        ),
        (
            "click: '#invisible'",
            "'#invisible' is not visible (visibility: hidden)",
        ),
        (
            "click: '#empty'",
            "'#empty' is not visible (it has no size)",
        ),
        (
            "click: '#moving'",
            "'#moving' is not stable (it moved or changed size",
        ),
        (
            "click: '#disabled'",
            "'#disabled' is disabled (waited 600ms)",
        ),
        (
            "click: '#aria-disabled'",
            "'#aria-disabled' is disabled (aria-disabled)",
        ),
        (
            "click: '#covered'",
            "'#covered' is covered by <div class=overlay> (waited 600ms)",
        ),
        (
            "hover: '#covered'",
            "'#covered' is covered by <div class=overlay>",
        ),
        (
            "fill: { selector: '#readonly', value: x }",
            "'#readonly' is read-only",
        ),
        (
            "fill: { selector: '#ready', value: x }",
            "'#ready' is not an input, a textarea",
        ),
        (
            "fill: { selector: '#agree', value: x }",
            "'#agree' is an input of type checkbox, which takes no typing",
        ),
        (
            "select: { selector: '#plan', value: gold }",
            "'#plan' has no option with value 'gold'",
        ),
        (
            "click: 'button[['",
            "'button[[' is not a valid CSS selector",
        ),
        (
            "click: '#swap'",
            "'#swap' got no click: the page replaced the element under the pointer",
        ),
    ] {
        let error = b.run(MS_600, &format!("  - {step}\n")).await.unwrap_err();
        assert!(error.contains(expected), "{step}: {error}");
        assert!(
            error.starts_with("step '")
                && error.contains(&format!("' at {}/actionability: ", b.base_url)),
            "the step and the page are named: {error}"
        );
    }
    // Nothing was clicked: every failed check kept the press from the page.
    assert_eq!(
        b.eval("document.getElementById('log').textContent").await,
        ""
    );
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn element_steps_wait_until_the_element_is_ready_then_act_once() {
    let b = Browser::launch().await;
    let started = Instant::now();
    b.run(
        Duration::from_secs(10),
        "  - navigate: /actionability
  - click: '#ready'
  - click: '#late'
  - click: '#veiled'
  - click: '#far'
  - check: '#agree'
  - uncheck: '#agree'
  - check: '#agree'
  - select: { selector: '#plan', value: pro }
  - hover: '#ready'
",
    )
    .await
    .unwrap();
    assert!(started.elapsed() < Duration::from_secs(8));
    let log = b.eval("document.getElementById('log').textContent").await;
    assert_eq!(
        log.as_str().unwrap().trim(),
        "pointerdown:1:mouse click:ready click:late click:veiled click:far click:agree click:agree click:agree",
        "each click reached its element once, as a mouse with its left button held"
    );
    assert_eq!(
        b.eval("document.getElementById('agree').checked").await,
        true
    );
    assert_eq!(b.eval("document.getElementById('plan').value").await, "pro");
    assert_eq!(
        b.eval("document.querySelector('#ready:hover') !== null")
            .await,
        true
    );
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fill_types_the_way_a_user_does() {
    let b = Browser::launch().await;
    b.run(
        Duration::from_secs(5),
        "  - navigate: /actionability
  - fill: { selector: '#text', value: 'new text' }
  - fill: { selector: '#token', value: 'abc' }
  - clear: '#token'
",
    )
    .await
    .unwrap();
    assert_eq!(
        b.eval("document.getElementById('text').value").await,
        "new text"
    );
    assert_eq!(b.eval("document.getElementById('token').value").await, "");
    let log = b.eval("document.getElementById('log').textContent").await;
    // The old value was replaced by one insertion the page saw as typing, then deleted.
    assert_eq!(
        log.as_str().unwrap().trim(),
        "beforeinput:text input:text beforeinput:token input:token beforeinput:token input:token"
    );
    b.close().await;
}

/// Every wait gives up at its `timeout:`, else at the scenario's `step_timeout`, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_wait_honours_its_timeout_else_step_timeout() {
    let b = Browser::launch().await;
    b.run(MS_600, "  - navigate: /actionability\n")
        .await
        .unwrap();
    // Each wait twice: leaving the time to `step_timeout` (600 ms), and with `timeout: 300ms`.
    let never = [
        (
            "wait_for: '#nothing'",
            "wait_for: { selector: '#nothing', timeout: 300ms }",
            "'#nothing' visible not reached",
        ),
        (
            "wait_for: { selector: '#ready', state: hidden }",
            "wait_for: { selector: '#ready', state: hidden, timeout: 300ms }",
            "'#ready' hidden not reached",
        ),
        (
            "wait_for: { text: 'never shown' }",
            "wait_for: { text: 'never shown', timeout: 300ms }",
            "text 'never shown' not reached",
        ),
        (
            "wait_for: { url: '*/elsewhere' }",
            "wait_for: { url: '*/elsewhere', timeout: 300ms }",
            "a URL matching '*/elsewhere' not reached",
        ),
        (
            "wait_for: { js: 'window.never === true' }",
            "wait_for: { js: 'window.never === true', timeout: 300ms }",
            "`window.never === true` not reached",
        ),
        (
            "wait_for: { network_idle: 30s }",
            "wait_for: { network_idle: 30s, timeout: 300ms }",
            "the network did not go quiet for 30s",
        ),
        (
            "liveview_connected",
            "liveview_connected: { timeout: 300ms }",
            "the LiveView connection (.phx-connected) not reached",
        ),
        (
            "liveview_idle: '#nothing'",
            "liveview_idle: { selector: '#nothing', timeout: 300ms }",
            "no phx loading class in '#nothing' not reached",
        ),
        (
            "liveview_submit: { form: '#nothing' }",
            "liveview_submit: { form: '#nothing', timeout: 300ms }",
            "'#nothing' matches no element",
        ),
    ];
    for (default, own, expected) in never {
        for (step, limit) in [(default, MS_600), (own, Duration::from_millis(300))] {
            let started = Instant::now();
            let error = b.run(MS_600, &format!("  - {step}\n")).await.unwrap_err();
            let took = started.elapsed();
            assert!(error.contains(expected), "{step}: {error}");
            let written = super::actions::seconds(limit);
            assert!(
                error.contains(&written),
                "{step} names its timeout, {written}: {error}"
            );
            assert!(
                took >= limit && took < limit + Duration::from_secs(2),
                "{step} took {took:?}, its limit is {limit:?}"
            );
        }
    }
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_js_waits_in_the_page_through_exceptions() {
    let b = Browser::launch().await;
    let started = Instant::now();
    // `window.socket` does not exist for 300 ms: the condition throws until then.
    b.run(
        Duration::from_secs(5),
        "  - navigate: /actionability
  - eval: \"setTimeout(() => { window.socket = { connected: true }; }, 300)\"
  - wait_for: { js: 'window.socket.connected' }
",
    )
    .await
    .unwrap();
    assert!(started.elapsed() < Duration::from_secs(4));
    let error = b
        .run(MS_600, "  - wait_for: { js: 'window.nope.connected' }\n")
        .await
        .unwrap_err();
    assert!(
        error.contains("(last error: Cannot read properties of undefined (reading 'connected'))"),
        "{error}"
    );
    let error = b
        .run(MS_600, "  - wait_for: { js: 'window.(' }\n")
        .await
        .unwrap_err();
    assert!(
        error.contains("SyntaxError"),
        "a condition that cannot compile fails at once: {error}"
    );
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_exception_reads_as_its_message() {
    let b = Browser::launch().await;
    b.run(MS_600, "  - navigate: /actionability\n")
        .await
        .unwrap();
    let error = b
        .run(MS_600, "  - eval: \"throw new Error('count is 4')\"\n")
        .await
        .unwrap_err();
    assert!(
        error.contains("JavaScript error: Error: count is 4 (at "),
        "{error}"
    );
    let error = b
        .run(
            MS_600,
            "  - eval: \"Promise.reject(new TypeError('no session'))\"\n",
        )
        .await
        .unwrap_err();
    assert!(error.contains("TypeError: no session"), "{error}");
    b.close().await;
}

/// Users open http, https, data and about:blank; a `file:` URL only when the scenario allows
/// it. A page's own script cannot take the user there either: Chromium refuses web pages
/// navigating to local files, so the navigate step is the one door, and the agent guards it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn navigation_is_limited_to_web_schemes_unless_the_scenario_allows_more() {
    let mut b = Browser::launch().await;
    let refused = b
        .run(MS_600, "  - navigate: file:///etc/hostname\n")
        .await
        .unwrap_err();
    assert!(refused.contains("file: URL is not allowed"), "{refused}");
    b.run(MS_600, "  - navigate: /actionability\n")
        .await
        .unwrap();
    b.eval("location.href = 'file:///etc/hostname'; 1").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let here = b.eval("location.href").await;
    assert!(here.as_str().unwrap().starts_with("http://"), "{here}");

    b.allow_schemes = vec!["file".into()];
    b.run(MS_600, "  - navigate: file:///etc/hostname\n")
        .await
        .unwrap();
    let here = b.eval("location.href").await;
    assert_eq!(here.as_str(), Some("file:///etc/hostname"));
    b.close().await;
}
