//! Command-line arguments. The CLI is thin: it turns flags into core types and renders results.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use liveload_core::Error;
use liveload_core::run::RunOptions;
use liveload_core::scenario::{MAX_DURATION_TEXT, Scenario, parse_duration};
use liveload_core::sizing::{BrowserProfile, SizingConfig};

/// Load-test web applications with real headless browsers on an ephemeral cluster.
///
/// Options come from, in rising precedence: built-in defaults, a config file (liveload.toml in
/// the working directory, or --config FILE), LIVELOAD_* environment variables, and flags.
/// `liveload config` shows the effective values and where each came from.
#[derive(Debug, Parser)]
#[command(name = "liveload", version, propagate_version = true)]
pub struct Cli {
    /// A config file (TOML) instead of ./liveload.toml (also LIVELOAD_CONFIG).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a load test: plan, boot nodes, size from their facts, run users, report, destroy.
    Run(RunArgs),
    /// Show the plan (nodes, users per node, the facts used) without running anything.
    Plan(RunArgs),
    /// Check what a run needs before it creates anything: credentials, image, network rules,
    /// hosts, Chromium. Each line passes or fails with its fix; exit 0 only when all pass.
    Doctor(DoctorArgs),
    /// Measure what the scenario's own users cost on one node (a staircase of user counts)
    /// and write the sizing profile `plan` and `run` read with `--profile FILE`.
    Calibrate(crate::calibrate::CalibrateArgs),
    /// Add or remove users of a running test on this machine.
    Users(UsersArgs),
    /// Print the effective configuration of a run and where each value came from.
    Config(ConfigArgs),
    /// Re-render a run's report from its result.json, or compare two runs side by side.
    Report(ReportArgs),
    /// Print the JSON Schema of scenario files (for editors).
    Schema,
    /// Check a scenario file without running it (exit 0 valid, 3 invalid).
    Validate(ValidateArgs),
    /// Run one user for one iteration on this machine, printing every step as it runs.
    Try(crate::try_cmd::TryArgs),
    /// Run the bundled demo: start the demo target on this machine and load it.
    Demo(DemoArgs),
    /// Destroy the nodes of a crashed or interrupted run.
    Cleanup(CleanupArgs),
    /// List the nodes a backend holds for liveload runs.
    Nodes(NodesArgs),
    /// Measure liveload itself: cluster boot and per-user cost. Prints figures, never fails on
    /// time.
    Bench(crate::bench::BenchArgs),
    /// Serve an API, a run history and a live dashboard: a long-running controller a team
    /// starts runs on (`liveload serve token create NAME` makes its tokens).
    #[cfg(feature = "server")]
    Serve(crate::serve_cmd::ServeArgs),
}

/// How results and errors are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Tables for people.
    Text,
    /// One JSON document on stdout.
    Json,
}

/// Options shared by every command that talks to a backend. Each backend adds its own options
/// (under its own help heading) from the registry (`crate::registry`).
#[derive(Debug, Clone, Args)]
pub struct BackendArgs {
    /// The backend that provides nodes (see the backend sections below).
    #[arg(long, default_value = "local")]
    pub backend: String,
    /// Where local state (locks, local runs' records) lives.
    #[arg(long, env = "LIVELOAD_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

/// Options of `run` and `plan`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The scenario files (YAML). Several run one after another, each on its own cluster,
    /// with a combined report.
    #[arg(required = true, num_args = 1..)]
    pub scenarios: Vec<PathBuf>,
    /// With several scenarios: run them all on one cluster, booted once and sized for the
    /// largest (they must size alike), instead of a cluster each.
    #[arg(long)]
    pub reuse_cluster: bool,
    /// Submit the run to a liveload server (`liveload serve`) instead of running it here, and
    /// follow it in the terminal; the token comes from LIVELOAD_SERVER_TOKEN.
    #[arg(long, env = "LIVELOAD_SERVER", value_name = "URL")]
    pub server: Option<String>,
    #[command(flatten)]
    pub backend: BackendArgs,
    #[command(flatten)]
    pub run: RunFlags,
}

/// Options of `doctor`.
#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// A scenario to check the plan of (users, nodes, the hosts' capacity); without one only
    /// the backend's setup is checked.
    pub scenario: Option<PathBuf>,
    #[command(flatten)]
    pub backend: BackendArgs,
    #[command(flatten)]
    pub run: RunFlags,
    /// The address range agents see the controller's connections come from (CIDR), for the
    /// checks of firewall rules (EC2 security groups); default: not checked.
    #[arg(long)]
    pub controller_cidr: Option<String>,
}

/// Flags that shape a run.
#[derive(Debug, Clone, Args)]
pub struct RunFlags {
    /// Users to simulate (default: the scenario's `users`).
    #[arg(long)]
    pub users: Option<u64>,
    /// How long users iterate, e.g. 30s, 5m (default: the scenario's `duration`).
    #[arg(long, value_parser = duration)]
    pub duration: Option<Duration>,
    /// Override the scenario's base URL.
    #[arg(long)]
    pub base_url: Option<String>,
    /// The most nodes the run may use (a positive integer).
    #[arg(long, default_value_t = 100, allow_negative_numbers = true)]
    pub max_allowed_nodes: i64,
    /// How long one node may take to boot and answer.
    #[arg(long, value_parser = duration, default_value = "120s")]
    pub creation_timeout: Duration,
    /// Cluster name (default: derived from the scenario's name): [a-z0-9-], 1-40 characters.
    #[arg(long)]
    pub name: Option<String>,
    /// Agents exit when the controller has been silent this long.
    #[arg(long, value_parser = duration, default_value = "30s")]
    pub grace: Duration,
    /// Agents exit at this age whatever happens (default: duration + creation timeout + 15m).
    #[arg(long, value_parser = duration)]
    pub ttl: Option<Duration>,
    /// Serve the agent link over TLS with a per-run pinned certificate (always on for remote
    /// backends).
    #[arg(long)]
    pub tls: bool,
    /// Time between user starts on each node (0s: all at once).
    #[arg(long, value_parser = duration, default_value = "50ms")]
    pub start_interval: Duration,
    /// Fraction of a node's available memory liveload may use.
    #[arg(long, default_value_t = 0.8)]
    pub memory_safety_factor: f64,
    /// Memory kept free on each node, in MiB.
    #[arg(long, default_value_t = 512)]
    pub reserved_headroom_mib: u64,
    /// Memory of one browser with no context, in MiB (default: measured profile).
    #[arg(long)]
    pub browser_memory_mib: Option<u64>,
    /// Memory each user's context adds, in MiB (default: measured profile).
    #[arg(long)]
    pub context_memory_mib: Option<u64>,
    /// Browser contexts one core drives (default: measured profile).
    #[arg(long)]
    pub contexts_per_core: Option<f64>,
    /// A sizing profile measured on your scenario (`liveload calibrate`): its browser memory,
    /// memory per user and users per core replace the built-in ones; the three flags above
    /// still win.
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// Print results and errors as JSON.
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
    /// Create cloud machines without asking (the plan and its estimated cost are still shown).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Write result.json, report.html and report.md here (default: liveload-reports/<run id>;
    /// several scenarios: each in DIR/<run id>, the combined report in DIR).
    #[arg(long)]
    pub report_dir: Option<PathBuf>,
    /// Write no report files.
    #[arg(long, conflicts_with = "report_dir")]
    pub no_report: bool,
    /// When a node is lost mid-run (its agent died, its link broke, it fell silent past the
    /// grace): go on with the others (its users count failed), or stop the run.
    #[arg(long, value_enum, default_value = "continue")]
    pub on_node_loss: NodeLossArg,
    /// The most the run may cost, in USD (billed backends): refused before any create when the
    /// estimate is above it; stopped and torn down when the cost so far reaches it.
    #[arg(long, value_name = "USD")]
    pub max_cost: Option<f64>,
    /// How long teardown may take before it stops and prints what is left and the
    /// `liveload cleanup` command.
    #[arg(long, value_parser = duration, default_value = "5m")]
    pub teardown_timeout: Duration,
    /// Write a raw trace here (JSON Lines): one record per step, iteration and HTTP response
    /// of the traced iterations, with its node, user, iteration and time.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// The share of iterations traced, from 0 to 1 (a traced iteration is traced whole).
    #[arg(long, default_value_t = 1.0, value_name = "SHARE")]
    pub trace_sample: f64,
    /// The most trace bytes each node sends per second; past it, records are dropped and
    /// counted (`trace.records_dropped`), so tracing cannot swamp the links.
    #[arg(long, default_value_t = 256 * 1024, value_name = "BYTES")]
    pub trace_budget: u64,
}

/// `--on-node-loss`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NodeLossArg {
    /// The other nodes go on; the run exits with the run-failed code.
    Continue,
    /// Stop every node and end the run.
    Abort,
}

/// Options of `users`.
#[derive(Debug, Clone, Args)]
pub struct UsersArgs {
    /// add or remove
    #[command(subcommand)]
    pub change: UsersChange,
    /// The running test's cluster name (needed when several run).
    #[arg(long, global = true)]
    pub name: Option<String>,
    /// A liveload server holding the run (with --run); the token comes from
    /// LIVELOAD_SERVER_TOKEN.
    #[arg(
        long,
        global = true,
        env = "LIVELOAD_SERVER",
        value_name = "URL",
        requires = "run"
    )]
    pub server: Option<String>,
    /// The server's run id.
    #[arg(long, global = true)]
    pub run: Option<String>,
    /// Where local state lives.
    #[arg(long, env = "LIVELOAD_STATE_DIR", global = true)]
    pub state_dir: Option<PathBuf>,
}

/// A change of users.
#[derive(Debug, Clone, Subcommand)]
pub enum UsersChange {
    /// Start N more users (on nodes with spare capacity).
    Add {
        /// How many.
        count: u64,
    },
    /// Stop N users: after their current iteration, or at once with --force.
    Remove {
        /// How many.
        count: u64,
        /// Stop them now.
        #[arg(long)]
        force: bool,
    },
}

/// Options of `report`.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// A result.json (with --server: a run id, whose result.json and report.html are
    /// downloaded).
    pub result: PathBuf,
    /// A liveload server to download the run's report from; the token comes from
    /// LIVELOAD_SERVER_TOKEN.
    #[arg(
        long,
        env = "LIVELOAD_SERVER",
        value_name = "URL",
        conflicts_with = "compare"
    )]
    pub server: Option<String>,
    /// A second result.json to compare with the first.
    pub compare: Option<PathBuf>,
    /// Where to write (default: next to the first result.json).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Options of `config`: everything `run` takes, except the scenario.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    #[command(flatten)]
    pub backend: BackendArgs,
    #[command(flatten)]
    pub run: RunFlags,
}

/// Options of `validate`.
#[derive(Debug, Clone, Args)]
pub struct ValidateArgs {
    /// The scenario file.
    pub scenario: PathBuf,
    /// Print the result as JSON.
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

/// Options of `demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Another scenario to run against the demo target (default: the bundled demo.yaml).
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    #[command(flatten)]
    pub backend: BackendArgs,
    #[command(flatten)]
    pub run: RunFlags,
}

/// Options of `cleanup`.
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false, id = "which")]
pub struct CleanupArgs {
    /// The run id to clean up.
    #[arg(long, group = "which")]
    pub run: Option<String>,
    /// Every liveload run the backend holds, except runs still going on from this machine.
    #[arg(long, group = "which")]
    pub all: bool,
    /// Every machine whose lifetime (its expires-at tag) has passed, of any run.
    #[arg(long, group = "which")]
    pub expired: bool,
    /// Destroy the nodes of runs still going on from this machine too.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Print the result as JSON.
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

/// Which nodes `cleanup` destroys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CleanupSelection {
    /// One run's.
    Run(String),
    /// Every run's.
    All,
    /// Those past their expiry.
    Expired,
}

impl CleanupArgs {
    /// What to destroy.
    pub fn selection(&self) -> CleanupSelection {
        match (&self.run, self.expired) {
            (Some(run), _) => CleanupSelection::Run(run.clone()),
            (None, true) => CleanupSelection::Expired,
            (None, false) => CleanupSelection::All,
        }
    }
}

/// Options of `nodes`.
#[derive(Debug, Clone, Args)]
pub struct NodesArgs {
    /// Only this run's nodes.
    #[arg(long)]
    pub run: Option<String>,
    /// List what a liveload server's backends hold instead; the token comes from
    /// LIVELOAD_SERVER_TOKEN.
    #[arg(long, env = "LIVELOAD_SERVER", value_name = "URL")]
    pub server: Option<String>,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Print the list as JSON.
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

/// Parse `500ms`, `30s`, `5m`, `1h`.
pub fn duration(text: &str) -> Result<Duration, String> {
    parse_duration(text)
}

impl RunFlags {
    /// Core run options from these flags and the scenario.
    pub fn options(&self, scenario: &Scenario) -> Result<RunOptions, Error> {
        if self.max_allowed_nodes < 1 {
            return Err(Error::MaxAllowedNodesInvalid {
                value: self.max_allowed_nodes,
            });
        }
        let cluster_name = match &self.name {
            Some(name) => name.clone(),
            None => liveload_core::names::cluster_name_from(&scenario.name),
        };
        let users = self.users.unwrap_or(scenario.users);
        let duration = self.duration.unwrap_or(scenario.duration);
        // Precedence, lowest first: the built-in profile, the scenario's `sizing:`, --profile,
        // then the three sizing flags (below).
        // A --profile replaces the scenario's sizing: whole (a broken scenario profile must not
        // stop a run that names another).
        let defaults = match &self.profile {
            Some(path) => liveload_core::profile::CalibratedProfile::load(path)?.browser_profile(),
            None => scenario.sizing_profile()?,
        };
        let sizing = SizingConfig {
            memory_safety_factor: self.memory_safety_factor,
            reserved_headroom_bytes: mib_to_bytes(
                "--reserved-headroom-mib",
                self.reserved_headroom_mib,
            )?,
            profile: BrowserProfile {
                browser_memory_usage_bytes: match self.browser_memory_mib {
                    Some(mib) => mib_to_bytes("--browser-memory-mib", mib)?,
                    None => defaults.browser_memory_usage_bytes,
                },
                context_memory_usage_bytes: match self.context_memory_mib {
                    Some(mib) => mib_to_bytes("--context-memory-mib", mib)?,
                    None => defaults.context_memory_usage_bytes,
                },
                browser_contexts_per_core: self
                    .contexts_per_core
                    .unwrap_or(defaults.browser_contexts_per_core),
            },
        };
        let mut options = RunOptions::new(cluster_name, users, duration);
        options.max_allowed_nodes = self.max_allowed_nodes as u64;
        options.creation_timeout = self.creation_timeout;
        options.grace = self.grace;
        options.ttl = match self.ttl {
            Some(ttl) => ttl,
            None => RunOptions::default_ttl(duration, self.creation_timeout).ok_or_else(|| {
                Error::InvalidOption {
                    option: "--ttl".into(),
                    message: format!(
                        "the default TTL (duration + creation timeout + 15m) is longer than \
                         the limit of {MAX_DURATION_TEXT}; give --ttl, or a shorter --duration \
                         or --creation-timeout"
                    ),
                }
            })?,
        };
        options.tls = self.tls;
        // Protocol users need no browser: the nodes start none.
        options.no_browser = scenario.engine.is_protocol();
        options.start_interval = self.start_interval;
        options.sizing = sizing;
        options.on_node_loss = match self.on_node_loss {
            NodeLossArg::Continue => liveload_core::run::NodeLoss::Continue,
            NodeLossArg::Abort => liveload_core::run::NodeLoss::Abort,
        };
        options.teardown_timeout = self.teardown_timeout;
        options.max_cost_usd = self.max_cost;
        options.trace = self
            .trace
            .clone()
            .map(|path| liveload_core::run::TraceOutput {
                path,
                sample: self.trace_sample,
                bytes_per_s: self.trace_budget,
            });
        options.validate()?;
        Ok(options)
    }
}

/// `mib` MiB in bytes, or an error naming `option` when that overflows a u64 (16 EiB: no
/// machine has it, so it is a typo, never a real setting).
fn mib_to_bytes(option: &str, mib: u64) -> Result<u64, Error> {
    const MIB: u64 = 1024 * 1024;
    mib.checked_mul(MIB).ok_or_else(|| Error::InvalidOption {
        option: option.into(),
        message: format!("{mib} MiB does not fit in 64 bits of bytes"),
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    /// The run options from `liveload run s.yaml FLAGS` for a 30 s scenario.
    fn options(flags: &[&str]) -> Result<RunOptions, Error> {
        let args = ["liveload", "run", "s.yaml"].iter().chain(flags);
        let Command::Run(run) = Cli::try_parse_from(args).unwrap().command else {
            unreachable!("parsed as `run`")
        };
        run.run
            .options(&Scenario::new("demo", "http://x", Vec::new()))
    }

    /// Regression (issue 12): `reserved_headroom_mib * MIB` overflowed (a panic in debug
    /// builds, a silently wrong headroom in release).
    #[test]
    fn mib_that_overflow_bytes_are_refused_by_option() {
        let huge = u64::MAX.to_string();
        for option in [
            "--reserved-headroom-mib",
            "--browser-memory-mib",
            "--context-memory-mib",
        ] {
            let err = options(&[option, &huge]).unwrap_err();
            assert_eq!(err.code(), "invalid_option");
            assert!(err.to_string().contains(option), "{err}");
        }
        let ok = options(&["--reserved-headroom-mib", "1024"]).unwrap();
        assert_eq!(ok.sizing.reserved_headroom_bytes, 1024 * 1024 * 1024);
    }

    /// Regression (issue 12): the default TTL `duration + 15m + creation timeout` was an
    /// unchecked sum; at the bound it now names the options to shorten.
    #[test]
    fn a_default_ttl_past_the_bound_is_an_error() {
        let err = options(&["--duration", "87600h"]).unwrap_err().to_string();
        assert!(err.contains("--ttl") && err.contains("10 years"), "{err}");
        let ok = options(&["--duration", "87600h", "--ttl", "87600h"]).unwrap();
        assert_eq!(ok.ttl, liveload_core::scenario::MAX_DURATION);
        let err =
            Cli::try_parse_from(["liveload", "run", "s", "--duration", "6000000000000000000m"])
                .unwrap_err()
                .to_string();
        assert!(err.contains("10 years"), "{err}");
        let ok = options(&[]).unwrap();
        assert_eq!(ok.ttl, Duration::from_secs(30 + 120 + 15 * 60));
    }
}
