//! The EC2 API client: `aws-sdk-ec2` over the same hyper + rustls (ring) stack the rest of
//! liveload uses, credentials from the standard AWS chain, and EC2's errors turned into
//! liveload's with a hint.

use aws_config::BehaviorVersion;
use aws_sdk_ec2::config::{Credentials, Region};
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use liveload_core::{BackendError, BackendErrorKind, Error, Result};

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

/// Build an EC2 client.
pub async fn build(options: &ClientOptions) -> Result<aws_sdk_ec2::Client> {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
    if let Some(region) = &options.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(url) = &options.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    if let Some((key, secret)) = &options.static_credentials {
        loader = loader.credentials_provider(Credentials::new(
            key.clone(),
            secret.clone(),
            None,
            None,
            "liveload-static",
        ));
    }
    let shared = loader.load().await;
    if shared.region().is_none() {
        return Err(Error::InvalidOption {
            option: "--ec2-region".into(),
            message: "no AWS region: pass --ec2-region, or set AWS_REGION / a profile region"
                .into(),
        });
    }
    // liveload retries itself (see `retry`), with its own view of what is worth retrying.
    let config = aws_sdk_ec2::config::Builder::from(&shared)
        .retry_config(aws_sdk_ec2::config::retry::RetryConfig::disabled())
        .build();
    Ok(aws_sdk_ec2::Client::from_conf(config))
}

/// An EC2 error as liveload's: the provider's code and message, a kind, and how to fix it.
pub fn error<E, R>(action: &str, err: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let code = err.code().unwrap_or_default().to_string();
    let message = err.message().map(str::to_string).unwrap_or_else(|| {
        // Not an EC2 answer: a connection, timeout or credentials problem.
        let mut text = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(inner) = source {
            text.push_str(": ");
            text.push_str(&inner.to_string());
            source = inner.source();
        }
        text
    });
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
