//! The EC2 API client: `aws-sdk-ec2` over the same hyper + rustls (ring) stack the rest of
//! liveload uses, credentials from the standard AWS chain, and EC2's errors turned into
//! liveload's with a hint.

use std::time::Duration;

use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_config::environment::EnvironmentVariableRegionProvider;
use aws_config::imds::{self, region::ImdsRegionProvider};
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::ProfileFileRegionProvider;
use aws_config::provider_config::ProviderConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_ec2::config::{Credentials, ProvideCredentials, Region};
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use liveload_core::{BackendError, BackendErrorKind, Error, Result};

/// Where the standard AWS chain looks for credentials, in its order: what a "no credentials"
/// error lists, so the user sees every place that was tried.
pub const CREDENTIAL_SOURCES: &str = "the environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), \
the profile (AWS_PROFILE, ~/.aws/credentials and ~/.aws/config, SSO included), a web identity \
token (AWS_WEB_IDENTITY_TOKEN_FILE), the container's endpoint (ECS), and the instance metadata \
service (on EC2 only)";

/// How to give liveload credentials, for the errors that say none were found.
pub const CREDENTIALS_FIX: &str = "export AWS_PROFILE=NAME (after `aws configure` or `aws sso login --profile NAME`), \
or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; the IAM policy liveload needs is in backends/ec2/README.md";

/// The instance-metadata service answers on EC2 within milliseconds; off EC2 nothing answers.
/// Two attempts with a short connect timeout keep a laptop's `plan` from waiting on it (the SDK's
/// default tries up to 4 times, and probes once more for each region lookup) and still ride
/// out one hiccup on EC2.
const IMDS_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// An EC2 client and the configuration it came from (credentials, for STS and for checking
/// that there are any before the first call).
#[derive(Clone, Debug)]
pub struct Api {
    /// The EC2 client.
    pub ec2: aws_sdk_ec2::Client,
    /// The shared configuration: region, credentials provider, endpoint.
    pub shared: SdkConfig,
}

/// Where and as whom to call EC2.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// AWS region (default: from the environment or profile).
    pub region: Option<String>,
    /// An endpoint other than AWS's (an emulator): `--ec2-endpoint-url` / `AWS_ENDPOINT_URL`.
    pub endpoint_url: Option<String>,
    /// Fixed credentials instead of the standard chain (emulators and tests).
    pub static_credentials: Option<(String, String)>,
}

/// Build an EC2 client. Makes no API call; credentials are looked for on the first call (or by
/// [`find_credentials`]).
pub async fn build(options: &ClientOptions) -> Result<Api> {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    // The standard chains, with one change: a quick instance-metadata client (see
    // IMDS_CONNECT_TIMEOUT). The region comes first, so no chain probes for it again.
    let providers = ProviderConfig::without_region()
        .with_http_client(http.clone())
        .with_behavior_version(Some(BehaviorVersion::latest()));
    let imds_client = imds::Client::builder()
        .configure(&providers)
        .connect_timeout(IMDS_CONNECT_TIMEOUT)
        .max_attempts(2)
        .build();
    let region = match &options.region {
        Some(region) => Some(Region::new(region.clone())),
        None => {
            RegionProviderChain::first_try(EnvironmentVariableRegionProvider::new())
                .or_else(
                    ProfileFileRegionProvider::builder()
                        .configure(&providers)
                        .build(),
                )
                .or_else(
                    ImdsRegionProvider::builder()
                        .configure(&providers)
                        .imds_client(imds_client.clone())
                        .build(),
                )
                .region()
                .await
        }
    };
    let Some(region) = region else {
        return Err(Error::InvalidOption {
            option: "--ec2-region".into(),
            message: "no AWS region: pass --ec2-region, or set AWS_REGION / a profile region"
                .into(),
        });
    };
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .region(region.clone());
    if let Some(url) = &options.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader = match &options.static_credentials {
        Some((key, secret)) => loader.credentials_provider(Credentials::new(
            key.clone(),
            secret.clone(),
            None,
            None,
            "liveload-static",
        )),
        None => loader.credentials_provider(
            DefaultCredentialsChain::builder()
                .configure(providers)
                .region(region)
                .imds_client(imds_client)
                .build()
                .await,
        ),
    };
    let shared = loader.load().await;
    // liveload retries itself (see `retry`), with its own view of what is worth retrying.
    let config = aws_sdk_ec2::config::Builder::from(&shared)
        .retry_config(aws_sdk_ec2::config::retry::RetryConfig::disabled())
        .build();
    Ok(Api {
        ec2: aws_sdk_ec2::Client::from_conf(config),
        shared,
    })
}

/// Look for credentials the way the first API call would, and say precisely what went wrong
/// when there are none: every source tried, or the one that failed and why.
pub async fn find_credentials(shared: &SdkConfig) -> Result<Credentials> {
    let Some(provider) = shared.credentials_provider() else {
        return Err(no_credentials(
            "credentials are disabled in this configuration",
        ));
    };
    provider
        .provide_credentials()
        .await
        .map_err(|e| credentials_error(&e))
}

/// Whether there are no credentials at all (every source empty; or only the instance
/// metadata service, the last resort, refusing), as opposed to a source that is configured and
/// failed (an expired SSO session, a broken profile): that is an error, returned.
pub async fn credentials_missing(shared: &SdkConfig) -> Result<bool> {
    let Some(provider) = shared.credentials_provider() else {
        return Ok(true);
    };
    match provider.provide_credentials().await {
        Ok(_) => Ok(false),
        Err(CredentialsError::CredentialsNotLoaded(_)) => Ok(true),
        Err(e) if error_chain(&e).contains("IMDS") => Ok(true),
        Err(e) => Err(credentials_error(&e)),
    }
}

/// A credentials failure as liveload's error: which sources were tried, or which one failed.
pub fn credentials_error(error: &CredentialsError) -> Error {
    match error {
        CredentialsError::CredentialsNotLoaded(_) => no_credentials("none of them had any"),
        // The chain's last resort refusing (a metadata service that answers 403, as some
        // networks' proxies do) still means nothing earlier had credentials.
        other if error_chain(other).contains("IMDS") => no_credentials(&format!(
            "the last, the instance metadata service, answered: {}",
            error_chain(other)
        )),
        other => Error::from(
            BackendError::new(
                "ec2",
                BackendErrorKind::Auth,
                format!(
                    "AWS credentials could not be loaded: {}",
                    error_chain(other)
                ),
            )
            .hint(
                "fix the source named above (an expired SSO session: `aws sso login`; a broken profile: ~/.aws/config)",
            ),
        ),
    }
}

/// The error of no credentials anywhere: every source tried, and how to provide one.
pub fn no_credentials(why: &str) -> Error {
    Error::from(
        BackendError::new(
            "ec2",
            BackendErrorKind::Auth,
            format!("no AWS credentials found: tried {CREDENTIAL_SOURCES}; {why}"),
        )
        .hint(CREDENTIALS_FIX),
    )
}

/// An SDK error for people: the provider's code and message when it answered, else the error
/// and its causes, one line.
pub fn error_text<E, R>(err: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    if let Some(credentials) = find_credentials_error(err) {
        return credentials_error(credentials).to_string();
    }
    match (err.code(), err.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        _ => error_chain(err),
    }
}

/// An error and its sources, one line: `top: cause: cause`.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let line = inner.to_string();
        if !text.ends_with(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = inner.source();
    }
    text
}

/// The credentials failure somewhere in an SDK error's sources (a call that could not sign).
fn find_credentials_error<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a CredentialsError> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<CredentialsError>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// An EC2 error as liveload's: the provider's code and message, a kind, and how to fix it.
pub fn error<E, R>(action: &str, err: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    // A call that could not be signed never reached EC2: say so, not "could not reach EC2".
    if let Some(credentials) = find_credentials_error(&err) {
        return with_action(action, credentials_error(credentials));
    }
    let code = err.code().unwrap_or_default().to_string();
    // Not an EC2 answer: a connection or timeout problem.
    let message = err
        .message()
        .map(str::to_string)
        .unwrap_or_else(|| error_chain(&err));
    let (kind, hint) = classify(&code, &message);
    let message = if code.is_empty() {
        format!("{action}: {message}")
    } else {
        format!("{action}: {code}: {message}")
    };
    Error::from(
        BackendError::new("ec2", kind, message)
            .maybe_hint(hint)
            .source(err),
    )
}

/// `error` with `action` in front of its message: what liveload was doing when it failed.
fn with_action(action: &str, error: Error) -> Error {
    match error {
        Error::Backend(mut e) => {
            e.message = format!("{action}: {}", e.message);
            Error::Backend(e)
        }
        other => other,
    }
}

/// What kind of failure an EC2 error code is, and the hint a user needs.
pub fn classify(code: &str, message: &str) -> (BackendErrorKind, Option<&'static str>) {
    match code {
        "AuthFailure"
        | "UnauthorizedOperation"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "ExpiredToken"
        | "RequestExpired"
        | "OptInRequired" => (
            BackendErrorKind::Auth,
            Some(
                "check the AWS credentials (AWS_PROFILE, `aws sso login`, AWS_ACCESS_KEY_ID) and that their policy allows liveload's EC2 actions (README, EC2: IAM policy)",
            ),
        ),
        c if c.starts_with("InvalidAMIID") => (
            BackendErrorKind::BadImage,
            Some(
                "the AMI does not exist in this region or is not shared with the account: build it with images/ec2 (Packer) and pass --ec2-ami ami-...",
            ),
        ),
        c if c.starts_with("InvalidInstanceType") => (
            BackendErrorKind::BadInstanceType,
            Some(
                "use an instance type this region offers, e.g. c7i.large (`aws ec2 describe-instance-type-offerings`)",
            ),
        ),
        "InvalidParameterValue"
            if message.contains("instance type") || message.contains("InstanceType") =>
        {
            (
                BackendErrorKind::BadInstanceType,
                Some("use an instance type this region offers, e.g. c7i.large"),
            )
        }
        "Unsupported" => (
            BackendErrorKind::BadInstanceType,
            Some(
                "this instance type is not offered in the chosen subnet's availability zone: pick another type or subnet",
            ),
        ),
        "InsufficientInstanceCapacity" | "InsufficientCapacity" => (
            BackendErrorKind::Quota,
            Some(
                "AWS has no capacity for this type here right now: try another instance type, subnet (availability zone) or on-demand instead of spot",
            ),
        ),
        "VcpuLimitExceeded" | "InstanceLimitExceeded" | "MaxSpotInstanceCountExceeded" => (
            BackendErrorKind::Quota,
            Some(
                "the account's vCPU quota for this instance family is reached: request an increase (Service Quotas, EC2 'Running On-Demand ... instances') or use fewer/smaller nodes",
            ),
        ),
        "InternalError" | "InternalFailure" | "ServiceUnavailable" | "Unavailable" => (
            BackendErrorKind::Transient,
            Some("EC2 failed on its side; liveload retried with backoff"),
        ),
        "RequestLimitExceeded" | "Throttling" => (
            BackendErrorKind::RateLimited,
            Some(
                "EC2 throttled the API calls even after retries: try again, or lower the number of nodes",
            ),
        ),
        c if c.starts_with("InvalidSubnet")
            || c.starts_with("InvalidGroup")
            || c.starts_with("InvalidKeyPair") =>
        {
            (
                BackendErrorKind::Other,
                Some(
                    "check --ec2-subnets, --ec2-security-groups and --ec2-key-name against the region (terraform/aws prints them)",
                ),
            )
        }
        c if c.starts_with("InvalidLaunchTemplate") => (
            BackendErrorKind::Other,
            Some("check --ec2-launch-template (name or id, and version) in this region"),
        ),
        "" => (
            BackendErrorKind::Other,
            Some("could not reach EC2: check the network, the region and --ec2-endpoint-url"),
        ),
        _ => (BackendErrorKind::Other, None),
    }
}

/// Run `call` with core's one retry policy (exponential backoff with jitter) while it fails
/// with an error its kind marks retryable: throttling and EC2's own transient failures, decided
/// by [`classify`] from the error code, never from message text.
pub async fn retry<T, F, Fut>(call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    liveload_core::limits::retry(7, call).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_codes_map_to_kinds_with_hints() {
        for (code, kind) in [
            ("AuthFailure", BackendErrorKind::Auth),
            ("UnauthorizedOperation", BackendErrorKind::Auth),
            ("InvalidAMIID.NotFound", BackendErrorKind::BadImage),
            ("InvalidAMIID.Malformed", BackendErrorKind::BadImage),
            ("InvalidInstanceType", BackendErrorKind::BadInstanceType),
            (
                "InvalidInstanceType.NotFound",
                BackendErrorKind::BadInstanceType,
            ),
            ("InsufficientInstanceCapacity", BackendErrorKind::Quota),
            ("VcpuLimitExceeded", BackendErrorKind::Quota),
            ("RequestLimitExceeded", BackendErrorKind::RateLimited),
        ] {
            let (got, hint) = classify(code, "");
            assert_eq!(got, kind, "{code}");
            assert!(hint.is_some(), "{code} has a hint");
        }
        assert_eq!(classify("Whatever", "").0, BackendErrorKind::Other);
    }

    /// Each kind of EC2 failure says what happened and how to fix it.
    #[test]
    fn every_kind_has_its_message_and_hint() {
        for (code, kind, words) in [
            ("AuthFailure", BackendErrorKind::Auth, "AWS_PROFILE"),
            (
                "InvalidAMIID.NotFound",
                BackendErrorKind::BadImage,
                "images/ec2",
            ),
            (
                "InvalidInstanceType",
                BackendErrorKind::BadInstanceType,
                "c7i.large",
            ),
            (
                "Unsupported",
                BackendErrorKind::BadInstanceType,
                "availability zone",
            ),
            (
                "InsufficientInstanceCapacity",
                BackendErrorKind::Quota,
                "capacity",
            ),
            (
                "VcpuLimitExceeded",
                BackendErrorKind::Quota,
                "Service Quotas",
            ),
            ("InternalError", BackendErrorKind::Transient, "retried"),
            (
                "RequestLimitExceeded",
                BackendErrorKind::RateLimited,
                "throttled",
            ),
            (
                "InvalidSubnetID.NotFound",
                BackendErrorKind::Other,
                "--ec2-subnets",
            ),
            (
                "InvalidLaunchTemplateName.NotFound",
                BackendErrorKind::Other,
                "--ec2-launch-template",
            ),
            ("", BackendErrorKind::Other, "could not reach EC2"),
        ] {
            let (got, hint) = classify(code, "");
            assert_eq!(got, kind, "{code}");
            assert!(hint.unwrap().contains(words), "{code}: {hint:?}");
        }
    }

    /// No credentials anywhere: every source is named, with how to provide one. A source that
    /// failed: its own words, and how to fix it.
    #[test]
    fn credential_failures_name_their_cause() {
        let none = credentials_error(&CredentialsError::not_loaded("no providers in chain"));
        let text = none.to_string();
        for source in [
            "AWS_ACCESS_KEY_ID",
            "AWS_PROFILE",
            "SSO",
            "web identity",
            "ECS",
            "instance metadata",
        ] {
            assert!(text.contains(source), "{text}");
        }
        assert!(none.hint().unwrap().contains("aws sso login"));
        let expired = credentials_error(&CredentialsError::provider_error(
            "the SSO session has expired",
        ));
        assert!(
            expired.to_string().contains("the SSO session has expired"),
            "{expired}"
        );
        assert!(expired.hint().unwrap().contains("aws sso login"));
        let refused = credentials_error(&CredentialsError::provider_error(
            "failed to load IMDS session token: 403",
        ));
        assert!(
            refused
                .to_string()
                .starts_with("ec2 backend: no AWS credentials found"),
            "{refused}"
        );
    }

    #[test]
    fn only_transient_errors_are_retried() {
        let kind_of = |code: &str| BackendError::new("ec2", classify(code, "").0, code);
        assert!(kind_of("RequestLimitExceeded").retryable);
        assert!(kind_of("InternalError").retryable);
        assert!(kind_of("ServiceUnavailable").retryable);
        assert!(!kind_of("VcpuLimitExceeded").retryable);
        assert!(!kind_of("AuthFailure").retryable);
        assert!(!kind_of("InvalidAMIID.NotFound").retryable);
    }

    /// Throttling is retried with backoff until it passes.
    #[tokio::test]
    async fn throttling_is_retried_until_it_passes() {
        let mut calls = 0;
        let result = retry(|| {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err(Error::from(BackendError::new(
                        "ec2",
                        BackendErrorKind::RateLimited,
                        "RequestLimitExceeded",
                    )))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(result.unwrap(), 3);
    }
}
