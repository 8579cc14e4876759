//! Target: the scenario's CSV data file (`data: { file }`), read through `Scenario::from_yaml`
//! exactly as a run reads it.

use std::path::PathBuf;

use liveload_core::Error;
use liveload_core::scenario::Scenario;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use crate::support::config;

/// The scenario that names the data file, on line 3.
const SCENARIO: &str =
    "name: d\nbase_url: http://x\ndata: { file: data.csv }\nsteps:\n  - navigate: /\n";

/// A scenario file in a fresh folder, beside which each case writes `data.csv`.
struct Folder {
    _dir: tempfile::TempDir,
    scenario: PathBuf,
    data: PathBuf,
}

impl Folder {
    fn new() -> Folder {
        let dir = tempfile::tempdir().unwrap();
        Folder {
            scenario: dir.path().join("s.yaml"),
            data: dir.path().join("data.csv"),
            _dir: dir,
        }
    }

    /// Write `bytes` as the data file and load the scenario.
    fn load(&self, bytes: &[u8]) -> Result<Scenario, Error> {
        std::fs::write(&self.data, bytes).unwrap();
        Scenario::from_yaml(&self.scenario, SCENARIO)
    }
}

/// Whatever the bytes: a rectangular table with at least one row, or an error located at the
/// `data:` line that names the file.
fn check(folder: &Folder, result: Result<Scenario, Error>) -> Result<(), TestCaseError> {
    match result {
        Ok(s) => {
            let table = s.data.expect("the scenario names a data file");
            prop_assert!(!table.rows.is_empty());
            for row in &table.rows {
                prop_assert_eq!(row.len(), table.columns.len());
            }
            for column in &table.columns {
                prop_assert_eq!(column.trim(), column.as_str());
            }
            prop_assert_eq!(s.data_file.as_deref(), Some(folder.data.as_path()));
        }
        Err(Error::Scenario {
            file,
            line,
            message,
            ..
        }) => {
            prop_assert_eq!(file.as_path(), folder.scenario.as_path());
            prop_assert_eq!(line, 3, "{}", message);
            prop_assert!(
                message.contains(&folder.data.display().to_string()),
                "{message}"
            );
        }
        Err(other) => return Err(TestCaseError::fail(format!("{other:?}"))),
    }
    Ok(())
}

/// A cell: ordinary text, or the characters CSV quoting exists for.
fn cell() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9@. ]{0,8}",
        1 => "[,\"\r\n ]{1,4}",
        1 => any::<String>(),
    ]
}

/// CSV-shaped bytes: rows of cells with quotes and separators, sometimes ragged, sometimes
/// with invalid UTF-8, a BOM or stray quotes.
fn csv_like() -> impl Strategy<Value = Vec<u8>> {
    let line = proptest::collection::vec(cell(), 0..5).prop_map(|cells| cells.join(","));
    (
        any::<bool>(),
        proptest::collection::vec(line, 0..6),
        proptest::collection::vec(any::<u8>(), 0..4),
        any::<bool>(),
    )
        .prop_map(|(bom, lines, junk, crlf)| {
            let mut bytes = if bom {
                vec![0xef, 0xbb, 0xbf]
            } else {
                Vec::new()
            };
            bytes.extend(lines.join(if crlf { "\r\n" } else { "\n" }).into_bytes());
            bytes.extend(junk);
            bytes
        })
}

/// A rectangular table, `(header, rows)`, of `width` columns.
fn table() -> impl Strategy<Value = (Vec<String>, Vec<Vec<String>>)> {
    (1usize..5).prop_flat_map(|width| {
        (
            proptest::collection::vec(cell(), width),
            proptest::collection::vec(proptest::collection::vec(cell(), width), 0..6),
        )
    })
}

proptest! {
    #![proptest_config(config(400))]

    /// Arbitrary bytes and CSV-shaped bytes as the data file.
    #[test]
    fn arbitrary_data_files(bytes in prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        csv_like(),
    ]) {
        let folder = Folder::new();
        check(&folder, folder.load(&bytes))?;
    }

    /// A table written by a CSV writer reads back as itself: headers trimmed, cells exact.
    #[test]
    fn written_tables_read_back((header, rows) in table()) {
        // A BOM at the very start is the file's, not the first header's (readers drop it).
        prop_assume!(!header[0].starts_with('\u{feff}'));
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.write_record(&header).unwrap();
        for row in &rows {
            writer.write_record(row).unwrap();
        }
        let bytes = writer.into_inner().unwrap();
        let folder = Folder::new();
        let result = folder.load(&bytes);
        check(&folder, folder.load(&bytes))?;
        if rows.is_empty() {
            let message = result.unwrap_err().to_string();
            prop_assert!(message.contains("has no rows"), "{message}");
        } else {
            let table = result.map_err(|e| TestCaseError::fail(e.to_string()))?.data.unwrap();
            let trimmed: Vec<&str> = header.iter().map(|h| h.trim()).collect();
            prop_assert_eq!(table.columns, trimmed);
            prop_assert_eq!(table.rows, rows);
        }
    }
}
