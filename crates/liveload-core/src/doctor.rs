//! `liveload doctor`: check what a run will need before it creates (and bills) anything.
//!
//! Every backend knows what can go wrong on its provider — a token without access, an image
//! not pushed, a security group that does not admit the controller — and each of those, left
//! to the run, shows up one node-creation timeout at a time after machines were paid for. So
//! [`crate::Backend::doctor`] asks the provider the cheap questions first, each answer one
//! [`Check`]: passed, or failed with the exact fix. A check never creates anything.
//!
//! The checks' ids are stable (`fly.token`, `ec2.ami`, …): tests and scripts match on them,
//! and `--output json` prints them.

use serde::Serialize;

/// One line of `liveload doctor`: what was checked, what was found, and how to fix a failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// A stable id: `BACKEND.WHAT` (`local.chromium`, `fly.image`, `ssh.host_key`).
    pub id: String,
    /// Whether the check passed.
    pub passed: bool,
    /// What was found, for people: a version, a count, the cause of a failure.
    pub detail: String,
    /// How to fix a failure: a command or the option to change. `None` when passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    /// A passed check.
    pub fn pass(id: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            id: id.into(),
            passed: true,
            detail: detail.into(),
            fix: None,
        }
    }

    /// A failed check, with its fix.
    pub fn fail(id: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            id: id.into(),
            passed: false,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    /// A check from an error: failed, with the error's message as the detail and its hint
    /// (or `fix`, when the error has none) as the fix.
    pub fn from_error(id: impl Into<String>, error: &crate::Error, fix: &str) -> Check {
        let hint = error.hint();
        Check::fail(
            id,
            error.to_string(),
            hint.as_deref().unwrap_or(fix).to_string(),
        )
    }
}

/// What the run being checked needs, when `doctor` was given a scenario: the plan's figures.
#[derive(Debug, Clone, Default)]
pub struct Needs {
    /// Nodes the plan boots.
    pub nodes: Option<u64>,
    /// Users per node the plan puts on each node.
    pub users_per_node: Option<u64>,
    /// Users the scenario asks for.
    pub users: Option<u64>,
    /// The address range the controller dials agents from (`--controller-cidr`), for checks
    /// of firewall rules; `None` when unknown.
    pub controller_cidr: Option<String>,
}

/// Whether an agent of protocol version `found` (read from an image's label or an AMI's tag)
/// works with this controller: only the same protocol does (the agent refuses another in its
/// `Hello` answer, after the machine was paid for).
pub fn agent_compatible(found: &str) -> bool {
    found.trim() == crate::proto::PROTOCOL_VERSION.to_string()
}

/// The label (images) and tag (AMIs) that carry the agent's protocol version.
pub const PROTOCOL_LABEL: &str = "io.liveload.agent.protocol";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_from_an_error_keeps_its_hint_as_the_fix() {
        let err = crate::Error::from(
            crate::BackendError::new("fly", crate::BackendErrorKind::Auth, "bad token")
                .hint("set FLY_API_TOKEN"),
        );
        let check = Check::from_error("fly.token", &err, "fallback");
        assert!(!check.passed);
        assert_eq!(check.fix.as_deref(), Some("set FLY_API_TOKEN"));
        assert!(check.detail.contains("bad token"), "{}", check.detail);
        let plain = crate::Error::InvalidOption {
            option: "--x".into(),
            message: "no".into(),
        };
        let check = Check::from_error("x", &plain, "fallback");
        assert_eq!(check.fix.as_deref(), Some("fallback"));
    }

    #[test]
    fn only_the_same_protocol_is_compatible() {
        let ours = crate::proto::PROTOCOL_VERSION;
        assert!(agent_compatible(&ours.to_string()));
        assert!(!agent_compatible(&(ours + 1).to_string()));
        assert!(!agent_compatible("0.1.0"));
        assert!(!agent_compatible(""));
    }
}
