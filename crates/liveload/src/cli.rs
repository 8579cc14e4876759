//! Command-line arguments. The CLI is thin: it turns flags into core types and renders results.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use liveload_core::Error;
use liveload_core::run::RunOptions;
use liveload_core::scenario::{Scenario, parse_duration};
use liveload_core::sizing::{BrowserProfile, SizingConfig};

/// Load-test web applications with real headless browsers on an ephemeral cluster.
#[derive(Debug, Parser)]
#[command(name = "liveload", version, propagate_version = true)]
pub struct Cli {
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
    /// Add or remove users of a running test on this machine.
    Users(UsersArgs),
    /// Fly.io: manage warm pools of stopped agent machines.
    Fly(FlyArgs),
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
}

/// Where nodes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// Agents as child processes on this machine.
    Local,
    /// Fly.io Machines (`--fly-mode public` through Fly's edge from anywhere, or `private`
    /// inside the organisation's network).
    Fly,
    /// Your own hosts over SSH (`--hosts hosts.toml`): the agent is uploaded, started on the
    /// host's loopback and reached through the SSH connection.
    Ssh,
    /// AWS EC2 instances booted from the agent AMI (`images/ec2`, `terraform/aws`).
    Ec2,
}

/// Which address of an EC2 instance the controller dials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Ec2Address {
    /// The public IP (controller outside the VPC).
    Public,
    /// The private IP (controller inside the VPC or on a VPN).
    Private,
}

/// How the controller reaches Fly machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FlyMode {
    /// Through the app's public address (`APP.fly.dev:443`), one machine at a time by the
    /// `fly-force-instance-id` header; works from a laptop. The app needs public IPs.
    Public,
    /// Each machine's private IP, TLS pinned end to end; the controller must be inside the
    /// organisation's private network (a Fly machine, or `fly wireguard`).
    Private,
}

/// How results and errors are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Tables for people.
    Text,
    /// One JSON document on stdout.
    Json,
}

/// Options shared by every command that talks to a backend.
#[derive(Debug, Clone, Args)]
pub struct BackendArgs {
    /// The backend that provides nodes.
    #[arg(long, value_enum, default_value = "local", env = "LIVELOAD_BACKEND")]
    pub backend: BackendKind,
    /// Local backend: split this host into N nodes (each reports 1/N of the host).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub local_nodes: u32,
    /// Where local state (locks, local runs' records) lives.
    #[arg(long, env = "LIVELOAD_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Chromium executable for the agents (default: chromium-headless-shell, then chromium).
    #[arg(long, env = "LIVELOAD_CHROMIUM")]
    pub chromium: Option<PathBuf>,
    /// Fly: the app the machines belong to.
    #[arg(long, env = "FLY_APP")]
    pub fly_app: Option<String>,
    /// Fly: the agent image (registry.fly.io/APP:TAG).
    #[arg(long, env = "LIVELOAD_FLY_IMAGE")]
    pub fly_image: Option<String>,
    /// Fly: a file holding the API token (default: the FLY_API_TOKEN environment variable).
    #[arg(long)]
    pub fly_token_file: Option<PathBuf>,
    /// Fly: regions to spread nodes over, comma-separated (default: Fly chooses).
    #[arg(long, value_delimiter = ',')]
    pub fly_regions: Vec<String>,
    /// Fly: machine size preset (shared-cpu-1x ... performance-16x).
    #[arg(long, default_value = "performance-2x")]
    pub fly_size: String,
    /// Fly: the port agents listen on inside their machines.
    #[arg(long, default_value_t = 7070)]
    pub fly_agent_port: u16,
    /// Fly: how the controller reaches agents.
    #[arg(long, value_enum, default_value = "public")]
    pub fly_mode: FlyMode,
    /// Fly, public mode: the edge's HOST:PORT (default APP.fly.dev:443; a custom domain works).
    #[arg(long)]
    pub fly_edge: Option<String>,
    /// Fly, public mode: the name on the edge's certificate (default: the host of --fly-edge,
    /// or APP.fly.dev).
    #[arg(long)]
    pub fly_edge_name: Option<String>,
    /// Fly, public mode: a PEM file of CA certificates to trust for the edge on top of the
    /// system's (a private CA in front of Fly, or a test edge).
    #[arg(long)]
    pub fly_edge_ca_file: Option<PathBuf>,
    /// Fly: a warm pool to take nodes from (start instead of create; stop instead of destroy).
    #[arg(long)]
    pub fly_pool: Option<String>,
    /// SSH: the hosts file (TOML: address, port, user, identity or agent, max_users, jump).
    #[arg(long, env = "LIVELOAD_HOSTS")]
    pub hosts: Option<PathBuf>,
    /// SSH: the known_hosts file host keys are checked against (default ~/.ssh/known_hosts).
    #[arg(long)]
    pub ssh_known_hosts: Option<PathBuf>,
    /// SSH: accept and record the keys of hosts not in known_hosts yet (a changed key is always
    /// refused).
    #[arg(long)]
    pub ssh_accept_new: bool,
    /// SSH: the agent for hosts of another architecture, as ARCH=PATH (repeatable; this
    /// machine's own agent is used for its architecture).
    #[arg(long, value_name = "ARCH=PATH")]
    pub ssh_agent_bin: Vec<String>,
    /// SSH: where liveload keeps its files on each host.
    #[arg(long, default_value = "~/.liveload")]
    pub ssh_remote_dir: String,
    /// EC2: the region (default: AWS_REGION or the profile's).
    #[arg(long)]
    pub ec2_region: Option<String>,
    /// EC2: another endpoint (an emulator); AWS_ENDPOINT_URL works too.
    #[arg(long)]
    pub ec2_endpoint_url: Option<String>,
    /// EC2: the instance type.
    #[arg(long, default_value = "c7i.large")]
    pub ec2_instance_type: String,
    /// EC2: the agent AMI (ami-..., built with images/ec2).
    #[arg(long, env = "LIVELOAD_EC2_AMI")]
    pub ec2_ami: Option<String>,
    /// EC2: a launch template instead of --ec2-ami, as NAME or lt-ID, optionally :VERSION.
    #[arg(long)]
    pub ec2_launch_template: Option<String>,
    /// EC2: subnets to spread nodes over, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub ec2_subnets: Vec<String>,
    /// EC2: security group ids, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub ec2_security_groups: Vec<String>,
    /// EC2: a key pair for SSH debugging of agent instances.
    #[arg(long)]
    pub ec2_key_name: Option<String>,
    /// EC2: spot instances (one-time, terminated on interruption).
    #[arg(long)]
    pub ec2_spot: bool,
    /// EC2: root volume size in GiB (default: the AMI's).
    #[arg(long)]
    pub ec2_root_volume_gb: Option<i32>,
    /// EC2: extra tags, KEY=VALUE, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub ec2_tags: Vec<String>,
    /// EC2: the port agents listen on.
    #[arg(long, default_value_t = 7070)]
    pub ec2_agent_port: u16,
    /// EC2: dial instances' public or private IPs.
    #[arg(long, value_enum, default_value = "public")]
    pub ec2_address: Ec2Address,
    /// EC2: price per instance-hour in USD for the plan's estimate (default: built-in
    /// on-demand table; required for a spot estimate).
    #[arg(long)]
    pub ec2_hourly_price: Option<f64>,
    /// Test hook: an emulator's instances run nothing; start a local agent for each from its
    /// user data.
    #[arg(long, hide = true)]
    pub ec2_test_local_agents: bool,
    /// Fly: the Machines API base URL.
    #[arg(
        long,
        env = "FLY_API_URL",
        default_value = "https://api.machines.dev/v1"
    )]
    pub fly_api_url: String,
    /// Test hook: local agents are not tied to this process (simulates agents orphaned by a
    /// crash, for `cleanup` tests); the dead-man switch still ends them.
    #[arg(long, hide = true)]
    pub local_keep_orphans: bool,
    /// Test hook: local agents wait this many milliseconds before listening (a slow boot).
    #[arg(long, hide = true, default_value_t = 0)]
    pub local_debug_delay_listen_ms: u64,
}

/// Options of `run` and `plan`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The scenario file (YAML).
    pub scenario: PathBuf,
    #[command(flatten)]
    pub backend: BackendArgs,
    #[command(flatten)]
    pub run: RunFlags,
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
    /// Agents exit at this age whatever happens (default: duration + 15m).
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
    /// Print results and errors as JSON.
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
    /// Create cloud machines without asking (the plan and its estimated cost are still shown).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Write result.json, report.html and report.md here (default: liveload-reports/<run id>).
    #[arg(long)]
    pub report_dir: Option<PathBuf>,
    /// Write no report files.
    #[arg(long, conflicts_with = "report_dir")]
    pub no_report: bool,
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

/// Options of `fly`.
#[derive(Debug, Clone, Args)]
pub struct FlyArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: FlyCommand,
}

/// `liveload fly ...`
#[derive(Debug, Clone, Subcommand)]
pub enum FlyCommand {
    /// Manage a warm pool: stopped machines that runs start in about a second instead of
    /// creating (Fly creates about one machine a second per app).
    Pool {
        /// create, list or destroy
        #[command(subcommand)]
        action: PoolAction,
    },
}

/// Warm pool actions.
#[derive(Debug, Clone, Subcommand)]
pub enum PoolAction {
    /// Create N stopped agent machines in the pool (rate-limited: about N seconds, once).
    Create {
        /// Machines to add.
        #[arg(long)]
        nodes: u32,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// List the pool's machines.
    List {
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Destroy every machine of the pool.
    Destroy {
        #[command(flatten)]
        backend: BackendArgs,
    },
}

/// Options of `report`.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// A result.json.
    pub result: PathBuf,
    /// A second result.json to compare with the first.
    pub compare: Option<PathBuf>,
    /// Where to write (default: next to the first result.json).
    #[arg(long)]
    pub out: Option<PathBuf>,
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
    /// Every liveload run the backend holds.
    #[arg(long, group = "which")]
    pub all: bool,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Print the result as JSON.
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

/// Options of `nodes`.
#[derive(Debug, Clone, Args)]
pub struct NodesArgs {
    /// Only this run's nodes.
    #[arg(long)]
    pub run: Option<String>,
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
        let defaults = BrowserProfile::default();
        const MIB: u64 = 1024 * 1024;
        let sizing = SizingConfig {
            memory_safety_factor: self.memory_safety_factor,
            reserved_headroom_bytes: self.reserved_headroom_mib * MIB,
            profile: BrowserProfile {
                browser_memory_usage_bytes: self
                    .browser_memory_mib
                    .map_or(defaults.browser_memory_usage_bytes, |m| m * MIB),
                context_memory_usage_bytes: self
                    .context_memory_mib
                    .map_or(defaults.context_memory_usage_bytes, |m| m * MIB),
                browser_contexts_per_core: self
                    .contexts_per_core
                    .unwrap_or(defaults.browser_contexts_per_core),
            },
        };
        let mut options = RunOptions::new(cluster_name, users, duration);
        options.max_allowed_nodes = self.max_allowed_nodes as u64;
        options.creation_timeout = self.creation_timeout;
        options.grace = self.grace;
        options.ttl = self
            .ttl
            .unwrap_or(duration + Duration::from_secs(15 * 60) + self.creation_timeout);
        options.tls = self.tls;
        options.start_interval = self.start_interval;
        options.sizing = sizing;
        options.validate()?;
        Ok(options)
    }
}
