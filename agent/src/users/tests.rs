use super::*;

#[test]
fn constant_and_ramped_arrivals() {
    // 10 per second for 3 seconds: 29 arrivals, 0.1 s apart (the 30th falls at the end).
    let times: Vec<f64> = (1..)
        .map_while(|k| arrival_time(k, 10.0, 10.0, 3.0))
        .collect();
    assert_eq!(times.len(), 29);
    assert!((times[0] - 0.1).abs() < 1e-9);
    // 0 -> 20 per second over 2 s: 20 arrivals in all, denser at the end.
    let ramp: Vec<f64> = (1..)
        .map_while(|k| arrival_time(k, 1e-9, 20.0, 2.0))
        .collect();
    assert!((19..=20).contains(&ramp.len()), "{}", ramp.len());
    let first_half = ramp.iter().filter(|t| **t < 1.0).count();
    assert!(
        first_half * 3 <= ramp.len(),
        "a quarter of arrivals in the first half"
    );
}

#[tokio::test]
async fn gate_spaces_starts_and_limits_concurrency() {
    let gate = Gate::new(&liveload_proto::NodeThrottle {
        min_interval_us: Some(20_000),
        max_concurrent: Some(2),
    });
    let started = Instant::now();
    let a = gate.enter().await;
    let b = gate.enter().await;
    assert!(started.elapsed() >= Duration::from_millis(20));
    // A third must wait for a permit.
    let third = tokio::time::timeout(Duration::from_millis(100), gate.enter()).await;
    assert!(third.is_err(), "only two at once");
    drop(a);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), gate.enter())
            .await
            .is_ok()
    );
    drop(b);
}
