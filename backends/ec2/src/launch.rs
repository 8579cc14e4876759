//! Starting instances: one `RunInstances` call for a whole batch of nodes.
//!
//! EC2 throttles `RunInstances` by calls (a request bucket of 5, refilled 2 a second) and by
//! instances (a resource bucket of 1,000, refilled 2 a second) — "Request throttling for the
//! Amazon EC2 API". Five hundred nodes one call each spend minutes queued behind the request
//! bucket; one call with a count takes one round trip. So nodes are launched in batches of up
//! to [`BATCH_LIMIT`], one batch per subnet.
//!
//! Identity: every instance of a batch carries the same tags, so a node's index is recovered
//! from the batch's first index and stride (`liveload:node-base`, `liveload:node-step`) and the
//! instance's `AmiLaunchIndex` (0, 1, ... within its call). A batch of one also gets
//! `liveload:node`.
//!
//! Tokens: one user data serves the whole batch, so it carries every node's token
//! (`token.<launch index>`) and the instance keeps its own at boot (the user data reads its
//! launch index from the metadata service as root, before anything else runs). A node's token
//! still opens only that node; the batch's user data — readable only by root on one of its
//! instances — holds the batch's tokens (see SECURITY.md).

use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_ec2::types::{
    HttpTokensState, InstanceInterruptionBehavior, InstanceMarketOptionsRequest,
    InstanceMetadataEndpointState, InstanceMetadataOptionsRequest, InstanceType,
    LaunchTemplateSpecification, MarketType, ResourceType, ShutdownBehavior, SpotInstanceType,
    SpotMarketOptions, Tag, TagSpecification,
};
use liveload_core::launch::LaunchFile;
use liveload_core::{BackendError, BackendErrorKind, Error, NodeSpec, Result, RunFilter};

use crate::user_data::{LAUNCH_DIR, UserData};
use crate::{Ec2Backend, Image, TAG_EXPIRES, TAG_NODE, TAG_RUN, client};

/// Tag with the first node index of the instance's batch.
pub const TAG_NODE_BASE: &str = "liveload:node-base";
/// Tag with the stride between the node indices of a batch.
pub const TAG_NODE_STEP: &str = "liveload:node-step";
/// The most nodes one `RunInstances` call starts: their tokens must fit EC2's 16 KB of user
/// data (about 85 bytes each, with room for the TLS material).
pub const BATCH_LIMIT: u32 = 100;
/// How often the shortfall of a partly fulfilled batch is asked for again.
const SHORTFALL_ATTEMPTS: u32 = 3;

/// The node index of an instance from its tags and launch index.
pub fn node_index(node: Option<u32>, base: Option<u32>, step: Option<u32>, launch: u32) -> u32 {
    node.unwrap_or_else(|| {
        base.unwrap_or(0)
            .saturating_add(launch.saturating_mul(step.unwrap_or(1)))
    })
}

/// Each started instance's launch index and id. EC2 numbers the instances of a call
/// (`amiLaunchIndex`) and answers them in that order; an emulator that leaves the index out
/// gets the answer's order.
fn launch_indices(instances: &[aws_sdk_ec2::types::Instance]) -> Vec<(u32, String)> {
    let numbered: Vec<Option<i32>> = instances.iter().map(|i| i.ami_launch_index()).collect();
    let mut distinct = numbered.clone();
    distinct.sort();
    distinct.dedup();
    let trust = distinct.len() == numbered.len() && numbered.iter().all(Option::is_some);
    instances
        .iter()
        .enumerate()
        .filter_map(|(position, i)| {
            let launch = if trust {
                i.ami_launch_index().unwrap_or(0).max(0) as u32
            } else {
                position as u32
            };
            Some((launch, i.instance_id()?.to_string()))
        })
        .collect()
}

/// The idempotency token of one batch (at most 64 ASCII characters).
pub fn batch_token(run_id: &str, base: u32, count: usize) -> String {
    let token = format!("liveload-{run_id}-b{base}x{count}");
    token.chars().take(64).collect()
}

impl Ec2Backend {
    /// Start the instances of `specs` — one subnet, indices `base, base+step, ...` — and return
    /// each node's instance id, in the order of `specs`. A lost answer is retried with the
    /// same idempotency token after looking for the batch's instances by tag (moto, and any
    /// server that ignores the token). A batch asks for all its instances at once (MinCount =
    /// MaxCount): EC2 refuses a batch it has no capacity for with its own message; should a
    /// provider start fewer anyway, the shortfall is asked for again, then refused.
    pub(crate) async fn run_batch(&self, specs: &[NodeSpec]) -> Result<Vec<String>> {
        let mut ids: Vec<Option<String>> = vec![None; specs.len()];
        let mut missing: Vec<usize> = (0..specs.len()).collect();
        for attempt in 1..=SHORTFALL_ATTEMPTS {
            let batch: Vec<&NodeSpec> = missing.iter().map(|&i| &specs[i]).collect();
            let started = self.run_once(&batch).await?;
            for (launch, id) in started {
                if let Some(&slot) = missing.get(launch as usize) {
                    ids[slot] = Some(id);
                }
            }
            missing.retain(|&i| ids[i].is_none());
            if missing.is_empty() {
                break;
            }
            tracing::warn!(
                attempt,
                missing = missing.len(),
                "EC2 started part of a batch; asking for the rest"
            );
        }
        if !missing.is_empty() {
            return Err(BackendError::new(
                "ec2",
                BackendErrorKind::Quota,
                format!(
                    "EC2 started {} of {} instances: it has no capacity for the rest now",
                    specs.len() - missing.len(),
                    specs.len()
                ),
            )
            .hint("try another instance type or subnet (availability zone), or fewer nodes")
            .into());
        }
        Ok(ids.into_iter().map(|id| id.unwrap_or_default()).collect())
    }

    /// One batch, one call (retried as one): the (launch index, instance id) of each instance
    /// started.
    async fn run_once(&self, batch: &[&NodeSpec]) -> Result<Vec<(u32, String)>> {
        let base = batch[0].index;
        let step = batch
            .get(1)
            .map_or(1, |s| s.index.saturating_sub(base).max(1));
        let request = self.request(batch, base, step).await?;
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let attempt = || async {
            if attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) > 0 {
                // A previous attempt may have started the batch and lost only its answer.
                let found = self.batch_instances(&batch[0].run_id, base).await?;
                if !found.is_empty() {
                    tracing::info!(
                        instances = found.len(),
                        "a lost RunInstances had started the batch: adopted"
                    );
                    return Ok(found);
                }
            }
            match request.clone().send().await {
                Ok(out) => Ok(launch_indices(out.instances())),
                // No EC2 error code: the answer never came (the call may have worked), so
                // trying again with the same token is safe and needed.
                Err(err) if aws_sdk_ec2::error::ProvideErrorMetadata::code(&err).is_none() => {
                    Err(match client::error("starting instances", err) {
                        Error::Backend(b) => Error::Backend(Box::new(b.retryable(true))),
                        other => other,
                    })
                }
                Err(err) => Err(client::error("starting instances", err)),
            }
        };
        let started = client::retry(attempt).await?;
        let mut launched = self.launched.lock().expect("not poisoned");
        for (launch, id) in &started {
            launched.insert(id.clone(), *launch);
        }
        Ok(started)
    }

    /// The instances of `run`'s batch that starts at node `base`, by launch index.
    async fn batch_instances(&self, run: &str, base: u32) -> Result<Vec<(u32, String)>> {
        let listed: Vec<_> = self
            .instances(&RunFilter::Run(run.to_string()))
            .await?
            .into_iter()
            .filter(|i| i.base == Some(base))
            .collect();
        // As in `launch_indices`: EC2's launch indices when it gives distinct ones, else the
        // order DescribeInstances lists a reservation's instances in (their launch order).
        let mut launches: Vec<u32> = listed.iter().map(|i| i.launch).collect();
        launches.sort_unstable();
        launches.dedup();
        let trust = launches.len() == listed.len();
        Ok(listed
            .into_iter()
            .enumerate()
            .map(|(position, i)| (if trust { i.launch } else { position as u32 }, i.id))
            .collect())
    }

    /// The RunInstances request of one batch.
    async fn request(
        &self,
        batch: &[&NodeSpec],
        base: u32,
        step: u32,
    ) -> Result<aws_sdk_ec2::operation::run_instances::builders::RunInstancesFluentBuilder> {
        let image = self.settings.image.as_ref().ok_or_else(|| {
            Error::from(
                BackendError::new("ec2", BackendErrorKind::BadImage, "no AMI or launch template given")
                    .hint("pass --ec2-ami ami-... (built with images/ec2) or --ec2-launch-template NAME (terraform/aws makes one)"),
            )
        })?;
        let first = batch[0];
        let count = batch.len() as i32;
        let tags = self.batch_tags(first, base, step, batch.len());
        let tag_spec = |resource: ResourceType| {
            let mut builder = TagSpecification::builder().resource_type(resource);
            for (key, value) in &tags {
                builder = builder.tags(Tag::builder().key(key).value(value).build());
            }
            builder.build()
        };
        let user_data = aws_smithy_types::base64::encode(batch_user_data(self, batch).render());
        let mut request = self
            .ec2
            .run_instances()
            // All or nothing: EC2 starts the whole batch or refuses with its capacity error
            // (InsufficientInstanceCapacity), which is then the run's error with its hint.
            // (The shortfall loop above covers a provider that starts fewer anyway.)
            .min_count(count)
            .max_count(count)
            .client_token(batch_token(&first.run_id, base, batch.len()))
            .instance_type(InstanceType::from(self.settings.instance_type.as_str()))
            .instance_initiated_shutdown_behavior(ShutdownBehavior::Terminate)
            .user_data(user_data)
            .tag_specifications(tag_spec(ResourceType::Instance))
            .tag_specifications(tag_spec(ResourceType::Volume))
            // IMDSv2 only, one hop: a page in Chromium (or anything the agent's user runs)
            // cannot read the instance's metadata — its user data holds the node's token —
            // with a plain GET or through a forwarding hop. The AMI also blocks the metadata
            // address for the agent's user (images/ec2).
            .metadata_options(
                InstanceMetadataOptionsRequest::builder()
                    .http_tokens(HttpTokensState::Required)
                    .http_put_response_hop_limit(1)
                    .http_endpoint(InstanceMetadataEndpointState::Enabled)
                    .build(),
            )
            .set_security_group_ids(
                (!self.settings.security_groups.is_empty())
                    .then(|| self.settings.security_groups.clone()),
            )
            .set_key_name(self.settings.key_name.clone());
        if !self.settings.subnets.is_empty() {
            let subnets = &self.settings.subnets;
            request = request.subnet_id(&subnets[first.index as usize % subnets.len()]);
        }
        request = match image {
            Image::Ami(ami) => {
                let mut request = request.image_id(ami);
                if let Some(gb) = self.settings.root_volume_gb {
                    request = request.block_device_mappings(self.root_volume(ami, gb).await?);
                }
                request
            }
            Image::LaunchTemplate { template, version } => {
                let spec = if template.starts_with("lt-") {
                    LaunchTemplateSpecification::builder().launch_template_id(template)
                } else {
                    LaunchTemplateSpecification::builder().launch_template_name(template)
                };
                request.launch_template(spec.set_version(version.clone()).build())
            }
        };
        if self.settings.spot {
            request = request.instance_market_options(
                InstanceMarketOptionsRequest::builder()
                    .market_type(MarketType::Spot)
                    .spot_options(
                        SpotMarketOptions::builder()
                            .spot_instance_type(SpotInstanceType::OneTime)
                            .instance_interruption_behavior(InstanceInterruptionBehavior::Terminate)
                            .build(),
                    )
                    .build(),
            );
        }
        Ok(request)
    }

    /// The tags every instance (and volume) of a batch carries.
    fn batch_tags(
        &self,
        first: &NodeSpec,
        base: u32,
        step: u32,
        count: usize,
    ) -> Vec<(String, String)> {
        let expires = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .saturating_add(first.ttl.as_secs());
        let name = if count == 1 {
            first.machine_name()
        } else {
            format!("ll-{}-b{base}", first.run_id)
        };
        let mut tags = vec![
            (TAG_RUN.to_string(), first.run_id.clone()),
            (TAG_NODE_BASE.to_string(), base.to_string()),
            (TAG_NODE_STEP.to_string(), step.to_string()),
            (TAG_EXPIRES.to_string(), expires.to_string()),
            ("Name".to_string(), name),
        ];
        if count == 1 {
            tags.push((TAG_NODE.to_string(), first.index.to_string()));
        }
        tags.extend(self.settings.tags.iter().cloned());
        tags
    }
}

/// The user data of a batch: the first node's launch, with every node's token as
/// `token.<launch index>` when the batch holds more than one node.
pub(crate) fn batch_user_data(backend: &Ec2Backend, batch: &[&NodeSpec]) -> UserData {
    let mut data = backend.user_data(batch[0]);
    if batch.len() > 1 {
        data.launch
            .files
            .retain(|f| f.name != liveload_core::launch::file::TOKEN);
        for (launch, spec) in batch.iter().enumerate() {
            data.launch.files.push(LaunchFile {
                name: crate::user_data::indexed_token_name(launch as u32),
                contents: spec.token.expose().to_string(),
            });
        }
    }
    debug_assert!(
        data.launch
            .get(liveload_core::launch::var::TOKEN_FILE)
            .is_some_and(|p| p.starts_with(LAUNCH_DIR))
    );
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_indices_come_back_from_the_batch_tags() {
        assert_eq!(
            node_index(Some(7), Some(0), Some(1), 3),
            7,
            "a node tag wins"
        );
        assert_eq!(node_index(None, Some(10), Some(1), 3), 13);
        assert_eq!(
            node_index(None, Some(1), Some(3), 2),
            7,
            "one subnet of three"
        );
        assert!(batch_token("run-1", 0, 100).len() <= 64);
    }
}
