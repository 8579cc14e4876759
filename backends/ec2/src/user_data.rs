//! The user data an agent instance boots with: a small `sh` script cloud-init runs once. It
//! writes the agent's launch (core's launch contract: settings as `/etc/liveload/agent.env`,
//! secrets as files under `/etc/liveload/files/`, all mode 600) and starts the
//! `liveload-agent.service` baked into the AMI (`images/ec2`), which moves the files into
//! [`LAUNCH_DIR`] for the agent's user; the agent deletes its secret files once read. The
//! script holds the run token and the TLS key: liveload never logs it.
//!
//! [`UserData::parse`] reads it back, for hosts that start agents without cloud-init (the
//! tests' stand-in for instances).

use liveload_core::launch::{Launch, LaunchFile, file};

/// Where the agent finds its launch files on an instance (the unit's `RuntimeDirectory`).
pub const LAUNCH_DIR: &str = "/run/liveload";

/// What the agent on an instance needs: its launch.
#[derive(Clone, PartialEq, Eq)]
pub struct UserData {
    /// Environment variables and secret files.
    pub launch: Launch,
}

impl std::fmt::Debug for UserData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The files hold secrets: names only (Launch's own Debug prints no contents).
        f.debug_struct("UserData")
            .field("launch", &self.launch)
            .finish()
    }
}

const ENV_END: &str = "LIVELOAD_ENV";
const FILE_END: &str = "LIVELOAD_FILE";

/// The file names the script may carry, as the contract names them (parsing accepts only these,
/// and `token.<n>`: a name from the script never becomes an arbitrary path).
const KNOWN_FILES: [&str; 3] = [file::TOKEN, file::TLS_CERT, file::TLS_KEY];

/// The name of the token of the instance with launch index `launch` in a batch's user data.
pub fn indexed_token_name(launch: u32) -> String {
    format!("{}.{launch}", file::TOKEN)
}

/// Is `name` one the script may carry?
fn known_file(name: &str) -> bool {
    KNOWN_FILES.contains(&name)
        || name
            .strip_prefix("token.")
            .is_some_and(|n| !n.is_empty() && n.len() < 5 && n.bytes().all(|b| b.is_ascii_digit()))
}

/// In a batch's user data: keep this instance's token (by its launch index, read from the
/// metadata service as root, IMDSv2) and remove the others'.
const KEEP_OWN_TOKEN: &str = "t=$(curl -sf -X PUT http://169.254.169.254/latest/api/token -H 'X-aws-ec2-metadata-token-ttl-seconds: 60')\n\
idx=$(curl -sf -H \"X-aws-ec2-metadata-token: $t\" http://169.254.169.254/latest/meta-data/ami-launch-index)\n\
mv \"/etc/liveload/files/token.$idx\" /etc/liveload/files/token\n\
rm -f /etc/liveload/files/token.*\n";

impl UserData {
    /// The user data script.
    pub fn render(&self) -> String {
        let mut script = String::from(
            "#!/bin/sh\n\
             # liveload agent settings, written by the liveload controller. Holds the run token.\n",
        );
        // Before anything else can fail: the instance powers off at the agent's TTL even if the
        // agent never starts (a bad AMI, a cloud-init failure), and powering off terminates it
        // (InstanceInitiatedShutdownBehavior=terminate). A transient systemd timer outlives
        // this script; `shutdown` is the fallback where systemd-run is missing.
        let ttl_s: u64 = self
            .launch
            .get(liveload_core::launch::var::TTL)
            .and_then(|t| t.parse().ok())
            .unwrap_or(3600);
        script.push_str(&format!(
            "systemd-run --on-active={ttl_s}s --unit=liveload-ttl /bin/systemctl poweroff \
             || shutdown -P +{} || true\n",
            ttl_s.div_ceil(60)
        ));
        script.push_str("set -e\numask 077\nmkdir -p /etc/liveload/files\n");
        script.push_str(&format!("cat > /etc/liveload/agent.env <<'{ENV_END}'\n"));
        for (key, value) in &self.launch.env {
            script.push_str(&format!("{key}={value}\n"));
        }
        script.push_str(&format!("{ENV_END}\n"));
        for launch_file in &self.launch.files {
            script.push_str(&format!(
                "cat > /etc/liveload/files/{} <<'{FILE_END}'\n{}\n{FILE_END}\n",
                launch_file.name,
                launch_file.contents.trim_end()
            ));
        }
        if self
            .launch
            .files
            .iter()
            .any(|f| f.name.starts_with("token."))
        {
            script.push_str(KEEP_OWN_TOKEN);
        }
        script.push_str("systemctl start --no-block liveload-agent.service\n");
        script
    }

    /// Read a launch back from a user data script made by [`render`](Self::render).
    pub fn parse(script: &str) -> Option<UserData> {
        let env_start = script.find(&format!("<<'{ENV_END}'\n"))? + ENV_END.len() + 5;
        let env_body = &script[env_start..];
        let env_body = &env_body[..env_body.find(&format!("\n{ENV_END}\n"))?];
        let mut env = Vec::new();
        for line in env_body.lines() {
            let (key, value) = line.split_once('=')?;
            let name = liveload_core::launch::var::ALL
                .iter()
                .find(|v| **v == key)?;
            env.push((*name, value.to_string()));
        }
        let mut files = Vec::new();
        let marker = "cat > /etc/liveload/files/";
        let mut rest = script;
        while let Some(at) = rest.find(marker) {
            let after = &rest[at + marker.len()..];
            let (name, after) = after.split_once(&format!(" <<'{FILE_END}'\n"))?;
            if !known_file(name) {
                return None;
            }
            let name = name.to_string();
            let end = after.find(&format!("\n{FILE_END}\n"))?;
            let contents = after[..end].to_string();
            // PEM files end with a newline; the token does not.
            let contents = if contents.starts_with("-----BEGIN") {
                contents + "\n"
            } else {
                contents
            };
            files.push(LaunchFile { name, contents });
            rest = &after[end..];
        }
        Some(UserData {
            launch: Launch { env, files },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use liveload_core::launch::{AgentSecrets, AgentSettings, var};

    #[test]
    fn the_launch_survives_the_round_trip() {
        let settings = AgentSettings {
            listen: "0.0.0.0:7070".into(),
            run_id: "r-1".into(),
            ttl_s: 600,
            grace_s: 30,
            ..Default::default()
        };
        let secrets = AgentSecrets {
            token: "abc123abc123abc123".into(),
            tls: Some((
                "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n".into(),
                "-----BEGIN PRIVATE KEY-----\nBBB\n-----END PRIVATE KEY-----\n".into(),
            )),
        };
        let data = UserData {
            launch: settings.launch(&secrets, LAUNCH_DIR),
        };
        let script = data.render();
        assert!(script.starts_with("#!/bin/sh\n"));
        // The TTL poweroff is scheduled first, before anything that could fail.
        let ttl_line = script
            .lines()
            .position(|l| l.starts_with("systemd-run --on-active=600s"))
            .expect("the TTL poweroff is scheduled");
        let first_write = script.lines().position(|l| l.contains("cat >")).unwrap();
        assert!(ttl_line < first_write, "{script}");
        assert!(script.contains("shutdown -P +10"));
        assert!(script.contains("systemctl start --no-block liveload-agent.service"));
        assert_eq!(UserData::parse(&script), Some(data.clone()));
        assert_eq!(
            data.launch.get(var::TOKEN_FILE),
            Some("/run/liveload/token")
        );
        // The script is valid sh.
        let out = std::process::Command::new("sh")
            .args(["-n", "-c", &script])
            .output()
            .unwrap();
        assert!(out.status.success());
        // Debug never shows the token.
        assert!(!format!("{data:?}").contains("abc123"));
        let plain = UserData {
            launch: settings.launch(
                &AgentSecrets {
                    tls: None,
                    ..secrets
                },
                LAUNCH_DIR,
            ),
        };
        assert_eq!(UserData::parse(&plain.render()), Some(plain));
    }

    #[test]
    fn a_batch_carries_every_token_and_keeps_its_own_at_boot() {
        let settings = AgentSettings {
            listen: "0.0.0.0:7070".into(),
            run_id: "r-1".into(),
            ttl_s: 600,
            grace_s: 30,
            ..Default::default()
        };
        let mut data = UserData {
            launch: settings.launch(&AgentSecrets::default(), LAUNCH_DIR),
        };
        data.launch.files.retain(|f| f.name != "token");
        for launch in 0..3 {
            data.launch.files.push(LaunchFile {
                name: indexed_token_name(launch),
                contents: format!("token-of-{launch}-xxxxxxxxxxxx"),
            });
        }
        let script = data.render();
        assert!(script.contains("meta-data/ami-launch-index"), "{script}");
        assert!(script.contains("rm -f /etc/liveload/files/token.*"));
        assert_eq!(UserData::parse(&script), Some(data));
        let out = std::process::Command::new("sh")
            .args(["-n", "-c", &script])
            .output()
            .unwrap();
        assert!(out.status.success());
    }

    #[test]
    fn a_foreign_file_name_is_refused() {
        let script = "cat > /etc/liveload/agent.env <<'LIVELOAD_ENV'\nLIVELOAD_AGENT_TTL=1\nLIVELOAD_ENV\n\
                      cat > /etc/liveload/files/../../etc/passwd <<'LIVELOAD_FILE'\nx\nLIVELOAD_FILE\n";
        assert_eq!(UserData::parse(script), None);
    }
}
