//! The Fly backend on the command line: `--backend fly`, its options, and `liveload fly pool`.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use clap::{Arg, ArgMatches, Command, FromArgMatches as _};
use liveload_core::registry::{BackendCli, Common};
use liveload_core::{Backend, Error, Result, Secret};

use crate::{FlyBackend, PublicEdge, Reach, guest};

/// How the controller reaches Fly machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FlyMode {
    /// Through the app's public address (`APP.fly.dev:443`), one machine at a time by the
    /// `fly-force-instance-id` header; works from a laptop. The app needs public IPs.
    Public,
    /// Each machine's private IP, TLS pinned end to end; the controller must be inside the
    /// organisation's private network (a Fly machine, or `fly wireguard`).
    Private,
}

/// Options of the Fly backend.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Fly backend (--backend fly)")]
pub struct FlyArgs {
    /// Fly: the app the machines belong to.
    #[arg(long)]
    pub fly_app: Option<String>,
    /// Fly: the agent image (registry.fly.io/APP:TAG).
    #[arg(long)]
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
    /// Fly: the Machines API base URL (FLY_API_URL works too).
    #[arg(long, default_value = "https://api.machines.dev/v1")]
    pub fly_api_url: String,
}

impl FlyArgs {
    /// The backend these options describe.
    pub fn backend(&self) -> Result<FlyBackend> {
        let mut builder = FlyBackend::builder()
            .base_url(self.api_url())
            .regions(self.fly_regions.clone())
            .guest(self.guest()?)
            .agent_port(self.fly_agent_port)
            .reach(self.reach()?);
        if let Some(token) = self.token()? {
            builder = builder.token(token);
        }
        // FLY_APP is what flyctl users have set already.
        if let Some(app) = self
            .fly_app
            .clone()
            .or_else(|| std::env::var("FLY_APP").ok())
            .filter(|app| !app.is_empty())
        {
            builder = builder.app(app);
        }
        if let Some(image) = &self.fly_image {
            builder = builder.image(image);
        }
        if let Some(pool) = &self.fly_pool {
            builder = builder.pool(pool);
        }
        builder.build()
    }

    /// `--fly-api-url`, unless left at its default and `FLY_API_URL` says otherwise.
    fn api_url(&self) -> String {
        match std::env::var("FLY_API_URL") {
            Ok(url) if self.fly_api_url == "https://api.machines.dev/v1" && !url.is_empty() => url,
            _ => self.fly_api_url.clone(),
        }
    }

    /// The API token: the file's contents, else `FLY_API_TOKEN`. Never from a flag's value.
    fn token(&self) -> Result<Option<Secret>> {
        let token = match &self.fly_token_file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
                .trim()
                .to_string(),
            None => std::env::var("FLY_API_TOKEN").unwrap_or_default(),
        };
        Ok((!token.is_empty()).then(|| Secret::new(token)))
    }

    fn guest(&self) -> Result<crate::api::Guest> {
        let preset = guest::preset_named(&self.fly_size).ok_or_else(|| Error::InvalidOption {
            option: "--fly-size".into(),
            message: format!(
                "unknown size '{}'; use one of {}",
                self.fly_size,
                guest::PRESETS
                    .iter()
                    .map(|p| p.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?;
        Ok(preset.guest)
    }

    /// `--fly-mode` and the edge options as a [`Reach`].
    fn reach(&self) -> Result<Reach> {
        if self.fly_mode == FlyMode::Private {
            return Ok(Reach::Private);
        }
        let extra_roots_pem = match &self.fly_edge_ca_file {
            None => Vec::new(),
            Some(path) => {
                vec![
                    std::fs::read_to_string(path).map_err(|e| Error::InvalidOption {
                        option: "--fly-edge-ca-file".into(),
                        message: format!("cannot read {}: {e}", path.display()),
                    })?,
                ]
            }
        };
        // A custom edge address names its certificate by its host unless told otherwise.
        let server_name = self.fly_edge_name.clone().or_else(|| {
            self.fly_edge.as_ref().map(|edge| {
                edge.rsplit_once(':')
                    .map_or(edge.as_str(), |(host, _)| host)
                    .to_string()
            })
        });
        Ok(Reach::Public(PublicEdge {
            address: self.fly_edge.clone(),
            server_name,
            extra_roots_pem,
        }))
    }
}

/// The Fly backend's registry entry.
pub struct Fly;

#[async_trait]
impl BackendCli for Fly {
    const NAME: &'static str = "fly";
    const ABOUT: &'static str = "Fly.io Machines (public mode through Fly's edge, or private inside the organisation's network)";
    type Args = FlyArgs;

    async fn build(args: FlyArgs, _: &Common) -> Result<Arc<dyn Backend>> {
        Ok(Arc::new(args.backend()?))
    }

    fn command() -> Option<Command> {
        // Augmenting applies FlyArgs' doc comment as the command's about: keep each command's.
        let with_options = |command: Command| {
            let about = command.get_about().cloned().unwrap_or_default();
            <FlyArgs as clap::Args>::augment_args(command).about(about)
        };
        let pool = Command::new("pool")
            .about(
                "Manage a warm pool: stopped machines that runs start in about a second instead of \
                 creating (Fly creates about one machine a second per app)",
            )
            .subcommand_required(true)
            .subcommand(with_options(
                Command::new("create")
                    .about("Create N stopped agent machines in the pool (rate-limited: about N seconds, once)")
                    .arg(
                        Arg::new("fly_pool_nodes")
                            .long("nodes")
                            .value_name("N")
                            .help("Machines to add")
                            .required(true)
                            .value_parser(clap::value_parser!(u32)),
                    ),
            ))
            .subcommand(with_options(
                Command::new("list").about("List the pool's machines"),
            ))
            .subcommand(with_options(
                Command::new("destroy").about("Destroy every machine of the pool"),
            ));
        Some(
            Command::new("fly")
                .about("Fly.io: manage warm pools of stopped agent machines")
                .subcommand_required(true)
                .subcommand(pool),
        )
    }

    async fn run_command(matches: &ArgMatches, _: &Common) -> Result<String> {
        let Some(("pool", pool_matches)) = matches.subcommand() else {
            unreachable!("clap requires a subcommand");
        };
        let (action, action_matches) = pool_matches.subcommand().expect("a pool action");
        let args = FlyArgs::from_arg_matches(action_matches).map_err(|e| Error::InvalidOption {
            option: "fly pool".into(),
            message: e.to_string(),
        })?;
        let pool = args.fly_pool.clone().ok_or_else(|| Error::InvalidOption {
            option: "--fly-pool".into(),
            message: "name the pool with --fly-pool NAME".into(),
        })?;
        let fly = args.backend()?;
        match action {
            "create" => {
                let nodes = *action_matches
                    .get_one::<u32>("fly_pool_nodes")
                    .expect("required");
                let made = fly.create_pool(&pool, nodes).await?;
                Ok(format!(
                    "pool '{pool}': {} machine(s) created, stopped",
                    made.len()
                ))
            }
            "list" => {
                let machines = fly.pool_machines(&pool).await?;
                let mut text = format!("pool '{pool}': {} machine(s)\n", machines.len());
                for m in machines {
                    text.push_str(&format!(
                        "{}\t{}\t{}\t{}\n",
                        m.id, m.name, m.region, m.state
                    ));
                }
                Ok(text)
            }
            _ => {
                let n = fly.destroy_pool(&pool).await?;
                Ok(format!("pool '{pool}': {n} machine(s) destroyed"))
            }
        }
    }
}
