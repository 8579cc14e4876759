//! `liveload doctor --backend ec2`: credentials, identity, region, AMI, instance type,
//! security groups, subnets.
//!
//! Each is a read-only EC2 (or STS) call. The account's vCPU quota is not checked: EC2 has no
//! call for it (Service Quotas does, and its SDK crate is another large generated client);
//! a run that hits it fails at once with `VcpuLimitExceeded` and the hint to raise it.

use std::net::Ipv4Addr;

use aws_sdk_ec2::types::{Filter, InstanceType, LocationType};
use liveload_core::doctor::{Check, Needs, agent_compatible};

use crate::{Address, Ec2Backend, Image, client};

/// The AMI tag that carries the agent's protocol version (set by images/ec2's Packer recipe).
pub const TAG_PROTOCOL: &str = "liveload:protocol";

impl Ec2Backend {
    /// The EC2 checks. Without credentials only the first runs.
    pub(crate) async fn checks(&self, needs: &Needs) -> Vec<Check> {
        if let Err(e) = client::find_credentials(&self.shared).await {
            return vec![Check::from_error(
                "ec2.credentials",
                &e,
                client::CREDENTIALS_FIX,
            )];
        }
        let mut checks = vec![Check::pass("ec2.credentials", "found")];
        checks.push(self.identity_check().await);
        checks.push(self.region_check().await);
        checks.push(self.image_check().await);
        let subnets = self.subnets().await;
        checks.push(self.instance_type_check(&subnets).await);
        checks.push(self.security_group_check(needs).await);
        checks.push(subnet_check(&subnets, self.settings.address));
        checks
    }

    async fn identity_check(&self) -> Check {
        // An emulator (--ec2-endpoint-url) answers STS too; an AWS endpoint of EC2's (a VPC
        // endpoint) does not, so STS keeps its own there.
        let mut config = aws_sdk_sts::config::Builder::from(&self.shared)
            .retry_config(aws_sdk_sts::config::retry::RetryConfig::disabled());
        if self
            .shared
            .endpoint_url()
            .is_some_and(|url| url.contains("amazonaws.com"))
        {
            config.set_endpoint_url(None);
        }
        let sts = aws_sdk_sts::Client::from_conf(config.build());
        match sts.get_caller_identity().send().await {
            Ok(me) => Check::pass(
                "ec2.identity",
                format!(
                    "account {}, {}",
                    me.account().unwrap_or("?"),
                    me.arn().unwrap_or("?")
                ),
            ),
            Err(e) => Check::fail(
                "ec2.identity",
                format!("STS GetCallerIdentity: {}", client::error_text(&e)),
                client::CREDENTIALS_FIX,
            ),
        }
    }

    fn region(&self) -> String {
        self.shared
            .region()
            .map(|r| r.to_string())
            .unwrap_or_default()
    }

    async fn region_check(&self) -> Check {
        let region = self.region();
        match self.ec2.describe_regions().send().await {
            Ok(out)
                if out
                    .regions()
                    .iter()
                    .any(|r| r.region_name() == Some(&region)) =>
            {
                Check::pass("ec2.region", format!("{region}, enabled for the account"))
            }
            Ok(_) => Check::fail(
                "ec2.region",
                format!("{region} is not enabled for this account"),
                "enable it (AWS console, Account, AWS Regions) or pass another --ec2-region",
            ),
            Err(e) => Check::from_error(
                "ec2.region",
                &client::error("listing regions", e),
                "check the region name",
            ),
        }
    }

    async fn image_check(&self) -> Check {
        let ami = match &self.settings.image {
            None => {
                return Check::fail(
                    "ec2.ami",
                    "no agent image given",
                    "build the AMI with images/ec2 (Packer) and pass --ec2-ami ami-..., or --ec2-launch-template",
                );
            }
            Some(Image::LaunchTemplate { template, .. }) => {
                return self.launch_template_check(template).await;
            }
            Some(Image::Ami(ami)) => ami,
        };
        let out = match self.ec2.describe_images().image_ids(ami).send().await {
            Ok(out) => out,
            Err(e) => {
                return Check::from_error(
                    "ec2.ami",
                    &client::error("looking up the AMI", e),
                    "pass an AMI of this region",
                );
            }
        };
        let Some(image) = out.images().first() else {
            return Check::fail(
                "ec2.ami",
                format!(
                    "{ami} does not exist in {} (or is not shared with the account)",
                    self.region()
                ),
                "build it in this region with images/ec2 (Packer), or copy it: `aws ec2 copy-image`",
            );
        };
        let arch = image
            .architecture()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default();
        let type_archs = self.instance_type_architectures().await;
        if !type_archs.is_empty() && !type_archs.contains(&arch) {
            return Check::fail(
                "ec2.ami",
                format!(
                    "{ami} is {arch}; {} runs {}",
                    self.settings.instance_type,
                    type_archs.join(", ")
                ),
                "build the AMI for the instance type's architecture (images/ec2: -var arch=...), or pick a matching type (c7g.* are arm64)",
            );
        }
        let protocol = image
            .tags()
            .iter()
            .find(|t| t.key() == Some(TAG_PROTOCOL))
            .and_then(|t| t.value());
        match protocol {
            Some(p) if agent_compatible(p) => Check::pass(
                "ec2.ami",
                format!("{ami}: {arch}, agent protocol {p}, as this controller"),
            ),
            Some(p) => Check::fail(
                "ec2.ami",
                format!(
                    "{ami} holds an agent of protocol {p}; this controller speaks {}",
                    liveload_core::proto::PROTOCOL_VERSION
                ),
                "rebuild the AMI from this liveload's checkout (images/ec2)",
            ),
            None => Check::fail(
                "ec2.ami",
                format!(
                    "{ami} has no {TAG_PROTOCOL} tag: not built by images/ec2, or by an older recipe"
                ),
                format!(
                    "rebuild it with images/ec2, or tag it if you know its agent: `aws ec2 create-tags --resources {ami} --tags Key={TAG_PROTOCOL},Value={}`",
                    liveload_core::proto::PROTOCOL_VERSION
                ),
            ),
        }
    }

    async fn launch_template_check(&self, template: &str) -> Check {
        let request = self.ec2.describe_launch_templates();
        let request = if template.starts_with("lt-") {
            request.launch_template_ids(template)
        } else {
            request.launch_template_names(template)
        };
        match request.send().await {
            Ok(out) if !out.launch_templates().is_empty() => Check::pass(
                "ec2.ami",
                format!("launch template {template} exists (its AMI is not checked)"),
            ),
            Ok(_) => Check::fail(
                "ec2.ami",
                format!("no launch template {template}"),
                "check --ec2-launch-template (name or lt- id) in this region",
            ),
            Err(e) => Check::from_error(
                "ec2.ami",
                &client::error("looking up the launch template", e),
                "check --ec2-launch-template (name or lt- id) in this region",
            ),
        }
    }

    async fn instance_type_architectures(&self) -> Vec<String> {
        let out = self
            .ec2
            .describe_instance_types()
            .instance_types(InstanceType::from(self.settings.instance_type.as_str()))
            .send()
            .await;
        out.ok()
            .and_then(|o| o.instance_types().first().cloned())
            .and_then(|t| t.processor_info().cloned())
            .map(|p| {
                p.supported_architectures()
                    .iter()
                    .map(|a| a.as_str().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The subnets nodes go to: those given, else the default VPC's default ones. Each as
    /// (id, availability zone, assigns public IPs).
    async fn subnets(&self) -> Result<Vec<(String, String, bool)>, String> {
        let request = self.ec2.describe_subnets();
        let request = if self.settings.subnets.is_empty() {
            request.filters(
                Filter::builder()
                    .name("default-for-az")
                    .values("true")
                    .build(),
            )
        } else {
            request.set_subnet_ids(Some(self.settings.subnets.clone()))
        };
        let out = request
            .send()
            .await
            .map_err(|e| client::error("listing subnets", e).to_string())?;
        Ok(out
            .subnets()
            .iter()
            .map(|s| {
                (
                    s.subnet_id().unwrap_or_default().to_string(),
                    s.availability_zone().unwrap_or_default().to_string(),
                    s.map_public_ip_on_launch().unwrap_or(false),
                )
            })
            .collect())
    }

    async fn instance_type_check(
        &self,
        subnets: &Result<Vec<(String, String, bool)>, String>,
    ) -> Check {
        let wanted = &self.settings.instance_type;
        let offered = self
            .ec2
            .describe_instance_type_offerings()
            .location_type(LocationType::AvailabilityZone)
            .filters(
                Filter::builder()
                    .name("instance-type")
                    .values(wanted)
                    .build(),
            )
            .send()
            .await;
        let zones: Vec<String> = match offered {
            Ok(out) => out
                .instance_type_offerings()
                .iter()
                .filter_map(|o| o.location().map(str::to_string))
                .collect(),
            Err(e) => {
                return Check::from_error(
                    "ec2.instance_type",
                    &client::error("listing instance type offerings", e),
                    "check --ec2-instance-type",
                );
            }
        };
        if zones.is_empty() {
            return Check::fail(
                "ec2.instance_type",
                format!("{wanted} is not offered in {}", self.region()),
                "pick a type this region offers: `aws ec2 describe-instance-type-offerings --filters Name=instance-type,Values=c7i.large`",
            );
        }
        // Subnets given are each used; without any, EC2 picks a default subnet in a zone
        // that offers the type, so one such zone is enough.
        let outside: Vec<String> = match subnets {
            Ok(subnets)
                if !self.settings.subnets.is_empty()
                    || !subnets.iter().any(|(_, zone, _)| zones.contains(zone)) =>
            {
                subnets
                    .iter()
                    .filter(|(_, zone, _)| !zones.contains(zone))
                    .map(|(id, zone, _)| format!("{id} ({zone})"))
                    .collect()
            }
            _ => Vec::new(),
        };
        if outside.is_empty() {
            Check::pass(
                "ec2.instance_type",
                format!(
                    "{wanted}, offered in {} zone(s) of {}",
                    zones.len(),
                    self.region()
                ),
            )
        } else {
            Check::fail(
                "ec2.instance_type",
                format!(
                    "{wanted} is not offered in the zone of subnet(s) {}",
                    outside.join(", ")
                ),
                format!(
                    "use subnets in {} or another instance type",
                    zones.join(", ")
                ),
            )
        }
    }

    async fn security_group_check(&self, needs: &Needs) -> Check {
        let port = i32::from(self.settings.agent_port);
        if self.settings.security_groups.is_empty() {
            return Check::fail(
                "ec2.security_groups",
                "no security group given: instances get the VPC's default group, which admits only itself",
                format!(
                    "pass --ec2-security-groups sg-... admitting TCP {port} from the controller (terraform/aws creates one)"
                ),
            );
        }
        let out = match self
            .ec2
            .describe_security_groups()
            .set_group_ids(Some(self.settings.security_groups.clone()))
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                return Check::from_error(
                    "ec2.security_groups",
                    &client::error("looking up the security groups", e),
                    "check --ec2-security-groups",
                );
            }
        };
        let controller = needs.controller_cidr.as_deref();
        if let Some(cidr) = controller
            && !cidr_contains(cidr, cidr)
        {
            return Check::fail(
                "ec2.security_groups",
                format!("--controller-cidr {cidr} is not an IPv4 address or range"),
                "pass the controller's public IPv4 address as A.B.C.D/32",
            );
        }
        let admitted = out.security_groups().iter().any(|group| {
            group.ip_permissions().iter().any(|rule| {
                let protocol_ok =
                    matches!(rule.ip_protocol(), Some("-1") | Some("tcp") | Some("6"));
                let all_ports = rule.ip_protocol() == Some("-1");
                let port_ok = all_ports
                    || (rule.from_port().unwrap_or(i32::MAX) <= port
                        && port <= rule.to_port().unwrap_or(i32::MIN));
                protocol_ok
                    && port_ok
                    && rule.ip_ranges().iter().any(|range| match controller {
                        Some(controller) => range
                            .cidr_ip()
                            .is_some_and(|cidr| cidr_contains(cidr, controller)),
                        None => range.cidr_ip().is_some(),
                    })
            })
        });
        let groups = self.settings.security_groups.join(", ");
        let from = controller.unwrap_or("some address range (not checked: pass --controller-cidr)");
        if admitted {
            Check::pass(
                "ec2.security_groups",
                format!("{groups} admit TCP {port} from {from}"),
            )
        } else {
            Check::fail(
                "ec2.security_groups",
                format!("{groups} admit no TCP {port} from {from}"),
                format!(
                    "aws ec2 authorize-security-group-ingress --group-id {} --protocol tcp --port {port} --cidr {}",
                    self.settings.security_groups[0],
                    controller.unwrap_or("YOUR.IP/32")
                ),
            )
        }
    }
}

/// Whether the nodes' subnets give them the address the controller dials.
fn subnet_check(subnets: &Result<Vec<(String, String, bool)>, String>, address: Address) -> Check {
    let subnets = match subnets {
        Ok(subnets) => subnets,
        Err(e) => {
            return Check::fail("ec2.subnets", e.clone(), "check --ec2-subnets");
        }
    };
    if subnets.is_empty() {
        return Check::fail(
            "ec2.subnets",
            "no subnets given and the region has no default VPC",
            "pass --ec2-subnets (terraform/aws creates them)",
        );
    }
    let private: Vec<&str> = subnets
        .iter()
        .filter(|(_, _, public)| !public)
        .map(|(id, _, _)| id.as_str())
        .collect();
    if address == Address::Public && !private.is_empty() {
        return Check::fail(
            "ec2.subnets",
            format!(
                "{} assign(s) no public IPs, and --ec2-address public dials them",
                private.join(", ")
            ),
            format!(
                "aws ec2 modify-subnet-attribute --subnet-id {} --map-public-ip-on-launch, or --ec2-address private from inside the VPC",
                private[0]
            ),
        );
    }
    Check::pass(
        "ec2.subnets",
        format!(
            "{} subnet(s) assign the {} addresses the controller dials",
            subnets.len(),
            if address == Address::Public {
                "public"
            } else {
                "private"
            }
        ),
    )
}

/// Whether IPv4 range `outer` (`10.0.0.0/8`) holds all of `inner` (`10.1.2.3/32`, or an
/// address). Anything unparsable holds nothing.
pub fn cidr_contains(outer: &str, inner: &str) -> bool {
    let parse = |text: &str| -> Option<(u32, u32)> {
        let (ip, bits) = text.split_once('/').unwrap_or((text, "32"));
        let ip: Ipv4Addr = ip.trim().parse().ok()?;
        let bits: u32 = bits.trim().parse().ok().filter(|b| *b <= 32)?;
        Some((u32::from(ip), bits))
    };
    let (Some((outer_ip, outer_bits)), Some((inner_ip, inner_bits))) = (parse(outer), parse(inner))
    else {
        return false;
    };
    let mask = |bits: u32| {
        if bits == 0 {
            0
        } else {
            u32::MAX << (32 - bits)
        }
    };
    inner_bits >= outer_bits && (inner_ip & mask(outer_bits)) == (outer_ip & mask(outer_bits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_hold_what_they_hold() {
        assert!(cidr_contains("0.0.0.0/0", "203.0.113.7/32"));
        assert!(cidr_contains("203.0.113.0/24", "203.0.113.7"));
        assert!(!cidr_contains("203.0.113.0/24", "203.0.114.7/32"));
        assert!(
            !cidr_contains("203.0.113.0/24", "203.0.0.0/16"),
            "wider inside narrower"
        );
        assert!(!cidr_contains("nonsense", "1.2.3.4"));
        assert!(!cidr_contains("1.2.3.4/33", "1.2.3.4"));
    }

    proptest::proptest! {
        /// CIDRs come from flags and from the provider: any text is an answer, never a panic.
        #[test]
        fn any_text_is_an_answer(a in ".{0,24}", b in ".{0,24}") {
            let _ = cidr_contains(&a, &b);
        }
    }
}
