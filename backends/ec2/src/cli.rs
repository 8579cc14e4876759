//! The EC2 backend on the command line: `--backend ec2` and its options.

use std::sync::Arc;

use async_trait::async_trait;
use liveload_core::registry::{BackendCli, Common};
use liveload_core::{Backend, Error, Result};

use crate::{Address, ClientOptions, Ec2Backend, Image};

/// Which address of an EC2 instance the controller dials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Ec2Address {
    /// The public IP (controller outside the VPC).
    Public,
    /// The private IP (controller inside the VPC or on a VPN).
    Private,
}

/// Options of the EC2 backend.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "EC2 backend (--backend ec2)")]
pub struct Ec2Args {
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
    #[arg(long)]
    pub ec2_ami: Option<String>,
    /// EC2: a launch template instead of --ec2-ami, as NAME or lt-ID, optionally :VERSION.
    #[arg(long, conflicts_with = "ec2_ami")]
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
}

impl Ec2Args {
    /// `--ec2-ami` or `--ec2-launch-template NAME[:VERSION]`.
    fn image(&self) -> Option<Image> {
        if let Some(ami) = &self.ec2_ami {
            return Some(Image::Ami(ami.clone()));
        }
        let template = self.ec2_launch_template.as_ref()?;
        let (template, version) = match template.split_once(':') {
            Some((t, v)) => (t.to_string(), Some(v.to_string())),
            None => (template.clone(), None),
        };
        Some(Image::LaunchTemplate { template, version })
    }

    fn tags(&self) -> Result<Vec<(String, String)>> {
        self.ec2_tags
            .iter()
            .map(|pair| {
                let (key, value) = pair.split_once('=').ok_or_else(|| Error::InvalidOption {
                    option: "--ec2-tags".into(),
                    message: format!("'{pair}' is not KEY=VALUE"),
                })?;
                Ok((key.to_string(), value.to_string()))
            })
            .collect()
    }

    /// The backend these options describe.
    pub async fn backend(&self) -> Result<Ec2Backend> {
        let mut builder = Ec2Backend::builder()
            .client(ClientOptions {
                region: self.ec2_region.clone(),
                endpoint_url: self.ec2_endpoint_url.clone(),
                static_credentials: None,
            })
            .instance_type(&self.ec2_instance_type)
            .subnets(self.ec2_subnets.clone())
            .security_groups(self.ec2_security_groups.clone())
            .key_name(self.ec2_key_name.clone())
            .spot(self.ec2_spot)
            .root_volume_gb(self.ec2_root_volume_gb)
            .tags(self.tags()?)
            .agent_port(self.ec2_agent_port)
            .address(match self.ec2_address {
                Ec2Address::Public => Address::Public,
                Ec2Address::Private => Address::Private,
            })
            .hourly_price(self.ec2_hourly_price);
        if let Some(image) = self.image() {
            builder = builder.image(image);
        }
        if self.ec2_test_local_agents {
            // Test hook: an emulator's instances run nothing; start a local agent for each.
            let agent = liveload_core::agent_bin::find().ok_or_else(|| Error::InvalidOption {
                option: "--ec2-test-local-agents".into(),
                message: "liveload-agent not found next to liveload".into(),
            })?;
            let dir =
                std::env::temp_dir().join(format!("liveload-ec2-agents-{}", std::process::id()));
            builder = builder.hook(Arc::new(crate::hook::LocalAgents::new(agent, dir)));
        }
        builder.build().await
    }
}

/// The EC2 backend's registry entry.
pub struct Ec2;

#[async_trait]
impl BackendCli for Ec2 {
    const NAME: &'static str = "ec2";
    const ABOUT: &'static str =
        "AWS EC2 instances booted from the agent AMI (images/ec2, terraform/aws)";
    type Args = Ec2Args;

    async fn build(args: Ec2Args, _: &Common) -> Result<Arc<dyn Backend>> {
        Ok(Arc::new(args.backend().await?))
    }
}
