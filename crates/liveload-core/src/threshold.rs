//! Pass/fail thresholds, evaluated on the merged cluster-wide metrics while the run goes on.
//!
//! ```text
//! p95(step:checkout) < 800ms      a percentile of a latency metric (p50, p90, p99.9, ...)
//! avg(iteration) <= 2s            also min, max, avg
//! count(step:login) >= 100        samples of a metric
//! error_rate < 1%                 failed iterations / all iterations
//! ```
//!
//! A threshold with `abort_on_fail` stops the run as soon as it fails (the run still tears down
//! and reports); the others are judged at the end. A failed threshold makes `liveload run` exit
//! with [`crate::error::exit_code::THRESHOLD_FAILED`].

use serde::Serialize;

use crate::metrics::{MetricsAggregate, counter};

/// A parsed threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Threshold {
    /// The expression as written.
    pub expr: String,
    /// What is measured.
    pub measure: Measure,
    /// How it is compared.
    pub op: Comparison,
    /// The limit (milliseconds for latencies, a fraction for rates, a number for counts).
    pub limit: f64,
    /// Stop the run as soon as this threshold fails.
    pub abort_on_fail: bool,
}

/// What a threshold measures.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Measure {
    /// A percentile (0-100) of a latency metric, in ms.
    Percentile {
        /// The metric.
        metric: String,
        /// The percentile.
        p: f64,
    },
    /// Mean of a latency metric, in ms.
    Avg {
        /// The metric.
        metric: String,
    },
    /// Smallest value, in ms.
    Min {
        /// The metric.
        metric: String,
    },
    /// Largest value, in ms.
    Max {
        /// The metric.
        metric: String,
    },
    /// Number of samples.
    Count {
        /// The metric.
        metric: String,
    },
    /// Failed iterations / all iterations.
    ErrorRate,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Comparison {
    /// `<`
    #[serde(rename = "<")]
    Less,
    /// `<=`
    #[serde(rename = "<=")]
    LessOrEqual,
    /// `>`
    #[serde(rename = ">")]
    Greater,
    /// `>=`
    #[serde(rename = ">=")]
    GreaterOrEqual,
}

impl Comparison {
    fn holds(self, observed: f64, limit: f64) -> bool {
        match self {
            Comparison::Less => observed < limit,
            Comparison::LessOrEqual => observed <= limit,
            Comparison::Greater => observed > limit,
            Comparison::GreaterOrEqual => observed >= limit,
        }
    }
}

/// A threshold's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Verdict {
    /// The expression.
    pub expr: String,
    /// The observed value (ms, fraction or count), when there was data.
    pub observed: Option<f64>,
    /// Did it hold? A threshold over a metric without samples fails: no data is no evidence.
    pub passed: bool,
    /// Was the run aborted because of it?
    pub aborted_run: bool,
}

impl Threshold {
    /// Parse `FUNC(metric) OP VALUE` or `error_rate OP PERCENT`.
    pub fn parse(expr: &str, abort_on_fail: bool) -> Result<Threshold, String> {
        let text = expr.trim();
        let (left, op, right) = split_comparison(text).ok_or_else(|| {
            format!("threshold '{text}' needs a comparison: <, <=, > or >= (e.g. p95(step:login) < 800ms)")
        })?;
        let left = left.trim();
        let right = right.trim();
        let (measure, limit) = if left == "error_rate" {
            (Measure::ErrorRate, parse_rate(right)?)
        } else {
            let open = left.find('(').ok_or_else(|| {
                format!("threshold '{text}': expected FUNC(metric) or error_rate on the left")
            })?;
            if !left.ends_with(')') {
                return Err(format!("threshold '{text}': missing ')'"));
            }
            let func = &left[..open];
            let metric = left[open + 1..left.len() - 1].trim().to_string();
            if metric.is_empty() {
                return Err(format!("threshold '{text}': empty metric name"));
            }
            let measure = match func {
                "avg" => Measure::Avg { metric },
                "min" => Measure::Min { metric },
                "max" => Measure::Max { metric },
                "count" => Measure::Count { metric },
                p if p.starts_with('p') => {
                    let value: f64 = p[1..].parse().map_err(|_| {
                        format!("threshold '{text}': '{p}' is not a percentile like p95 or p99.9")
                    })?;
                    if !(0.0..=100.0).contains(&value) {
                        return Err(format!("threshold '{text}': percentile out of 0..100"));
                    }
                    Measure::Percentile { metric, p: value }
                }
                other => {
                    return Err(format!(
                        "threshold '{text}': unknown function '{other}', use pNN, avg, min, max or count"
                    ));
                }
            };
            let limit = match measure {
                Measure::Count { .. } => right
                    .parse()
                    .map_err(|_| format!("threshold '{text}': '{right}' is not a number"))?,
                _ => parse_ms(right).map_err(|e| format!("threshold '{text}': {e}"))?,
            };
            (measure, limit)
        };
        // `inf` and `NaN` parse as numbers; NaN fails every comparison and inf passes or
        // fails them all, so neither is a limit anyone means.
        if !limit.is_finite() {
            return Err(format!(
                "threshold '{text}': the limit must be a finite number"
            ));
        }
        Ok(Threshold {
            expr: text.to_string(),
            measure,
            op,
            limit,
            abort_on_fail,
        })
    }

    /// The observed value, when there is data.
    pub fn observe(&self, metrics: &MetricsAggregate) -> Option<f64> {
        let histogram = |metric: &str| metrics.histograms.get(metric).filter(|h| !h.is_empty());
        let ms = |us: u64| us as f64 / 1000.0;
        match &self.measure {
            Measure::Percentile { metric, p } => {
                histogram(metric).map(|h| ms(h.value_at_quantile(p / 100.0)))
            }
            Measure::Avg { metric } => histogram(metric).map(|h| h.mean() / 1000.0),
            Measure::Min { metric } => histogram(metric).map(|h| ms(h.min())),
            Measure::Max { metric } => histogram(metric).map(|h| ms(h.max())),
            Measure::Count { metric } => {
                Some(metrics.histograms.get(metric).map_or(0, |h| h.len()) as f64)
            }
            Measure::ErrorRate => {
                let ok = metrics.counter(counter::ITERATIONS_OK);
                let failed = metrics.counter(counter::ITERATIONS_FAILED);
                // In floating point: an agent's counters can be anything, and `ok + failed`
                // in u64 could overflow.
                let total = ok as f64 + failed as f64;
                (total > 0.0).then(|| failed as f64 / total)
            }
        }
    }

    /// Judge the threshold on `metrics`.
    pub fn evaluate(&self, metrics: &MetricsAggregate) -> Verdict {
        let observed = self.observe(metrics);
        Verdict {
            expr: self.expr.clone(),
            observed,
            passed: observed.is_some_and(|v| self.op.holds(v, self.limit)),
            aborted_run: false,
        }
    }

    /// Has this threshold failed for good, so far (data exists and breaks it)?
    pub fn failing_now(&self, metrics: &MetricsAggregate) -> bool {
        self.observe(metrics)
            .is_some_and(|v| !self.op.holds(v, self.limit))
    }
}

fn split_comparison(text: &str) -> Option<(&str, Comparison, &str)> {
    // Search after the closing ')' so metric names may hold any character.
    let from = text.rfind(')').map_or(0, |i| i + 1);
    let tail = &text[from..];
    for (symbol, op) in [
        ("<=", Comparison::LessOrEqual),
        (">=", Comparison::GreaterOrEqual),
        ("<", Comparison::Less),
        (">", Comparison::Greater),
    ] {
        if let Some(i) = tail.find(symbol) {
            let at = from + i;
            return Some((&text[..at], op, &text[at + symbol.len()..]));
        }
    }
    None
}

/// `800ms`, `1.5s`, `2m` -> milliseconds; a bare number is milliseconds.
fn parse_ms(text: &str) -> Result<f64, String> {
    if let Ok(number) = text.parse::<f64>() {
        return Ok(number);
    }
    // From whole nanoseconds: `800ms` is exactly 800.0 (seconds times 1000 can be off by an
    // ulp).
    crate::scenario::parse_duration(text).map(|d| d.as_nanos() as f64 / 1_000_000.0)
}

/// `1%` -> 0.01; `0.01` -> 0.01.
fn parse_rate(text: &str) -> Result<f64, String> {
    let value = match text.strip_suffix('%') {
        Some(number) => number.trim().parse::<f64>().map(|v| v / 100.0),
        None => text.parse::<f64>(),
    };
    value.map_err(|_| format!("'{text}' is not a rate like 1% or 0.01"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::new_histogram;

    fn metrics() -> MetricsAggregate {
        let mut m = MetricsAggregate::default();
        let mut h = new_histogram();
        for ms in 1..=100 {
            h.record(ms * 1000).unwrap();
        }
        m.histograms.insert("step:navigate /".into(), h);
        m.counters.insert(counter::ITERATIONS_OK.into(), 99);
        m.counters.insert(counter::ITERATIONS_FAILED.into(), 1);
        m
    }

    #[test]
    fn parses_every_form() {
        let t = Threshold::parse("p95(step:navigate /) < 800ms", false).unwrap();
        assert_eq!(
            t.measure,
            Measure::Percentile {
                metric: "step:navigate /".into(),
                p: 95.0
            }
        );
        assert_eq!(t.limit, 800.0);
        assert_eq!(
            Threshold::parse("p99.9(x) <= 1.5s", false).unwrap().limit,
            1500.0
        );
        assert_eq!(
            Threshold::parse("error_rate < 1%", true).unwrap().limit,
            0.01
        );
        assert_eq!(
            Threshold::parse("count(iteration) >= 10", false)
                .unwrap()
                .op,
            Comparison::GreaterOrEqual
        );
        for bad in [
            "p95(x)",
            "p95(x) < fast",
            "q95(x) < 1s",
            "p120(x) < 1s",
            "error_rate < lots",
            "p95() < 1s",
            "p95(x) < NaN",
            "count(x) >= inf",
            "error_rate < -inf%",
        ] {
            assert!(Threshold::parse(bad, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn evaluates_on_merged_metrics() {
        let m = metrics();
        let judge = |e: &str| Threshold::parse(e, false).unwrap().evaluate(&m);
        assert!(judge("p95(step:navigate /) < 100ms").passed);
        assert!(!judge("p95(step:navigate /) < 90ms").passed);
        // Histograms keep 3 significant digits: 100 ms reads back as at most 100.1 ms.
        assert!(judge("max(step:navigate /) <= 100.1ms").passed);
        assert!(!judge("max(step:navigate /) < 99ms").passed);
        assert!(judge("avg(step:navigate /) < 51ms").passed);
        assert!(judge("count(step:navigate /) >= 100").passed);
        assert!(judge("error_rate < 2%").passed);
        assert!(!judge("error_rate < 1%").passed);
        // Regression (issue 12, found by `tests/fuzz`): `ok + failed` overflowed.
        let mut huge = metrics();
        huge.counters
            .insert(counter::ITERATIONS_FAILED.into(), u64::MAX);
        let verdict = Threshold::parse("error_rate < 1%", false)
            .unwrap()
            .evaluate(&huge);
        assert_eq!(verdict.observed, Some(1.0));
        let missing = judge("p95(step:nowhere) < 1s");
        assert!(
            !missing.passed && missing.observed.is_none(),
            "no data fails"
        );
    }
}
