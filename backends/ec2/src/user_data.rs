//! The user data an agent instance boots with: a small `sh` script cloud-init runs once. It
//! writes the agent's settings to `/etc/liveload/` (mode 600) and starts the
//! `liveload-agent.service` baked into the AMI (`images/ec2`). It holds the run token and the
//! TLS key: liveload never logs it.
//!
//! [`AgentSettings::parse`] reads it back, for hosts that start agents without cloud-init (the
//! tests' stand-in for instances).

use std::collections::BTreeMap;

/// What the agent on an instance needs.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct AgentSettings {
    /// `LIVELOAD_*` environment variables (single-line values).
    pub env: BTreeMap<String, String>,
    /// The TLS certificate the agent serves (PEM).
    pub tls_cert_pem: Option<String>,
    /// Its private key (PEM).
    pub tls_key_pem: Option<String>,
}

impl std::fmt::Debug for AgentSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token and key are secrets: list names only.
        f.debug_struct("AgentSettings")
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("tls", &self.tls_cert_pem.is_some())
            .finish()
    }
}

const ENV_END: &str = "LIVELOAD_ENV";
const CERT_END: &str = "LIVELOAD_CERT";
const KEY_END: &str = "LIVELOAD_KEY";

impl AgentSettings {
    /// The user data script.
    pub fn render(&self) -> String {
        let mut script = String::from(
            "#!/bin/sh\n\
             # liveload agent settings, written by the liveload controller. Holds the run token.\n\
             set -e\numask 077\nmkdir -p /etc/liveload\n",
        );
        script.push_str(&format!("cat > /etc/liveload/agent.env <<'{ENV_END}'\n"));
        for (key, value) in &self.env {
            script.push_str(&format!("{key}={value}\n"));
        }
        script.push_str(&format!("{ENV_END}\n"));
        if let (Some(cert), Some(key)) = (&self.tls_cert_pem, &self.tls_key_pem) {
            script.push_str(&format!(
                "cat > /etc/liveload/tls.crt <<'{CERT_END}'\n{}\n{CERT_END}\n",
                cert.trim_end()
            ));
            script.push_str(&format!(
                "cat > /etc/liveload/tls.key <<'{KEY_END}'\n{}\n{KEY_END}\n",
                key.trim_end()
            ));
        }
        script.push_str("systemctl start --no-block liveload-agent.service\n");
        script
    }

    /// Read settings back from a user data script made by [`render`](Self::render).
    pub fn parse(script: &str) -> Option<AgentSettings> {
        let section = |end: &str| -> Option<String> {
            let start = script.find(&format!("<<'{end}'\n"))? + end.len() + 5;
            let body = &script[start..];
            let stop = body.find(&format!("\n{end}\n"))?;
            Some(body[..stop].to_string())
        };
        let env = section(ENV_END)?
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Some(AgentSettings {
            env,
            tls_cert_pem: section(CERT_END).map(|pem| pem + "\n"),
            tls_key_pem: section(KEY_END).map(|pem| pem + "\n"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_survive_the_round_trip() {
        let settings = AgentSettings {
            env: [
                ("LIVELOAD_TOKEN".to_string(), "abc123".to_string()),
                ("LIVELOAD_TTL".to_string(), "600".to_string()),
            ]
            .into_iter()
            .collect(),
            tls_cert_pem: Some(
                "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n".into(),
            ),
            tls_key_pem: Some(
                "-----BEGIN PRIVATE KEY-----\nBBB\n-----END PRIVATE KEY-----\n".into(),
            ),
        };
        let script = settings.render();
        assert!(script.starts_with("#!/bin/sh\n"));
        assert!(script.contains("systemctl start --no-block liveload-agent.service"));
        assert_eq!(AgentSettings::parse(&script), Some(settings.clone()));
        // The script is valid sh.
        let out = std::process::Command::new("sh")
            .args(["-n", "-c", &script])
            .output()
            .unwrap();
        assert!(out.status.success());
        // Debug never shows the token.
        assert!(!format!("{settings:?}").contains("abc123"));
        let plain = AgentSettings {
            tls_cert_pem: None,
            tls_key_pem: None,
            ..settings
        };
        assert_eq!(AgentSettings::parse(&plain.render()), Some(plain));
    }
}
