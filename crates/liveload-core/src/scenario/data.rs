//! Per-user data: `data: { file: users.csv, secret: [password], mode: unique }`.
//!
//! The CSV is read once, here, on the machine that starts the run. Its columns become
//! `{{variables}}`, which is why it is read before the steps are lowered: the template checks
//! need the names. Columns listed under `secret` are redacted by the agents from everything
//! they report.
//!
//! How users take rows is the `mode`: `cycle` (user `u` gets row `u % rows`: rows repeat when
//! users outnumber them), `unique` (user `u` gets row `u`, and a run with more users than rows
//! is refused before any machine exists) or `random` (each user a row drawn at random, with
//! replacement). Either way each node receives only the rows its own users take
//! ([`rows_for_node`]), in the order of its users, and never more than the file holds.

use std::path::{Path, PathBuf};

use liveload_proto::DataTable;
use serde::Deserialize;

use super::lower::Located;
use super::raw::RawData;

/// How users take the data file's rows (`data: { mode }`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataMode {
    /// User `u` gets row `u % rows` (rows repeat when users outnumber them).
    #[default]
    Cycle,
    /// User `u` gets row `u`: every row to at most one user, cluster-wide.
    Unique,
    /// Each user gets a row drawn at random, with replacement.
    Random,
}

/// The rows the node running users `first_user_id .. first_user_id + users` needs, in order:
/// its user `first_user_id + k` takes row `k % len` of the result (the agent's rule). At least
/// one row whenever the table has any, so users added to the node later have data.
pub fn rows_for_node(
    table: &DataTable,
    mode: DataMode,
    first_user_id: u64,
    users: u64,
) -> DataTable {
    use rand::Rng as _;
    let total = table.rows.len() as u64;
    if total == 0 {
        return table.clone();
    }
    let wanted = match mode {
        // Past `total` users a node's cycle repeats: it needs each row once. A random node
        // gets as many drawn rows, which its users past them cycle over: each user's row is
        // still a random one, and a node's data is never larger than the file.
        DataMode::Cycle | DataMode::Random => users.clamp(1, total),
        DataMode::Unique => users.max(1),
    };
    let mut rng = rand::rng();
    let rows = (0..wanted)
        .map(|k| {
            let index = match mode {
                // `unique` was checked to have a row per user; past it (users added while the
                // run goes), rows cycle rather than fail.
                DataMode::Cycle | DataMode::Unique => first_user_id.wrapping_add(k) % total,
                DataMode::Random => rng.random_range(0..total),
            };
            table.rows[index as usize].clone()
        })
        .collect();
    DataTable {
        columns: table.columns.clone(),
        rows,
        secret_columns: table.secret_columns.clone(),
    }
}

/// `mode: unique` needs the closed model: open-model arrivals reuse their node's user ids, so
/// a row would go to every arrival that reuses its id.
pub(super) fn check_mode(mode: DataMode, load: &super::Load) -> Result<(), Located> {
    if mode == DataMode::Unique && matches!(load, super::Load::Open { .. }) {
        return Err(Located::new(
            "data: mode unique needs the closed model (open-model arrivals reuse user ids); use cycle or random",
            "unique",
        ));
    }
    Ok(())
}

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

    use super::{DataMode, rows_for_node};
    use liveload_proto::DataTable;

    fn table(rows: u64) -> DataTable {
        DataTable {
            columns: vec!["n".into()],
            rows: (0..rows).map(|r| vec![r.to_string()]).collect(),
            secret_columns: Vec::new(),
        }
    }

    /// What user `u` of a node gets, by the agent's rule.
    fn row_of_user(node: &DataTable, first: u64, user: u64) -> String {
        node.rows[((user - first) % node.rows.len() as u64) as usize][0].clone()
    }

    #[test]
    fn nodes_receive_only_their_users_rows_and_users_take_the_right_one() {
        let full = table(10);
        // Three nodes of 3, 3 and 4 users: unique gives each of the 10 users a different row.
        let mut seen = Vec::new();
        for (first, users) in [(0, 3), (3, 3), (6, 4)] {
            let node = rows_for_node(&full, DataMode::Unique, first, users);
            assert_eq!(node.rows.len() as u64, users, "only its users' rows");
            seen.extend((first..first + users).map(|u| row_of_user(&node, first, u)));
        }
        seen.sort_by_key(|r| r.parse::<u64>().unwrap());
        assert_eq!(seen, (0..10).map(|r| r.to_string()).collect::<Vec<_>>());
        // Cycle keeps `u % rows` on every node, with at most one copy of each row.
        for (first, users) in [(0, 4), (4, 25), (29, 1)] {
            let node = rows_for_node(&full, DataMode::Cycle, first, users);
            assert!(node.rows.len() as u64 <= users.min(10));
            for u in first..first + users {
                assert_eq!(row_of_user(&node, first, u), (u % 10).to_string());
            }
        }
        // Random: one drawn row per user, each a row of the file; never more rows than it has.
        let node = rows_for_node(&full, DataMode::Random, 5, 7);
        assert_eq!(node.rows.len(), 7);
        assert!(node.rows.iter().all(|r| full.rows.contains(r)));
        assert_eq!(
            rows_for_node(&full, DataMode::Random, 0, 5_000).rows.len(),
            10
        );
        // A node without users still gets a row, for users added later.
        assert_eq!(rows_for_node(&full, DataMode::Unique, 10, 0).rows.len(), 1);
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
