//! The PostgreSQL store (`--database postgres://…`): for a team whose members should see one
//! history — every run, scenario and token in a database they already back up — instead of
//! a SQLite file on one machine.
//!
//! `tokio-postgres` because it is async (a query waits on the network, never on a thread of
//! the server's) and plain: no ORM, no compile-time checked queries needing a live database
//! to build; the SQL is [`super::sql`], shared with the SQLite store. One connection, behind a
//! mutex (a transaction needs it exclusively); it is opened again when the server closed it
//! (PostgreSQL restarted), so a blip costs one failed call, not the rest of the server's life.
//! No TLS: a team that needs it puts the server next to its database, or a TLS proxy between.

use async_trait::async_trait;
use tokio::sync::Mutex;
use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config, NoTls, Row};

use super::{
    Artifact, RunEnd, RunRecord, RunRow, RunStatus, Store, StoreError, StoreResult, bigint, sql,
};

/// Refuse a database across a network: this store speaks to PostgreSQL without TLS, so its
/// password and the history would cross the network in clear. A database on this machine (a
/// loopback address or a Unix socket) or behind a tunnel (`ssh -L 5432:db:5432 …`) is fine.
fn only_on_this_machine(config: &Config, place: &str) -> StoreResult<()> {
    use tokio_postgres::config::Host;
    let remote = config.get_hosts().iter().any(|host| match host {
        Host::Tcp(name) => {
            name != "localhost"
                && !name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        Host::Unix(_) => false,
    });
    if remote {
        return Err(StoreError(format!(
            "PostgreSQL at {place} is on another machine, and liveload connects without TLS: \
             reach it through a tunnel on this machine (ssh -L 5432:HOST:5432 …, then \
             postgres://…@127.0.0.1:5432/…) or run the server next to the database"
        )));
    }
    Ok(())
}

/// Run history in a PostgreSQL database.
pub struct PostgresStore {
    /// How to connect again (the URL, parsed; it may hold a password, so it is never shown).
    config: Config,
    /// Where the database is, for messages: hosts, ports and database name, never a password.
    place: String,
    client: Mutex<Client>,
}

/// A driver error in full: tokio-postgres' own words ("db error") say little without their
/// cause (the server's message, or the I/O error).
fn describe(e: &tokio_postgres::Error) -> String {
    let mut words = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        words.push_str(": ");
        words.push_str(&c.to_string());
        cause = c.source();
    }
    words
}

fn fail(doing: &str) -> impl Fn(tokio_postgres::Error) -> StoreError + '_ {
    move |e| StoreError(format!("{doing}: {}", describe(&e)))
}

/// `host:port/dbname` from a parsed URL, without its user's password.
fn place(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let name = match host {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            };
            // One port for every host, or one each; PostgreSQL's default otherwise.
            let ports = config.get_ports();
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            format!("{name}:{port}")
        })
        .collect();
    let hosts = if hosts.is_empty() {
        "localhost:5432".to_string()
    } else {
        hosts.join(",")
    };
    match config.get_dbname().or(config.get_user()) {
        Some(db) => format!("{hosts}/{db}"),
        None => hosts,
    }
}

/// Open a connection; its I/O runs on a task of its own until the client is dropped or the
/// server goes away.
async fn open(config: &Config, place: &str) -> StoreResult<Client> {
    let (client, connection) = config.connect(NoTls).await.map_err(|e| {
        StoreError(format!(
            "connecting to PostgreSQL at {place}: {}",
            describe(&e)
        ))
    })?;
    let place = place.to_string();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(
                "the connection to PostgreSQL at {place} ended: {}",
                describe(&e)
            );
        }
    });
    Ok(client)
}

impl PostgresStore {
    /// Connect to the database a `postgres://` (or `postgresql://`, or key=value) URL names
    /// and create the tables it lacks. Errors name the host, port and database, never the
    /// URL (it may carry a password).
    pub async fn connect(url: &str) -> StoreResult<PostgresStore> {
        let mut config: Config = url.parse().map_err(|e| {
            StoreError(format!(
                "reading the PostgreSQL URL (postgres://user[:password]@host[:port]/database): {}",
                describe(&e)
            ))
        })?;
        // A server that does not answer (a firewall dropping packets) fails the start-up
        // instead of hanging it; a URL's own connect_timeout wins.
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        let place = place(&config);
        only_on_this_machine(&config, &place)?;
        let client = open(&config, &place).await?;
        for statement in sql::SCHEMA {
            client
                .execute(*statement, &[])
                .await
                .map_err(fail("creating the tables"))?;
        }
        Ok(PostgresStore {
            config,
            place,
            client: Mutex::new(client),
        })
    }

    /// The connection, opened again first when the server closed the last one.
    async fn client(&self) -> StoreResult<tokio::sync::MutexGuard<'_, Client>> {
        let mut client = self.client.lock().await;
        if client.is_closed() {
            *client = open(&self.config, &self.place).await?;
        }
        Ok(client)
    }

    /// One text column of every row.
    async fn texts(
        &self,
        query: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        doing: &str,
    ) -> StoreResult<Vec<String>> {
        let rows = self
            .client()
            .await?
            .query(query, params)
            .await
            .map_err(fail(doing))?;
        rows.iter()
            .map(|r| r.try_get(0).map_err(fail(doing)))
            .collect()
    }
}

fn record(row: &Row) -> Result<RunRecord, tokio_postgres::Error> {
    Ok(RunRow {
        id: row.try_get(0)?,
        scenario: row.try_get(1)?,
        backend: row.try_get(2)?,
        status: row.try_get(3)?,
        users: row.try_get(4)?,
        created: row.try_get(5)?,
        ended: row.try_get(6)?,
        message: row.try_get(7)?,
        server: row.try_get(8)?,
        exit_code: row.try_get(9)?,
    }
    .record())
}

#[async_trait]
impl Store for PostgresStore {
    async fn put_token(&self, name: &str, hash: &str) -> StoreResult<()> {
        let doing = "storing a token";
        let mut client = self.client().await?;
        let t = client.transaction().await.map_err(fail(doing))?;
        t.execute(sql::DELETE_TOKEN, &[&name])
            .await
            .map_err(fail(doing))?;
        t.execute(sql::INSERT_TOKEN, &[&name, &hash])
            .await
            .map_err(fail(doing))?;
        t.commit().await.map_err(fail(doing))
    }

    async fn token_name(&self, hash: &str) -> StoreResult<Option<String>> {
        let doing = "checking a token";
        let row = self
            .client()
            .await?
            .query_opt(sql::TOKEN_NAME, &[&hash])
            .await
            .map_err(fail(doing))?;
        row.map(|r| r.try_get(0)).transpose().map_err(fail(doing))
    }

    async fn delete_token(&self, name: &str) -> StoreResult<bool> {
        let removed = self
            .client()
            .await?
            .execute(sql::DELETE_TOKEN, &[&name])
            .await
            .map_err(fail("removing a token"))?;
        Ok(removed > 0)
    }

    async fn token_names(&self) -> StoreResult<Vec<String>> {
        self.texts(sql::TOKEN_NAMES, &[], "listing tokens").await
    }

    async fn put_scenario(&self, name: &str, yaml: &str) -> StoreResult<()> {
        let doing = "storing a scenario";
        let mut client = self.client().await?;
        let t = client.transaction().await.map_err(fail(doing))?;
        t.execute(sql::DELETE_SCENARIO, &[&name])
            .await
            .map_err(fail(doing))?;
        t.execute(sql::INSERT_SCENARIO, &[&name, &yaml])
            .await
            .map_err(fail(doing))?;
        t.commit().await.map_err(fail(doing))
    }

    async fn scenario(&self, name: &str) -> StoreResult<Option<String>> {
        let doing = "reading a scenario";
        let row = self
            .client()
            .await?
            .query_opt(sql::SCENARIO, &[&name])
            .await
            .map_err(fail(doing))?;
        row.map(|r| r.try_get(0)).transpose().map_err(fail(doing))
    }

    async fn scenario_names(&self) -> StoreResult<Vec<String>> {
        self.texts(sql::SCENARIO_NAMES, &[], "listing scenarios")
            .await
    }

    async fn insert_run(&self, run: &RunRecord, scenario_yaml: &str) -> StoreResult<()> {
        let (users, created) = (bigint(run.users), bigint(run.created_unix_s));
        self.client()
            .await?
            .execute(
                sql::INSERT_RUN,
                &[
                    &run.id,
                    &run.scenario,
                    &run.backend,
                    &run.status.as_str(),
                    &users,
                    &created,
                    &scenario_yaml,
                    &run.server,
                ],
            )
            .await
            .map(drop)
            .map_err(fail("recording a run"))
    }

    async fn end_run(&self, id: &str, end: &RunEnd, ended_unix_s: u64) -> StoreResult<()> {
        let status = end.status.unwrap_or(RunStatus::Error).as_str();
        let ended = bigint(ended_unix_s);
        let exit_code = end.exit_code.map(i64::from);
        self.client()
            .await?
            .execute(
                sql::END_RUN,
                &[
                    &id,
                    &status,
                    &ended,
                    &end.message,
                    &end.result_json,
                    &end.report_html,
                    &exit_code,
                ],
            )
            .await
            .map(drop)
            .map_err(fail("recording a run's end"))
    }

    async fn add_point(&self, id: &str, second: u64, point_json: &str) -> StoreResult<()> {
        let second = bigint(second);
        self.client()
            .await?
            .execute(sql::INSERT_POINT, &[&id, &second, &point_json])
            .await
            .map(drop)
            .map_err(fail("recording a point"))
    }

    async fn runs(&self) -> StoreResult<Vec<RunRecord>> {
        let doing = "listing runs";
        let rows = self
            .client()
            .await?
            .query(sql::RUNS, &[])
            .await
            .map_err(fail(doing))?;
        rows.iter()
            .map(|r| record(r).map_err(fail(doing)))
            .collect()
    }

    async fn run(&self, id: &str) -> StoreResult<Option<RunRecord>> {
        let doing = "reading a run";
        let row = self
            .client()
            .await?
            .query_opt(sql::RUN, &[&id])
            .await
            .map_err(fail(doing))?;
        row.as_ref().map(record).transpose().map_err(fail(doing))
    }

    async fn points(&self, id: &str) -> StoreResult<Vec<String>> {
        self.texts(sql::POINTS, &[&id], "reading points").await
    }

    async fn artifact(&self, id: &str, which: Artifact) -> StoreResult<Option<String>> {
        let doing = "reading a run's document";
        let query = format!("SELECT {} FROM runs WHERE id = $1", sql::column(which));
        let row = self
            .client()
            .await?
            .query_opt(&query, &[&id])
            .await
            .map_err(fail(doing))?;
        let text: Option<Option<String>> =
            row.map(|r| r.try_get(0)).transpose().map_err(fail(doing))?;
        Ok(text.flatten())
    }

    async fn unfinished(&self, server: &str) -> StoreResult<Vec<RunRecord>> {
        let doing = "listing unfinished runs";
        self.client()
            .await?
            .query(sql::UNFINISHED, &[&server])
            .await
            .map_err(fail(doing))?
            .iter()
            .map(record)
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail(doing))
    }
}
