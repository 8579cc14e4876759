//! Limits checked on the raw text before the YAML parser sees it.
//!
//! The parser (libyaml, inside serde_yaml_ng) keeps its own stacks, so deep nesting cannot
//! overflow ours, and serde_yaml_ng stops deserializing at 128 levels. But libyaml reads the
//! whole document first, and for every token it revisits one entry per open flow collection
//! (`[` or `{`): text made of nothing but `[` takes time quadratic in its length (100 000 of
//! them: minutes). So flow nesting deeper than serde_yaml_ng would ever accept is refused
//! here, in one linear pass; so is a file far larger than any scenario.

/// An error at a 1-based line and column (in characters), with its message.
pub(super) type Refusal = (usize, usize, String);

/// The deepest flow nesting accepted: serde_yaml_ng's own recursion limit, so nothing that
/// could parse is refused.
pub(super) const MAX_FLOW_DEPTH: usize = 128;

/// The largest scenario text accepted. Real scenarios are kilobytes; per-user data belongs in
/// the CSV file, which has its own limit.
pub(super) const MAX_SCENARIO_BYTES: usize = 4 * 1024 * 1024;

/// Refuse text too large, or with flow collections nested deeper than [`MAX_FLOW_DEPTH`].
///
/// The scan knows just enough YAML not to count brackets that are text: quoted scalars
/// (`"a[b"`), comments, and brackets inside a plain scalar (`a[b]`: a flow collection only
/// starts a token). It may count a bracket a plain scalar holds after a space (`see [1`), so
/// a file could only be refused wrongly with over a hundred such unclosed brackets.
pub(super) fn check(text: &str) -> Result<(), Refusal> {
    if text.len() > MAX_SCENARIO_BYTES {
        let message = format!(
            "the scenario is {} bytes; the limit is {MAX_SCENARIO_BYTES} (put per-user data in a data file)",
            text.len()
        );
        return Err((1, 1, message));
    }
    let mut depth = 0usize;
    let mut previous = '\n';
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        let starts_token = previous.is_whitespace() || matches!(previous, '[' | '{' | ',');
        match c {
            '#' if previous.is_whitespace() => {
                // A comment, to the end of the line.
                while chars.next_if(|(_, c)| *c != '\n').is_some() {}
            }
            '\'' | '"' if starts_token || previous == ':' => skip_quoted(c, &mut chars),
            '[' | '{' if starts_token => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    let (line, column) = position(text, at);
                    let message = format!(
                        "collections nested deeper than {MAX_FLOW_DEPTH} levels of [ ] or {{ }}: \
                         refused before parsing"
                    );
                    return Err((line, column, message));
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        previous = c;
    }
    Ok(())
}

/// Skip a quoted scalar opened by `quote`: `'...'` (a doubled `''` is a quote) or `"..."`
/// (a backslash escapes the next character). An unterminated one runs to the end.
fn skip_quoted(quote: char, chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>) {
    while let Some((_, c)) = chars.next() {
        match c {
            '\\' if quote == '"' => {
                chars.next();
            }
            c if c == quote => {
                if quote == '\'' && chars.next_if(|(_, c)| *c == '\'').is_some() {
                    continue;
                }
                return;
            }
            _ => {}
        }
    }
}

/// The 1-based line and column (in characters) of byte `at`, which starts a character.
fn position(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

#[cfg(test)]
mod tests {
    use super::super::tests::{location, parse};
    use super::*;

    #[test]
    fn flow_nesting_is_counted_outside_text_only() {
        let deep = "[".repeat(MAX_FLOW_DEPTH);
        assert!(check(&deep).is_ok(), "the parser's own limit is allowed");
        assert!(check(&format!("{deep}[")).is_err());
        for text in [
            format!("a: '{deep}['\n"),
            format!("a: \"{deep}[\\\"\"\n"),
            format!("a: x{deep}[\n"),
            format!("# {deep}[\n"),
            format!("a: 'it''s {deep}['\n"),
            format!("{}\n", "[]".repeat(10 * MAX_FLOW_DEPTH)),
        ] {
            assert!(check(&text).is_ok(), "{text}");
        }
        assert!(check(&format!("a: [{}\n", "{b: ".repeat(MAX_FLOW_DEPTH))).is_err());
    }

    /// Regression (issue 12): 100 000 `[` kept the YAML parser busy for minutes (quadratic).
    #[test]
    fn deep_flow_nesting_is_refused_with_its_line() {
        let text = format!(
            "name: d\nbase_url: http://x\nsteps: {}",
            "[".repeat(100_000)
        );
        let (line, column, message) = location(parse(&text).unwrap_err());
        assert_eq!((line, column), (3, 8 + MAX_FLOW_DEPTH));
        assert!(message.contains("deeper than 128"), "{message}");
        let huge = format!("# {}\n", "x".repeat(MAX_SCENARIO_BYTES));
        let (_, _, message) = location(parse(&huge).unwrap_err());
        assert!(message.contains("limit is 4194304"), "{message}");
    }
}
