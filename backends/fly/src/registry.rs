//! Is the agent image in its registry, and does it speak this controller's protocol?
//!
//! A wrong image tag is otherwise found one machine at a time: Fly accepts the create, the
//! machine fails to pull, and the run waits out its creation timeout while machines bill. The
//! OCI distribution API answers it first: the manifest of `REPO:TAG` (404 when the tag is not
//! there), then the image's config blob, whose labels carry the agent's protocol version
//! ([`liveload_core::doctor::PROTOCOL_LABEL`], set by `images/agent/Dockerfile`).
//!
//! Hand-written rather than a registry client crate: three GETs and the token exchange a
//! registry may ask for; the crates that do this bring a whole container-image toolkit.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, WWW_AUTHENTICATE};

/// A parsed image reference: `HOST/REPOSITORY:TAG` or `HOST/REPOSITORY@DIGEST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The registry's `host[:port]` (`registry.fly.io`; Docker Hub's API host for bare names).
    pub host: String,
    /// The repository (`my-app`, `library/debian`).
    pub repository: String,
    /// The tag or digest.
    pub reference: String,
}

impl ImageRef {
    /// Parse an image reference as Docker does; `None` when it is not one.
    pub fn parse(image: &str) -> Option<ImageRef> {
        let image = image.trim();
        if image.is_empty() || image.chars().any(char::is_whitespace) {
            return None;
        }
        let (host, rest) = match image.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => ("registry-1.docker.io".to_string(), image.to_string()),
        };
        let (repository, reference) = match rest.split_once('@') {
            Some((repo, digest)) => (repo.to_string(), digest.to_string()),
            None => match rest.rsplit_once(':') {
                Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), tag.to_string()),
                _ => (rest.clone(), "latest".to_string()),
            },
        };
        let repository = if host == "registry-1.docker.io" && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        (!repository.is_empty() && !reference.is_empty()).then_some(ImageRef {
            host,
            repository,
            reference,
        })
    }

    /// The registry's base URL: plain HTTP only for a registry on this machine (as Docker
    /// treats `localhost`), HTTPS everywhere else.
    fn base_url(&self) -> String {
        format!(
            "{}://{}",
            if self.is_local() { "http" } else { "https" },
            self.host
        )
    }

    /// Whether the registry is on this machine: `localhost` or a loopback address, with or
    /// without a port.
    fn is_local(&self) -> bool {
        let host = match self.host.rsplit_once(':') {
            Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
            _ => self.host.as_str(),
        };
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

/// What the registry said of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The image exists; its config's labels.
    Found(BTreeMap<String, String>),
    /// No such tag or repository.
    Missing,
    /// The registry refused the credentials (or asked for some and none were given).
    Unauthorized(String),
    /// Anything else: the registry unreachable, an answer liveload cannot read.
    Failed(String),
}

/// Manifests liveload reads: single images and multi-platform indexes, OCI and Docker.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json";

/// Look `image` up, with basic credentials when given (registry.fly.io: user `x`, the API
/// token as password).
pub async fn lookup(image: &ImageRef, basic: Option<(&str, &str)>) -> Lookup {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .connect_timeout(Duration::from_secs(10))
        .build()
    {
        Ok(client) => client,
        Err(e) => return Lookup::Failed(e.to_string()),
    };
    let mut session = Session {
        client,
        image,
        basic,
        bearer: None,
    };
    match session.labels().await {
        Ok(found) => found,
        Err(e) => Lookup::Failed(e),
    }
}

/// One lookup's HTTP state: the credentials, and the bearer token a challenge gave.
struct Session<'a> {
    client: reqwest::Client,
    image: &'a ImageRef,
    basic: Option<(&'a str, &'a str)>,
    bearer: Option<String>,
}

impl Session<'_> {
    async fn labels(&mut self) -> Result<Lookup, String> {
        let repo = self.image.repository.clone();
        let manifest_path = format!("/v2/{repo}/manifests/{}", self.image.reference);
        let mut manifest = match self.get_json(&manifest_path, MANIFEST_TYPES).await? {
            Ok(manifest) => manifest,
            Err(lookup) => return Ok(lookup),
        };
        // A multi-platform index: the linux/amd64 image (what Fly machines run).
        if let Some(entries) = manifest.get("manifests").and_then(|m| m.as_array()) {
            let chosen = entries
                .iter()
                .find(|e| {
                    e.pointer("/platform/os").and_then(|v| v.as_str()) == Some("linux")
                        && e.pointer("/platform/architecture").and_then(|v| v.as_str())
                            == Some("amd64")
                })
                .and_then(|e| e.get("digest"))
                .and_then(|d| d.as_str())
                .ok_or("an image index without a linux/amd64 image (what Fly machines run)")?
                .to_string();
            manifest = match self
                .get_json(&format!("/v2/{repo}/manifests/{chosen}"), MANIFEST_TYPES)
                .await?
            {
                Ok(manifest) => manifest,
                Err(lookup) => return Ok(lookup),
            };
        }
        let config = manifest
            .pointer("/config/digest")
            .and_then(|d| d.as_str())
            .ok_or("a manifest without a config")?
            .to_string();
        let config = match self
            .get_json(&format!("/v2/{repo}/blobs/{config}"), "*/*")
            .await?
        {
            Ok(config) => config,
            Err(lookup) => return Ok(lookup),
        };
        let labels = config
            .pointer("/config/Labels")
            .and_then(|l| l.as_object())
            .map(|l| {
                l.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Lookup::Found(labels))
    }

    /// GET a JSON document; `Ok(Err(lookup))` for the answers that end the lookup (404, 401).
    async fn get_json(
        &mut self,
        path: &str,
        accept: &str,
    ) -> Result<Result<serde_json::Value, Lookup>, String> {
        let url = format!("{}{path}", self.image.base_url());
        let mut response = self.send(&url, accept).await?;
        if response.status() == StatusCode::UNAUTHORIZED && self.bearer.is_none() {
            // A token registry: fetch a token for this repository, then ask again.
            if let Some(challenge) = bearer_challenge(response.headers()) {
                self.bearer = Some(self.token(&challenge).await?);
                response = self.send(&url, accept).await?;
            }
        }
        match response.status() {
            s if s.is_success() => {
                let text = response
                    .text()
                    .await
                    .map_err(|e| format!("GET {path}: {e}"))?;
                serde_json::from_str(&text)
                    .map(Ok)
                    .map_err(|e| format!("GET {path}: unreadable answer: {e}"))
            }
            StatusCode::NOT_FOUND => Ok(Err(Lookup::Missing)),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Ok(Err(Lookup::Unauthorized(
                format!("GET {path}: {}", response.status()),
            ))),
            s => Err(format!("GET {path}: {s}")),
        }
    }

    async fn send(&self, url: &str, accept: &str) -> Result<reqwest::Response, String> {
        let mut request = self.client.get(url).header(ACCEPT, accept);
        if let Some(token) = &self.bearer {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        } else if let Some((user, password)) = self.basic {
            request = request.basic_auth(user, Some(password));
        }
        request
            .send()
            .await
            .map_err(|e| format!("{}: {e}", self.image.host))
    }

    /// The token exchange of the distribution spec: GET the realm with service and scope.
    async fn token(&self, challenge: &BTreeMap<String, String>) -> Result<String, String> {
        let realm = challenge
            .get("realm")
            .ok_or("a bearer challenge without a realm")?;
        let scope = format!("repository:{}:pull", self.image.repository);
        let mut query = vec![("scope", scope.as_str())];
        if let Some(service) = challenge.get("service") {
            query.push(("service", service));
        }
        let mut request = self.client.get(realm).query(&query);
        // The credentials go to the realm only over HTTPS to the registry's own host or
        // Fly's: a registry must not be able to name another host and collect the token.
        if let Some((user, password)) = self.basic
            && realm_may_have_credentials(realm, &self.image.host)
        {
            request = request.basic_auth(user, Some(password));
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("token from {realm}: {e}"))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| format!("token from {realm}: {e}"))?;
        if !status.is_success() {
            return Err(format!("token from {realm}: {status}"));
        }
        let answer: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("token from {realm}: {e}"))?;
        answer
            .get("token")
            .or_else(|| answer.get("access_token"))
            .and_then(|t| t.as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("no token from {realm}"))
    }
}

/// Whether a bearer challenge's realm may receive the registry's credentials: HTTPS, and the
/// registry's own host or a host of Fly's.
fn realm_may_have_credentials(realm: &str, registry_host: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(realm) else {
        return false;
    };
    let Some(host) = url.host_str() else {
        return false;
    };
    let registry = registry_host.split(':').next().unwrap_or(registry_host);
    url.scheme() == "https" && (host == registry || host == "fly.io" || host.ends_with(".fly.io"))
}

/// `WWW-Authenticate: Bearer realm="…",service="…",scope="…"` as key/value pairs.
fn bearer_challenge(headers: &HeaderMap) -> Option<BTreeMap<String, String>> {
    let value = headers.get(WWW_AUTHENTICATE)?.to_str().ok()?;
    let params = value.strip_prefix("Bearer ")?;
    Some(
        params
            .split(',')
            .filter_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                Some((
                    key.trim().to_string(),
                    value.trim().trim_matches('"').to_string(),
                ))
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_as_docker_reads_them() {
        let parsed = |s: &str| ImageRef::parse(s).map(|r| (r.host, r.repository, r.reference));
        let owned = |h: &str, r: &str, t: &str| Some((h.into(), r.into(), t.into()));
        assert_eq!(
            parsed("registry.fly.io/my-app:deploy-1"),
            owned("registry.fly.io", "my-app", "deploy-1")
        );
        assert_eq!(
            parsed("127.0.0.1:5000/agent:0.1.0"),
            owned("127.0.0.1:5000", "agent", "0.1.0")
        );
        assert_eq!(
            parsed("localhost:5000/team/agent"),
            owned("localhost:5000", "team/agent", "latest")
        );
        assert_eq!(
            parsed("debian:bookworm"),
            owned("registry-1.docker.io", "library/debian", "bookworm")
        );
        assert_eq!(
            parsed("registry.fly.io/app@sha256:abc"),
            owned("registry.fly.io", "app", "sha256:abc")
        );
        assert_eq!(parsed(""), None);
        assert_eq!(parsed("a b"), None);
        assert_eq!(parsed("registry.fly.io/"), None);
    }

    proptest::proptest! {
        /// An image reference comes from a flag or a file: any text parses or is refused,
        /// never a panic.
        #[test]
        fn any_reference_parses_or_is_refused(text in ".{0,80}") {
            if let Some(image) = ImageRef::parse(&text) {
                proptest::prop_assert!(!image.repository.is_empty());
                proptest::prop_assert!(!image.reference.is_empty());
            }
        }
    }

    #[test]
    fn the_token_goes_only_to_https_realms_of_the_registry_or_fly() {
        let ok = |realm: &str| realm_may_have_credentials(realm, "registry.fly.io");
        assert!(ok("https://registry.fly.io/token"));
        assert!(ok("https://api.fly.io/v1/registry/token"));
        assert!(!ok("http://registry.fly.io/token"), "not in clear text");
        assert!(!ok("https://evil.example/token"));
        assert!(!ok("https://registry.fly.io.evil.example/token"));
        assert!(!ok("https://notfly.io/token"));
        assert!(!ok("not a url"));
    }

    #[test]
    fn only_this_machine_is_spoken_to_in_clear_text() {
        let local = |host: &str| {
            ImageRef {
                host: host.into(),
                repository: "a".into(),
                reference: "b".into(),
            }
            .is_local()
        };
        assert!(local("127.0.0.1:5000") && local("localhost:5000") && local("localhost"));
        assert!(!local("localhost.example.com:5000"));
        assert!(!local("127.example.com"));
        assert!(!local("registry.fly.io"));
    }

    #[test]
    fn bearer_challenges_are_read() {
        let mut headers = HeaderMap::new();
        headers.insert(
            WWW_AUTHENTICATE,
            r#"Bearer realm="https://auth.example/token",service="reg",scope="repository:a:pull""#
                .parse()
                .unwrap(),
        );
        let c = bearer_challenge(&headers).unwrap();
        assert_eq!(c["realm"], "https://auth.example/token");
        assert_eq!(c["service"], "reg");
        headers.insert(WWW_AUTHENTICATE, "Basic realm=x".parse().unwrap());
        assert!(bearer_challenge(&headers).is_none());
    }
}
