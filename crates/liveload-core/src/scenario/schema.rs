//! The JSON Schema of scenario files, for editors: YAML language servers read it to complete
//! keys and flag mistakes as the file is typed.
//!
//! The schema is written by hand, not derived from the raw types: it carries what serde does
//! not know (patterns for durations and URLs, minimums, descriptions that teach), and two of the
//! raw types (`RawStep`, `StringOrMap`) have hand-written deserialisers that a derive could
//! not describe anyway. What keeps it honest is the `schema_drift` test, which asks the serde
//! types themselves which keys they accept and compares, object by object.

use serde_json::{Value, json};

use super::STEP_KINDS;

/// The step kinds that may be written bare, without an argument (`- reload`).
const BARE_STEP_KINDS: [&str; 7] = [
    "reload",
    "liveview_connected",
    "liveview_idle",
    "think",
    "halt",
    "fail",
    "ws_close",
];

/// The JSON Schema (draft 2020-12) of scenario files, for editors (YAML language servers read
/// it). Built from the same step table the parser uses; `docs/scenario.schema.json` is this,
/// checked by a test.
pub fn json_schema() -> Value {
    let duration = duration();
    let threshold = json!({"oneOf": [
        {"type": "string", "description": "p95(step:NAME) < 800ms, avg(...), max(...), count(...), error_rate < 1%"},
        object(json!({"expr": string(), "abort_on_fail": {"type": "boolean"}}), &["expr"])
    ]});
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "liveload scenario",
        "type": "object",
        "required": ["name"],
        "anyOf": [{"required": ["steps"]}, {"required": ["mix"]}],
        "additionalProperties": false,
        "properties": {
            "name": string(),
            "base_url": {"type": "string", "pattern": "^https?://", "description": "the target: what relative step URLs join (or base_urls for several)"},
            "base_urls": {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": "^https?://"},
                "description": "several targets instead of base_url; latency is also reported per target"},
            "engine": {"enum": ["browser", "http", "liveview"], "description": "browser: a Chromium context per user (default); http: protocol users (request, extract, ws_* steps), no browser; liveview: native Phoenix LiveView clients, no browser (page steps act as LiveView's bindings do, plus the http steps)"},
            "base_url_distribution": {"enum": ["round_robin", "per_node"],
                "description": "round_robin: user u goes to target u % targets (default); per_node: node n's users go to target n % targets"},
            "block_hosts": {"type": "array", "items": host_pattern(), "description": "hosts the browsers must not reach (counted as hosts.blocked)"},
            "allow_hosts": {"type": "array", "items": host_pattern(), "description": "the only hosts the browsers may reach, besides the targets'"},
            "map_hosts": {"type": "object", "additionalProperties": {"type": "string", "description": "host, IP address, [IPv6], with an optional :port"},
                "description": "host name (pattern) -> address its requests connect to"},
            "users": {"type": "integer", "minimum": 1},
            "mix": {"type": "array", "minItems": 1, "description": "a run file: these scenarios run together on one cluster, each node holding a share of each (no steps, engine or users of its own)",
                "items": object(json!({"scenario": {"type": "string", "description": "a scenario file, relative to this one"},
                    "users": {"type": "integer", "minimum": 1}}), &["scenario", "users"])},
            "duration": duration,
            "iteration_timeout": duration,
            "step_timeout": with_description(duration.clone(), "how long element steps and waits without their own timeout wait"),
            "on_failure": {"oneOf": [
                {"type": "string", "description": "screenshot (keep a screenshot and the DOM of the first failures of each error) or none"},
                object(json!({"action": {"enum": ["screenshot", "none"]},
                    "per_error": {"type": "integer", "minimum": 1, "description": "failures kept per distinct error, per agent (default 3)"}}), &["action"])
            ]},
            "think_time": {"type": "string", "description": "default for a bare `think`"},
            "allow_schemes": {"type": "array", "items": {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9+.-]*:?$"},
                "description": "URL schemes users may open beyond http, https, data and about:blank (e.g. file)"},
            "data": object(json!({"file": {"type": "string", "description": "CSV with a header row"},
                "secret": {"type": "array", "items": string(), "description": "columns whose values are redacted from reports"},
                "mode": {"enum": ["cycle", "unique", "random"], "description": "cycle: user u takes row u % rows (default); unique: a row per user, refused with fewer rows than users; random: a random row per user"}}), &["file"]),
            "load": object(json!({
                "model": {"enum": ["closed", "open"]}, "ramp_up": duration,
                "ramp_steps": {"type": "integer", "minimum": 1},
                "rate": {"type": "number", "exclusiveMinimum": 0}, "ramp_to": {"type": "number", "exclusiveMinimum": 0},
                "max_users": {"type": "integer", "minimum": 1}}), &["model"]),
            "throttle": object(json!({
                "rate": {"type": "string", "description": "10/s, 600/1m"}, "interarrival": duration,
                "parallelism": {"type": "integer", "minimum": 1}}), &[]),
            "sizing": object(json!({
                "profile": {"type": "string", "description": "a profile written by liveload calibrate, relative to this file"},
                "browser_memory_mib": {"type": "integer", "minimum": 0},
                "context_memory_mib": {"type": "integer", "minimum": 1},
                "contexts_per_core": {"type": "number", "exclusiveMinimum": 0}}), &[]),
            "thresholds": {"type": "array", "items": threshold},
            "iterations": {"type": "integer", "minimum": 1, "description": "iterations per user (closed model); the user stops after them"},
            "pacing": with_description(duration.clone(), "an iteration starts at most this often per user (closed model)"),
            "on_start": with_description(steps(), "steps each user runs once, before its first iteration"),
            "steps": steps(),
            "on_stop": with_description(steps(), "steps each user runs once, after its last iteration"),
        },
        "$defs": {"step": {"oneOf": step_variants()}}
    })
}

/// `expect:` of a `request` (with `status`) or a `ws_expect` (with `timeout`).
fn expect(http: bool) -> Value {
    let mut keys = json!({"contains": string(),
        "json": {"type": "object", "description": "JSON path -> the value there", "additionalProperties": {}}});
    if http {
        // `additionalProperties` applies to objects only: here it tells the drift test that
        // the parser reads this value whole (an untagged number-or-list).
        keys["status"] = json!({"type": ["integer", "array"],
            "description": "one status or a list of them (default: any below 400)", "additionalProperties": {}});
    } else {
        keys["timeout"] = duration();
    }
    object(keys, &[])
}

/// A host name with `*` wildcards, as `block_hosts:` and `allow_hosts:` take them.
fn host_pattern() -> Value {
    json!({"type": "string", "pattern": "^[A-Za-z0-9.*-]+$", "description": "host name; * matches any characters"})
}

/// One step: a bare kind, or a map of one kind (with its argument) and an optional `name`.
/// One alternative per kind, so an editor completes the argument of the kind being typed.
fn step_variants() -> Vec<Value> {
    let bare: Vec<&str> = STEP_KINDS
        .iter()
        .copied()
        .filter(|k| BARE_STEP_KINDS.contains(k))
        .collect();
    let mut variants = vec![json!({"enum": bare, "description": "a step without an argument"})];
    for kind in STEP_KINDS {
        let value = step_argument(kind).unwrap_or(json!({"type": "null"}));
        variants.push(json!({
            "type": "object",
            "properties": {kind.to_string(): value, "name": {"type": "string", "description": "the step's metric name"}},
            "required": [kind],
            "additionalProperties": false
        }));
    }
    variants
}

/// The argument of step kind `kind`; `None` for kinds that take none (`reload`, `halt`).
fn step_argument(kind: &str) -> Option<Value> {
    Some(match kind {
        "navigate" => {
            json!({"type": "string", "description": "URL, absolute or relative to base_url"})
        }
        "click" | "clear" | "check" | "uncheck" | "hover" | "focus" | "blur" => selector(),
        "fill" | "select" => object(
            json!({"selector": selector(), "value": string()}),
            &["selector", "value"],
        ),
        "press" => object(json!({"key": string(), "selector": selector()}), &["key"]),
        "wait_for" => json!({"oneOf": [selector(), object(json!({
            "selector": selector(), "state": {"enum": ["visible", "hidden"]}, "text": string(),
            "url": {"type": "string", "description": "pattern, * matches anything"},
            "network_idle": duration(),
            "js": {"type": "string", "description": "a JavaScript expression, waited for until truthy"},
            "timeout": duration()}), &[])]}),
        "liveview_connected" => {
            json!({"oneOf": [{"type": "null"}, object(json!({"timeout": duration()}), &[])]})
        }
        "liveview_idle" => json!({"oneOf": [selector(), object(
            json!({"selector": selector(), "timeout": duration()}), &[])]}),
        "liveview_submit" => object(
            json!({"form": selector(), "wait_for": selector(), "timeout": duration()}),
            &["form"],
        ),
        "assert" => object(
            json!({"text": string(), "selector": selector(),
            "count": {"type": "integer", "minimum": 0}, "visible": selector()}),
            &[],
        ),
        "extract" => object(
            json!({"var": string(), "selector": selector(), "attribute": string(),
            "value": {"type": "boolean"}, "secret": secret(),
            "json": {"type": "string", "description": "engine: http: a JSON path of the last answer ($.a.b[0])"},
            "header": {"type": "string", "description": "engine: http: a header of the last HTTP answer"},
            "regex": {"type": "string", "description": "engine: http: a regular expression on the last answer (its first group)"},
            "from": {"enum": ["http", "ws"], "description": "engine: http: the last HTTP answer (default) or the last WebSocket message ws_expect matched"}}),
            &["var"],
        ),
        "request" => json!({"oneOf": [
            {"type": "string", "description": "a URL to GET"},
            object(json!({"method": string(), "url": string(),
                "headers": {"type": "object", "additionalProperties": string()},
                "body": string(), "json": {"description": "a JSON body, written as YAML", "additionalProperties": {}},
                "form": {"type": "object", "additionalProperties": string()},
                "expect": expect(true), "timeout": duration()}), &["url"])]}),
        "ws_connect" => {
            json!({"oneOf": [string(), object(json!({"url": string(), "timeout": duration()}), &["url"])]})
        }
        "ws_send" => string(),
        "ws_expect" => json!({"oneOf": [
            {"type": "string", "description": "text the message contains"},
            with_description(expect(false), "what the awaited message holds")]}),
        "coordinate" => with_description(
            object(
                json!({"name": string(), "group": {"type": "integer", "minimum": 1},
                "timeout": duration()}),
                &["name", "group"],
            ),
            "wait until `group` users (cluster-wide) reach this point, or `timeout` (5s) after the first",
        ),
        "think" => {
            json!({"type": "string", "description": "a duration (2s) or a range (1s..3s)"})
        }
        "eval" => {
            json!({"oneOf": [string(), object(json!({"js": string(), "var": string(), "secret": secret()}), &["js"])]})
        }
        "group" => object(
            json!({"name": string(), "steps": steps()}),
            &["name", "steps"],
        ),
        "repeat" => object(
            json!({"times": {"type": "integer", "minimum": 0}, "steps": steps()}),
            &["times", "steps"],
        ),
        "fail" => string(),
        _ => return None,
    })
}

/// A map with exactly these `properties` (the parser denies unknown keys, so does the schema).
fn object(properties: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false})
}

/// `secret: true` on a variable.
fn secret() -> Value {
    json!({"type": "boolean", "description": "the value is redacted from reports"})
}

/// `schema` with a description.
fn with_description(mut schema: Value, description: &str) -> Value {
    schema["description"] = json!(description);
    schema
}

/// Any string.
fn string() -> Value {
    json!({"type": "string"})
}

/// A duration, as [`super::parse_duration`] reads it.
fn duration() -> Value {
    json!({"type": "string", "pattern": "^[0-9.]+ ?(ms|s|m|h)$", "description": "500ms, 20s, 2m, 1h"})
}

/// A CSS selector.
fn selector() -> Value {
    json!({"type": "string", "description": "CSS selector ({{variables}} allowed)"})
}

/// A list of steps (the scenario's, a group's, a repeat's).
fn steps() -> Value {
    json!({"type": "array", "items": {"$ref": "#/$defs/step"}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_covers_every_step_and_is_the_committed_one() {
        let schema = json_schema();
        let text = serde_json::to_string_pretty(&schema).unwrap() + "\n";
        for kind in STEP_KINDS {
            assert!(
                text.contains(&format!("\"{kind}\"")),
                "{kind} missing from the schema"
            );
        }
        let committed = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../docs/scenario.schema.json");
        let on_disk = std::fs::read_to_string(&committed).unwrap_or_default();
        assert_eq!(
            on_disk, text,
            "docs/scenario.schema.json is stale: run `liveload schema > docs/scenario.schema.json`"
        );
    }
}
