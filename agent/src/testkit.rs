//! What the agent's browser tests share: a real Chromium with one user's page, and the demo
//! target serving the pages the tests act on. Steps are written as scenario YAML and lowered by
//! the real parser, so a test reads like the scenario a user would write.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use liveload_proto::Step;

use crate::browser::{NodeBrowser, UserContext};
use crate::recorder::Recorder;
use crate::secrets::Secrets;
use crate::steps::{UserState, run_steps};

/// A browser, one user's page in it, and the demo target.
pub struct Browser {
    browser: NodeBrowser,
    /// The user's context (and page).
    pub user: Option<UserContext>,
    /// Where its metrics and errors go.
    pub recorder: Arc<Recorder>,
    /// The demo target's base URL.
    pub base_url: String,
    /// Schemes the test allows beyond the web's.
    pub allow_schemes: Vec<String>,
}

impl Browser {
    /// Launch Chromium (as the agent would on this machine) and start the demo target.
    pub async fn launch() -> Browser {
        let path = crate::facts::find_chromium(None)
            .expect("no Chromium on PATH: run scripts/test.sh, which installs it");
        let as_root = rustix::process::geteuid().is_root();
        let browser = NodeBrowser::launch(&path, as_root)
            .await
            .expect("Chromium starts");
        let recorder = Arc::new(Recorder::default());
        let user = browser
            .new_user(recorder.clone())
            .await
            .expect("a user context");
        let address = demo_target::spawn(([127, 0, 0, 1], 0).into())
            .await
            .expect("the demo target starts");
        Browser {
            browser,
            user: Some(user),
            recorder,
            base_url: format!("http://{address}"),
            allow_schemes: Vec::new(),
        }
    }

    /// The user's page.
    pub fn page(&self) -> &chromiumoxide::Page {
        &self.user.as_ref().expect("a user").page
    }

    /// A user state on this page, with `step_timeout` and `secrets`.
    pub fn user(&self, step_timeout: Duration, secrets: Secrets) -> UserState<'_> {
        UserState {
            page: Some(self.page()),
            side: self.user.as_ref().map(|u| &u.side),
            vars: HashMap::from([
                ("user_id".into(), "0".into()),
                ("iteration".into(), "0".into()),
            ]),
            base_url: &self.base_url,
            allow_schemes: &self.allow_schemes,
            step_timeout,
            recorder: &self.recorder,
            secrets,
            tracer: None,
            depth: 0,
            coordination: None,
            recorded: false,
            user_id: 0,
            iteration: 0,
            protocol: None,
            engine: liveload_proto::Engine::Browser,
            running_step: None,
        }
    }

    /// Run `yaml` (a scenario's steps) with `step_timeout`; the error as the report would
    /// count it (`{e:#}`).
    pub async fn run(&self, step_timeout: Duration, yaml: &str) -> Result<(), String> {
        let mut user = self.user(step_timeout, Secrets::default());
        run_steps(&mut user, &steps(yaml))
            .await
            .map(|_| ())
            .map_err(|e| format!("{e:#}"))
    }

    /// Evaluate `expression` in the page.
    pub async fn eval(&self, expression: &str) -> serde_json::Value {
        crate::steps::cdp::evaluate(self.page(), expression.to_string())
            .await
            .expect("the test's script runs")
    }

    /// Close the page and the browser.
    pub async fn close(mut self) {
        if let Some(user) = self.user.take() {
            self.browser.end_user(user).await;
        }
        self.browser.close().await;
    }
}

/// The steps of a scenario whose `steps:` are `yaml` (indented by two spaces per item).
pub fn steps(yaml: &str) -> Vec<Step> {
    let text = format!("name: t\nbase_url: http://127.0.0.1:1\nsteps:\n{yaml}");
    liveload_core::scenario::Scenario::from_yaml(std::path::Path::new("t.yaml"), &text)
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .steps
}

/// `pid` and every process descended from it.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            // Fields after the ")" that closes the command name: state ppid ...
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?;
            Some((p, ppid.parse().ok()?))
        })
        .collect();
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    tree
}

/// The TCP ports (IPv4 and IPv6) that any of `pids` listens on: the listening sockets of
/// `/proc/net/tcp*` matched by inode against the processes' descriptors.
pub fn listening_ports(pids: &[u32]) -> Vec<u16> {
    let mut listening = HashMap::new(); // inode -> port
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st ... inode (field 9); st 0A is LISTEN.
            if f.len() > 9 && f[3] == "0A" {
                let port = f[1].rsplit(':').next().unwrap_or("0");
                let port = u16::from_str_radix(port, 16).unwrap_or(0);
                listening.insert(f[9].to_string(), port);
            }
        }
    }
    let mut ports = Vec::new();
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let link = link.to_string_lossy();
            if let Some(inode) = link
                .strip_prefix("socket:[")
                .and_then(|l| l.strip_suffix(']'))
                && let Some(port) = listening.get(inode)
            {
                ports.push(*port);
            }
        }
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}
