//! Chromium's command line: the switches every agent passes, the ones adopted to fit more
//! users per node, and an operator's own additions and removals.
//!
//! Chromium keeps only the last value of a repeated switch, so list-valued switches
//! (`--enable-features`, `--disable-features`, `--js-flags`, ...) given twice would silently
//! drop the first list. [`command_line`] merges them into one switch each.

/// The switches chromiumoxide 0.9 passed to Chromium by default (`DEFAULT_ARGS` in its
/// `browser/config.rs`, after Puppeteer's), kept so the browser behaves as it did before the
/// agent launched it itself: no background networking, throttling, first-run or sync.
const CHROMIUMOXIDE_DEFAULTS: &[&str] = &[
    "--disable-background-networking",
    "--enable-features=NetworkService,NetworkServiceInProcess",
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
    "--disable-breakpad",
    "--disable-client-side-phishing-detection",
    "--disable-component-extensions-with-background-pages",
    "--disable-default-apps",
    "--disable-dev-shm-usage",
    "--disable-features=TranslateUI",
    "--disable-hang-monitor",
    "--disable-ipc-flooding-protection",
    "--disable-popup-blocking",
    "--disable-prompt-on-repost",
    "--disable-renderer-backgrounding",
    "--disable-sync",
    "--force-color-profile=srgb",
    "--metrics-recording-only",
    "--no-first-run",
    "--enable-automation",
    "--password-store=basic",
    "--use-mock-keychain",
    "--enable-blink-features=IdleDetection",
    "--lang=en_US",
    // What its launcher added for the agent's configuration: no extensions, the old headless
    // mode (the one chromium-headless-shell implements), no scrollbars, no sound.
    "--disable-extensions",
    "--headless",
    "--hide-scrollbars",
    "--mute-audio",
];

/// The agent's own switches. The machine's network is closed except for the target, so
/// background traffic only costs CPU and fails.
const AGENT_SWITCHES: &[&str] = &[
    "--disable-gpu",
    "--disable-quic",
    "--disable-component-update",
    "--no-default-browser-check",
    // DevTools over descriptors 3 (commands in) and 4 (answers out), never a TCP port.
    "--remote-debugging-pipe",
];

/// Switches adopted for density: each was measured with `liveload bench users` on the demo
/// and the heavy page, kept only where it saved memory or CPU per user and the page still
/// behaved (README, "Density"; `scripts/density.sh` repeats the measurement).
const DENSITY_SWITCHES: &[&str] = &[];

/// Switches an operator cannot leave out: without them the agent cannot drive the browser
/// (`remote-debugging-pipe`) or the browser shows a window (`headless`).
const KEPT: &[&str] = &["remote-debugging-pipe", "headless"];

/// Switches whose value is a list Chromium reads once: repeated ones are merged.
const LIST_SWITCHES: &[(&str, &str)] = &[
    ("--enable-features", ","),
    ("--disable-features", ","),
    ("--enable-blink-features", ","),
    ("--disable-blink-features", ","),
    ("--js-flags", " "),
];

/// An operator's changes to the command line, read from the agent's environment (the same
/// knobs as k6's `K6_BROWSER_ARGS` and `K6_BROWSER_IGNORE_DEFAULT_ARGS`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tuning {
    /// Switches to add (`LIVELOAD_BROWSER_ARGS`, whitespace-separated).
    pub extra: Vec<String>,
    /// Default switches to leave out, by name (`LIVELOAD_BROWSER_IGNORE_DEFAULT_ARGS`,
    /// comma-separated; `--disable-sync` or `disable-sync`).
    pub ignore: Vec<String>,
    /// Keep chromiumoxide's per-page DevTools domains and buffers as they were
    /// (`LIVELOAD_BROWSER_DEVTOOLS=full`), to measure what trimming them saves.
    pub full_devtools: bool,
}

impl Tuning {
    /// The tuning in this process's environment (none when unset).
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).unwrap_or_default();
        use liveload_proto::launch::tuning;
        Tuning::parse(
            &var(tuning::ARGS),
            &var(tuning::IGNORE_DEFAULT_ARGS),
            &var(tuning::DEVTOOLS),
        )
    }

    /// The tuning from the three variables' values.
    pub fn parse(extra: &str, ignore: &str, devtools: &str) -> Self {
        Tuning {
            extra: extra.split_whitespace().map(str::to_string).collect(),
            ignore: ignore
                .split(',')
                .map(|s| s.trim().trim_start_matches("--").to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            full_devtools: devtools.trim() == "full",
        }
    }
}

/// The name of a switch: `--js-flags=--x` → `js-flags`.
fn name(switch: &str) -> &str {
    let bare = switch.trim_start_matches("--");
    bare.split_once('=').map_or(bare, |(name, _)| name)
}

/// Chromium's command line (without the profile directory and sandbox switches): the defaults
/// less `tuning.ignore`, the density switches, then `tuning.extra`; list switches merged.
pub fn command_line(tuning: &Tuning) -> Vec<String> {
    let defaults = CHROMIUMOXIDE_DEFAULTS
        .iter()
        .chain(AGENT_SWITCHES)
        .chain(DENSITY_SWITCHES)
        .filter(|s| KEPT.contains(&name(s)) || !tuning.ignore.iter().any(|i| i == name(s)))
        .map(|s| s.to_string());
    // No operator switch may open DevTools anywhere but the agent's pipe.
    let extra = tuning
        .extra
        .iter()
        .filter(|s| !name(s).starts_with("remote-debugging-"))
        .cloned();
    let mut line: Vec<String> = Vec::new();
    for switch in defaults.chain(extra) {
        let list = LIST_SWITCHES.iter().find(|(n, _)| name(n) == name(&switch));
        let merged = list.and_then(|(n, separator)| {
            let value = switch.split_once('=')?.1;
            let earlier = line.iter_mut().find(|s| name(s) == name(n))?;
            if !earlier
                .split_once('=')?
                .1
                .split(separator)
                .any(|v| v == value)
            {
                earlier.push_str(separator);
                earlier.push_str(value);
            }
            Some(())
        });
        if merged.is_none() {
            line.push(switch);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_switches_are_merged_into_one() {
        let tuning = Tuning::parse(
            "--disable-features=Foo --js-flags=--a --js-flags=--b --x",
            "",
            "",
        );
        let line = command_line(&tuning);
        let disabled: Vec<_> = line
            .iter()
            .filter(|s| s.starts_with("--disable-features="))
            .collect();
        assert_eq!(disabled.len(), 1, "{line:?}");
        assert!(disabled[0].contains("TranslateUI") && disabled[0].ends_with(",Foo"));
        assert!(line.contains(&"--js-flags=--a --b".to_string()), "{line:?}");
        assert_eq!(line.last().unwrap(), "--x");
    }

    #[test]
    fn ignored_defaults_are_left_out_by_name() {
        let tuning = Tuning::parse("", "--disable-sync, disable-gpu,,", "");
        let line = command_line(&tuning);
        assert!(
            !line
                .iter()
                .any(|s| s == "--disable-sync" || s == "--disable-gpu")
        );
        assert!(line.contains(&"--disable-quic".to_string()));
        assert_eq!(command_line(&Tuning::default()).len(), line.len() + 2);
    }

    #[test]
    fn the_pipe_stays_and_no_port_opens() {
        let tuning = Tuning::parse(
            "--remote-debugging-port=9222 --remote-debugging-address=0.0.0.0 --x",
            "remote-debugging-pipe,headless",
            "",
        );
        let line = command_line(&tuning);
        assert!(line.contains(&"--remote-debugging-pipe".to_string()));
        assert!(line.contains(&"--headless".to_string()));
        assert!(
            !line.iter().any(|s| s.starts_with("--remote-debugging-port")
                || s.starts_with("--remote-debugging-address"))
        );
        assert_eq!(line.last().unwrap(), "--x");
    }

    #[test]
    fn devtools_full_only_when_asked() {
        assert!(Tuning::parse("", "", " full ").full_devtools);
        assert!(!Tuning::parse("", "", "yes").full_devtools);
    }
}
