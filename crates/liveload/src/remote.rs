//! The CLI as a client of `liveload serve`: `run`, `users`, `nodes` and `report` with
//! `--server URL` send the request to the server instead of acting on this machine. The token
//! comes from `LIVELOAD_SERVER_TOKEN` (an environment variable, never a flag: a command line is
//! readable by every user of the machine).

use std::path::{Path, PathBuf};
use std::time::Duration;

use liveload_core::error::exit_code;
use liveload_core::{Error, Secret};
use liveload_server::api::RunView;
use liveload_server::client;
use liveload_server::control::{ControlClient, UsersChange};
use liveload_server::runs::RunRequest;
use liveload_server::store::{RunRecord, RunStatus};

use crate::cli::{OutputFormat, RunArgs};
use crate::output;

/// The variable holding the server's token.
pub const TOKEN_VARIABLE: &str = "LIVELOAD_SERVER_TOKEN";

/// A server and the token it wants.
pub struct Remote {
    /// `…/api/v1`.
    api: String,
    /// The server as given (for the dashboard's links).
    server: String,
    token: Secret,
}

impl Remote {
    /// The server at `url`, with the token from [`TOKEN_VARIABLE`].
    pub fn new(url: &str) -> Result<Remote, Error> {
        let token = std::env::var(TOKEN_VARIABLE).map_err(|_| Error::InvalidOption {
            option: "--server".into(),
            message: format!(
                "set {TOKEN_VARIABLE} to a token of the server (`liveload serve token create \
                 NAME` on the server makes one)"
            ),
        })?;
        client::check_server_url(url)?;
        let server = url.trim_end_matches('/').to_string();
        Ok(Remote {
            api: format!("{server}/api/v1"),
            server,
            token: Secret::new(token.trim()),
        })
    }

    /// Send a request (a JSON body when given) with the token; the answer, unread.
    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<reqwest::Response, Error> {
        let mut request = client::http()
            .request(method, format!("{}{path}", self.api))
            .bearer_auth(self.token.expose());
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        request.send().await.map_err(|e| Error::RunFailed {
            message: format!("cannot reach the server at {}: {e}", self.server),
        })
    }

    /// A request whose JSON answer is decoded.
    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, Error> {
        client::decode(self.request(method, path, body).await?).await
    }

    /// A document of a run, as the server keeps it.
    async fn text(&self, path: &str) -> Result<String, Error> {
        client::read(self.request(reqwest::Method::GET, path, None).await?).await
    }
}

/// `liveload run --server URL scenario.yaml`: submit, follow in the terminal, and exit as a
/// local run would (0 passed, 8 a threshold failed, 7 the run failed, 130 stopped).
pub async fn run(server: &str, args: &RunArgs, matches: &clap::ArgMatches) -> i32 {
    let format = args.run.output;
    match submit_and_follow(server, args, matches).await {
        Ok(code) => code,
        Err(e) => output::error(&e, format),
    }
}

async fn submit_and_follow(
    server: &str,
    args: &RunArgs,
    matches: &clap::ArgMatches,
) -> Result<i32, Error> {
    let remote = Remote::new(server)?;
    let [path] = args.scenarios.as_slice() else {
        return Err(Error::InvalidOption {
            option: "--server".into(),
            message: "a server runs one scenario per request: give one file".into(),
        });
    };
    let request = request_of(path, args, matches)?;
    let body = serde_json::to_vec(&request).expect("serialises");
    let record: RunRecord = remote
        .send(reqwest::Method::POST, "/runs", Some(body))
        .await?;
    eprintln!(
        "run {} started on {} (watch it at {}/runs/{})",
        record.id, remote.server, remote.server, record.id
    );
    let signals = crate::signals::Signals::listen(
        std::sync::Arc::new(crate::progress::Progress::new(false)),
        "liveload cleanup".into(),
    );
    let ended = follow(&remote, &record.id, &signals).await?;
    finish(&remote, &ended, args.run.output).await
}

/// Flags a server run cannot honour: its options are the server's (sizing, lifetimes, report
/// files on the server). Given, they are refused rather than silently dropped.
const LOCAL_ONLY_FLAGS: &[&str] = &[
    "name",
    "grace",
    "ttl",
    "tls",
    "start_interval",
    "memory_safety_factor",
    "reserved_headroom_mib",
    "browser_memory_mib",
    "context_memory_mib",
    "contexts_per_core",
    "profile",
    "report_dir",
    "no_report",
    "on_node_loss",
    "teardown_timeout",
    "trace",
    "creation_timeout",
    "reuse_cluster",
];

/// Did the user give this option (flag or variable), rather than take its default?
fn given(matches: &clap::ArgMatches, id: &str) -> bool {
    use clap::parser::ValueSource;
    matches!(
        matches
            .try_get_raw(id)
            .ok()
            .flatten()
            .and(matches.value_source(id)),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// The request a run's flags make. Only what the user gave is sent: the server's defaults
/// (and its caps) decide the rest.
fn request_of(
    path: &Path,
    args: &RunArgs,
    matches: &clap::ArgMatches,
) -> Result<RunRequest, Error> {
    if let Some(flag) = LOCAL_ONLY_FLAGS.iter().find(|id| given(matches, id)) {
        return Err(Error::InvalidOption {
            option: format!("--{}", flag.replace('_', "-")),
            message: "a run on a server uses the server's settings for this; run without \
                      --server to set it"
                .into(),
        });
    }
    let yaml = std::fs::read_to_string(path).map_err(|e| Error::Scenario {
        file: path.to_path_buf(),
        line: 1,
        column: 1,
        message: format!("cannot read the file: {e}"),
    })?;
    let flags = &args.run;
    Ok(RunRequest {
        scenario_yaml: Some(yaml),
        scenario: None,
        backend: given(matches, "backend").then(|| args.backend.backend.clone()),
        users: flags.users,
        duration: flags.duration.map(|d| format!("{}ms", d.as_millis())),
        base_url: flags.base_url.clone(),
        max_allowed_nodes: given(matches, "max_allowed_nodes")
            .then_some(flags.max_allowed_nodes.max(0) as u64),
        max_cost: flags.max_cost,
        confirm: flags.yes,
    })
}

/// Print the run's progress each second until it ends; the first signal asks the server to
/// stop it (it tears down and ends as `stopped`).
async fn follow(
    remote: &Remote,
    id: &str,
    signals: &crate::signals::Signals,
) -> Result<RunView, Error> {
    let mut stop_sent = false;
    loop {
        let view: RunView = remote
            .send(reqwest::Method::GET, &format!("/runs/{id}"), None)
            .await?;
        if view.run.status.ended() {
            return Ok(view);
        }
        if let Some(live) = &view.live {
            eprint!(
                "\r{} · {} of {} users · {:.0}s   ",
                live["phase"].as_str().unwrap_or("starting"),
                live["active_users"],
                live["target_users"],
                live["elapsed_s"].as_f64().unwrap_or(0.0)
            );
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = signals.first(), if !stop_sent => {
                stop_sent = true;
                eprintln!("\nasking the server to stop run {id} (it tears down every node) ...");
                let _: RunRecord = remote
                    .send(reqwest::Method::DELETE, &format!("/runs/{id}"), None)
                    .await?;
            }
        }
    }
}

/// Show how the run ended (its report when it has one); the exit code a local run would have.
async fn finish(remote: &Remote, view: &RunView, format: OutputFormat) -> Result<i32, Error> {
    eprintln!();
    let id = &view.run.id;
    let result: Option<liveload_core::run::RunReport> = remote
        .send(reqwest::Method::GET, &format!("/runs/{id}/result"), None)
        .await
        .ok();
    if let Some(report) = &result {
        output::report(report, format);
        eprintln!("report: {}/api/v1/runs/{id}/report", remote.server);
    }
    if let Some(message) = &view.run.message {
        eprintln!("{}: {message}", view.run.status.as_str());
    }
    // The server recorded the exit code `liveload run` would have had.
    Ok(view.run.exit_code.unwrap_or(match view.run.status {
        RunStatus::Passed => exit_code::OK,
        RunStatus::Failed => exit_code::THRESHOLD_FAILED,
        RunStatus::Stopped | RunStatus::Interrupted => exit_code::INTERRUPTED,
        RunStatus::Error | RunStatus::Running => exit_code::RUN_FAILED,
    }))
}

/// `liveload users add|remove N --server URL --run ID`.
pub async fn users(server: &str, run: &str, change: &UsersChange) -> Result<u64, Error> {
    let remote = Remote::new(server)?;
    let client = ControlClient {
        base: format!("{}/runs/{run}", remote.api),
        token: remote.token,
    };
    client.change_users(change).await
}

/// `liveload nodes --server URL`: every node the server's backends hold.
pub async fn nodes(server: &str, format: OutputFormat) -> Result<(), Error> {
    let remote = Remote::new(server)?;
    let listed: Vec<liveload_server::api::NodesOfBackend> =
        remote.send(reqwest::Method::GET, "/nodes", None).await?;
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string(&listed).expect("serialises")),
        OutputFormat::Text => {
            for backend in &listed {
                if let Some(error) = &backend.error {
                    println!("{}: cannot list: {error}", backend.backend);
                }
                for node in &backend.nodes {
                    println!(
                        "{}\t{}\trun {}\t{}",
                        backend.backend,
                        node["id"].as_str().unwrap_or_default(),
                        node["run_id"].as_str().unwrap_or_default(),
                        node["detail"].as_str().unwrap_or_default()
                    );
                }
            }
            if listed.iter().all(|b| b.nodes.is_empty()) {
                println!("no nodes");
            }
        }
    }
    Ok(())
}

/// `liveload report --server URL RUN_ID`: download the run's `result.json` and
/// `report.html` (to `--out`, default `liveload-reports/<id>`).
pub async fn report(server: &str, id: &str, out: Option<PathBuf>) -> Result<PathBuf, Error> {
    let remote = Remote::new(server)?;
    let result = remote.text(&format!("/runs/{id}/result")).await?;
    let html = remote.text(&format!("/runs/{id}/report")).await?;
    let dir = out.unwrap_or_else(|| Path::new("liveload-reports").join(id));
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    for (name, text) in [("result.json", &result), ("report.html", &html)] {
        let path = dir.join(name);
        std::fs::write(&path, text)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    }
    Ok(dir)
}
