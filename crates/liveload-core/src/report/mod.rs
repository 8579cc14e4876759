//! Rendering a [`RunReport`] for people: a self-contained HTML page ([`html`]), a Markdown
//! summary ([`markdown`]) and a side-by-side comparison of two runs ([`compare_markdown`]).
//!
//! The HTML page works offline and forever: inline CSS, charts drawn as inline SVG, no script,
//! no font or library from a CDN. Everything here is pure string building; the CLI writes the
//! files.
//!
//! # Escaping is the default, not a habit
//!
//! Much of a report is text that came from the target and the scenario: error messages, step
//! names, URLs, scenario names, node ids, threshold expressions. Written into HTML by hand, each
//! of those is one forgotten `esc()` away from a script running in the browser of whoever opens
//! the report. So the page is a [MiniJinja](https://docs.rs/minijinja) template with
//! auto-escaping on for `.html` templates: every `{{ value }}` is escaped unless someone marks
//! it safe, and nothing here does. Rust computes what to show (numbers formatted, rows chosen),
//! the templates under `templates/` decide where it goes, and the engine escapes it.
//!
//! Why MiniJinja rather than Askama: with `default-features = false` and only the `serde` and
//! `multi_template` features it adds exactly one crate to the build (`minijinja` itself; `serde`
//! is already here), and no proc-macro. Askama would add four crates of its own
//! (`askama`, `askama_derive`, `askama_macros`, `askama_parser`) plus `winnow` and
//! `rustc-hash`, and its templates compile inside a derive macro on every build of this crate.
//! What we give up is compile-time checking of the templates: the tests render every template,
//! and the environment treats an undefined variable as an error, so a typo fails a test instead
//! of printing an empty cell. The templates are embedded with `include_str!`: the binary needs
//! no file at run time.
//!
//! Markdown has no template engine worth the name; [`markdown`] and [`compare_markdown`] send
//! every piece of run text through one escaping helper instead (see the `markdown` module).

mod chart;
mod html;
mod markdown;
#[cfg(test)]
mod tests;

pub use html::{html, live_charts};
pub use markdown::{compare_markdown, markdown};

use crate::run::RunReport;

/// One mebibyte, for memory figures.
const MIB: f64 = 1024.0 * 1024.0;

/// The most frequent error messages (`error:<message>` counters), most frequent first.
pub fn top_errors(r: &RunReport, n: usize) -> Vec<(&str, u64)> {
    let mut errors: Vec<(&str, u64)> = r
        .counters
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("error:").map(|m| (m, *v)))
        .collect();
    errors.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    errors.truncate(n);
    errors
}

/// A run's verdict in one word.
pub fn verdict(r: &RunReport) -> &'static str {
    if r.aborted.is_some() {
        "ABORTED"
    } else if !r.thresholds_passed() {
        "THRESHOLDS FAILED"
    } else if r.succeeded() {
        "PASSED"
    } else {
        "USERS FAILED"
    }
}

/// Failed iterations / all iterations.
pub fn error_rate(r: &RunReport) -> f64 {
    // In floating point: the counts come from agents or a result.json, and may be anything.
    let total = r.iterations_ok as f64 + r.iterations_failed as f64;
    if total == 0.0 {
        0.0
    } else {
        r.iterations_failed as f64 / total
    }
}

/// Format a Unix millisecond timestamp as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
