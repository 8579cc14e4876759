//! Where users' requests go: the scenario's targets (`base_url:`, or `base_urls:` with a
//! `base_url_distribution:`) and its host rules (`block_hosts:`, `allow_hosts:`,
//! `map_hosts:`).
//!
//! Several targets spread users over endpoints (regions, hosts behind no common balancer):
//! `round_robin` gives user `u` target `u % targets`, cluster-wide, so every target gets its
//! share on every node; `per_node` gives node `n` target `n % targets`, for nodes aligned with
//! regions. Each user's iterations are also timed per target (`target:<base URL>`), so the
//! report breaks latency down by target.

use std::collections::BTreeMap;

use liveload_proto::{HostMapping, HostRules};
use serde::Deserialize;

use super::lower::Located;

/// How users are spread over several base URLs (`base_url_distribution:`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetDistribution {
    /// User `u` goes to target `u % targets` (cluster-wide user ids).
    #[default]
    RoundRobin,
    /// Every user of node `n` (in the plan's order) goes to target `n % targets`.
    PerNode,
}

/// The targets of node `node_index`'s users, as its assignment carries them: all of them
/// (each user picks by its id) or the node's one. Empty with a single target: the
/// assignment's `base_url` says it.
pub fn targets_for_node(
    base_urls: &[String],
    distribution: TargetDistribution,
    node_index: usize,
) -> Vec<String> {
    match (base_urls.len(), distribution) {
        (0 | 1, _) => Vec::new(),
        (_, TargetDistribution::RoundRobin) => base_urls.to_vec(),
        (n, TargetDistribution::PerNode) => vec![base_urls[node_index % n].clone()],
    }
}

/// `base_url:` or `base_urls:` (exactly one of them) as the list of targets, each a web URL
/// without its trailing `/`, none twice.
pub(super) fn lower_targets(
    base_url: Option<String>,
    base_urls: Vec<String>,
    distribution: Option<TargetDistribution>,
) -> Result<(Vec<String>, TargetDistribution), Located> {
    let urls = match (base_url, base_urls.is_empty()) {
        (Some(_), false) => {
            return Err(Located::new(
                "give base_url (one target) or base_urls (several), not both",
                "base_urls",
            ));
        }
        (None, true) => {
            return Err(Located::new(
                "a scenario needs base_url: (or base_urls: for several targets)",
                "name",
            ));
        }
        (Some(url), true) => vec![url],
        (None, false) => base_urls,
    };
    if distribution.is_some() && urls.len() < 2 {
        return Err(Located::new(
            "base_url_distribution needs base_urls with at least two targets",
            "base_url_distribution",
        ));
    }
    let mut targets: Vec<String> = Vec::with_capacity(urls.len());
    for url in urls {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Located::new(
                format!("base_url '{url}' must start with http:// or https://"),
                url,
            ));
        }
        let trimmed = url.trim_end_matches('/').to_string();
        if targets.contains(&trimmed) {
            return Err(Located::new(
                format!("base_urls lists '{trimmed}' twice"),
                url,
            ));
        }
        targets.push(trimmed);
    }
    Ok((targets, distribution.unwrap_or_default()))
}

/// `block_hosts:`, `allow_hosts:` and `map_hosts:` as the agents' [`HostRules`]. Mappings
/// are ordered so the most specific applies: exact names first, then longer patterns first
/// (Chromium applies the first that matches; a YAML map has no order to keep).
pub(super) fn lower_host_rules(
    block: Vec<String>,
    allow: Vec<String>,
    map: BTreeMap<String, String>,
) -> Result<HostRules, Located> {
    let located = |message: String, needle: &str| Located::new(message, needle);
    for pattern in block.iter().chain(&allow) {
        liveload_proto::check_host_pattern(pattern).map_err(|m| located(m, pattern))?;
    }
    let mut mappings = Vec::with_capacity(map.len());
    for (host, to) in map {
        liveload_proto::check_host_pattern(&host).map_err(|m| located(m, &host))?;
        liveload_proto::check_address(&to).map_err(|m| located(m, &to))?;
        mappings.push(HostMapping { host, to });
    }
    mappings.sort_by_key(|m| (m.host.contains('*'), std::cmp::Reverse(m.host.len())));
    Ok(HostRules {
        block,
        allow,
        map: mappings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn one_or_several_targets() {
        let (one, d) = lower_targets(Some("http://a/".into()), vec![], None).unwrap();
        assert_eq!(
            (one, d),
            (strings(&["http://a"]), TargetDistribution::RoundRobin)
        );
        let (two, d) = lower_targets(
            None,
            strings(&["http://a", "https://b:8443/"]),
            Some(TargetDistribution::PerNode),
        )
        .unwrap();
        assert_eq!(two, strings(&["http://a", "https://b:8443"]));
        assert_eq!(d, TargetDistribution::PerNode);
        for (url, urls, distribution, says) in [
            (Some("http://a"), vec!["http://b"], None, "not both"),
            (None, vec![], None, "needs base_url"),
            (
                None,
                vec!["http://a", "ftp://b"],
                None,
                "must start with http",
            ),
            (None, vec!["http://a", "http://a/"], None, "twice"),
            (
                Some("http://a"),
                vec![],
                Some(TargetDistribution::PerNode),
                "at least two",
            ),
        ] {
            let err =
                lower_targets(url.map(str::to_string), strings(&urls), distribution).unwrap_err();
            assert!(err.message.contains(says), "{}", err.message);
        }
    }

    #[test]
    fn targets_per_node() {
        let urls = strings(&["http://a", "http://b", "http://c"]);
        assert_eq!(
            targets_for_node(&urls, TargetDistribution::RoundRobin, 4),
            urls
        );
        assert_eq!(
            targets_for_node(&urls, TargetDistribution::PerNode, 4),
            strings(&["http://b"])
        );
        assert!(targets_for_node(&urls[..1], TargetDistribution::PerNode, 4).is_empty());
    }

    #[test]
    fn host_rules_are_checked_and_mappings_ordered() {
        let map = BTreeMap::from([
            ("*.x.test".to_string(), "127.0.0.1:1".to_string()),
            ("*.api.x.test".to_string(), "127.0.0.1:2".to_string()),
            ("a.x.test".to_string(), "127.0.0.1:3".to_string()),
        ]);
        let rules = lower_host_rules(strings(&["*.ads.test"]), vec![], map).unwrap();
        let order: Vec<&str> = rules.map.iter().map(|m| m.host.as_str()).collect();
        assert_eq!(order, ["a.x.test", "*.api.x.test", "*.x.test"]);
        let bad = lower_host_rules(strings(&["https://ads.test"]), vec![], BTreeMap::new());
        assert!(bad.unwrap_err().message.contains("not a URL"));
        let bad_to = BTreeMap::from([("a.test".to_string(), "127.0.0.1:99999".to_string())]);
        let bad = lower_host_rules(vec![], vec![], bad_to);
        assert!(bad.unwrap_err().message.contains("port"));
    }
}
