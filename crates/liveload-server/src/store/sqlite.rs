//! The SQLite store: one file, opened by this process (WAL mode, so readers never wait for
//! the writer). `rusqlite` is synchronous; each call runs on tokio's blocking pool so a slow
//! disk never stalls the server's event loop.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension as _, params};

use super::{Artifact, RunEnd, RunRecord, RunRow, Store, StoreError, StoreResult, bigint, sql};

/// Run history in a SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    connection: Arc<Mutex<Connection>>,
}

fn fail(doing: &str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |e| StoreError(format!("{doing}: {e}"))
}

impl SqliteStore {
    /// Open (or create) the history at `path` and its tables.
    pub fn open(path: &Path) -> StoreResult<SqliteStore> {
        let connection = Connection::open(path)
            .map_err(|e| StoreError(format!("opening {}: {e}", path.display())))?;
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(fail("setting WAL mode"))?;
        // Another process (a second server on the same file) may hold the write lock briefly.
        connection
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(fail("setting the busy timeout"))?;
        for statement in sql::SCHEMA {
            connection
                .execute(statement, [])
                .map_err(fail("creating the tables"))?;
        }
        Ok(SqliteStore {
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    /// Run `work` with the connection on the blocking pool.
    async fn with<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
        doing: &'static str,
    ) -> StoreResult<T> {
        let connection = self.connection.clone();
        tokio::task::spawn_blocking(move || {
            let mut connection = connection.lock().unwrap_or_else(|p| p.into_inner());
            work(&mut connection)
        })
        .await
        .map_err(|e| StoreError(format!("{doing}: {e}")))?
        .map_err(fail(doing))
    }
}

/// The shared SQL in SQLite's terms: `$1` there is a *named* parameter, numbered in order of
/// first appearance (so `SET a = $2 … WHERE id = $1` would bind backwards); `?1` is the
/// explicitly numbered form PostgreSQL's `$1` means.
fn q(statement: &str) -> String {
    statement.replace('$', "?")
}

/// Read one text column of every row.
fn texts(connection: &Connection, query: &str, arg: Option<&str>) -> rusqlite::Result<Vec<String>> {
    let mut statement = connection.prepare(query)?;
    match arg {
        Some(arg) => statement.query_map([arg], |r| r.get(0))?.collect(),
        None => statement.query_map([], |r| r.get(0))?.collect(),
    }
}

fn record(row: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
    Ok(RunRow {
        id: row.get(0)?,
        scenario: row.get(1)?,
        backend: row.get(2)?,
        status: row.get(3)?,
        users: row.get(4)?,
        created: row.get(5)?,
        ended: row.get(6)?,
        message: row.get(7)?,
        server: row.get(8)?,
        exit_code: row.get(9)?,
    }
    .record())
}

#[async_trait]
impl Store for SqliteStore {
    async fn put_token(&self, name: &str, hash: &str) -> StoreResult<()> {
        let (name, hash) = (name.to_string(), hash.to_string());
        self.with(
            move |c| {
                let t = c.transaction()?;
                t.execute(&q(sql::DELETE_TOKEN), [&name])?;
                t.execute(&q(sql::INSERT_TOKEN), [&name, &hash])?;
                t.commit()
            },
            "storing a token",
        )
        .await
    }

    async fn token_name(&self, hash: &str) -> StoreResult<Option<String>> {
        let hash = hash.to_string();
        self.with(
            move |c| {
                c.query_row(&q(sql::TOKEN_NAME), [&hash], |r| r.get(0))
                    .optional()
            },
            "checking a token",
        )
        .await
    }

    async fn delete_token(&self, name: &str) -> StoreResult<bool> {
        let name = name.to_string();
        self.with(
            move |c| Ok(c.execute(&q(sql::DELETE_TOKEN), [&name])? > 0),
            "removing a token",
        )
        .await
    }

    async fn token_names(&self) -> StoreResult<Vec<String>> {
        self.with(|c| texts(c, &q(sql::TOKEN_NAMES), None), "listing tokens")
            .await
    }

    async fn put_scenario(&self, name: &str, yaml: &str) -> StoreResult<()> {
        let (name, yaml) = (name.to_string(), yaml.to_string());
        self.with(
            move |c| {
                let t = c.transaction()?;
                t.execute(&q(sql::DELETE_SCENARIO), [&name])?;
                t.execute(&q(sql::INSERT_SCENARIO), [&name, &yaml])?;
                t.commit()
            },
            "storing a scenario",
        )
        .await
    }

    async fn scenario(&self, name: &str) -> StoreResult<Option<String>> {
        let name = name.to_string();
        self.with(
            move |c| {
                c.query_row(&q(sql::SCENARIO), [&name], |r| r.get(0))
                    .optional()
            },
            "reading a scenario",
        )
        .await
    }

    async fn scenario_names(&self) -> StoreResult<Vec<String>> {
        self.with(
            |c| texts(c, &q(sql::SCENARIO_NAMES), None),
            "listing scenarios",
        )
        .await
    }

    async fn insert_run(&self, run: &RunRecord, scenario_yaml: &str) -> StoreResult<()> {
        let (run, yaml) = (run.clone(), scenario_yaml.to_string());
        self.with(
            move |c| {
                c.execute(
                    &q(sql::INSERT_RUN),
                    params![
                        run.id,
                        run.scenario,
                        run.backend,
                        run.status.as_str(),
                        bigint(run.users),
                        bigint(run.created_unix_s),
                        yaml,
                        run.server
                    ],
                )
                .map(drop)
            },
            "recording a run",
        )
        .await
    }

    async fn end_run(&self, id: &str, end: &RunEnd, ended_unix_s: u64) -> StoreResult<()> {
        let (id, end) = (id.to_string(), end.clone());
        self.with(
            move |c| {
                c.execute(
                    &q(sql::END_RUN),
                    params![
                        id,
                        end.status.unwrap_or(super::RunStatus::Error).as_str(),
                        bigint(ended_unix_s),
                        end.message,
                        end.result_json,
                        end.report_html,
                        end.exit_code.map(i64::from)
                    ],
                )
                .map(drop)
            },
            "recording a run's end",
        )
        .await
    }

    async fn add_point(&self, id: &str, second: u64, point_json: &str) -> StoreResult<()> {
        let (id, point) = (id.to_string(), point_json.to_string());
        self.with(
            move |c| {
                c.execute(&q(sql::INSERT_POINT), params![id, bigint(second), point])
                    .map(drop)
            },
            "recording a point",
        )
        .await
    }

    async fn runs(&self) -> StoreResult<Vec<RunRecord>> {
        self.with(
            |c| {
                let mut statement = c.prepare(&q(sql::RUNS))?;
                let rows = statement.query_map([], record)?;
                rows.collect()
            },
            "listing runs",
        )
        .await
    }

    async fn run(&self, id: &str) -> StoreResult<Option<RunRecord>> {
        let id = id.to_string();
        self.with(
            move |c| c.query_row(&q(sql::RUN), [&id], record).optional(),
            "reading a run",
        )
        .await
    }

    async fn points(&self, id: &str) -> StoreResult<Vec<String>> {
        let id = id.to_string();
        self.with(
            move |c| texts(c, &q(sql::POINTS), Some(&id)),
            "reading points",
        )
        .await
    }

    async fn artifact(&self, id: &str, which: Artifact) -> StoreResult<Option<String>> {
        let id = id.to_string();
        self.with(
            move |c| {
                let query = format!("SELECT {} FROM runs WHERE id = ?1", sql::column(which));
                Ok(
                    c.query_row(&query, [&id], |r| r.get::<_, Option<String>>(0))
                        .optional()?
                        .flatten(),
                )
            },
            "reading a run's document",
        )
        .await
    }

    async fn unfinished(&self, server: &str) -> StoreResult<Vec<RunRecord>> {
        let server = server.to_string();
        self.with(
            move |c| {
                let mut statement = c.prepare(&q(sql::UNFINISHED))?;
                statement.query_map([&server], record)?.collect()
            },
            "listing unfinished runs",
        )
        .await
    }
}
