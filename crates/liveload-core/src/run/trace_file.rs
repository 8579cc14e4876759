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
}

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
        })
    }

    /// Append `records` of node `node`.
    pub fn write(&mut self, node: &str, records: &[TraceRecord]) -> Result<()> {
        for record in records {
            serde_json::to_writer(&mut self.out, &Line { node, record })
                .map_err(std::io::Error::from)
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
        writer.write("node-1", &[record.clone(), record]).unwrap();
        assert_eq!(writer.written, 2);
        writer.finish().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert_eq!(first["node"], "node-1");
        assert_eq!(first["kind"], "http");
        assert_eq!(first["status"], 404);
        assert!(first.get("error").is_none(), "absent fields are left out");
    }
}
