//! The EC2 backend: agent instances in your own AWS account, booted from the liveload agent AMI
//! (`images/ec2`), sized from each instance's real facts, terminated at the end — and, if the
//! controller dies, by themselves: the agent's dead-man switch or TTL powers the instance off,
//! and `InstanceInitiatedShutdownBehavior=terminate` turns that into termination.
//!
//! - `create`: `RunInstances` with a `ClientToken` derived from the run id and node index (a
//!   retried call can never start a second instance; liveload also looks the instance up by its
//!   tags before retrying, so a lost answer is adopted, not repeated), tags `liveload:run-id`,
//!   `liveload:node`, `liveload:expires-at` and `Name`, and user data carrying the agent's
//!   settings ([`user_data`]; never logged).
//! - `wait_ready`: the instance `running`, then the agent answering on its public or private IP
//!   ([`Address`]), TLS pinned to the run's certificate; on time-out the run terminates it.
//! - `destroy`: `TerminateInstances`, idempotent; [`Backend::destroy_all`] batches many.
//! - `list`: `DescribeInstances` by tag, terminated ones excluded.
//! - `expected_size`: `DescribeInstanceTypes`; prices from [`prices`] (or `--ec2-hourly-price`).
//!
//! Tests run against moto's EC2 emulator through the real SDK; its instances run nothing, so a
//! [`hook::AgentHook`] maps each to a locally started agent.

pub mod catalogue;
#[cfg(feature = "cli")]
pub mod cli;
pub mod client;
pub mod doctor;
pub mod hook;
pub mod launch;
pub mod prices;
pub mod user_data;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, InstanceAttributeName, InstanceStateName,
    InstanceType, VolumeType,
};
use liveload_core::{
    AgentEndpoint, Backend, BackendError, BackendErrorKind, Error, NodeHandle, NodeSize, NodeSpec,
    Result, RunFilter,
};
use tokio::time::Instant;

pub use crate::client::ClientOptions;
use crate::hook::AgentHook;
use crate::user_data::UserData;

/// Tag with the run id.
pub const TAG_RUN: &str = "liveload:run-id";
/// Tag with the node index.
pub const TAG_NODE: &str = "liveload:node";
/// Tag with the instance's expiry (Unix seconds).
pub const TAG_EXPIRES: &str = "liveload:expires-at";

/// Which address of an instance the controller dials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Address {
    /// The public IP (the controller is outside the VPC; the security group must let it in).
    #[default]
    Public,
    /// The private IP (the controller runs inside the VPC, or over a VPN).
    Private,
}

/// Where instances come from: an AMI, or a launch template (which may name the AMI itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Image {
    /// An AMI id.
    Ami(String),
    /// A launch template by name or id (`lt-...`), with an optional version (`$Latest`,
    /// `$Default` or a number).
    LaunchTemplate {
        /// Name or `lt-` id.
        template: String,
        /// Version, when not the default.
        version: Option<String>,
    },
}

/// The EC2 backend. Build with [`Ec2Backend::builder`].
pub struct Ec2Backend {
    ec2: aws_sdk_ec2::Client,
    /// The configuration the client came from: its credentials provider (checked before a
    /// plan asks the account anything) and what `doctor` builds its STS client from.
    shared: aws_config::SdkConfig,
    settings: Settings,
    /// Instances this process launched, with their launch index in their call (what a batch's
    /// user data keys tokens by), as RunInstances answered.
    launched: std::sync::Mutex<std::collections::HashMap<String, u32>>,
}

impl std::fmt::Debug for Ec2Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ec2Backend")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Options of an [`Ec2Backend`].
#[derive(Debug, Clone)]
pub struct Ec2BackendBuilder {
    client: ClientOptions,
    settings: Settings,
}

/// What the backend asks EC2 for (everything but the client).
#[derive(Debug, Clone)]
struct Settings {
    image: Option<Image>,
    instance_type: String,
    subnets: Vec<String>,
    security_groups: Vec<String>,
    key_name: Option<String>,
    spot: bool,
    root_volume_gb: Option<i32>,
    tags: Vec<(String, String)>,
    agent_port: u16,
    address: Address,
    hourly_price: Option<f64>,
    hook: Option<Arc<dyn AgentHook>>,
}

impl Ec2BackendBuilder {
    /// Region, endpoint and credentials.
    pub fn client(mut self, options: ClientOptions) -> Self {
        self.client = options;
        self
    }
    /// The AMI or launch template instances boot from (needed to create, not to list).
    pub fn image(mut self, image: Image) -> Self {
        self.settings.image = Some(image);
        self
    }
    /// Instance type (default `c7i.large`).
    pub fn instance_type(mut self, instance_type: impl Into<String>) -> Self {
        self.settings.instance_type = instance_type.into();
        self
    }
    /// Subnets to spread nodes over, round-robin (default: the default VPC's).
    pub fn subnets(mut self, subnets: Vec<String>) -> Self {
        self.settings.subnets = subnets;
        self
    }
    /// Security groups (ids) for the instances.
    pub fn security_groups(mut self, groups: Vec<String>) -> Self {
        self.settings.security_groups = groups;
        self
    }
    /// An EC2 key pair, for SSH debugging of agent instances (never needed by liveload).
    pub fn key_name(mut self, key: Option<String>) -> Self {
        self.settings.key_name = key;
        self
    }
    /// Spot instances (one-time, terminated on interruption) instead of on-demand.
    pub fn spot(mut self, spot: bool) -> Self {
        self.settings.spot = spot;
        self
    }
    /// Root volume size in GiB (default: the AMI's).
    pub fn root_volume_gb(mut self, gb: Option<i32>) -> Self {
        self.settings.root_volume_gb = gb;
        self
    }
    /// Extra tags on every instance.
    pub fn tags(mut self, tags: Vec<(String, String)>) -> Self {
        self.settings.tags = tags;
        self
    }
    /// The port agents listen on (default 7070).
    pub fn agent_port(mut self, port: u16) -> Self {
        self.settings.agent_port = port;
        self
    }
    /// Which instance address to dial (default public).
    pub fn address(mut self, address: Address) -> Self {
        self.settings.address = address;
        self
    }
    /// Price per instance-hour in USD, overriding the built-in table ([`prices`]).
    pub fn hourly_price(mut self, price: Option<f64>) -> Self {
        self.settings.hourly_price = price;
        self
    }
    /// Map instances to agents another way than their IPs (tests, emulators).
    pub fn hook(mut self, hook: Arc<dyn AgentHook>) -> Self {
        self.settings.hook = Some(hook);
        self
    }

    /// Build the backend (resolves region and credentials; makes no API call).
    pub async fn build(self) -> Result<Ec2Backend> {
        if let Some(Image::Ami(ami)) = &self.settings.image
            && !ami.starts_with("ami-")
        {
            return Err(Error::InvalidOption {
                option: "--ec2-ami".into(),
                message: format!("'{ami}' is not an AMI id (ami-...)"),
            });
        }
        if self.settings.root_volume_gb.is_some_and(|gb| gb < 1) {
            return Err(Error::InvalidOption {
                option: "--ec2-root-volume-gb".into(),
                message: "must be at least 1".into(),
            });
        }
        let api = client::build(&self.client).await?;
        Ok(Ec2Backend {
            launched: std::sync::Mutex::default(),
            ec2: api.ec2,
            shared: api.shared,
            settings: self.settings,
        })
    }
}

/// A run's instance, as listed.
#[derive(Debug, Clone)]
struct Listed {
    id: String,
    run: String,
    node: u32,
    state: String,
    expires: Option<u64>,
    /// The first node index of its batch, when launched in one.
    base: Option<u32>,
    /// Its launch index within its RunInstances call.
    launch: u32,
}

fn tag<'a>(instance: &'a aws_sdk_ec2::types::Instance, key: &str) -> Option<&'a str> {
    instance
        .tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

/// The `ClientToken` of node `index` of `run`: the same on every retry, unique per node.
pub fn client_token(run_id: &str, index: u32) -> String {
    // At most 64 ASCII characters.
    let token = format!("liveload-{run_id}-{index}");
    token.chars().take(64).collect()
}

impl Ec2Backend {
    /// Start building an EC2 backend.
    pub fn builder() -> Ec2BackendBuilder {
        Ec2BackendBuilder {
            client: ClientOptions::default(),
            settings: Settings {
                image: None,
                instance_type: "c7i.large".into(),
                subnets: Vec::new(),
                security_groups: Vec::new(),
                key_name: None,
                spot: false,
                root_volume_gb: None,
                tags: Vec::new(),
                agent_port: 7070,
                address: Address::Public,
                hourly_price: None,
                hook: None,
            },
        }
    }

    /// The SDK client (tests use it to look at the emulator).
    pub fn ec2(&self) -> &aws_sdk_ec2::Client {
        &self.ec2
    }

    /// The user data of one node: the agent's launch (core's launch contract), listening on
    /// every address at the agent port.
    pub fn user_data(&self, spec: &NodeSpec) -> UserData {
        let settings = spec.agent_settings(format!("0.0.0.0:{}", self.settings.agent_port));
        UserData {
            launch: settings.launch(&spec.agent_secrets(), user_data::LAUNCH_DIR),
        }
    }

    /// Instances of the runs `runs` selects that are not terminated (nor on their way).
    async fn instances(&self, runs: &RunFilter) -> Result<Vec<Listed>> {
        let mut filters = vec![
            Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .values("stopping")
                .values("stopped")
                .build(),
        ];
        filters.push(match runs {
            RunFilter::Run(run) => Filter::builder()
                .name(format!("tag:{TAG_RUN}"))
                .values(run)
                .build(),
            RunFilter::All => Filter::builder().name("tag-key").values(TAG_RUN).build(),
        });
        let mut listed = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let page = client::retry(|| async {
                self.ec2
                    .describe_instances()
                    .set_filters(Some(filters.clone()))
                    .set_next_token(next.clone())
                    .send()
                    .await
                    .map_err(|e| client::error("listing instances", e))
            })
            .await?;
            for instance in page.reservations().iter().flat_map(|r| r.instances()) {
                let (Some(id), Some(run)) = (instance.instance_id(), tag(instance, TAG_RUN)) else {
                    continue;
                };
                if !runs.matches(run) {
                    continue;
                }
                listed.push(Listed {
                    id: id.to_string(),
                    run: run.to_string(),
                    node: launch::node_index(
                        tag(instance, TAG_NODE).and_then(|n| n.parse().ok()),
                        tag(instance, launch::TAG_NODE_BASE).and_then(|n| n.parse().ok()),
                        tag(instance, launch::TAG_NODE_STEP).and_then(|n| n.parse().ok()),
                        instance.ami_launch_index().unwrap_or(0).max(0) as u32,
                    ),
                    base: tag(instance, launch::TAG_NODE_BASE).and_then(|n| n.parse().ok()),
                    launch: instance.ami_launch_index().unwrap_or(0).max(0) as u32,
                    state: instance
                        .state()
                        .and_then(|s| s.name())
                        .map(|n| n.as_str().to_string())
                        .unwrap_or_default(),
                    expires: tag(instance, TAG_EXPIRES).and_then(|e| e.parse().ok()),
                });
            }
            match page.next_token() {
                Some(token) if !token.is_empty() => next = Some(token.to_string()),
                _ => break,
            }
        }
        Ok(listed)
    }

    /// The block device mapping that sets the root volume's size, from the AMI's root device.
    async fn root_volume(&self, ami: &str, gb: i32) -> Result<BlockDeviceMapping> {
        let images = self
            .ec2
            .describe_images()
            .image_ids(ami)
            .send()
            .await
            .map_err(|e| client::error("looking up the AMI", e))?;
        let device = images
            .images()
            .first()
            .and_then(|i| i.root_device_name())
            .unwrap_or("/dev/xvda")
            .to_string();
        Ok(BlockDeviceMapping::builder()
            .device_name(device)
            .ebs(
                EbsBlockDevice::builder()
                    .volume_size(gb)
                    .volume_type(VolumeType::Gp3)
                    .delete_on_termination(true)
                    .build(),
            )
            .build())
    }

    fn handle(&self, spec: &NodeSpec, id: String) -> NodeHandle {
        NodeHandle {
            id,
            run_id: spec.run_id.clone(),
            index: spec.index,
            detail: self.settings.instance_type.clone(),
            expires_at_unix_s: None,
        }
    }

    async fn describe(&self, id: &str) -> Result<Option<aws_sdk_ec2::types::Instance>> {
        let out = self.ec2.describe_instances().instance_ids(id).send().await;
        match out {
            Ok(out) => Ok(out
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .next()
                .cloned()),
            Err(e) if e.code() == Some("InvalidInstanceID.NotFound") => Ok(None),
            Err(e) => Err(client::error("describing an instance", e)),
        }
    }

    /// Terminate instances, a thousand per call; unknown ids are already gone.
    async fn terminate(&self, ids: &[String]) -> Result<()> {
        for chunk in ids.chunks(1000) {
            let result = client::retry(|| async {
                self.ec2
                    .terminate_instances()
                    .set_instance_ids(Some(chunk.to_vec()))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        if e.code() == Some("InvalidInstanceID.NotFound") {
                            None
                        } else {
                            Some(client::error("terminating instances", e))
                        }
                    })
                    .or_else(|e| match e {
                        None => Ok(()),
                        Some(e) => Err(e),
                    })
            })
            .await;
            if result.is_err() && chunk.len() > 1 {
                // One bad id fails the whole call: terminate one by one, so the rest go.
                for id in chunk {
                    Box::pin(self.terminate(std::slice::from_ref(id))).await?;
                }
            } else {
                result?;
            }
            if let Some(hook) = &self.settings.hook {
                for id in chunk {
                    hook.terminated(id).await;
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Backend for Ec2Backend {
    fn name(&self) -> &'static str {
        "ec2"
    }

    async fn create(&self, spec: &NodeSpec) -> Result<NodeHandle> {
        let mut ids = self.run_batch(std::slice::from_ref(spec)).await?;
        Ok(self.handle(spec, ids.remove(0)))
    }

    /// One RunInstances call per batch (EC2 throttles calls, not instances, at this size).
    fn batch_limit(&self) -> u32 {
        launch::BATCH_LIMIT
    }

    /// Nodes of a batch go to their subnets (round-robin by index): one call per subnet, for
    /// nodes `i, i+n, i+2n, ...` of `n` subnets.
    async fn create_batch(&self, specs: &[NodeSpec]) -> Vec<Result<NodeHandle>> {
        let lanes = self.settings.subnets.len().max(1);
        let mut results: Vec<Option<Result<NodeHandle>>> = (0..specs.len()).map(|_| None).collect();
        let groups: Vec<Vec<usize>> = (0..lanes)
            .map(|lane| (lane..specs.len()).step_by(lanes).collect())
            .filter(|g: &Vec<usize>| !g.is_empty())
            .collect();
        let launched = futures_util::future::join_all(groups.iter().map(|group| {
            let batch: Vec<NodeSpec> = group.iter().map(|&i| specs[i].clone()).collect();
            async move { self.run_batch(&batch).await }
        }))
        .await;
        for (group, outcome) in groups.iter().zip(launched) {
            match outcome {
                Ok(ids) => {
                    for (&i, id) in group.iter().zip(ids) {
                        results[i] = Some(Ok(self.handle(&specs[i], id)));
                    }
                }
                Err(e) => {
                    // Every node of the group failed with the call; errors are not Clone, so
                    // each gets an equal copy of the backend error.
                    for &i in group {
                        results[i] = Some(Err(copy_error(&e)));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every spec has a result"))
            .collect()
    }

    async fn wait_ready(&self, node: &NodeHandle, deadline: Instant) -> Result<AgentEndpoint> {
        let timeout = || {
            Error::from(BackendError::new(
                "ec2",
                BackendErrorKind::NotReady,
                format!("instance {} is not running yet", node.id),
            ))
        };
        let instance = loop {
            let instance = self.describe(&node.id).await?.ok_or_else(|| {
                Error::from(BackendError::new(
                    "ec2",
                    BackendErrorKind::NodeFailed,
                    format!("instance {} vanished before it was running", node.id),
                ))
            })?;
            match instance.state().and_then(|s| s.name()) {
                Some(InstanceStateName::Running) => break instance,
                Some(
                    InstanceStateName::ShuttingDown
                    | InstanceStateName::Terminated
                    | InstanceStateName::Stopping
                    | InstanceStateName::Stopped,
                ) => {
                    let reason = instance
                        .state_reason()
                        .and_then(|r| r.message())
                        .unwrap_or("no reason given");
                    return Err(Error::from(BackendError::new("ec2", BackendErrorKind::NodeFailed, format!("instance {} stopped before it was ready: {reason}", node.id)).hint("the agent may have exited at once: see the instance's console output (`aws ec2 get-console-output`)")));
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(timeout());
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        let address = match &self.settings.hook {
            Some(hook) => {
                let data = self
                    .ec2
                    .describe_instance_attribute()
                    .instance_id(&node.id)
                    .attribute(InstanceAttributeName::UserData)
                    .send()
                    .await
                    .map_err(|e| client::error("reading the instance's user data", e))?;
                let encoded = data.user_data().and_then(|u| u.value()).unwrap_or_default();
                let decoded = aws_smithy_types::base64::decode(encoded)
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .unwrap_or_default();
                // The launch index RunInstances answered with (emulators leave it out of
                // DescribeInstances); EC2's own otherwise.
                let recorded = self
                    .launched
                    .lock()
                    .expect("not poisoned")
                    .get(&node.id)
                    .copied();
                let launch = recorded
                    .unwrap_or_else(|| instance.ami_launch_index().unwrap_or(0).max(0) as u32);
                hook.agent_address(&node.id, launch, &decoded, deadline)
                    .await?
            }
            None => {
                let ip = match self.settings.address {
                    Address::Public => instance.public_ip_address(),
                    Address::Private => instance.private_ip_address(),
                }
                .ok_or_else(|| Error::from(BackendError::new("ec2", BackendErrorKind::NodeFailed, format!("instance {} has no {:?} IP address", node.id, self.settings.address)).hint("use a subnet that assigns public IPs, or --ec2-address private from inside the VPC")))?;
                format!("{ip}:{}", self.settings.agent_port)
            }
        };
        // The instance runs before its agent listens: wait for the port.
        liveload_core::ready::wait_for_port("ec2", &address, deadline).await?;
        Ok(AgentEndpoint {
            address,
            tls: None,
            headers: Vec::new(),
            proxy: None,
        })
    }

    async fn destroy(&self, node: &NodeHandle) -> Result<()> {
        self.terminate(std::slice::from_ref(&node.id)).await
    }

    async fn destroy_all(&self, nodes: &[NodeHandle]) -> Result<()> {
        let ids: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
        self.terminate(&ids).await
    }

    async fn list(&self, runs: &RunFilter) -> Result<Vec<NodeHandle>> {
        Ok(self
            .instances(runs)
            .await?
            .into_iter()
            .map(|i| NodeHandle {
                detail: format!("{} {}", self.settings.instance_type, i.state),
                expires_at_unix_s: i.expires,
                id: i.id,
                run_id: i.run,
                index: i.node,
            })
            .collect())
    }

    async fn doctor(
        &self,
        needs: &liveload_core::doctor::Needs,
    ) -> Vec<liveload_core::doctor::Check> {
        self.checks(needs).await
    }

    async fn expected_size(&self) -> Result<Option<NodeSize>> {
        // Without credentials the account cannot be asked; a plan still shows what a run
        // would take from the catalogue of common types, and says so.
        // Credentials that exist and fail (an expired SSO session) are an error, not a reason
        // to plan from the catalogue.
        if client::credentials_missing(&self.shared).await? {
            let Some((cores, memory_mib)) = catalogue::size_of(&self.settings.instance_type) else {
                return Err(client::no_credentials(
                    "and the instance type is not in the built-in catalogue",
                ));
            };
            tracing::debug!("no AWS credentials: planning from the catalogue");
            return Ok(Some(NodeSize {
                memory_bytes: memory_mib * 1024 * 1024,
                cores: f64::from(cores),
                catalogue: Some(catalogue::SOURCE),
            }));
        }
        let out = client::retry(|| async {
            self.ec2
                .describe_instance_types()
                .instance_types(InstanceType::from(self.settings.instance_type.as_str()))
                .send()
                .await
                .map_err(|e| client::error("looking up the instance type", e))
        })
        .await?;
        let info = out.instance_types().first().ok_or_else(|| {
            Error::from(
                BackendError::new(
                    "ec2",
                    BackendErrorKind::BadInstanceType,
                    format!("unknown instance type {}", self.settings.instance_type),
                )
                .hint("use an instance type this region offers, e.g. c7i.large"),
            )
        })?;
        let cores = info
            .v_cpu_info()
            .and_then(|v| v.default_v_cpus())
            .unwrap_or(1);
        let memory_mib = info
            .memory_info()
            .and_then(|m| m.size_in_mib())
            .unwrap_or(0);
        Ok(Some(NodeSize {
            memory_bytes: memory_mib as u64 * 1024 * 1024,
            cores: cores as f64,
            catalogue: None,
        }))
    }

    /// EC2's documented throttling of RunInstances ("Request throttling for the Amazon EC2
    /// API"): a request bucket of 5 calls refilled 2 a second, and a resource bucket of 1,000
    /// instances refilled 2 a second. Up to [`launch::BATCH_LIMIT`] instances go in one call,
    /// so past 1,000 nodes the resource bucket decides.
    fn create_rate(&self) -> Option<liveload_core::CreateRate> {
        Some(liveload_core::CreateRate {
            per_second: 2.0,
            burst: 5,
            per_call: launch::BATCH_LIMIT,
            machines: Some(liveload_core::MachineBucket {
                per_second: 2.0,
                burst: 1000,
            }),
            advice: None,
        })
    }

    fn hourly_price(&self) -> Option<f64> {
        self.settings.hourly_price.or_else(|| {
            let region = self.ec2.config().region()?.as_ref().to_string();
            (!self.settings.spot)
                .then(|| prices::on_demand(&region, &self.settings.instance_type))
                .flatten()
        })
    }
}

/// An equal copy of an error for another node of the same failed call.
fn copy_error(e: &Error) -> Error {
    match e.as_backend() {
        Some(b) => BackendError::new("ec2", b.kind, b.message.clone())
            .maybe_hint(b.hint.clone())
            .retryable(b.retryable)
            .into(),
        None => Error::RunFailed {
            message: e.to_string(),
        },
    }
}

// `ProvideErrorMetadata` gives SdkError its `code()`.
use aws_sdk_ec2::error::ProvideErrorMetadata as _;
