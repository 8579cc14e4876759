//! Host rules: which hosts a scenario's browsers may reach, and host names sent to another
//! address (the scenario's `block_hosts:`, `allow_hosts:` and `map_hosts:`).
//!
//! Ten thousand browsers loading a page also load its analytics, payment widget and CDN
//! assets: a load test that does not want to load-test a third party must keep them away.
//! The rules are applied inside Chromium, in two places:
//! - blocking and allowing by Chromium's DevTools (`Network.setBlockedURLs`, one list per
//!   page), so a blocked request fails before it leaves the browser and the agent can count
//!   it exactly (`hosts.blocked`: Chromium marks the failure as blocked by the inspector);
//! - mapping by Chromium's host resolver (`--host-resolver-rules`, one list per browser), so
//!   `cdn.example.com` can be sent to a local mirror while the page still asks for it by name.
//!
//! Both lists come from the controller and reach Chromium's command line and DevTools, so
//! the agent checks them again ([`HostRules::check`]): a pattern is a host name with `*`
//! wildcards and nothing else, an address is a host or IP with an optional port. No comma,
//! space or URL-pattern syntax can slip through to add a rule the scenario did not write.

use serde::{Deserialize, Serialize};

/// The scenario's host rules. Empty: every host is reached as the system resolves it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRules {
    /// Host patterns whose requests fail (`*.doubleclick.net`, `analytics.example.com`).
    /// They win over `allow`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub block: Vec<String>,
    /// When not empty, only these host patterns (and the hosts of the scenario's base URLs)
    /// are reached; every other request fails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Host names sent to another address, in order (the first matching rule wins).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub map: Vec<HostMapping>,
}

/// One `map_hosts:` entry: requests for `host` connect to `to` instead (the request still
/// names `host`: its `Host` header, cookies and TLS name are unchanged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostMapping {
    /// A host pattern (`cdn.example.com`, `*.cdn.example.com`).
    pub host: String,
    /// Where it goes: a host name or IP address, with an optional port (`127.0.0.1:8080`,
    /// `[::1]:8080`, `mirror.internal`).
    pub to: String,
}

/// The longest host name DNS allows.
const MAX_HOST_CHARS: usize = 253;

impl HostRules {
    /// No rule at all.
    pub fn is_empty(&self) -> bool {
        self.block.is_empty() && self.allow.is_empty() && self.map.is_empty()
    }

    /// Every pattern and address is well-formed; else what is wrong, naming it.
    pub fn check(&self) -> Result<(), String> {
        for pattern in self.block.iter().chain(&self.allow) {
            check_host_pattern(pattern)?;
        }
        for mapping in &self.map {
            check_host_pattern(&mapping.host)?;
            check_address(&mapping.to)?;
        }
        Ok(())
    }

    /// The value of Chromium's `--host-resolver-rules` (`MAP a 127.0.0.1:8080,MAP b c`), or
    /// `None` without mappings. Call [`check`](Self::check) first.
    pub fn resolver_rules(&self) -> Option<String> {
        if self.map.is_empty() {
            return None;
        }
        let rules: Vec<String> = self
            .map
            .iter()
            .map(|m| format!("MAP {} {}", m.host, m.to))
            .collect();
        Some(rules.join(","))
    }

    /// The URL patterns of `Network.setBlockedURLs`, in order, each with whether it blocks:
    /// the blocked hosts; then, when `allow` is set, the allowed hosts and `always_allowed`
    /// (the hosts of the base URLs, which a scenario always reaches), then everything else
    /// blocked. Chromium applies the first pattern that matches. Empty: nothing is blocked.
    /// Call [`check`](Self::check) first.
    pub fn url_patterns(&self, always_allowed: &[String]) -> Vec<(String, bool)> {
        let mut patterns: Vec<(String, bool)> = self
            .block
            .iter()
            .map(|host| (host_url_pattern(host), true))
            .collect();
        if !self.allow.is_empty() {
            patterns.extend(self.allow.iter().map(|h| (host_url_pattern(h), false)));
            patterns.extend(
                always_allowed
                    .iter()
                    .map(|host| (host_url_pattern(&escape_literal_host(host)), false)),
            );
            patterns.push(("*://*:*/*".to_string(), true));
        }
        patterns
    }
}

/// The URL pattern (WHATWG URLPattern syntax) of every URL on `host`, any scheme, port,
/// path and query.
fn host_url_pattern(host: &str) -> String {
    format!("*://{host}:*/*")
}

/// A literal host name or address as a URLPattern host: its syntax characters escaped (an
/// IPv6 address's colons and brackets).
fn escape_literal_host(host: &str) -> String {
    let mut escaped = String::with_capacity(host.len());
    for c in host.chars() {
        if ":*?+(){}[]\\".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// A host pattern: letters, digits, `-`, `.` and `*` (any characters), not empty, at most
/// 253 characters.
pub fn check_host_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() || pattern.len() > MAX_HOST_CHARS {
        return Err(format!(
            "host pattern '{}' must have 1 to {MAX_HOST_CHARS} characters",
            shown(pattern)
        ));
    }
    if let Some(bad) = pattern
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '*')))
    {
        return Err(format!(
            "host pattern '{}' may hold only letters, digits, '-', '.' and '*' (not {bad:?}); \
             give a host name, not a URL",
            shown(pattern)
        ));
    }
    Ok(())
}

/// An address to map a host to: `host`, `host:port`, an IPv4 address with an optional port,
/// or `[IPv6]` with an optional port.
pub fn check_address(address: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("address '{}' {why}", shown(address)));
    let (host, port) = match address.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, "")) if v6.parse::<std::net::Ipv6Addr>().is_ok() => (None, None),
            Some((v6, rest))
                if v6.parse::<std::net::Ipv6Addr>().is_ok() && rest.starts_with(':') =>
            {
                (None, Some(&rest[1..]))
            }
            _ => return bad("has a bracketed part that is not an IPv6 address"),
        },
        None => match address.rsplit_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(address), None),
        },
    };
    if let Some(host) = host {
        let well_formed = !host.is_empty()
            && host.len() <= MAX_HOST_CHARS
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'));
        if !well_formed {
            return bad("must be a host name or IP address, with an optional :port");
        }
    }
    match port {
        None => Ok(()),
        Some(port) if port.parse::<u16>().is_ok_and(|p| p > 0) => Ok(()),
        Some(_) => bad("has a port that is not a number from 1 to 65535"),
    }
}

/// The host of a base URL (`http://127.0.0.1:4000/app` → `127.0.0.1`), for the hosts an
/// `allow_hosts:` list always lets through.
pub fn url_host(url: &str) -> Option<String> {
    let clean = without_credentials(url);
    let host_port = clean.split_once("://")?.1.split(['/', '?', '#']).next()?;
    let host = if host_port.starts_with('[') {
        host_port.split_once(']').map(|(v6, _)| format!("{v6}]"))?
    } else {
        host_port.split(':').next()?.to_string()
    };
    (!host.is_empty()).then_some(host)
}

/// A URL without the credentials in its authority (`https://u:p@h/x` → `https://h/x`), for
/// what is shown: metric names, messages.
pub fn without_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// At most 80 characters of an untrusted value, for a message.
fn shown(text: &str) -> String {
    text.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rules(block: &[&str], allow: &[&str], map: &[(&str, &str)]) -> HostRules {
        HostRules {
            block: block.iter().map(|s| s.to_string()).collect(),
            allow: allow.iter().map(|s| s.to_string()).collect(),
            map: map
                .iter()
                .map(|(host, to)| HostMapping {
                    host: host.to_string(),
                    to: to.to_string(),
                })
                .collect(),
        }
    }

    #[test]
    fn patterns_and_addresses() {
        for good in ["analytics.example.com", "*.doubleclick.net", "*", "x-y.z"] {
            assert_eq!(check_host_pattern(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "https://x.com",
            "x.com/path",
            "a,MAP b c",
            "a b",
            "x:80",
            "{a}",
        ] {
            assert!(check_host_pattern(bad).is_err(), "{bad}");
        }
        for good in ["127.0.0.1:8080", "[::1]:8080", "[::1]", "mirror", "m.x:1"] {
            assert_eq!(check_address(good), Ok(()), "{good}");
        }
        for bad in [
            "", ":80", "x:0", "x:99999", "x:port", "[nope]:1", "a b", "a,MAP", "[::1]x",
        ] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn chromium_rules_from_the_scenario() {
        let none = HostRules::default();
        assert!(none.is_empty());
        assert_eq!(none.resolver_rules(), None);
        assert!(none.url_patterns(&["127.0.0.1".into()]).is_empty());

        let r = rules(
            &["*.ads.test"],
            &["*.cdn.test"],
            &[("a.test", "127.0.0.1:1"), ("b.test", "[::1]:2")],
        );
        assert_eq!(r.check(), Ok(()));
        assert_eq!(
            r.resolver_rules().unwrap(),
            "MAP a.test 127.0.0.1:1,MAP b.test [::1]:2"
        );
        let patterns = r.url_patterns(&["127.0.0.1".into(), "[::1]".into()]);
        assert_eq!(
            patterns,
            [
                ("*://*.ads.test:*/*".to_string(), true),
                ("*://*.cdn.test:*/*".to_string(), false),
                ("*://127.0.0.1:*/*".to_string(), false),
                (r"*://\[\:\:1\]:*/*".to_string(), false),
                ("*://*:*/*".to_string(), true),
            ]
        );
        // Blocking alone leaves every other host reachable: no catch-all.
        let block_only = rules(&["x.test"], &[], &[]);
        assert_eq!(block_only.url_patterns(&[]).len(), 1);
    }

    #[test]
    fn hosts_of_base_urls() {
        assert_eq!(url_host("http://127.0.0.1:4000/x").unwrap(), "127.0.0.1");
        assert_eq!(url_host("https://u:p@shop.test").unwrap(), "shop.test");
        assert_eq!(url_host("http://[::1]:80/").unwrap(), "[::1]");
        assert_eq!(url_host("http://"), None);
        assert_eq!(url_host("nope"), None);
        assert_eq!(
            without_credentials("https://u:p@h:1/x?a@b"),
            "https://h:1/x?a@b"
        );
        assert_eq!(without_credentials("http://h/p@q"), "http://h/p@q");
    }

    proptest! {
        /// Whatever the scenario (or a peer talking to an agent) sends, checking never panics,
        /// and what passes the check cannot add a rule: no separator of either list.
        #[test]
        fn checked_rules_cannot_inject(host in "\\PC{0,40}", to in "\\PC{0,40}") {
            let r = rules(&[&host], &[&host], &[(&host, &to)]);
            if r.check().is_ok() {
                let line = r.resolver_rules().unwrap();
                prop_assert_eq!(line.matches(',').count(), 0);
                prop_assert_eq!(line.split(' ').count(), 3);
                for (pattern, _) in r.url_patterns(&[]) {
                    let syntax = pattern.contains(['{', '(', '\\', ' ']);
                    prop_assert!(!syntax, "{}", pattern);
                }
            }
        }
    }
}
