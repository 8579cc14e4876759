//! The small text jobs of steps: filling `{{templates}}`, joining URLs, and quoting values
//! for JavaScript.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use liveload_proto::Generator;

/// Fill `{{name}}` placeholders from the user's variables, or with a generator's fresh value
/// (`{{uuid}}`, `{{seq}}`, ...); names were checked before the run.
pub fn fill_template(text: &str, vars: &HashMap<String, String>) -> String {
    if !text.contains("{{") {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                let name = after[..end].trim();
                match vars.get(name) {
                    Some(value) => out.push_str(value),
                    None => {
                        if let Some(Ok(generator)) = Generator::parse(name) {
                            out.push_str(&generate(generator));
                        }
                    }
                }
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Where this agent's `{{seq}}` values start: its first user id times a billion, so that two
/// nodes' values never meet (their first user ids differ by at least one). Process-wide: an
/// agent serves one run at a time, and users added later share their node's sequence.
static SEQ_BASE: AtomicU64 = AtomicU64::new(0);
/// The next `{{seq}}` value's offset from [`SEQ_BASE`].
static SEQ_NEXT: AtomicU64 = AtomicU64::new(0);
/// How many `{{seq}}` values one node has before they could meet the next node's.
const SEQ_PER_NODE: u64 = 1_000_000_000;

/// Start this agent's `{{seq}}` values for a node whose users begin at `first_user_id`.
pub fn start_sequence(first_user_id: u64) {
    SEQ_BASE.store(
        first_user_id.saturating_mul(SEQ_PER_NODE),
        Ordering::Relaxed,
    );
    SEQ_NEXT.store(0, Ordering::Relaxed);
}

/// A generator's fresh value.
fn generate(generator: Generator) -> String {
    use rand::Rng as _;
    let mut rng = rand::rng();
    match generator {
        Generator::Uuid => {
            let mut bytes: [u8; 16] = rng.random();
            bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
            bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            format!(
                "{}-{}-{}-{}-{}",
                &hex[..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..]
            )
        }
        Generator::Seq => {
            let next = SEQ_NEXT.fetch_add(1, Ordering::Relaxed);
            SEQ_BASE
                .load(Ordering::Relaxed)
                .saturating_add(next)
                .to_string()
        }
        Generator::RandomString(length) => (0..length)
            .map(|_| rng.sample(rand::distr::Alphanumeric) as char)
            .collect(),
        Generator::RandomInt(low, high) => rng.random_range(low..=high).to_string(),
    }
}

/// Join a step URL to the base URL (a URL with a scheme, like `https:`, `about:` or `data:`,
/// stands as it is).
pub fn resolve_url(base: &str, url: &str) -> String {
    let has_scheme = url.split_once(':').is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
    });
    if has_scheme {
        url.to_string()
    } else if url.starts_with('/') {
        format!("{}{url}", base.trim_end_matches('/'))
    } else {
        format!("{}/{url}", base.trim_end_matches('/'))
    }
}

/// The schemes users may always open. `about:` only as `about:blank` and `about:srcdoc`: other
/// `about:` URLs are Chromium's own pages (full Chromium reads `about:x` as `chrome://x`).
const WEB_SCHEMES: &[&str] = &["http", "https", "data"];

/// `url` as Chromium will read it, if users may open it: `http`, `https`, `data:`,
/// `about:blank`, or a scheme in the scenario's `allow_schemes`. Anything else (`file:`,
/// `chrome:`, `view-source:`, ...) is refused here, in the agent, where a token holder who
/// talks to the agent directly cannot skip the check.
///
/// The URL is parsed the way browsers parse it (WHATWG, the `url` crate) and the parsed form is
/// what gets opened, so a spelling the check reads one way cannot reach Chromium as another
/// (` FILE:/etc/passwd`, tabs inside the scheme, ...).
pub fn allowed_url(url: &str, allowed: &[String]) -> anyhow::Result<String> {
    let parsed = url::Url::parse(url).map_err(|e| anyhow::anyhow!("not a URL ({e})"))?;
    let scheme = parsed.scheme();
    let web = WEB_SCHEMES.contains(&scheme)
        || (scheme == "about" && matches!(parsed.path(), "blank" | "srcdoc"));
    if web || allowed.iter().any(|a| a == scheme) {
        return Ok(parsed.into());
    }
    anyhow::bail!(
        "opening a {scheme}: URL is not allowed (users open http, https, data and about:blank; \
         list '{scheme}' in the scenario's allow_schemes to open it)"
    )
}

/// `value` as a JavaScript string literal. Values reach scripts only this way, never spliced
/// in raw, so a selector or a text with quotes in it cannot break (or inject into) a script.
pub fn js(value: &str) -> String {
    serde_json::to_string(value).expect("a string serialises")
}

/// A URL without its query and fragment, for error messages: the path says where the user
/// was, while a query may carry tokens and makes every message distinct.
pub fn page_of(url: &str) -> &str {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    &url[..end]
}

/// `text` on one line and at most `max` characters (with `…` when cut): error messages become
/// metric names and table cells.
pub fn one_line(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        return flat;
    }
    let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_join_the_base() {
        assert_eq!(resolve_url("http://h:1/", "/a"), "http://h:1/a");
        assert_eq!(resolve_url("http://h:1", "a/3"), "http://h:1/a/3");
        assert_eq!(resolve_url("http://h:1", "https://x/y"), "https://x/y");
        assert_eq!(resolve_url("http://h:1", "about:blank"), "about:blank");
        assert_eq!(resolve_url("http://h:1", "/a?t=1:2"), "http://h:1/a?t=1:2");
    }

    #[test]
    fn only_web_urls_open_unless_the_scenario_allows_more() {
        let none: &[String] = &[];
        for ok in [
            "http://h:1/a",
            "https://x/",
            "data:text/html,hi",
            "about:blank",
        ] {
            assert!(allowed_url(ok, none).is_ok(), "{ok}");
        }
        for refused in [
            "file:///etc/passwd",
            "FILE:///etc/passwd",
            " file:///etc/passwd",
            "fi\tle:///etc/passwd",
            "chrome://version",
            "about:version",
            "view-source:http://h/",
            "javascript:alert(1)",
            "not a url",
        ] {
            assert!(allowed_url(refused, none).is_err(), "{refused:?}");
        }
        let message = allowed_url("file:///etc/passwd", none)
            .unwrap_err()
            .to_string();
        assert!(message.contains("allow_schemes"), "{message}");
        let file = ["file".to_string()];
        // The parsed form is what Chromium gets: the one the check read.
        assert_eq!(
            allowed_url(" FILE:///etc/hostname", &file).unwrap(),
            "file:///etc/hostname"
        );
    }

    #[test]
    fn templates_fill_known_variables() {
        let vars: HashMap<String, String> = [("user_id", "7"), ("email", "a@x")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(
            fill_template("/u/{{user_id}}?e={{ email }}", &vars),
            "/u/7?e=a@x"
        );
        assert_eq!(fill_template("no braces", &vars), "no braces");
        let uuid = fill_template("{{uuid}}", &vars);
        assert_eq!(uuid.len(), 36, "{uuid}");
        assert_eq!(&uuid[14..15], "4", "version 4: {uuid}");
        assert_ne!(
            uuid,
            fill_template("{{uuid}}", &vars),
            "fresh at each expansion"
        );
        let text = fill_template("{{random_string 12}}", &vars);
        assert!(text.len() == 12 && text.chars().all(|c| c.is_ascii_alphanumeric()));
        for _ in 0..200 {
            let n: i64 = fill_template("{{ random_int -2 2 }}", &vars)
                .parse()
                .unwrap();
            assert!((-2..=2).contains(&n));
        }
        let mut shadowing = vars.clone();
        shadowing.insert("uuid".into(), "mine".into());
        assert_eq!(fill_template("{{uuid}}", &shadowing), "mine");
        assert_eq!(fill_template("open {{ end", &vars), "open {{ end");
    }

    #[test]
    fn pages_drop_query_and_fragment() {
        assert_eq!(page_of("http://h/a?token=s#x"), "http://h/a");
        assert_eq!(page_of("http://h/a#x"), "http://h/a");
        assert_eq!(page_of("about:blank"), "about:blank");
    }

    #[test]
    fn one_line_flattens_and_bounds() {
        assert_eq!(one_line("a\n  b\tc", 10), "a b c");
        assert_eq!(one_line("abcdef", 4), "abc…");
        assert_eq!(one_line("é".repeat(5).as_str(), 5), "ééééé");
    }
}
