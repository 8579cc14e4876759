//! One Chromium per node, one browser context per user.
//!
//! A browser context is Chromium's cheap, isolated profile (cookies, storage, cache): the cost
//! of a user is one context with one page, not one browser. The browser is launched once, at
//! `Prepare`, and closed and waited on at exit so no Chromium process outlives the agent.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use chromiumoxide::Page;
use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::browser_protocol::browser::BrowserContextId;
use chromiumoxide::cdp::browser_protocol::target::{
    CreateBrowserContextParams, CreateTargetParams,
};
use futures_util::StreamExt;
use tokio::task::JoinHandle;

/// The node's browser.
pub struct NodeBrowser {
    browser: Browser,
    handler: JoinHandle<()>,
    _profile_dir: tempfile::TempDir,
}

/// One user's isolated context and its page.
pub struct UserContext {
    /// The page the user drives.
    pub page: Page,
    id: BrowserContextId,
    watcher: Option<tokio::task::JoinHandle<()>>,
}

impl NodeBrowser {
    /// Launch Chromium headless with a fresh profile directory.
    pub async fn launch(executable: &PathBuf, no_sandbox: bool) -> Result<Self> {
        let profile_dir = tempfile::Builder::new()
            .prefix("liveload-chromium-")
            .tempdir()
            .context("creating the Chromium profile directory")?;
        let mut config = BrowserConfig::builder()
            .chrome_executable(executable)
            .user_data_dir(profile_dir.path())
            .launch_timeout(Duration::from_secs(30))
            .request_timeout(Duration::from_secs(30))
            // No device emulation: one CDP round trip less per page; the window size stands.
            .viewport(None)
            // The machine's network is closed except for the target; background traffic only
            // costs CPU and fails.
            .args([
                "--disable-gpu",
                "--disable-quic",
                "--disable-component-update",
                "--mute-audio",
                "--no-default-browser-check",
            ]);
        if no_sandbox {
            config = config.no_sandbox();
        }
        let config = config.build().map_err(anyhow::Error::msg)?;
        let (browser, mut handler) = Browser::launch(config)
            .await
            .with_context(|| format!("launching {}", executable.display()))?;
        // The handler drives the CDP connection; it must be polled for the browser to work.
        let handler = tokio::spawn(async move { while handler.next().await.is_some() {} });
        Ok(NodeBrowser {
            browser,
            handler,
            _profile_dir: profile_dir,
        })
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
        let watcher = match crate::observe::watch(&page, recorder).await {
            Ok(watcher) => Some(watcher),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "page events will not be counted");
                None
            }
        };
        Ok(UserContext { page, id, watcher })
    }

    /// Close a user's page and dispose of its context (frees its memory in Chromium).
    pub async fn end_user(&self, user: UserContext) {
        if let Some(watcher) = user.watcher {
            watcher.abort();
        }
        let _ = user.page.close().await;
        let _ = self.browser.dispose_browser_context(user.id).await;
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
        self.browser
            .get_mut_child()
            .and_then(|c| c.as_mut_inner().id())
    }

    /// Close the browser and wait for its process, killing it if it does not exit in time.
    pub async fn close(mut self) {
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = self.browser.close().await;
            let _ = self.browser.wait().await;
        })
        .await;
        if closed.is_err() {
            let _ = self.browser.kill().await;
        }
        self.handler.abort();
    }
}
