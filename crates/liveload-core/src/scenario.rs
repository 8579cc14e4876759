//! Scenario files: what simulated users do, in YAML.
//!
//! ```yaml
//! name: demo
//! base_url: http://127.0.0.1:8080
//! users: 20
//! duration: 30s
//! iteration_timeout: 20s
//! steps:
//!   - navigate: /
//!   - wait_for: "#ticks[data-count]"
//!   - think: 1s..2s
//! ```
//!
//! Every error names the file, line and column, and says what was expected.

use std::path::{Path, PathBuf};
use std::time::Duration;

use liveload_proto::{Step, StepKind};
use serde::Deserialize;

use crate::{Error, Result};

/// A parsed, validated scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// The scenario's name: names the run, the lock, the report.
    pub name: String,
    /// Base URL that relative step URLs join.
    pub base_url: String,
    /// Users to simulate (overridden by `--users`).
    pub users: u64,
    /// How long users keep iterating.
    pub duration: Duration,
    /// The longest one iteration may take.
    pub iteration_timeout: Duration,
    /// The steps of one iteration.
    pub steps: Vec<Step>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    base_url: String,
    #[serde(default = "default_users")]
    users: u64,
    #[serde(default)]
    duration: Option<String>,
    #[serde(default)]
    iteration_timeout: Option<String>,
    // Steps are written `- navigate: /`: a one-key map per step.
    #[serde(with = "serde_yaml_ng::with::singleton_map_recursive")]
    steps: Vec<RawStep>,
}

fn default_users() -> u64 {
    1
}
#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum RawStep {
    Navigate(String),
    WaitFor(String),
    Think(String),
}

/// Parse `500ms`, `20s`, `2m`, `1h` (a number, then a unit).
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| {
        format!("invalid duration '{text}': expected a number and a unit, like 500ms, 20s, 2m, 1h")
    })?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "invalid duration '{text}': unknown unit '{other}', use ms, s, m or h"
            ));
        }
    };
    Ok(Duration::from_secs_f64(seconds))
}

impl Scenario {
    /// Read and validate a scenario file.
    pub fn from_file(path: &Path) -> Result<Scenario> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Scenario {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read the file: {e}"),
        })?;
        Self::from_yaml(path, &text)
    }

    /// Parse and validate scenario text; `path` is only used in error messages.
    pub fn from_yaml(path: &Path, text: &str) -> Result<Scenario> {
        let error = |line: usize, column: usize, message: String| Error::Scenario {
            file: PathBuf::from(path),
            line,
            column,
            message,
        };
        let raw: RawScenario = serde_yaml_ng::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            // serde_yaml_ng appends "at line X column Y"; the location is printed up front.
            let message = e.to_string();
            let message = message
                .split(" at line ")
                .next()
                .unwrap_or(&message)
                .to_string();
            error(line, column, message)
        })?;
        // Locate a top-level key, for errors about values that parsed but are not acceptable.
        let line_of = |key: &str| {
            text.lines()
                .position(|l| l.starts_with(&format!("{key}:")))
                .map(|i| i + 1)
                .unwrap_or(1)
        };
        if raw.steps.is_empty() {
            return Err(error(
                line_of("steps"),
                1,
                "steps: a scenario needs at least one step".into(),
            ));
        }
        if !(raw.base_url.starts_with("http://") || raw.base_url.starts_with("https://")) {
            return Err(error(
                line_of("base_url"),
                1,
                format!(
                    "base_url '{}' must start with http:// or https://",
                    raw.base_url
                ),
            ));
        }
        let duration_of = |key: &str, value: &Option<String>, default: u64| match value {
            None => Ok(Duration::from_secs(default)),
            Some(text) => parse_duration(text)
                .map_err(|message| error(line_of(key), key.len() + 3, format!("{key}: {message}"))),
        };
        let duration = duration_of("duration", &raw.duration, 30)?;
        let iteration_timeout = duration_of("iteration_timeout", &raw.iteration_timeout, 30)?;
        if duration.is_zero() {
            return Err(error(
                line_of("duration"),
                1,
                "duration must be more than 0".into(),
            ));
        }
        let steps = raw
            .steps
            .into_iter()
            .map(|s| {
                let (name, kind) = match s {
                    RawStep::Navigate(url) => (
                        format!("navigate {url}"),
                        StepKind::Navigate { url: url.clone() },
                    ),
                    RawStep::WaitFor(selector) => (
                        format!("wait_for {selector}"),
                        StepKind::WaitFor {
                            selector: selector.clone(),
                            timeout_ms: 10_000,
                        },
                    ),
                    RawStep::Think(text) => {
                        let (min, max) = match text.split_once("..") {
                            Some((a, b)) => (parse_duration(a)?, parse_duration(b)?),
                            None => (parse_duration(&text)?, parse_duration(&text)?),
                        };
                        if max < min {
                            return Err(format!("think range '{text}' ends before it starts"));
                        }
                        (
                            format!("think {text}"),
                            StepKind::Think {
                                min_ms: min.as_millis() as u64,
                                max_ms: max.as_millis() as u64,
                            },
                        )
                    }
                };
                Ok(Step { name, kind })
            })
            .collect::<std::result::Result<Vec<_>, String>>()
            .map_err(|message| error(line_of("steps"), 1, message))?;
        Ok(Scenario {
            name: raw.name,
            base_url: raw.base_url.trim_end_matches('/').to_string(),
            users: raw.users,
            duration,
            iteration_timeout,
            steps,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario> {
        Scenario::from_yaml(Path::new("s.yaml"), text)
    }

    #[test]
    fn parses_minimal_scenario() {
        let s = parse(
            "name: demo\nbase_url: http://127.0.0.1:1/\nusers: 3\nduration: 2s\nsteps:\n  - navigate: /\n  - wait_for: '#x'\n  - think: 1s..2s\n",
        )
        .unwrap();
        assert_eq!(s.users, 3);
        assert_eq!(s.base_url, "http://127.0.0.1:1");
        assert_eq!(s.duration, Duration::from_secs(2));
        assert_eq!(
            s.steps[2].kind,
            StepKind::Think {
                min_ms: 1000,
                max_ms: 2000
            }
        );
    }

    #[test]
    fn unknown_step_names_line_and_column() {
        let err = parse("name: d\nbase_url: http://x\nsteps:\n  - navigate: /\n  - teleport: /\n")
            .unwrap_err();
        match err {
            Error::Scenario {
                line,
                column,
                message,
                ..
            } => {
                assert_eq!(line, 5);
                assert!(column >= 3, "{column}");
                assert!(message.contains("teleport"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_duration_is_located() {
        let err =
            parse("name: d\nbase_url: http://x\nduration: 10 parsecs\nsteps:\n  - navigate: /\n")
                .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("s.yaml:3:"), "{text}");
        assert!(text.contains("unknown unit"), "{text}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("5 days").is_err());
    }
}
