//! No click is lost: many users click a component-library button (ripple, server-rendered label
//! swapped on every update, an overlay while a click is handled, a socket that connects after
//! load) as fast as the page lets them, while both cores are saturated, and the server counts
//! exactly the clicks liveload reported.
//!
//! A test binary of its own: it saturates every core for its whole run (about a minute), which
//! would slow (and skew) any test running beside it. Before the actionable click, the same
//! scenario lost 335 of 800 clicks and failed all 40 iterations: chromiumoxide's click landed
//! on the in-flight overlay, and the page never saw it.

use std::process::{Child, Command};
use std::time::Duration;

use liveload_e2e::*;

/// Busy-looping processes, one per core, killed (by pid) when dropped.
struct Hogs(Vec<Child>);

impl Hogs {
    fn start() -> Hogs {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Hogs(
            (0..cores)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .expect("sh runs")
                })
                .collect(),
        )
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

const SCENARIO: &str = r##"name: lost-clicks
base_url: http://127.0.0.1:1
users: 10
duration: 55s
iteration_timeout: 60s
step_timeout: 20s
steps:
  - navigate: /clicks
  # The page drops clicks made before its socket connects, as real frameworks do.
  - wait_for: { js: "window.socket && window.socket.connected" }
  - repeat:
      times: 20
      steps:
        - click: "#inc"
  - wait_for: { text: "count 20", timeout: 10s }
"##;

#[test]
fn every_click_reported_reaches_the_server_under_cpu_load() {
    let state = tempfile::tempdir().unwrap();
    let target = demo_target();
    let scenario = scenario_file(state.path(), "clicks.yaml", SCENARIO);
    let hogs = Hogs::start();
    let (code, report, out) = json_output(liveload(state.path()).args([
        "run",
        scenario.to_str().unwrap(),
        "--base-url",
        &target,
        "--output",
        "json",
        "--no-report",
    ]));
    drop(hogs);
    let address = target.trim_start_matches("http://");
    // The server answers a click after it has counted it; the last answers are in by now.
    std::thread::sleep(Duration::from_millis(500));
    let counted: u64 = http_get(address, "/clicks/total").trim().parse().unwrap();
    let clicks = &report["latencies"]["step:click #inc"];
    let failed = report["counters"]["step:click #inc:failed"]
        .as_u64()
        .unwrap_or(0);
    let reported = clicks["count"].as_u64().unwrap() - failed;
    eprintln!("clicks reported {reported}, counted by the server {counted}, failed {failed}");
    assert_eq!(
        counted,
        reported,
        "clicks lost: {report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(reported >= 1000, "too few clicks to tell: {reported}");
    assert_eq!(failed, 0, "no click step failed: {report}");
    assert_eq!(report["iterations_failed"], 0, "{report}");
    assert_eq!(code, 0, "{report}");
}
