//! `liveload`: the command-line interface.
//!
//! The CLI is thin: it builds the command line from the derive structs in [`cli`] plus every
//! registered backend's options ([`registry`]), layers the config file and the environment
//! under the flags ([`config`]), and turns the result into calls of `liveload_core`. Every
//! command ends in one of the documented exit codes ([`liveload_core::error::exit_code`]);
//! errors are printed with what went wrong, where, and how to fix it — or as JSON with
//! `--output json`.

mod bench;
mod calibrate;
mod cli;
mod config;
mod control;
mod doctor_cmd;
mod output;
mod progress;
mod registry;
#[cfg(feature = "server")]
mod remote;
mod reuse;
mod run_cmd;
mod sequence;
#[cfg(feature = "server")]
mod serve_cmd;
mod signals;
mod try_cmd;

use std::ffi::OsString;
use std::sync::Arc;

use clap::{ArgMatches, CommandFactory as _, FromArgMatches as _};
use liveload_core::error::exit_code;
use liveload_core::lock::default_state_dir;
use liveload_core::registry::{Common, Registered};
use liveload_core::scenario::Scenario;
use liveload_core::{Backend, Error, RunFilter};

use crate::cli::{BackendArgs, Cli, Command, OutputFormat};

/// What every command may need besides its own arguments: the backends compiled in, the parsed
/// arguments (which hold the backends' options), and where each value came from.
pub struct Ctx<'a> {
    backends: &'a [Box<dyn Registered>],
    /// The matches of the subcommand being run.
    matches: &'a ArgMatches,
    provenance: &'a config::Provenance,
}

impl Ctx<'_> {
    /// The backend `--backend` names, built from its options.
    pub async fn backend(&self, args: &BackendArgs) -> Result<Arc<dyn Backend>, Error> {
        let entry = self.entry(&args.backend)?;
        let common = Common {
            state_dir: args.state_dir.clone(),
        };
        entry.build(self.matches, &common).await
    }

    /// The registered backend named `name`, or an error listing the known ones.
    pub fn entry(&self, name: &str) -> Result<&dyn Registered, Error> {
        self.backends
            .iter()
            .find(|b| b.name() == name)
            .map(|b| b.as_ref())
            .ok_or_else(|| Error::InvalidOption {
                option: "--backend".into(),
                message: format!(
                    "unknown backend '{name}'; this build knows {}",
                    names(self.backends).join(", ")
                ),
            })
    }
}

fn names(backends: &[Box<dyn Registered>]) -> Vec<&'static str> {
    backends.iter().map(|b| b.name()).collect()
}

fn main() {
    // One TLS stack for the whole program (reqwest, the agent link): rustls with ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<OsString> = std::env::args_os().collect();
    let backends = registry::backends();
    let (command, provenance) = match command_line(&args, &backends) {
        Ok(built) => built,
        Err(e) => std::process::exit(output::error(&e, OutputFormat::Text)),
    };
    let matches = command.get_matches_from(&args);
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LIVELOAD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let code = runtime.block_on(dispatch(&matches, &backends, &provenance));
    // Let spawned tasks (agent links, reapers) wind down briefly, then exit with the code.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    std::process::exit(code);
}

/// The whole command line: the derive structs, every backend's options under its own heading
/// on each command that talks to a backend, the backends' own commands, and the layers of
/// configuration under the flags.
fn command_line(
    args: &[OsString],
    backends: &[Box<dyn Registered>],
) -> Result<(clap::Command, config::Provenance), Error> {
    let names = names(backends);
    let file = match config::locate(args)? {
        Some(path) => Some(config::ConfigFile::load(&path, &names)?),
        None => None,
    };
    let mut command = Cli::command();
    let about: String = backends
        .iter()
        .map(|b| format!("\n  {:<6} {}", b.name(), b.about()))
        .collect();
    // The commands that talk to a backend are the ones configuration layers onto.
    for &sub in config::LAYERED {
        // `serve` exists only in a build with the server.
        if command.find_subcommand(sub).is_none() {
            continue;
        }
        command = command.mut_subcommand(sub, |c| {
            let c = c.mut_arg("backend", |a| {
                a.value_parser(clap::builder::PossibleValuesParser::new(names.clone()))
                    .long_help(format!("The backend that provides nodes:{about}"))
            });
            backends.iter().fold(c, |c, b| b.augment(c))
        });
    }
    for backend in backends {
        if let Some(own) = backend.command() {
            command = command.subcommand(own);
        }
    }
    config::layer(command, backends, file.as_ref())
}

/// The log filter unless `LIVELOAD_LOG` says otherwise: liveload's warnings, and none of the
/// SDKs' own (the AWS credential chain warns, with a Debug dump of nested errors and headers,
/// about every source it tried; liveload's errors say what matters of it, in a sentence).
/// `LIVELOAD_LOG=aws_config=debug` brings them back.
const DEFAULT_LOG: &str =
    "warn,aws_config=off,aws_smithy_runtime=off,aws_runtime=error,aws_smithy_http_client=error";

async fn dispatch(
    matches: &ArgMatches,
    backends: &[Box<dyn Registered>],
    provenance: &config::Provenance,
) -> i32 {
    let (name, sub) = matches.subcommand().expect("clap requires a subcommand");
    let ctx = Ctx {
        backends,
        matches: sub,
        provenance,
    };
    // A backend's own commands (`liveload fly pool ...`).
    if let Some(backend) = backends
        .iter()
        .find(|b| b.command().is_some_and(|c| c.get_name() == name))
    {
        let common = Common::default();
        return match backend.run_command(sub, &common).await {
            Ok(text) => {
                println!("{}", text.trim_end());
                exit_code::OK
            }
            Err(e) => output::error(&e, OutputFormat::Text),
        };
    }
    let cli = match Cli::from_arg_matches(matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    run_command(cli.command, &ctx).await
}

async fn run_command(command: Command, ctx: &Ctx<'_>) -> i32 {
    match command {
        #[cfg(feature = "server")]
        Command::Run(args) if args.server.is_some() => {
            let server = args.server.clone().unwrap_or_default();
            remote::run(&server, &args, ctx.matches).await
        }
        Command::Run(args) if args.server.is_some() => no_server_support(args.run.output),
        Command::Run(args) => sequence::run(&args, ctx).await,
        Command::Plan(args) => {
            let format = args.run.output;
            for path in &args.scenarios {
                match run_cmd::plan(path, ctx, &args.backend, &args.run).await {
                    Ok(plan) => output::plan(&plan, format),
                    Err(e) => return output::error(&e, format),
                }
            }
            exit_code::OK
        }
        Command::Doctor(args) => doctor_cmd::run(args, ctx).await,
        Command::Calibrate(args) => calibrate::run(args, ctx).await,
        Command::Config(args) => config::show(ctx.matches, &args, ctx.backends, ctx.provenance),
        Command::Schema => {
            let schema = liveload_core::scenario::json_schema();
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).expect("serialises")
            );
            exit_code::OK
        }
        Command::Validate(args) => match Scenario::from_file(&args.scenario) {
            Ok(scenario) => {
                output::valid(&args.scenario, &scenario, args.output);
                exit_code::OK
            }
            Err(e) => output::error(&e, args.output),
        },
        Command::Demo(args) => run_cmd::demo(args, ctx).await,
        Command::Try(args) => try_cmd::run(args).await,
        Command::Users(args) => users(args).await,
        Command::Report(args) => {
            let done = match &args.server {
                #[cfg(feature = "server")]
                Some(server) => {
                    let id = args.result.to_string_lossy();
                    remote::report(server, &id, args.out.clone())
                        .await
                        .map(|dir| eprintln!("report: {}/report.html", dir.display()))
                }
                #[cfg(not(feature = "server"))]
                Some(_) => Err(no_server_error()),
                None => output::rerender(&args),
            };
            match done {
                Ok(()) => exit_code::OK,
                Err(e) => output::error(&e, OutputFormat::Text),
            }
        }
        Command::Cleanup(args) => match run_cmd::cleanup(ctx, &args).await {
            Ok(cleaned) => {
                output::cleanup(&cleaned, args.output);
                exit_code::OK
            }
            Err(e) => output::error(&e, args.output),
        },
        #[cfg(feature = "server")]
        Command::Nodes(args) if args.server.is_some() => {
            let server = args.server.as_deref().unwrap_or_default();
            match remote::nodes(server, args.output).await {
                Ok(()) => exit_code::OK,
                Err(e) => output::error(&e, args.output),
            }
        }
        Command::Nodes(args) if args.server.is_some() => no_server_support(args.output),
        Command::Nodes(args) => {
            let listed = match ctx.backend(&args.backend).await {
                Ok(b) => b.list(&filter(args.run)).await,
                Err(e) => Err(e),
            };
            match listed {
                Ok(nodes) => {
                    output::nodes(&nodes, args.output);
                    exit_code::OK
                }
                Err(e) => output::error(&e, args.output),
            }
        }
        Command::Bench(args) => bench::run(args).await,
        #[cfg(feature = "server")]
        Command::Serve(args) => serve_cmd::run(args, ctx).await,
    }
}

/// `--server` in a build without the `server` feature.
fn no_server_error() -> Error {
    Error::InvalidOption {
        option: "--server".into(),
        message: "this build of liveload has no server support (built without its `server` \
                  feature); build it with the default features"
            .into(),
    }
}

/// [`no_server_error`], printed; its exit code.
fn no_server_support(format: OutputFormat) -> i32 {
    output::error(&no_server_error(), format)
}

fn filter(run: Option<String>) -> RunFilter {
    match run {
        Some(run) => RunFilter::Run(run),
        None => RunFilter::All,
    }
}

/// `liveload users add|remove N`: through the running test's control endpoint.
async fn users(args: cli::UsersArgs) -> i32 {
    let state_dir = args.state_dir.clone().unwrap_or_else(default_state_dir);
    let change = match args.change {
        cli::UsersChange::Add { count } => liveload_server::control::UsersChange {
            add: Some(count),
            remove: None,
            force: false,
        },
        cli::UsersChange::Remove { count, force } => liveload_server::control::UsersChange {
            add: None,
            remove: Some(count),
            force,
        },
    };
    let result = match (&args.server, &args.run) {
        #[cfg(feature = "server")]
        (Some(server), Some(run)) => remote::users(server, run, &change).await,
        #[cfg(not(feature = "server"))]
        (Some(_), Some(_)) => Err(no_server_error()),
        _ => match control::find(&state_dir, args.name.as_deref()) {
            Ok(endpoint) => endpoint.client().change_users(&change).await,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(users) => {
            println!("the test now targets {users} users");
            exit_code::OK
        }
        Err(e) => output::error(&e, OutputFormat::Text),
    }
}
