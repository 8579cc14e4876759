//! The hosts file: which machines to use and how to log in to them.
//!
//! ```toml
//! [defaults]                      # optional; every field can also be set per host
//! user = "loadtest"
//! identity = "~/.ssh/id_ed25519"  # or: agent = true (use the running ssh-agent)
//!
//! [[host]]
//! name = "lab-1"                  # optional; defaults to the address
//! address = "10.0.0.5"
//! port = 22
//! max_users = 200                 # optional cap, below what its RAM and cores allow
//!
//! [[host]]
//! address = "10.0.1.7"
//! jump = { address = "bastion.example.com", user = "ops" }
//! ```
//!
//! Errors name the file and line, like every other input liveload reads.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use liveload_core::Error;
use serde::Deserialize;

/// How to authenticate to a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// A private key file (OpenSSH format; ed25519 preferred), without a passphrase.
    IdentityFile(PathBuf),
    /// The keys of the running ssh-agent (`SSH_AUTH_SOCK`).
    Agent,
}

/// One host, resolved: every default applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// What errors and `liveload nodes` call it.
    pub name: String,
    /// DNS name or IP address.
    pub address: String,
    /// SSH port.
    pub port: u16,
    /// Login user.
    pub user: String,
    /// How to log in.
    pub auth: Auth,
    /// Never give this host more users than this.
    pub max_users: Option<u32>,
    /// Reach the host through this one (`ssh -J`).
    pub jump: Option<Box<Host>>,
}

impl Host {
    /// `user@address:port`, for messages.
    pub fn target(&self) -> String {
        format!("{}@{}:{}", self.user, self.address, self.port)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    defaults: Entry,
    #[serde(default)]
    host: Vec<Entry>,
}

/// A `[[host]]`, `[defaults]` or `jump` table as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: Option<String>,
    address: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    identity: Option<PathBuf>,
    agent: Option<bool>,
    max_users: Option<u32>,
    jump: Option<Box<Entry>>,
}

/// Read and resolve a hosts file.
pub fn load(path: &Path) -> Result<Vec<Host>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::InvalidOption {
        option: "--hosts".into(),
        message: format!("cannot read {}: {e}", path.display()),
    })?;
    parse(&text, &path.display().to_string())
}

/// Resolve the hosts in `text`; `origin` names the file in errors.
pub fn parse(text: &str, origin: &str) -> Result<Vec<Host>, Error> {
    let bad = |line: Option<usize>, message: String| Error::InvalidOption {
        option: "--hosts".into(),
        message: match line {
            Some(line) => format!("{origin}:{line}: {message}"),
            None => format!("{origin}: {message}"),
        },
    };
    let file: File = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
        bad(line, e.message().to_string())
    })?;
    if file.host.is_empty() {
        return Err(bad(
            None,
            "no hosts: add at least one [[host]] table with an address".into(),
        ));
    }
    let mut names = HashSet::new();
    let mut hosts = Vec::new();
    for (i, entry) in file.host.iter().enumerate() {
        let host = resolve(entry, &file.defaults, true)
            .map_err(|message| bad(None, format!("host #{}: {message}", i + 1)))?;
        if !names.insert(host.name.clone()) {
            return Err(bad(
                None,
                format!("two hosts are named '{}': names must be unique", host.name),
            ));
        }
        hosts.push(host);
    }
    Ok(hosts)
}

fn resolve(entry: &Entry, defaults: &Entry, top: bool) -> Result<Host, String> {
    let address = entry
        .address
        .clone()
        .ok_or("it has no address (address = \"10.0.0.5\")")?;
    let user = entry
        .user
        .clone()
        .or_else(|| defaults.user.clone())
        .or_else(|| std::env::var("USER").ok())
        .ok_or("it has no user (user = \"loadtest\", or set USER)")?;
    let identity = entry.identity.clone().or_else(|| defaults.identity.clone());
    let agent = entry.agent.or(defaults.agent).unwrap_or(false);
    let auth = match (identity, agent) {
        (Some(_), true) => return Err("set identity or agent = true, not both".into()),
        (Some(path), false) => Auth::IdentityFile(expand_home(&path)),
        (None, true) => Auth::Agent,
        (None, false) => Auth::IdentityFile(expand_home(Path::new("~/.ssh/id_ed25519"))),
    };
    let jump = match entry
        .jump
        .as_deref()
        .or(if top { defaults.jump.as_deref() } else { None })
    {
        Some(jump) if top => Some(Box::new(
            resolve(jump, defaults, false).map_err(|m| format!("its jump host: {m}"))?,
        )),
        Some(_) => return Err("a jump host cannot have a jump host of its own".into()),
        None => None,
    };
    if entry.max_users == Some(0) {
        return Err("max_users must be at least 1".into());
    }
    Ok(Host {
        name: entry.name.clone().unwrap_or_else(|| address.clone()),
        port: entry.port.or(defaults.port).unwrap_or(22),
        max_users: if top {
            entry.max_users.or(defaults.max_users)
        } else {
            None
        },
        address,
        user,
        auth,
        jump,
    })
}

/// `~/x` → `$HOME/x`.
fn expand_home(path: &Path) -> PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => path.to_path_buf(),
    }
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_and_hosts_override_them() {
        let hosts = parse(
            r#"
[defaults]
user = "loadtest"
identity = "/keys/id"
max_users = 50

[[host]]
name = "lab-1"
address = "10.0.0.5"

[[host]]
address = "10.0.0.6"
port = 2222
user = "root"
agent = false
identity = "/keys/other"
max_users = 10
jump = { address = "bastion", user = "ops" }
"#,
            "hosts.toml",
        )
        .unwrap();
        assert_eq!(hosts.len(), 2);
        assert_eq!(hosts[0].name, "lab-1");
        assert_eq!(hosts[0].user, "loadtest");
        assert_eq!(hosts[0].port, 22);
        assert_eq!(hosts[0].max_users, Some(50));
        assert_eq!(hosts[0].auth, Auth::IdentityFile("/keys/id".into()));
        assert_eq!(hosts[1].name, "10.0.0.6");
        assert_eq!(hosts[1].target(), "root@10.0.0.6:2222");
        assert_eq!(hosts[1].max_users, Some(10));
        let jump = hosts[1].jump.as_ref().unwrap();
        assert_eq!(jump.target(), "ops@bastion:22");
        assert_eq!(jump.auth, Auth::IdentityFile("/keys/id".into()));
    }

    #[test]
    fn mistakes_name_the_file_and_line() {
        let err = parse("[[host]]\naddress = \"a\"\nprot = 22\n", "hosts.toml").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("hosts.toml:3"), "{text}");
        assert!(text.contains("prot"), "{text}");
        let err = parse("[[host]]\nname = \"x\"\n", "h.toml").unwrap_err();
        assert!(err.to_string().contains("no address"), "{err}");
        let err = parse("", "h.toml").unwrap_err();
        assert!(err.to_string().contains("no hosts"), "{err}");
        let twice =
            "[[host]]\naddress = \"a\"\nuser = \"u\"\n[[host]]\naddress = \"a\"\nuser = \"u\"\n";
        assert!(
            parse(twice, "h.toml")
                .unwrap_err()
                .to_string()
                .contains("unique")
        );
        let both = "[[host]]\naddress = \"a\"\nuser = \"u\"\nagent = true\nidentity = \"k\"\n";
        assert!(
            parse(both, "h.toml")
                .unwrap_err()
                .to_string()
                .contains("not both")
        );
        let zero = "[[host]]\naddress = \"a\"\nuser = \"u\"\nmax_users = 0\n";
        assert!(
            parse(zero, "h.toml")
                .unwrap_err()
                .to_string()
                .contains("at least 1")
        );
    }
}
