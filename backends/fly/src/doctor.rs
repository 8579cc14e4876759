//! `liveload doctor --backend fly`: token, app, image, public IPs, regions, warm pool.
//!
//! Each check is one cheap read of the Machines API or the image registry, in the order a new
//! user meets the problems: a token first (nothing else can be asked without one), then the
//! app it must reach, then what machines would be made of.

use liveload_core::doctor::{Check, Needs, PROTOCOL_LABEL, agent_compatible};
use liveload_core::{BackendErrorKind, Error};

use crate::FlyBackend;
use crate::registry::{ImageRef, Lookup};

impl FlyBackend {
    /// The Fly checks. Without a valid token only the first runs: the rest would all fail
    /// for the same reason.
    pub(crate) async fn checks(&self, needs: &Needs) -> Vec<Check> {
        let app_name = self.client.app_name().to_string();
        let api = Check::pass(
            "fly.api",
            format!("the Machines API at {} answers", self.client.base_url()),
        );
        let app = match self.client.app().await {
            Err(e) if !self.client.has_token() => {
                return vec![Check::from_error("fly.token", &e, "set FLY_API_TOKEN")];
            }
            Err(e) if is_auth(&e) => {
                return vec![api, Check::from_error("fly.token", &e, "set FLY_API_TOKEN")];
            }
            Err(e) => {
                return vec![Check::from_error(
                    "fly.api",
                    &e,
                    "check the network and --fly-api-url (FLY_API_URL)",
                )];
            }
            Ok(app) => app,
        };
        let mut checks = vec![
            api,
            Check::pass("fly.token", "accepted by the Machines API"),
        ];
        if app.is_none() {
            checks.push(Check::fail(
                "fly.app",
                format!("no app named {app_name} in the token's organisations"),
                format!(
                    "create it: `fly apps create {app_name}` (or pass the right --fly-app; a deploy token reaches one app only)"
                ),
            ));
            return checks;
        }
        checks.push(Check::pass("fly.app", format!("{app_name} exists")));
        checks.push(self.image_check().await);
        if self.edge.is_some() {
            checks.push(self.ips_check(&app_name).await);
        }
        checks.push(self.regions_check().await);
        if let Some(pool) = &self.pool {
            checks.push(self.pool_check(pool, needs).await);
        }
        checks
    }

    async fn image_check(&self) -> Check {
        let Some(image) = &self.image else {
            if self.pool.is_some() {
                return Check::pass("fly.image", "the warm pool's machines carry their image");
            }
            return Check::fail(
                "fly.image",
                "no agent image given",
                "pass --fly-image registry.fly.io/APP:TAG (built from images/agent/Dockerfile; backends/fly/README.md)",
            );
        };
        let Some(reference) = ImageRef::parse(image) else {
            return Check::fail(
                "fly.image",
                format!("'{image}' is not an image reference"),
                "pass --fly-image registry.fly.io/APP:TAG",
            );
        };
        // registry.fly.io takes the API token as the password of user `x` (`fly auth docker`).
        let token = self.client.token().map(|t| t.expose().to_string());
        let basic = match (&token, reference.host.as_str()) {
            (Some(token), "registry.fly.io") => Some(("x", token.as_str())),
            _ => None,
        };
        let push = format!(
            "build and push it: `fly deploy --build-only --push -a {} --image-label TAG --dockerfile images/agent/Dockerfile`, then pass --fly-image registry.fly.io/{}:TAG",
            self.client.app_name(),
            self.client.app_name()
        );
        match crate::registry::lookup(&reference, basic).await {
            Lookup::Found(labels) => match labels.get(PROTOCOL_LABEL) {
                Some(found) if agent_compatible(found) => Check::pass(
                    "fly.image",
                    format!("{image}: agent protocol {found}, as this controller"),
                ),
                Some(found) => Check::fail(
                    "fly.image",
                    format!(
                        "{image} holds an agent of protocol {found}; this controller speaks {}",
                        liveload_core::proto::PROTOCOL_VERSION
                    ),
                    format!("rebuild the image from this liveload's checkout: {push}"),
                ),
                None => Check::fail(
                    "fly.image",
                    format!(
                        "{image} has no {PROTOCOL_LABEL} label: not built from images/agent/Dockerfile, or from an old one"
                    ),
                    push,
                ),
            },
            Lookup::Missing => Check::fail(
                "fly.image",
                format!("{image} is not in its registry (no such tag)"),
                push,
            ),
            Lookup::Unauthorized(why) => Check::fail(
                "fly.image",
                format!("{} refused to show {image}: {why}", reference.host),
                "check the token's access to the app's images (`fly tokens create deploy -a APP`), or for another registry make the image public",
            ),
            Lookup::Failed(why) => Check::fail(
                "fly.image",
                format!("could not look {image} up: {why}"),
                "check the network and the image reference",
            ),
        }
    }

    async fn ips_check(&self, app_name: &str) -> Check {
        match self.client.ip_assignments().await {
            Ok(ips) if !ips.is_empty() => Check::pass(
                "fly.ips",
                format!(
                    "public mode: {} address(es) ({})",
                    ips.len(),
                    ips.join(", ")
                ),
            ),
            Ok(_) => Check::fail(
                "fly.ips",
                format!(
                    "{app_name} has no IP addresses: public mode reaches agents through {app_name}.fly.dev"
                ),
                format!(
                    "`fly ips allocate-v4 --shared -a {app_name}` and `fly ips allocate-v6 -a {app_name}`, or use --fly-mode private from inside the organisation's network"
                ),
            ),
            Err(e) => Check::from_error("fly.ips", &e, "check the token's access to the app"),
        }
    }

    async fn regions_check(&self) -> Check {
        if self.regions.is_empty() {
            return Check::pass("fly.regions", "none given: Fly places machines");
        }
        match self.client.regions().await {
            Ok(known) => {
                let unknown: Vec<&String> =
                    self.regions.iter().filter(|r| !known.contains(r)).collect();
                if unknown.is_empty() {
                    Check::pass("fly.regions", self.regions.join(", "))
                } else {
                    Check::fail(
                        "fly.regions",
                        format!(
                            "unknown or deprecated region(s): {}",
                            unknown
                                .iter()
                                .map(|r| r.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        format!(
                            "use codes from `fly platform regions`, e.g. {}",
                            known.iter().take(6).cloned().collect::<Vec<_>>().join(", ")
                        ),
                    )
                }
            }
            Err(e) => Check::from_error("fly.regions", &e, "check the network"),
        }
    }

    async fn pool_check(&self, pool: &str, needs: &Needs) -> Check {
        let machines = match self.pool_machines(pool).await {
            Ok(machines) => machines,
            Err(e) => return Check::from_error("fly.pool", &e, "check --fly-pool"),
        };
        let stopped = machines.iter().filter(|m| m.state == "stopped").count() as u64;
        let wanted = needs.nodes.unwrap_or(1);
        let create = format!(
            "`liveload fly pool create --fly-pool {pool} --nodes {} ...` (the same Fly options as the run)",
            wanted.saturating_sub(stopped).max(1)
        );
        if stopped >= wanted {
            Check::pass(
                "fly.pool",
                format!(
                    "{pool}: {stopped} stopped machine(s) ready of {} in all",
                    machines.len()
                ),
            )
        } else {
            Check::fail(
                "fly.pool",
                format!(
                    "{pool}: {stopped} stopped machine(s); the plan needs {wanted} (the run creates the rest at Fly's create rate)"
                ),
                create,
            )
        }
    }
}

fn is_auth(error: &Error) -> bool {
    matches!(error, Error::Backend(e) if e.kind == BackendErrorKind::Auth)
}
