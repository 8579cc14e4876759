//! Run history: scenarios, runs, their results and per-second points, behind one [`Store`]
//! interface with two implementations — SQLite ([`sqlite`], the default: a file in the state
//! directory, nothing to install) and PostgreSQL ([`postgres`], `--database postgres://…`, for
//! a team sharing one server's history).
//!
//! Both speak the same SQL ([`sql`]): standard types (`TEXT`, `BIGINT`) and `$1`-style
//! parameters (which the SQLite store rewrites to its numbered `?1`). Each implementation is only the
//! glue to its driver, so the two cannot drift in what they store; one test suite
//! (`tests/store.rs`) runs against both.

pub mod postgres;
pub mod sqlite;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// What a store operation failed with: the database's own words, with what was being done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "run history: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

/// A store failure where a run was at stake (starting, recovering) is that run's failure.
impl From<StoreError> for liveload_core::Error {
    fn from(error: StoreError) -> Self {
        liveload_core::Error::RunFailed {
            message: error.to_string(),
        }
    }
}

/// A store operation's result.
pub type StoreResult<T> = std::result::Result<T, StoreError>;

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Nodes are being created, or users run.
    Running,
    /// It ended and every threshold held.
    Passed,
    /// It ended and a threshold failed.
    Failed,
    /// It could not run (or ended early): the message says why.
    Error,
    /// Stopped through the API (`DELETE /runs/{id}`) or the dashboard; torn down.
    Stopped,
    /// The server died while it ran; its nodes were torn down at the next start.
    Interrupted,
}

impl RunStatus {
    /// The word stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Passed => "passed",
            RunStatus::Failed => "failed",
            RunStatus::Error => "error",
            RunStatus::Stopped => "stopped",
            RunStatus::Interrupted => "interrupted",
        }
    }

    /// The status a stored word names; an unknown word (a newer server's) reads as an error.
    pub fn parse(word: &str) -> RunStatus {
        match word {
            "running" => RunStatus::Running,
            "passed" => RunStatus::Passed,
            "failed" => RunStatus::Failed,
            "stopped" => RunStatus::Stopped,
            "interrupted" => RunStatus::Interrupted,
            _ => RunStatus::Error,
        }
    }

    /// Has the run ended?
    pub fn ended(self) -> bool {
        self != RunStatus::Running
    }
}

/// One run as the history holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunRecord {
    /// The run's id (what its machines are tagged with).
    pub id: String,
    /// The scenario's name.
    pub scenario: String,
    /// The backend that provides its nodes.
    pub backend: String,
    /// Where it is.
    pub status: RunStatus,
    /// Users asked for at the start.
    pub users: u64,
    /// When it was submitted, seconds since the Unix epoch.
    pub created_unix_s: u64,
    /// When it ended.
    pub ended_unix_s: Option<u64>,
    /// Why it ended as it did (an error's message), when there is more to say than the status.
    pub message: Option<String>,
    /// The server that runs it (`liveload serve --server-name`): several servers may share
    /// one PostgreSQL history, and each recovers only its own runs at start-up.
    pub server: String,
    /// Once it has ended: the exit code `liveload run` would have had (0 passed, 8 a
    /// threshold failed, 7 users failed, 10 the cost cap, 130 stopped, an error's own).
    pub exit_code: Option<i32>,
}

/// How a run ended: its status, and what it left.
#[derive(Debug, Clone, Default)]
pub struct RunEnd {
    /// The final status (not `Running`).
    pub status: Option<RunStatus>,
    /// The error's message, when it ended in one.
    pub message: Option<String>,
    /// `result.json`, when the run produced a report.
    pub result_json: Option<String>,
    /// `report.html`.
    pub report_html: Option<String>,
    /// The exit code `liveload run` would have had.
    pub exit_code: Option<i32>,
}

/// Which of a run's documents to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Artifact {
    /// `result.json`.
    Result,
    /// `report.html`.
    Report,
    /// The scenario's YAML as submitted.
    Scenario,
}

/// The run history. Every method is one statement or a short transaction; none holds a lock
/// across an await of the caller's.
#[async_trait]
pub trait Store: Send + Sync {
    /// Record a token's hash under a name (names are unique: creating one again replaces it).
    async fn put_token(&self, name: &str, hash: &str) -> StoreResult<()>;
    /// The name of the token with this hash, if any.
    async fn token_name(&self, hash: &str) -> StoreResult<Option<String>>;
    /// Remove a token; whether it existed.
    async fn delete_token(&self, name: &str) -> StoreResult<bool>;
    /// The token names.
    async fn token_names(&self) -> StoreResult<Vec<String>>;
    /// Store (or replace) a named scenario's YAML.
    async fn put_scenario(&self, name: &str, yaml: &str) -> StoreResult<()>;
    /// A stored scenario's YAML.
    async fn scenario(&self, name: &str) -> StoreResult<Option<String>>;
    /// Stored scenario names, sorted.
    async fn scenario_names(&self) -> StoreResult<Vec<String>>;
    /// Record a new run (status `running`) with the scenario it runs.
    async fn insert_run(&self, run: &RunRecord, scenario_yaml: &str) -> StoreResult<()>;
    /// Record how a run ended.
    async fn end_run(&self, id: &str, end: &RunEnd, ended_unix_s: u64) -> StoreResult<()>;
    /// Append one second's point (JSON) of a run's live series.
    async fn add_point(&self, id: &str, second: u64, point_json: &str) -> StoreResult<()>;
    /// Every run, newest first.
    async fn runs(&self) -> StoreResult<Vec<RunRecord>>;
    /// One run.
    async fn run(&self, id: &str) -> StoreResult<Option<RunRecord>>;
    /// A run's points (JSON), in time order.
    async fn points(&self, id: &str) -> StoreResult<Vec<String>>;
    /// One of a run's documents.
    async fn artifact(&self, id: &str, which: Artifact) -> StoreResult<Option<String>>;
    /// The runs of `server` still `running`: at start-up, the ones a previous process of this
    /// server left when it died (the caller tears each down, then ends it `interrupted`).
    /// Other servers' runs (a shared history) are not listed.
    async fn unfinished(&self, server: &str) -> StoreResult<Vec<RunRecord>>;
}

/// Open the store a `--database` value names: `postgres://…`, `postgresql://…` or libpq's
/// `host=… dbname=…`, else a SQLite file path.
pub async fn open(database: &str) -> StoreResult<std::sync::Arc<dyn Store>> {
    // A URL, or libpq's `key=value` form (never a file name SQLite should create).
    let postgres = database.starts_with("postgres://")
        || database.starts_with("postgresql://")
        || database.contains('=');
    if postgres {
        Ok(std::sync::Arc::new(
            postgres::PostgresStore::connect(database).await?,
        ))
    } else {
        Ok(std::sync::Arc::new(sqlite::SqliteStore::open(
            std::path::Path::new(database),
        )?))
    }
}

/// The SQL both stores run, with `$n` parameters.
pub mod sql {
    /// The schema, one statement per entry; each is idempotent.
    pub const SCHEMA: &[&str] = &[
        "CREATE TABLE IF NOT EXISTS tokens (name TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE)",
        "CREATE TABLE IF NOT EXISTS scenarios (name TEXT PRIMARY KEY, yaml TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, scenario TEXT NOT NULL, \
         backend TEXT NOT NULL, status TEXT NOT NULL, users BIGINT NOT NULL, \
         created BIGINT NOT NULL, ended BIGINT, message TEXT, scenario_yaml TEXT NOT NULL, \
         result TEXT, report TEXT, server TEXT NOT NULL, exit_code BIGINT)",
        "CREATE TABLE IF NOT EXISTS points (run_id TEXT NOT NULL, second BIGINT NOT NULL, \
         point TEXT NOT NULL, PRIMARY KEY (run_id, second))",
    ];
    /// Replace a token: delete by name, then insert (`$1` name, `$2` hash).
    pub const DELETE_TOKEN: &str = "DELETE FROM tokens WHERE name = $1";
    /// Insert a token.
    pub const INSERT_TOKEN: &str = "INSERT INTO tokens (name, hash) VALUES ($1, $2)";
    /// A token's name by hash.
    pub const TOKEN_NAME: &str = "SELECT name FROM tokens WHERE hash = $1";
    /// Token names.
    pub const TOKEN_NAMES: &str = "SELECT name FROM tokens ORDER BY name";
    /// Replace a scenario: delete, then insert.
    pub const DELETE_SCENARIO: &str = "DELETE FROM scenarios WHERE name = $1";
    /// Insert a scenario.
    pub const INSERT_SCENARIO: &str = "INSERT INTO scenarios (name, yaml) VALUES ($1, $2)";
    /// A scenario's YAML.
    pub const SCENARIO: &str = "SELECT yaml FROM scenarios WHERE name = $1";
    /// Scenario names.
    pub const SCENARIO_NAMES: &str = "SELECT name FROM scenarios ORDER BY name";
    /// Insert a run.
    pub const INSERT_RUN: &str = "INSERT INTO runs (id, scenario, backend, status, users, \
         created, scenario_yaml, server) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
    /// End a run (`$1` id, `$2` status, `$3` ended, `$4` message, `$5` result, `$6` report,
    /// `$7` exit code).
    pub const END_RUN: &str = "UPDATE runs SET status = $2, ended = $3, message = $4, \
         result = $5, report = $6, exit_code = $7 WHERE id = $1";
    /// Add a point.
    pub const INSERT_POINT: &str = "INSERT INTO points (run_id, second, point) VALUES ($1, $2, $3)";
    /// A run's points.
    pub const POINTS: &str = "SELECT point FROM points WHERE run_id = $1 ORDER BY second";
    /// Every run, newest first.
    pub const RUNS: &str = "SELECT id, scenario, backend, status, users, created, ended, message, \
         server, exit_code FROM runs ORDER BY created DESC, id";
    /// One run.
    pub const RUN: &str = "SELECT id, scenario, backend, status, users, created, ended, message, \
         server, exit_code FROM runs WHERE id = $1";
    /// A server's runs still running (`$1`: the server).
    pub const UNFINISHED: &str = "SELECT id, scenario, backend, status, users, created, ended, \
         message, server, exit_code FROM runs WHERE status = 'running' AND server = $1";

    /// The column holding a run's document.
    pub fn column(which: super::Artifact) -> &'static str {
        match which {
            super::Artifact::Result => "result",
            super::Artifact::Report => "report",
            super::Artifact::Scenario => "scenario_yaml",
        }
    }
}

/// A `runs` row as the SQL gives it (`RUN`, `RUNS`, `UNFINISHED` select these columns in
/// this order); [`RunRow::record`] makes the API's record of it.
pub(crate) struct RunRow {
    pub id: String,
    pub scenario: String,
    pub backend: String,
    pub status: String,
    pub users: i64,
    pub created: i64,
    pub ended: Option<i64>,
    pub message: Option<String>,
    pub server: String,
    pub exit_code: Option<i64>,
}

impl RunRow {
    /// The record (negative numbers, which liveload never writes, read as 0).
    pub fn record(self) -> RunRecord {
        RunRecord {
            id: self.id,
            scenario: self.scenario,
            backend: self.backend,
            status: RunStatus::parse(&self.status),
            users: self.users.max(0) as u64,
            created_unix_s: self.created.max(0) as u64,
            ended_unix_s: self.ended.map(|e| e.max(0) as u64),
            message: self.message,
            server: self.server,
            exit_code: self.exit_code.map(|c| i32::try_from(c).unwrap_or(1)),
        }
    }
}

/// A `u64` as a `BIGINT` (values liveload stores — seconds, users — fit easily; larger ones
/// are clamped rather than wrapped).
pub(crate) fn bigint(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
