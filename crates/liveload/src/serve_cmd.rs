//! `liveload serve`: the long-running server (`liveload_server`), configured like a run — the
//! backends' options come from flags, `LIVELOAD_*` variables and the config file, so their
//! credentials stay on the server and requests only name a backend.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use clap::{ArgMatches, Args, Subcommand};
use liveload_core::error::exit_code;
use liveload_core::lock::default_state_dir;
use liveload_core::registry::{Common, Registered};
use liveload_core::{Backend, Error};
use liveload_server::runs::Limits;
use liveload_server::{ServerConfig, TlsFiles};

use crate::cli::{BackendArgs, OutputFormat};
use crate::{Ctx, output};

/// Options of `serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Where to listen. Anything but 127.0.0.1/::1 needs --tls-cert and --tls-key.
    #[arg(long, default_value = "127.0.0.1:7654")]
    pub listen: SocketAddr,
    /// The run history: a SQLite file (default: server.db in the state directory) or a
    /// postgres:// URL. A URL with a password belongs in LIVELOAD_DATABASE, never on the
    /// command line (where every user of the machine can read it) nor in the config file.
    #[arg(long, env = "LIVELOAD_DATABASE", hide_env_values = true)]
    pub database: Option<String>,
    /// The TLS certificate chain (PEM) to serve HTTPS with.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// More backends requests may name, besides --backend (the default), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub backends: Vec<String>,
    /// The most nodes any run may use.
    #[arg(long, default_value_t = 100)]
    pub max_allowed_nodes: u64,
    /// The most any billed run may cost, USD (a request may ask for less).
    #[arg(long, value_name = "USD")]
    pub max_cost: Option<f64>,
    /// This server's name in the run history (default: the host name). Servers sharing one
    /// PostgreSQL history need different names: at start-up each tears down the unfinished
    /// runs of its own name only.
    #[arg(long = "server-name")]
    pub server_name: Option<String>,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Manage API tokens instead of serving.
    #[command(subcommand)]
    pub token: Option<TokenCommand>,
}

/// `liveload serve token …`.
#[derive(Debug, Clone, Subcommand)]
pub enum TokenCommand {
    /// Manage API tokens (stored hashed in the run history).
    #[command(subcommand)]
    Token(TokenAction),
}

/// What to do with tokens.
#[derive(Debug, Clone, Subcommand)]
pub enum TokenAction {
    /// Create a token (or replace the one of that name) and print it, once.
    Create {
        /// A name to know it by (who or what uses it).
        name: String,
    },
    /// List the tokens' names.
    List,
    /// Remove a token.
    Delete {
        /// Its name.
        name: String,
    },
}

/// The backends a server offers, built on demand from the server's own options.
struct ServerBackends {
    registered: Vec<Box<dyn Registered>>,
    matches: ArgMatches,
    common: Common,
    offered: Vec<String>,
}

#[async_trait]
impl liveload_server::Backends for ServerBackends {
    fn names(&self) -> Vec<String> {
        self.offered.clone()
    }

    async fn build(&self, name: &str) -> Result<Arc<dyn Backend>, Error> {
        let entry = self
            .registered
            .iter()
            .find(|b| b.name() == name && self.offered.iter().any(|o| o == name))
            .ok_or_else(|| Error::InvalidOption {
                option: "backend".into(),
                message: format!("this server does not offer backend '{name}'"),
            })?;
        entry.build(&self.matches, &self.common).await
    }
}

/// The history's location: the flag or variable, else `server.db` in the state directory.
fn database(args: &ServeArgs, state_dir: &std::path::Path) -> Result<String, Error> {
    match &args.database {
        Some(url) => Ok(url.clone()),
        None => {
            liveload_core::state::private_dir(state_dir)?;
            Ok(state_dir.join("server.db").to_string_lossy().into_owned())
        }
    }
}

/// A database URL given as a flag must not carry a password: refuse it (fail-closed).
fn refuse_password_on_command_line(ctx: &Ctx<'_>, database: &str) -> Result<(), Error> {
    let from_flag =
        ctx.matches.value_source("database") == Some(clap::parser::ValueSource::CommandLine);
    // `user:password@` in a URL, `?password=` in its query, or libpq's `password=…`.
    let has_password = crate::config::carries_password(database);
    if from_flag && has_password {
        return Err(Error::InvalidOption {
            option: "--database".into(),
            message: "this URL carries a password, which every user of this machine can read \
                      on a command line; set LIVELOAD_DATABASE instead"
                .into(),
        });
    }
    Ok(())
}

/// `liveload serve` and `liveload serve token …`.
pub async fn run(args: ServeArgs, ctx: &Ctx<'_>) -> i32 {
    match serve(args, ctx).await {
        Ok(()) => exit_code::OK,
        Err(e) => output::error(&e, OutputFormat::Text),
    }
}

async fn serve(args: ServeArgs, ctx: &Ctx<'_>) -> Result<(), Error> {
    let state_dir = args
        .backend
        .state_dir
        .clone()
        .unwrap_or_else(default_state_dir);
    let database = database(&args, &state_dir)?;
    refuse_password_on_command_line(ctx, &database)?;
    let store = liveload_server::store::open(&database).await?;
    if let Some(TokenCommand::Token(action)) = args.token {
        return tokens(store.as_ref(), action).await;
    }
    let mut offered = vec![args.backend.backend.clone()];
    for name in args.backends {
        ctx.entry(&name)?;
        if !offered.contains(&name) {
            offered.push(name);
        }
    }
    let backends = Arc::new(ServerBackends {
        registered: crate::registry::backends(),
        matches: ctx.matches.clone(),
        common: Common {
            state_dir: Some(state_dir.clone()),
        },
        offered,
    });
    let config = ServerConfig {
        listen: args.listen,
        tls: match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            _ => None,
        },
        state_dir,
        name: args.server_name.unwrap_or_else(host_name),
        limits: Limits {
            max_allowed_nodes: args.max_allowed_nodes,
            max_cost_usd: args.max_cost,
        },
    };
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    // Listening for signals before anything starts: a SIGTERM during start-up's recovery
    // still stops the server through its own shutdown.
    let progress = Arc::new(crate::progress::Progress::new(false));
    let signals = crate::signals::Signals::listen(progress, "liveload cleanup".into());
    let server = liveload_server::Server::start(config, store, backends).await?;
    eprintln!(
        "liveload server on {scheme}://{} (dashboard at /, API at /api/v1, OpenAPI at /api/v1/openapi.json)",
        server.address
    );
    // Ctrl-C, SIGTERM or SIGHUP: stop every run (tearing its nodes down), then exit; a
    // third signal exits at once, as for a run.
    signals.first().await;
    eprintln!("stopping: every run is stopped and its nodes torn down ...");
    server.shutdown().await;
    Ok(())
}

/// This machine's host name (Linux's own record of it).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "liveload".into())
}

/// `liveload serve token create|list|delete`.
async fn tokens(store: &dyn liveload_server::Store, action: TokenAction) -> Result<(), Error> {
    match action {
        TokenAction::Create { name } => {
            let token = liveload_server::auth::create_token(store, &name).await?;
            eprintln!(
                "token '{name}' created; it is shown once and stored only hashed. Clients send \
                 it as `Authorization: Bearer <token>` (the CLI reads LIVELOAD_SERVER_TOKEN):"
            );
            println!("{}", token.expose());
        }
        TokenAction::List => {
            for name in store.token_names().await? {
                println!("{name}");
            }
        }
        TokenAction::Delete { name } => {
            if !store.delete_token(&name).await? {
                return Err(Error::InvalidOption {
                    option: "name".into(),
                    message: format!("no token is named '{name}'"),
                });
            }
            eprintln!("token '{name}' removed");
        }
    }
    Ok(())
}
