//! Per-user data: `data: { file: users.csv, secret: [password] }`.
//!
//! The CSV is read once, here, on the machine that starts the run, and travels inside the
//! scenario to every agent; user `u` gets row `u % rows`. Its columns become `{{variables}}`,
//! which is why it is read before the steps are lowered: the template checks need the names.
//! Columns listed under `secret` are redacted by the agents from everything they report.

use std::path::{Path, PathBuf};

use liveload_proto::DataTable;

use super::lower::Located;
use super::raw::RawData;

/// The largest data file accepted: it is sent to every agent with the scenario.
const MAX_DATA_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Read the scenario's data file, if it names one. `scenario_path` anchors the file's relative
/// path, so a scenario and its data can move together. Errors point at the file name.
pub(super) fn read_data(
    scenario_path: &Path,
    data: Option<&RawData>,
) -> Result<Option<DataTable>, Located> {
    let Some(data) = data else {
        return Ok(None);
    };
    let file = data_path(scenario_path, data);
    let mut table = read_csv(&file).map_err(|m| Located::new(m, data.file.as_str()))?;
    for column in &data.secret {
        if !table.columns.contains(column) {
            return Err(Located::new(
                format!(
                    "secret column '{column}' is not in {}: its columns are {}",
                    data.file,
                    table.columns.join(", ")
                ),
                column.as_str(),
            ));
        }
    }
    table.secret_columns = data.secret.clone();
    Ok(Some(table))
}

/// The data file's path: relative to the scenario's folder.
pub(super) fn data_path(scenario_path: &Path, data: &RawData) -> PathBuf {
    scenario_path
        .parent()
        .unwrap_or(Path::new("."))
        .join(&data.file)
}

/// Read a CSV file with a header row: the (trimmed) headers name the columns, and there must
/// be at least one row.
fn read_csv(path: &Path) -> Result<DataTable, String> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("cannot read data file {}: {e}", path.display()))?
        .len();
    if size > MAX_DATA_FILE_BYTES {
        return Err(format!(
            "data file {} is {size} bytes; the limit is {MAX_DATA_FILE_BYTES} (it travels to every agent)",
            path.display()
        ));
    }
    let mut reader = csv::Reader::from_path(path)
        .map_err(|e| format!("cannot read data file {}: {e}", path.display()))?;
    let columns: Vec<String> = reader
        .headers()
        .map_err(|e| format!("data file {}: {e}", path.display()))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| format!("data file {}: {e}", path.display()))?;
        rows.push(record.iter().map(str::to_string).collect());
    }
    if rows.is_empty() {
        return Err(format!("data file {} has no rows", path.display()));
    }
    Ok(DataTable {
        columns,
        rows,
        secret_columns: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::Scenario;

    #[test]
    fn csv_columns_become_variables() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("users.csv"),
            "email,plan\na@x,pro\nb@x,free\n",
        )
        .unwrap();
        let path = dir.path().join("s.yaml");
        let s = Scenario::from_yaml(
            &path,
            "name: d\nbase_url: http://x\ndata: { file: users.csv }\nsteps:\n  - navigate: '/?e={{email}}&p={{plan}}'\n",
        )
        .unwrap();
        let data = s.data.unwrap();
        assert_eq!(data.columns, ["email", "plan"]);
        assert_eq!(data.rows.len(), 2);
        let secret = Scenario::from_yaml(
            &path,
            "name: d\nbase_url: http://x\ndata: { file: users.csv, secret: [plan] }\nsteps:\n  - reload\n",
        )
        .unwrap();
        assert_eq!(secret.data.unwrap().secret_columns, ["plan"]);
        let unknown = Scenario::from_yaml(
            &path,
            "name: d\nbase_url: http://x\ndata: { file: users.csv, secret: [pasword] }\nsteps:\n  - reload\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            unknown.contains("pasword") && unknown.contains("email, plan"),
            "{unknown}"
        );
        let err = Scenario::from_yaml(
            &path,
            "name: d\nbase_url: http://x\ndata: { file: nope.csv }\nsteps:\n  - navigate: /\n",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{}:3:", path.display())),
            "{err}"
        );
    }

    #[test]
    fn an_oversized_data_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.csv");
        let row = "x".repeat(1023) + "\n";
        std::fs::write(&path, format!("a\n{}", row.repeat(4 * 1024 + 1))).unwrap();
        let err = super::read_csv(&path).unwrap_err();
        assert!(err.contains("the limit is 4194304"), "{err}");
    }
}
