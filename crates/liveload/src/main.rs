//! `liveload`: the command-line interface.
//!
//! Every command ends in one of the documented exit codes
//! ([`liveload_core::error::exit_code`]); errors are printed with what went wrong, where, and
//! how to fix it — or as JSON with `--output json`.

mod bench;
mod cli;
mod control;
mod output;
mod progress;
mod try_cmd;

use std::path::Path;
use std::sync::Arc;

use clap::Parser;
use liveload_core::error::exit_code;
use liveload_core::lock::{ScenarioLock, default_state_dir};
use liveload_core::run::{self, Plan};
use liveload_core::scenario::Scenario;
use liveload_core::{Backend, Error, RunFilter};
use liveload_local::LocalBackend;

use crate::cli::{BackendArgs, BackendKind, Cli, Command, OutputFormat, RunFlags};

/// The demo scenario, bundled so `liveload demo` works from any directory.
const DEMO_SCENARIO: &str = include_str!("../../../examples/demo.yaml");

fn main() {
    // One TLS stack for the whole program (reqwest, the agent link): rustls with ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LIVELOAD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let code = runtime.block_on(dispatch(cli));
    // Let spawned tasks (agent links, reapers) wind down briefly, then exit with the code.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    std::process::exit(code);
}

async fn dispatch(cli: Cli) -> i32 {
    match cli.command {
        Command::Run(args) => {
            let scenario = match load_scenario(&args.scenario, &args.run) {
                Ok(s) => s,
                Err(e) => return output::error(&e, args.run.output),
            };
            run_scenario(scenario, &args.backend, &args.run).await
        }
        Command::Plan(args) => {
            let format = args.run.output;
            match plan(&args.scenario, &args.backend, &args.run).await {
                Ok(plan) => {
                    output::plan(&plan, format);
                    exit_code::OK
                }
                Err(e) => output::error(&e, format),
            }
        }
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
        Command::Demo(args) => demo(args).await,
        Command::Try(args) => try_cmd::run(args).await,
        Command::Users(args) => {
            let state_dir = args.state_dir.clone().unwrap_or_else(default_state_dir);
            let change = match args.change {
                cli::UsersChange::Add { count } => control::UsersChange {
                    add: Some(count),
                    remove: None,
                    force: false,
                },
                cli::UsersChange::Remove { count, force } => control::UsersChange {
                    add: None,
                    remove: Some(count),
                    force,
                },
            };
            let result = match control::find(&state_dir, args.name.as_deref()) {
                Ok(address) => control::change_users(address, &change).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(users) => {
                    println!("the test now targets {users} users");
                    exit_code::OK
                }
                Err(e) => output::error(&e, OutputFormat::Text),
            }
        }
        Command::Fly(args) => match args.command {
            cli::FlyCommand::Pool { action } => fly_pool(action).await,
        },
        Command::Report(args) => match output::rerender(&args) {
            Ok(()) => exit_code::OK,
            Err(e) => output::error(&e, OutputFormat::Text),
        },
        Command::Cleanup(args) => {
            let filter = match args.run {
                Some(run) => RunFilter::Run(run),
                None => RunFilter::All,
            };
            match cleanup(&args.backend, &filter).await {
                Ok(destroyed) => {
                    output::cleanup(&destroyed, args.output);
                    exit_code::OK
                }
                Err(e) => output::error(&e, args.output),
            }
        }
        Command::Nodes(args) => {
            let filter = match args.run {
                Some(run) => RunFilter::Run(run),
                None => RunFilter::All,
            };
            let listed = match backend(&args.backend).await {
                Ok(b) => b.list(&filter).await,
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
    }
}

/// `liveload fly pool ...`.
async fn fly_pool(action: cli::PoolAction) -> i32 {
    let (args, what) = match &action {
        cli::PoolAction::Create { backend, .. } => (backend, "create"),
        cli::PoolAction::List { backend } => (backend, "list"),
        cli::PoolAction::Destroy { backend } => (backend, "destroy"),
    };
    let Some(pool) = args.fly_pool.clone() else {
        let e = Error::InvalidOption {
            option: "--fly-pool".into(),
            message: "name the pool with --fly-pool NAME".into(),
        };
        return output::error(&e, OutputFormat::Text);
    };
    let mut args = args.clone();
    args.backend = BackendKind::Fly;
    let fly = match fly_backend(&args) {
        Ok(fly) => fly,
        Err(e) => return output::error(&e, OutputFormat::Text),
    };
    let result = match (&action, what) {
        (cli::PoolAction::Create { nodes, .. }, _) => fly
            .create_pool(&pool, *nodes)
            .await
            .map(|made| format!("pool '{pool}': {} machine(s) created, stopped", made.len())),
        (_, "list") => fly.pool_machines(&pool).await.map(|machines| {
            let mut text = format!("pool '{pool}': {} machine(s)\n", machines.len());
            for m in machines {
                text.push_str(&format!(
                    "{}\t{}\t{}\t{}\n",
                    m.id, m.name, m.region, m.state
                ));
            }
            text
        }),
        _ => fly
            .destroy_pool(&pool)
            .await
            .map(|n| format!("pool '{pool}': {n} machine(s) destroyed")),
    };
    match result {
        Ok(text) => {
            println!("{}", text.trim_end());
            exit_code::OK
        }
        Err(e) => output::error(&e, OutputFormat::Text),
    }
}

/// Build the chosen backend.
pub async fn backend(args: &BackendArgs) -> Result<Arc<dyn Backend>, Error> {
    match args.backend {
        BackendKind::Local => {
            let mut builder = LocalBackend::builder()
                .nodes_per_host(args.local_nodes)
                .chromium(args.chromium.clone())
                .die_with_controller(!args.local_keep_orphans)
                .debug_delay_listen(std::time::Duration::from_millis(
                    args.local_debug_delay_listen_ms,
                ));
            if let Some(dir) = &args.state_dir {
                builder = builder.state_dir(dir);
            }
            Ok(Arc::new(builder.build()?))
        }
        BackendKind::Fly => Ok(Arc::new(fly_backend(args)?)),
        BackendKind::Ssh => Ok(Arc::new(ssh_backend(args)?)),
        BackendKind::Ec2 => Ok(Arc::new(ec2_backend(args).await?)),
    }
}

/// The EC2 backend from its flags.
async fn ec2_backend(args: &BackendArgs) -> Result<liveload_ec2::Ec2Backend, Error> {
    let image = match (&args.ec2_ami, &args.ec2_launch_template) {
        (Some(_), Some(_)) => {
            return Err(Error::InvalidOption {
                option: "--ec2-ami".into(),
                message: "give --ec2-ami or --ec2-launch-template, not both".into(),
            });
        }
        (Some(ami), None) => Some(liveload_ec2::Image::Ami(ami.clone())),
        (None, Some(template)) => {
            let (template, version) = match template.split_once(':') {
                Some((t, v)) => (t.to_string(), Some(v.to_string())),
                None => (template.clone(), None),
            };
            Some(liveload_ec2::Image::LaunchTemplate { template, version })
        }
        (None, None) => None,
    };
    let mut tags = Vec::new();
    for pair in &args.ec2_tags {
        let (key, value) = pair.split_once('=').ok_or_else(|| Error::InvalidOption {
            option: "--ec2-tags".into(),
            message: format!("'{pair}' is not KEY=VALUE"),
        })?;
        tags.push((key.to_string(), value.to_string()));
    }
    let mut builder = liveload_ec2::Ec2Backend::builder()
        .client(liveload_ec2::ClientOptions {
            region: args.ec2_region.clone(),
            endpoint_url: args.ec2_endpoint_url.clone(),
            static_credentials: None,
        })
        .instance_type(&args.ec2_instance_type)
        .subnets(args.ec2_subnets.clone())
        .security_groups(args.ec2_security_groups.clone())
        .key_name(args.ec2_key_name.clone())
        .spot(args.ec2_spot)
        .root_volume_gb(args.ec2_root_volume_gb)
        .tags(tags)
        .agent_port(args.ec2_agent_port)
        .address(match args.ec2_address {
            cli::Ec2Address::Public => liveload_ec2::Address::Public,
            cli::Ec2Address::Private => liveload_ec2::Address::Private,
        })
        .hourly_price(args.ec2_hourly_price);
    if let Some(image) = image {
        builder = builder.image(image);
    }
    if args.ec2_test_local_agents {
        // Test hook: an emulator's instances run nothing; start a local agent for each.
        let agent = liveload_local::find_agent_bin().ok_or_else(|| Error::InvalidOption {
            option: "--ec2-test-local-agents".into(),
            message: "liveload-agent not found next to liveload".into(),
        })?;
        let dir = std::env::temp_dir().join(format!("liveload-ec2-agents-{}", std::process::id()));
        builder = builder.hook(Arc::new(liveload_ec2::hook::LocalAgents::new(agent, dir)));
    }
    builder.build().await
}

/// The SSH backend from its flags.
fn ssh_backend(args: &BackendArgs) -> Result<liveload_ssh::SshBackend, Error> {
    let path = args.hosts.as_ref().ok_or_else(|| Error::InvalidOption {
        option: "--hosts".into(),
        message: "--backend ssh needs a hosts file: --hosts hosts.toml (see README, \"Your own hosts (SSH)\")".into(),
    })?;
    let mut builder = liveload_ssh::SshBackend::builder()
        .hosts(liveload_ssh::hosts::load(path)?)
        .accept_new_host_keys(args.ssh_accept_new)
        .remote_dir(&args.ssh_remote_dir);
    if let Some(known_hosts) = &args.ssh_known_hosts {
        builder = builder.known_hosts(known_hosts);
    }
    if let Some(own) = liveload_local::find_agent_bin() {
        builder = builder.agent_binary(std::env::consts::ARCH, own);
    }
    for pair in &args.ssh_agent_bin {
        let (arch, path) = pair.split_once('=').ok_or_else(|| Error::InvalidOption {
            option: "--ssh-agent-bin".into(),
            message: format!("'{pair}' is not ARCH=PATH (e.g. aarch64=./liveload-agent-arm64)"),
        })?;
        builder = builder.agent_binary(arch, path);
    }
    builder.build()
}

/// The Fly backend from its flags.
fn fly_backend(args: &BackendArgs) -> Result<liveload_fly::FlyBackend, Error> {
    let token = match &args.fly_token_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
            .trim()
            .to_string(),
        None => std::env::var("FLY_API_TOKEN").unwrap_or_default(),
    };
    let guest = liveload_fly::guest::preset_named(&args.fly_size)
        .ok_or_else(|| Error::InvalidOption {
            option: "--fly-size".into(),
            message: format!(
                "unknown size '{}'; use one of {}",
                args.fly_size,
                liveload_fly::guest::PRESETS
                    .iter()
                    .map(|p| p.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?
        .guest;
    let mut builder = liveload_fly::FlyBackend::builder()
        .base_url(&args.fly_api_url)
        .regions(args.fly_regions.clone())
        .guest(guest)
        .agent_port(args.fly_agent_port);
    if !token.is_empty() {
        builder = builder.token(liveload_core::Secret::new(token));
    }
    if let Some(app) = &args.fly_app {
        builder = builder.app(app);
    }
    if let Some(image) = &args.fly_image {
        builder = builder.image(image);
    }
    if let Some(pool) = &args.fly_pool {
        builder = builder.pool(pool);
    }
    builder = builder.reach(fly_reach(args)?);
    builder.build()
}

/// `--fly-mode` and the edge options as a [`liveload_fly::Reach`].
fn fly_reach(args: &BackendArgs) -> Result<liveload_fly::Reach, Error> {
    if args.fly_mode == cli::FlyMode::Private {
        return Ok(liveload_fly::Reach::Private);
    }
    let extra_roots_pem = match &args.fly_edge_ca_file {
        None => Vec::new(),
        Some(path) => vec![
            std::fs::read_to_string(path).map_err(|e| Error::InvalidOption {
                option: "--fly-edge-ca-file".into(),
                message: format!("cannot read {}: {e}", path.display()),
            })?,
        ],
    };
    // A custom edge address names its certificate by its host unless told otherwise.
    let server_name = args.fly_edge_name.clone().or_else(|| {
        args.fly_edge.as_ref().map(|edge| {
            edge.rsplit_once(':')
                .map_or(edge.as_str(), |(host, _)| host)
                .to_string()
        })
    });
    Ok(liveload_fly::Reach::Public(liveload_fly::PublicEdge {
        address: args.fly_edge.clone(),
        server_name,
        extra_roots_pem,
    }))
}

fn load_scenario(path: &Path, flags: &RunFlags) -> Result<Scenario, Error> {
    let mut scenario = Scenario::from_file(path)?;
    if let Some(base_url) = &flags.base_url {
        scenario.base_url = base_url.trim_end_matches('/').to_string();
    }
    Ok(scenario)
}

async fn run_scenario(scenario: Scenario, backend_args: &BackendArgs, flags: &RunFlags) -> i32 {
    let format = flags.output;
    let mut options = match flags.options(&scenario) {
        Ok(o) => o,
        Err(e) => return output::error(&e, format),
    };
    let state_dir = backend_args
        .state_dir
        .clone()
        .unwrap_or_else(default_state_dir);
    // One run of a scenario at a time on this machine; the lock dies with this process.
    let _lock = match ScenarioLock::acquire(&state_dir, &scenario.name) {
        Ok(lock) => lock,
        Err(e) => return output::error(&e, format),
    };
    let backend = match backend(backend_args).await {
        Ok(b) => b,
        Err(e) => return output::error(&e, format),
    };
    // Cloud machines cost money: show the plan and its cost, and ask (or take --yes). Local
    // processes and your own SSH hosts cost nothing extra.
    if backend.billing() == liveload_core::Billing::Billed {
        match confirm(backend.as_ref(), &options, flags.yes, format).await {
            Ok(confirmation) => options.cost_confirmation = Some(confirmation),
            Err(e) => return output::error(&e, format),
        }
    }
    let observer = Arc::new(progress::Progress::new(format == OutputFormat::Text));
    let (control_handle, control_end) = run::control_channel();
    let _control = match control::serve(control_handle, &state_dir, &options.cluster_name).await {
        Ok(server) => {
            if format == OutputFormat::Text {
                eprintln!(
                    "control: http://{} (GET /status, GET /metrics, POST /users; or `liveload users add N`)",
                    server.address
                );
            }
            server
        }
        Err(e) => return output::error(&e, format),
    };
    let result = run::run_controlled(
        backend,
        &scenario,
        &options,
        observer.clone(),
        interrupted(),
        Some(control_end),
    )
    .await;
    observer.finish();
    match result {
        Ok(report) => {
            if !flags.no_report {
                let dir = flags
                    .report_dir
                    .clone()
                    .unwrap_or_else(|| Path::new("liveload-reports").join(&report.run_id));
                match output::write_report_files(&report, &dir) {
                    Ok(()) if format == OutputFormat::Text => {
                        eprintln!(
                            "report: {}/report.html (and result.json, report.md)",
                            dir.display()
                        )
                    }
                    Ok(()) => {}
                    Err(e) => return output::error(&e, format),
                }
            }
            output::report(&report, format);
            if !report.thresholds_passed() {
                exit_code::THRESHOLD_FAILED
            } else if report.succeeded() {
                exit_code::OK
            } else {
                exit_code::RUN_FAILED
            }
        }
        Err(e) => output::error(&e, format),
    }
}

/// Show the plan with its estimated cost; go on only with `--yes` or a "y" typed at a terminal.
/// Core computes the estimate and refuses a billed run without the confirmation this returns.
async fn confirm(
    backend: &dyn Backend,
    options: &run::RunOptions,
    yes: bool,
    format: OutputFormat,
) -> Result<run::CostConfirmation, Error> {
    use std::io::{BufRead as _, IsTerminal as _, Write as _};
    if let Some(estimate) = run::estimate(backend, options).await?
        && format == OutputFormat::Text
    {
        eprintln!("{estimate}");
    }
    if yes {
        return Ok(run::CostConfirmation::new("--yes"));
    }
    if !std::io::stdin().is_terminal() {
        return Err(Error::InvalidOption {
            option: "--yes".into(),
            message: format!(
                "this creates {} machines that cost money; nobody is at a terminal to confirm",
                backend.name()
            ),
        });
    }
    eprint!("create these machines? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(run::CostConfirmation::new("prompt"))
    } else {
        Err(Error::Interrupted)
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn interrupted() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn plan(path: &Path, backend_args: &BackendArgs, flags: &RunFlags) -> Result<Plan, Error> {
    let scenario = load_scenario(path, flags)?;
    let options = flags.options(&scenario)?;
    let backend = backend(backend_args).await?;
    run::plan(backend.as_ref(), &options).await
}

async fn cleanup(
    backend_args: &BackendArgs,
    filter: &RunFilter,
) -> Result<Vec<liveload_core::NodeHandle>, Error> {
    let backend = backend(backend_args).await?;
    let destroyed = backend.list(filter).await?;
    backend.destroy_all(&destroyed).await?;
    // Whatever remains after destroying is a leak worth an error.
    let left = backend.list(filter).await?;
    if !left.is_empty() {
        return Err(Error::from(
            liveload_core::BackendError::new(
                backend.name(),
                liveload_core::BackendErrorKind::Other,
                format!("{} nodes are still listed after cleanup", left.len()),
            )
            .hint("run liveload cleanup again, or check the provider's console"),
        ));
    }
    Ok(destroyed)
}

async fn demo(args: cli::DemoArgs) -> i32 {
    let format = args.run.output;
    let address = match demo_target::spawn(([127, 0, 0, 1], 0).into()).await {
        Ok(a) => a,
        Err(e) => {
            return output::error(&Error::io("starting the demo target", e), format);
        }
    };
    if format == OutputFormat::Text {
        eprintln!("demo target listening on http://{address}");
    }
    let parsed = match &args.scenario {
        Some(path) => Scenario::from_file(path),
        None => Scenario::from_yaml(Path::new("examples/demo.yaml"), DEMO_SCENARIO),
    };
    let mut scenario = match parsed {
        Ok(s) => s,
        Err(e) => return output::error(&e, format),
    };
    scenario.base_url = format!("http://{address}");
    if let Some(base_url) = &args.run.base_url {
        scenario.base_url = base_url.clone();
    }
    run_scenario(scenario, &args.backend, &args.run).await
}
