//! The agent's TTL from its command line: a value past what the clock can count is refused at
//! start with a message, never a panic in the watchdog (issue 12).

use std::process::Command;
use std::time::Duration;

/// Regression: `started + Duration::from_secs(u64::MAX)` panicked ("overflow when adding
/// duration to instant") as the agent armed its watchdog.
#[test]
fn a_ttl_past_the_clock_is_refused_with_a_message() {
    let dir = std::env::temp_dir().join(format!("liveload-ttl-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("token");
    std::fs::write(&token_file, "0123456789abcdef0123456789abcdef").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_liveload-agent"))
        .args(["--listen", "127.0.0.1:0", "--no-browser", "--ttl"])
        .arg(u64::MAX.to_string())
        .env("LIVELOAD_AGENT_TOKEN_FILE", &token_file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // It must exit by itself, at once; kill it if it does not, so the test cannot hang.
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > end {
            let _ = child.kill();
            panic!("the agent kept running with an impossible TTL");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--ttl 18446744073709551615 s"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
