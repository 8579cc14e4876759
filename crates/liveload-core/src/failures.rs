//! Why iterations failed, beyond counting: where each error message was first seen (user,
//! node, iteration, time) and the pages captured at failures (`on_failure: screenshot`).
//!
//! Agents send an error's first occurrence once, in the snapshot of the interval it happened
//! in, and captures only when the scenario asks; the controller keeps the earliest occurrence
//! of each message over every node and names a file for every capture. The report lists both
//! beside the error table, and the report writer saves the captured files next to it.

use std::collections::BTreeMap;

use liveload_proto::MetricsSnapshot;
use serde::{Deserialize, Serialize};

/// The most captures one run keeps, over every node (each agent sends at most 20).
pub const MAX_CAPTURES: usize = 100;

/// Where the captured files go, inside the report directory.
pub const CAPTURE_DIR: &str = "failures";

/// Where an error message was first seen, cluster-wide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirstError {
    /// The node whose user failed.
    pub node: String,
    /// The user.
    pub user_id: u64,
    /// The user's iteration (from 0).
    pub iteration: u64,
    /// Milliseconds after the start signal.
    pub at_ms: u64,
}

/// One captured failure and the files that hold it (paths relative to the report directory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureFiles {
    /// The error's message, as counted.
    pub error: String,
    /// Where it happened.
    pub at: FirstError,
    /// The PNG screenshot (`None` when the page could not be captured).
    pub screenshot: Option<String>,
    /// The page's DOM, as text (secrets redacted by the agent).
    pub dom: String,
}

/// Error details of a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Failures {
    /// Per error message (the `<message>` of an `error:<message>` counter), its first
    /// occurrence.
    pub first: BTreeMap<String, FirstError>,
    /// Captured failures, in arrival order.
    pub captures: Vec<CaptureFiles>,
    /// The captured files' contents by path, for the report writer (not in `result.json`).
    #[serde(skip)]
    pub files: Vec<(String, Vec<u8>)>,
}

impl Failures {
    /// Add what `node`'s snapshot says about errors.
    pub fn merge(&mut self, node: &str, snapshot: &MetricsSnapshot) {
        for (message, occurrence) in &snapshot.errors {
            let seen = FirstError {
                node: node.to_string(),
                user_id: occurrence.user_id,
                iteration: occurrence.iteration,
                at_ms: occurrence.at_ms,
            };
            match self.first.get(message) {
                Some(known) if known.at_ms <= seen.at_ms => {}
                _ => {
                    self.first.insert(message.clone(), seen);
                }
            }
        }
        for capture in &snapshot.captures {
            if self.captures.len() >= MAX_CAPTURES {
                tracing::debug!("more failure captures than the report keeps; dropped");
                break;
            }
            let stem = format!(
                "{CAPTURE_DIR}/{:03}-{}",
                self.captures.len() + 1,
                slug(&capture.error)
            );
            let screenshot = (!capture.png.is_empty()).then(|| format!("{stem}.png"));
            let dom = format!("{stem}.dom.txt");
            if let Some(path) = &screenshot {
                self.files.push((path.clone(), capture.png.clone()));
            }
            self.files
                .push((dom.clone(), capture.dom.clone().into_bytes()));
            self.captures.push(CaptureFiles {
                error: capture.error.clone(),
                at: FirstError {
                    node: node.to_string(),
                    user_id: capture.occurrence.user_id,
                    iteration: capture.occurrence.iteration,
                    at_ms: capture.occurrence.at_ms,
                },
                screenshot,
                dom,
            });
        }
    }

    /// The captures of one error message.
    pub fn captures_of<'a>(&'a self, message: &'a str) -> impl Iterator<Item = &'a CaptureFiles> {
        self.captures.iter().filter(move |c| c.error == message)
    }
}

/// A file-name-safe summary of an error message: lowercase letters and digits, dashes
/// between words, at most 40 characters.
fn slug(message: &str) -> String {
    let mut out = String::new();
    for c in message.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
        if out.len() >= 40 {
            break;
        }
    }
    let out = out.trim_end_matches('-');
    if out.is_empty() {
        "error".into()
    } else {
        out.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use liveload_proto::{ErrorOccurrence, FailureCapture};

    fn snapshot(at_ms: u64, capture: bool) -> MetricsSnapshot {
        let occurrence = ErrorOccurrence {
            user_id: at_ms,
            iteration: 2,
            at_ms,
        };
        MetricsSnapshot {
            records: Vec::new(),
            errors: [("step 'x': boom".to_string(), occurrence.clone())].into(),
            captures: if capture {
                vec![FailureCapture {
                    error: "step 'x': boom".into(),
                    occurrence,
                    png: vec![1, 2],
                    dom: "<html>".into(),
                }]
            } else {
                vec![]
            },
            ..Default::default()
        }
    }

    #[test]
    fn the_earliest_occurrence_over_nodes_wins() {
        let mut f = Failures::default();
        f.merge("b", &snapshot(900, false));
        f.merge("a", &snapshot(300, false));
        f.merge("c", &snapshot(600, false));
        let first = &f.first["step 'x': boom"];
        assert_eq!((first.node.as_str(), first.at_ms), ("a", 300));
    }

    #[test]
    fn captures_get_files_named_after_their_error() {
        let mut f = Failures::default();
        f.merge("a", &snapshot(1, true));
        f.merge("a", &snapshot(2, true));
        assert_eq!(f.captures.len(), 2);
        assert_eq!(
            f.captures[1].screenshot.as_deref(),
            Some("failures/002-step-x-boom.png")
        );
        assert_eq!(f.captures[1].dom, "failures/002-step-x-boom.dom.txt");
        assert_eq!(f.files.len(), 4);
        assert_eq!(f.captures_of("step 'x': boom").count(), 2);
        assert_eq!(slug("«»"), "error");
    }
}
