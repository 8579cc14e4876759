//! Cluster names, run ids and run tokens.

use rand::Rng;

use crate::backend::Secret;
use crate::{Error, Result};

/// The longest cluster name: leaves room for `-<8 hex>` run suffix and `ll-…-<index>` machine
/// names inside the 63-character limits of hostnames, Fly machine names and EC2 tag values.
pub const MAX_CLUSTER_NAME: usize = 40;

/// Check a cluster name: 1 to 40 of `[a-z0-9-]`, starting with a letter, not ending with `-`.
pub fn validate_cluster_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_CLUSTER_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::ClusterNameInvalid {
            name: name.to_string(),
        })
    }
}

/// Check a caller-chosen run id: `<cluster>-` and eight lower-case hex digits, the shape
/// [`new_run_id`] makes (backends tag machines with it and match on it).
pub fn validate_run_id(run_id: &str, cluster_name: &str) -> Result<()> {
    let suffix = run_id
        .strip_prefix(cluster_name)
        .and_then(|rest| rest.strip_prefix('-'));
    match suffix {
        Some(hex)
            if hex.len() == 8
                && hex
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)) =>
        {
            Ok(())
        }
        _ => Err(Error::InvalidOption {
            option: "run_id".into(),
            message: format!(
                "'{run_id}' is not a run id of cluster '{cluster_name}' (expected \
                 {cluster_name}-<8 hex digits>)"
            ),
        }),
    }
}

/// A cluster name derived from a scenario name: lower-cased, other characters turned to `-`.
pub fn cluster_name_from(scenario: &str) -> String {
    let mut name: String = scenario
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    while name.contains("--") {
        name = name.replace("--", "-");
    }
    let name = name.trim_matches('-');
    let name = if name.starts_with(|c: char| c.is_ascii_lowercase()) {
        name.to_string()
    } else {
        format!("run-{name}")
    };
    name.chars()
        .take(MAX_CLUSTER_NAME)
        .collect::<String>()
        .trim_end_matches('-')
        .to_string()
}

/// A new run id: `<cluster name>-<8 random hex digits>`.
pub fn new_run_id(cluster_name: &str) -> String {
    format!("{cluster_name}-{:08x}", rand::rng().random::<u32>())
}

/// A new run token: 256 random bits, hex.
pub fn new_token() -> Secret {
    let bytes: [u8; 32] = rand::rng().random();
    Secret::new(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Seconds since the Unix epoch, now (0 if the clock is before 1970).
pub fn unix_now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names() {
        for good in ["a", "demo", "checkout-2", &"a".repeat(40)] {
            validate_cluster_name(good).unwrap();
        }
        for bad in ["", "Demo", "1abc", "a_b", "a-", "a b", &"a".repeat(41)] {
            let err = validate_cluster_name(bad).unwrap_err();
            assert_eq!(err.code(), "cluster_name_invalid", "{bad}");
        }
    }

    #[test]
    fn derived_names_are_valid() {
        for s in ["Demo Checkout!", "123", "---", "ÅÄÖ shop", &"x".repeat(100)] {
            validate_cluster_name(&cluster_name_from(s)).unwrap();
        }
    }

    #[test]
    fn tokens_are_random() {
        assert_ne!(new_token().expose(), new_token().expose());
        assert_eq!(new_token().expose().len(), 64);
    }
}
