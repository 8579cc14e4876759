//! The JSON paths protocol steps read answers with (`$.user.id`, `$.items[0].name`,
//! `$['odd key']`): the small, unambiguous subset of JSONPath every API test needs — one
//! value, reached by keys and indexes from the root. Filters, wildcards, slices and recursive
//! descent are refused when the scenario is checked, with the path in the message.
//!
//! Hand-written rather than a JSONPath crate: the subset is a 60-line parser, the crates
//! implement (and compile) the whole query language, and the controller and the agent must
//! agree exactly on what a path means, which one small function in the protocol crate makes
//! sure of.

use serde_json::Value;

/// One step of a path: a member of an object, or an element of an array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// `.name` or `['name']`.
    Key(String),
    /// `[3]`.
    Index(usize),
}

/// The longest path accepted, in characters.
const MAX_PATH_CHARS: usize = 1024;

/// Parse `$.a.b[0]['c d']` into its segments; what is wrong otherwise, naming the path.
pub fn parse(path: &str) -> Result<Vec<Segment>, String> {
    let bad = |why: &str| {
        let shown: String = path.chars().take(80).collect();
        Err(format!(
            "JSON path '{shown}': {why} (write $.key, $.list[0], $['odd key'])"
        ))
    };
    if path.len() > MAX_PATH_CHARS {
        return bad("too long");
    }
    let Some(mut rest) = path.strip_prefix('$') else {
        return bad("must start with $");
    };
    let mut segments = Vec::new();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let key = &after[..end];
            if key.is_empty() || key.contains(['*', ']', '\'', '"', '(', '?']) {
                return bad("a key after '.' must be a plain name");
            }
            segments.push(Segment::Key(key.to_string()));
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix("['") {
            let Some(end) = after.find("']") else {
                return bad("a quoted key needs its closing ']");
            };
            segments.push(Segment::Key(after[..end].to_string()));
            rest = &after[end + 2..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let Some(end) = after.find(']') else {
                return bad("an index needs its closing ]");
            };
            match after[..end].parse::<usize>() {
                Ok(index) => segments.push(Segment::Index(index)),
                Err(_) => {
                    return bad("an index must be a number (no wildcards, slices or filters)");
                }
            }
            rest = &after[end + 1..];
        } else {
            return bad("expected '.', '[' or the end");
        }
    }
    Ok(segments)
}

/// The value at `segments` in `value`, if there is one.
pub fn select<'v>(value: &'v Value, segments: &[Segment]) -> Option<&'v Value> {
    segments
        .iter()
        .try_fold(value, |value, segment| match segment {
            Segment::Key(key) => value.as_object()?.get(key),
            Segment::Index(index) => value.as_array()?.get(*index),
        })
}

/// A JSON value as a variable holds it: a string as itself, anything else as JSON text.
pub fn as_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn paths_reach_one_value() {
        let doc = json!({"user": {"id": 7, "tags": ["a", "b"]}, "odd key": {"x": null}});
        let at = |path: &str| select(&doc, &parse(path).unwrap()).cloned();
        assert_eq!(at("$"), Some(doc.clone()));
        assert_eq!(at("$.user.id"), Some(json!(7)));
        assert_eq!(at("$.user.tags[1]"), Some(json!("b")));
        assert_eq!(at("$['odd key'].x"), Some(json!(null)));
        assert_eq!(at("$.user.tags[2]"), None);
        assert_eq!(at("$.user.id.deeper"), None);
        assert_eq!(as_text(&json!("b")), "b");
        assert_eq!(as_text(&json!({"a": 1})), "{\"a\":1}");
        for bad in [
            "user.id",
            "$.",
            "$.a[*]",
            "$..a",
            "$.a[0:2]",
            "$[?(@.a)]",
            "$['a",
            "$x",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("JSON path"), "{bad}: {err}");
        }
    }

    proptest! {
        /// Any text from a scenario, and any document from a server: no panic.
        #[test]
        fn any_path_on_any_document(path in "\\PC{0,40}", doc in "\\PC{0,60}") {
            if let Ok(segments) = parse(&path) {
                let value = serde_json::from_str(&doc).unwrap_or(Value::Null);
                let _ = select(&value, &segments);
            }
        }
    }
}
