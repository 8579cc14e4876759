//! One Chromium per node, one browser context per user.
//!
//! A browser context is Chromium's cheap, isolated profile (cookies, storage, cache): the cost
//! of a user is one context with one page, not one browser. The browser is launched once, at
//! `Prepare`, and closed and waited on at exit so no Chromium process outlives the agent.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result};
use chromiumoxide::Page;
use chromiumoxide::browser::Browser;
use chromiumoxide::cdp::browser_protocol::browser::BrowserContextId;
use chromiumoxide::cdp::browser_protocol::target::{
    CreateBrowserContextParams, CreateTargetParams,
};
use chromiumoxide::handler::HandlerConfig;
use futures_util::StreamExt;
use tokio::task::JoinHandle;

/// The node's browser.
pub struct NodeBrowser {
    browser: Browser,
    handler: JoinHandle<()>,
    /// Chromium itself: started by the agent, not by chromiumoxide (which would open a
    /// DevTools port), and killed if the agent drops it.
    child: tokio::process::Child,
    relay: crate::relay::Relay,
    _profile_dir: tempfile::TempDir,
    /// Keep chromiumoxide's per-page DevTools domains as they are (see [`trim_devtools`]).
    full_devtools: bool,
    /// The host rules it was launched with (the resolver's) and applies to each page.
    hosts: HostPolicy,
}

/// What a scenario's host rules make of the browser: its resolver's mappings (on the command
/// line, so for the whole browser) and the URL patterns each page blocks or lets through
/// (`Network.setBlockedURLs`, so each blocked request is reported as such and counted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostPolicy {
    /// `--host-resolver-rules`, when hosts are mapped.
    pub resolver_rules: Option<String>,
    /// Each page's patterns, in order, with whether they block.
    pub url_patterns: Vec<(String, bool)>,
}

impl HostPolicy {
    /// The policy of an assignment, after checking its rules again: they come from the
    /// network and end up on Chromium's command line.
    pub fn for_assignment(assignment: &liveload_proto::Assignment) -> Result<Self, String> {
        let rules = &assignment.host_rules;
        rules.check()?;
        let targets = std::iter::once(&assignment.base_url).chain(&assignment.base_urls);
        let hosts: Vec<String> = targets
            .filter_map(|u| liveload_proto::url_host(u))
            .collect();
        Ok(HostPolicy {
            resolver_rules: rules.resolver_rules(),
            url_patterns: rules.url_patterns(&hosts),
        })
    }
}

/// How long Chromium has to start and answer its first command.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);

/// One user's isolated context and its page.
pub struct UserContext {
    /// The page the user drives.
    pub page: Page,
    /// Whose iteration the page is in, for its HTTP trace records.
    pub recording: std::sync::Arc<crate::records::PageRecording>,
    /// The way to send the page's navigations around chromiumoxide's queue.
    pub side: crate::relay::SideChannel,
    id: BrowserContextId,
    watcher: Option<crate::observe::PageWatcher>,
}

impl NodeBrowser {
    /// Launch Chromium headless with a fresh profile directory, its DevTools on a pipe (see
    /// `chromium.rs` and `relay.rs`): no process on the node can reach it but this agent.
    #[cfg(test)]
    pub async fn launch(executable: &Path, no_sandbox: bool) -> Result<Self> {
        let tuning = crate::switches::Tuning::from_env();
        Self::launch_tuned(executable, no_sandbox, &tuning, HostPolicy::default()).await
    }

    /// [`launch`](Self::launch) with an explicit tuning of the command line and host rules.
    pub async fn launch_tuned(
        executable: &Path,
        no_sandbox: bool,
        tuning: &crate::switches::Tuning,
        hosts: HostPolicy,
    ) -> Result<Self> {
        let profile_dir = tempfile::Builder::new()
            .prefix("liveload-chromium-")
            .tempdir()
            .context("creating the Chromium profile directory")?;
        let mut args = crate::chromium::args(profile_dir.path(), no_sandbox, tuning);
        if let Some(rules) = &hosts.resolver_rules {
            args.push(format!("--host-resolver-rules={rules}"));
        }
        let mut spawned = crate::chromium::spawn(executable, &args)?;
        let relay = crate::relay::start(spawned.to_chromium, spawned.from_chromium).await?;
        let config = HandlerConfig {
            request_timeout: Duration::from_secs(30),
            // No device emulation: one CDP round trip less per page; the window size stands.
            viewport: None,
            ..HandlerConfig::default()
        };
        let connected = async {
            let (browser, mut handler) = Browser::connect_with_config(relay.url.clone(), config)
                .await
                .context("connecting to Chromium's DevTools relay")?;
            // The handler drives the CDP connection; it must be polled for the browser to work.
            let handler = tokio::spawn(async move { while handler.next().await.is_some() {} });
            // The first answer proves Chromium is up and reading its pipe.
            browser
                .version()
                .await
                .context("asking Chromium its version")?;
            anyhow::Ok((browser, handler))
        };
        let launched = tokio::select! {
            connected = tokio::time::timeout(LAUNCH_TIMEOUT, connected) => match connected {
                Ok(result) => result,
                Err(_) => Err(anyhow::anyhow!("Chromium did not answer within {LAUNCH_TIMEOUT:?}")),
            },
            status = spawned.child.wait() => Err(anyhow::anyhow!("Chromium exited while starting ({})",
                status.map_or_else(|e| e.to_string(), |s| s.to_string()))),
        };
        let (browser, handler) = launched.with_context(|| {
            format!(
                "launching {}; its last words: {}",
                executable.display(),
                spawned.stderr_tail.text()
            )
        })?;
        Ok(NodeBrowser {
            browser,
            handler,
            child: spawned.child,
            relay,
            _profile_dir: profile_dir,
            full_devtools: tuning.full_devtools,
            hosts,
        })
    }

    /// The host rules this browser was launched with.
    pub fn host_policy(&self) -> &HostPolicy {
        &self.hosts
    }

    /// A fresh context with one blank page, for one user, its page events counted into
    /// `recorder`.
    pub async fn new_user(
        &self,
        recorder: std::sync::Arc<crate::recorder::Recorder>,
    ) -> Result<UserContext> {
        let id = self
            .browser
            .create_browser_context(CreateBrowserContextParams::default())
            .await
            .context("creating a browser context")?;
        let params = CreateTargetParams::builder()
            .url("about:blank")
            .browser_context_id(id.clone())
            .build()
            .map_err(anyhow::Error::msg)?;
        let page = match self.browser.new_page(params).await {
            Ok(page) => page,
            Err(e) => {
                let _ = self.browser.dispose_browser_context(id).await;
                return Err(e).context("opening a page");
            }
        };
        if !self.full_devtools
            && let Err(e) = trim_devtools(&page).await
        {
            tracing::debug!(error = %format!("{e:#}"), "page keeps its default DevTools domains");
        }
        // A page that would load hosts the scenario blocks is no user of this run.
        if let Err(e) = block_urls(&page, &self.hosts.url_patterns).await {
            let _ = page.close().await;
            let _ = self.browser.dispose_browser_context(id).await;
            return Err(e.context("applying the scenario's host rules to a page"));
        }
        let recording = std::sync::Arc::new(crate::records::PageRecording::default());
        let watcher = match crate::observe::watch(&page, recorder, recording.clone()).await {
            Ok(watcher) => Some(watcher),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "page events will not be counted");
                None
            }
        };
        Ok(UserContext {
            page,
            recording,
            side: self.relay.side.clone(),
            id,
            watcher,
        })
    }

    /// Close a user's page and dispose of its context (frees its memory in Chromium).
    pub async fn end_user(&self, user: UserContext) {
        if let Some(watcher) = user.watcher {
            watcher.finish(&user.page).await;
        }
        let _ = user.page.close().await;
        let _ = self.browser.dispose_browser_context(user.id).await;
    }

    /// How many browser contexts Chromium holds, as it lists them itself.
    #[cfg(test)]
    pub async fn context_count(&self) -> Result<usize> {
        use chromiumoxide::cdp::browser_protocol::target::GetBrowserContextsParams;
        let listed = self
            .browser
            .execute(GetBrowserContextsParams::default())
            .await?;
        Ok(listed.result.browser_context_ids.len())
    }

    /// Count page (renderer) crashes into `recorder` as `browser.page_crashes`.
    pub async fn watch_crashes(
        &self,
        recorder: std::sync::Arc<crate::recorder::Recorder>,
    ) -> Result<JoinHandle<()>> {
        use chromiumoxide::cdp::browser_protocol::target::EventTargetCrashed;
        let mut crashes = self.browser.event_listener::<EventTargetCrashed>().await?;
        Ok(tokio::spawn(async move {
            while crashes.next().await.is_some() {
                recorder.count("browser.page_crashes", 1);
            }
        }))
    }

    /// The browser process id (for the benchmark's memory figures).
    pub fn pid(&mut self) -> Option<u32> {
        self.child.id()
    }

    /// Close the browser and wait for its process, killing it if it does not exit in time.
    pub async fn close(mut self) {
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = self.browser.close().await;
            let _ = self.child.wait().await;
        })
        .await;
        if closed.is_err() {
            let _ = self.child.kill().await;
        }
        self.handler.abort();
    }
}

/// Turn off what chromiumoxide enables on every page and liveload never reads: the
/// `Performance` domain (Chromium then keeps collecting page metrics) and the `Log` domain
/// (browser log entries sent over the pipe; console messages come from `Runtime`). And
/// re-enable `Network` with small body buffers: by default the renderer keeps up to 100 MB of
/// response bodies per page for `Network.getResponseBody`, which liveload never calls.
async fn trim_devtools(page: &Page) -> Result<()> {
    use chromiumoxide::cdp::browser_protocol::{log, network, performance};
    page.execute(performance::DisableParams::default()).await?;
    page.execute(log::DisableParams::default()).await?;
    let network = network::EnableParams::builder()
        .max_total_buffer_size(NETWORK_BUFFER_BYTES)
        .max_resource_buffer_size(NETWORK_BUFFER_BYTES)
        .build();
    page.execute(network).await?;
    Ok(())
}

/// Block (or let through) `patterns` on `page`, in order; nothing to do without any.
async fn block_urls(page: &Page, patterns: &[(String, bool)]) -> Result<()> {
    use chromiumoxide::cdp::browser_protocol::network::{BlockPattern, SetBlockedUrLsParams};
    if patterns.is_empty() {
        return Ok(());
    }
    let patterns = patterns
        .iter()
        .map(|(pattern, block)| BlockPattern::new(pattern.clone(), *block));
    let params = SetBlockedUrLsParams::builder()
        .url_patterns(patterns)
        .build();
    page.execute(params).await?;
    Ok(())
}

/// The response bodies a page's DevTools agent may keep (bytes): none are ever read.
const NETWORK_BUFFER_BYTES: i64 = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{listening_ports, process_tree};

    /// Chromium runs with its DevTools on a pipe: neither it nor any of its helpers listens on
    /// a TCP port, the relay's port is closed once the agent is connected, and the browser
    /// works (a user's context and page). Before the pipe, Chromium listened on the port
    /// chromiumoxide gave it, and any local process could drive it from there.
    #[tokio::test]
    async fn chromium_listens_on_no_port_and_the_relay_closes_its_own() {
        let path = crate::facts::find_chromium(None).expect("Chromium on PATH");
        let as_root = rustix::process::geteuid().is_root();
        let mut browser = NodeBrowser::launch(&path, as_root).await.expect("launched");
        let recorder = std::sync::Arc::new(crate::recorder::Recorder::default());
        let user = browser.new_user(recorder).await.expect("a user's page");
        let pid = browser.pid().expect("running");
        let tree = process_tree(pid);
        assert!(tree.len() > 1, "Chromium's helpers were found: {tree:?}");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let cmdline = String::from_utf8_lossy(&cmdline);
        assert!(cmdline.contains("--remote-debugging-pipe"), "{cmdline}");
        assert_eq!(listening_ports(&tree), Vec::<u16>::new(), "{tree:?}");
        let relay = browser.relay.url.clone();
        let port = relay.trim_start_matches("ws://").split('/').next().unwrap();
        assert!(
            tokio::net::TcpStream::connect(port).await.is_err(),
            "the relay still listens on {port}"
        );
        browser.end_user(user).await;
        browser.close().await;
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z")),
            "Chromium exited on close"
        );
    }
}
