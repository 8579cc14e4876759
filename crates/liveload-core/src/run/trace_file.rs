//! The `--trace` file: the agents' raw records, one JSON object per line, each with the node it
//! came from, written as the snapshots carrying them arrive. A user's records come from one
//! agent, in the order it made them, so the file is ordered per user.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use liveload_proto::TraceRecord;
use serde::Serialize;

use crate::{Error, Result};

/// The open trace file.
pub struct TraceWriter {
    out: std::io::BufWriter<std::fs::File>,
    path: PathBuf,
    /// Records written so far.
    pub written: u64,
    /// Records refused because their node sent more than its budget allows.
    pub refused: u64,
    /// Bytes written per node, held to its budget (agents are not trusted to keep theirs).
    per_node: std::collections::HashMap<String, u64>,
    started: std::time::Instant,
}

/// Seconds of budget a node may run ahead (its snapshots can arrive late, then together).
const BUDGET_SLACK_S: u64 = 10;

/// One line: the node, then the record's own fields.
#[derive(Serialize)]
struct Line<'a> {
    node: &'a str,
    #[serde(flatten)]
    record: &'a TraceRecord,
}

impl TraceWriter {
    /// Create (or empty) the file at `path`.
    pub fn create(path: &Path) -> Result<TraceWriter> {
        let file = std::fs::File::create(path)
            .map_err(|e| Error::io(format!("creating the trace file {}", path.display()), e))?;
        Ok(TraceWriter {
            out: std::io::BufWriter::new(file),
            path: path.to_path_buf(),
            written: 0,
            refused: 0,
            per_node: std::collections::HashMap::new(),
            started: std::time::Instant::now(),
        })
    }

    /// Append `records` of node `node`, as far as its budget (`bytes_per_s` since the file
    /// was opened, plus some slack) allows; the rest are counted in `refused`.
    pub fn write(&mut self, node: &str, records: &[TraceRecord], bytes_per_s: u64) -> Result<()> {
        let seconds = self
            .started
            .elapsed()
            .as_secs()
            .saturating_add(BUDGET_SLACK_S);
        let allowed = bytes_per_s.saturating_mul(seconds);
        for record in records {
            let line =
                serde_json::to_vec(&Line { node, record }).map_err(|e| self.error(e.into()))?;
            let spent = self.per_node.entry(node.to_string()).or_default();
            if spent.saturating_add(line.len() as u64) > allowed {
                self.refused += 1;
                continue;
            }
            *spent += line.len() as u64;
            self.out
                .write_all(&line)
                .and_then(|()| self.out.write_all(b"\n"))
                .map_err(|e| self.error(e))?;
            self.written += 1;
        }
        Ok(())
    }

    /// Write what is buffered.
    pub fn finish(mut self) -> Result<()> {
        self.out.flush().map_err(|e| self.error(e))
    }

    fn error(&self, e: std::io::Error) -> Error {
        Error::io(format!("writing the trace file {}", self.path.display()), e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use liveload_proto::RecordKind;

    #[test]
    fn each_record_is_one_line_with_its_node() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trace.jsonl");
        let mut writer = TraceWriter::create(&path).unwrap();
        let record = TraceRecord {
            t_ms: 1500,
            user: 3,
            iteration: 1,
            kind: RecordKind::Http,
            name: "Document".into(),
            duration_ms: 4.5,
            ok: false,
            status: Some(404),
            url: Some("http://h/x".into()),
            error: None,
        };
        writer
            .write("node-1", &[record.clone(), record.clone()], 1024)
            .unwrap();
        assert_eq!(writer.written, 2);
        // A node past its budget (1 KiB/s, 10 s of slack) has the rest refused.
        let flood = vec![record; 200];
        writer.write("node-2", &flood, 1024).unwrap();
        assert!(
            writer.refused > 0 && writer.written < 202,
            "{}",
            writer.refused
        );
        let written = writer.written;
        writer.finish().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(text.lines().count() as u64, written);
        assert_eq!(first["node"], "node-1");
        assert_eq!(first["kind"], "http");
        assert_eq!(first["status"], 404);
        assert!(first.get("error").is_none(), "absent fields are left out");
    }
}
