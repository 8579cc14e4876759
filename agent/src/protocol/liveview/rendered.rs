//! A LiveView's rendered tree, merged from the server's diffs, and its HTML.
//!
//! The format (Phoenix LiveView 1.x's, read from the JS client's `rendered.js`): a tree is an
//! object whose `s` holds the template's statics (an array of strings, or an index into the
//! shared templates `p`) and whose keys `"0"`, `"1"`, ... hold the dynamics between them: a
//! string, a nested tree, or a number (a component's id, its tree under the top-level `c`).
//! A keyed comprehension holds `k`: entries by position (`"0"`, `"1"` ..., each the dynamics
//! of one item), `kc` (how many) and `km` (items moved). A diff carries only what changed; a
//! part with `s` replaces the old one, a part without merges into it.
//!
//! Supported (LiveView 1.1 and later): statics, dynamics, nested trees, shared templates
//! (`p`, resolved against the diff that brought them), keyed comprehensions (new, changed,
//! moved and dropped entries), components (`c`, with statics shared by id), root markers
//! (`r`, ignored: they only drive the JS client's DOM patching). Not supported, and reported
//! when met so element steps fail with the reason rather than read a wrong page: streams
//! (`stream`: their items live only in a browser's DOM) and LiveView 1.0's comprehensions
//! (`d`).

use serde_json::{Map, Value};

/// The merged tree of one joined LiveView.
#[derive(Default)]
pub struct Rendered {
    /// The view's tree (an object once a tree has been merged).
    tree: Value,
    components: Map<String, Value>,
    /// A part of the format this client does not follow, once met.
    pub unsupported: Option<&'static str>,
}

impl Rendered {
    /// The tree a join reply carries (`rendered`).
    pub fn new(rendered: Value) -> Rendered {
        let mut fresh = Rendered::default();
        fresh.merge(rendered);
        fresh
    }

    /// Merge a diff (a reply's `diff`, or a `diff` message).
    pub fn merge(&mut self, mut diff: Value) {
        let Some(diff_map) = diff.as_object_mut() else {
            return;
        };
        // Events pushed to hooks (`e`), a hook's reply (`r` at the top of a reply's diff is
        // the root flag or a reply; neither renders) and the page title (`t`) are not parts of
        // the tree: leave them out, so a payload's keys are not read as the format's.
        diff_map.remove("e");
        diff_map.remove("t");
        if !diff_map.contains_key("s") {
            diff_map.remove("r");
        }
        let tree_value = Value::Object(std::mem::take(diff_map));
        if contains_key(&tree_value, "stream") {
            self.unsupported = Some("LiveView streams");
        } else if contains_key(&tree_value, "d") {
            self.unsupported = Some("LiveView 1.0 comprehensions (`d`; 1.1 or later is read)");
        }
        let Value::Object(mut diff_map) = tree_value else {
            return;
        };
        resolve_templates(&mut diff_map, None, 0);
        if let Some(Value::Object(mut new)) = diff_map.remove("c") {
            for component in new.values_mut() {
                if let Value::Object(component) = component {
                    resolve_templates(component, None, 0);
                }
            }
            self.merge_components(new);
        }
        let diff_map = &mut diff_map;
        match &mut self.tree {
            Value::Object(tree) if !diff_map.contains_key("s") => {
                merge_into(tree, std::mem::take(diff_map))
            }
            tree => *tree = Value::Object(std::mem::take(diff_map)),
        }
    }

    /// Components: each new tree is kept whole, merged into the old one, or takes its
    /// statics from another component (`s`: a positive id among the new, a negative one
    /// among the old), as the JS client's `cachedFindComponent` does.
    fn merge_components(&mut self, new: Map<String, Value>) {
        let old = self.components.clone();
        let mut resolved: Map<String, Value> = Map::new();
        for cid in new.keys() {
            let tree = resolve_component(cid, &new, &old, &mut resolved, 0);
            resolved.insert(cid.clone(), tree);
        }
        self.components.extend(resolved);
    }

    /// The HTML the tree renders.
    pub fn to_html(&self) -> String {
        let mut out = String::new();
        self.write(&self.tree, None, None, &mut out, 0);
        out
    }

    /// Write one tree: statics interleaved with dynamics; a comprehension's entries each
    /// through its statics.
    fn write(
        &self,
        tree: &Value,
        statics: Option<&Value>,
        templates: Option<&Value>,
        out: &mut String,
        depth: u32,
    ) {
        if depth > 64 {
            return; // A tree this deep is malformed (or hostile): render nothing more.
        }
        let templates = tree.get("p").or(templates);
        let statics = match tree.get("s").or(statics) {
            Some(Value::Number(n)) => templates.and_then(|t| t.get(n.to_string())),
            other => other,
        };
        let Some(Value::Array(statics)) = statics else {
            return;
        };
        if let Some(Value::Object(entries)) = tree.get("k") {
            let count = entries.get("kc").and_then(Value::as_u64).unwrap_or(0);
            let shared = Value::Array(statics.clone());
            // Entries are at positions 0..kc; a count beyond them is a malformed diff's.
            for i in 0..count.min(entries.len() as u64) {
                if let Some(entry) = entries.get(&i.to_string()) {
                    self.write(entry, Some(&shared), templates, out, depth + 1);
                }
            }
            return;
        }
        for (i, part) in statics.iter().enumerate() {
            out.push_str(part.as_str().unwrap_or_default());
            if i + 1 == statics.len() {
                break;
            }
            match tree.get(i.to_string()) {
                Some(Value::String(text)) => out.push_str(text),
                Some(Value::Number(cid)) => {
                    if let Some(component) = self.components.get(&cid.to_string()) {
                        self.write(component, None, None, out, depth + 1);
                    }
                }
                Some(nested @ Value::Object(_)) => {
                    self.write(nested, None, templates, out, depth + 1)
                }
                _ => {}
            }
        }
    }
}

/// Replace every template reference (`s` as a number) with the statics it names, from the
/// nearest `p` at or above it in this diff, and drop the `p`s: LiveView sends templates with
/// each diff, numbered afresh, so they must be resolved against the diff they came with (the
/// JS client does the same at render time), never merged into the tree.
fn resolve_templates(tree: &mut Map<String, Value>, templates: Option<&Value>, depth: u32) {
    if depth > 64 {
        return;
    }
    let own = tree.remove("p");
    let templates = own.as_ref().or(templates);
    if let (Some(Value::Number(index)), Some(templates)) = (tree.get("s"), templates)
        && let Some(statics) = templates.get(index.to_string())
    {
        let statics = statics.clone();
        tree.insert("s".into(), statics);
    }
    for (key, value) in tree.iter_mut() {
        match value {
            Value::Object(child) if key == "k" => {
                for entry in child.values_mut() {
                    match entry {
                        Value::Object(entry) => resolve_templates(entry, templates, depth + 1),
                        Value::Array(moved) => {
                            if let Some(Value::Object(entry)) = moved.get_mut(1) {
                                resolve_templates(entry, templates, depth + 1);
                            }
                        }
                        _ => {}
                    }
                }
            }
            Value::Object(child) if key != "c" => resolve_templates(child, templates, depth + 1),
            _ => {}
        }
    }
}

/// Whether `key` appears anywhere in `value`.
fn contains_key(value: &Value, key: &str) -> bool {
    match value {
        Value::Object(map) => map.contains_key(key) || map.values().any(|v| contains_key(v, key)),
        Value::Array(items) => items.iter().any(|v| contains_key(v, key)),
        _ => false,
    }
}

/// Merge `source` into `target` in place (the JS client's `doMutableMerge`).
fn merge_into(target: &mut Map<String, Value>, source: Map<String, Value>) {
    if source.contains_key("k") {
        merge_keyed(target, source);
        return;
    }
    for (key, value) in source {
        match (target.get_mut(&key), value) {
            (Some(Value::Object(old)), Value::Object(new)) if !new.contains_key("s") => {
                merge_into(old, new)
            }
            (_, value) => {
                target.insert(key, value);
            }
        }
    }
}

/// Merge a keyed comprehension's diff: entries at a position are new or merged, `[old, diff]`
/// moves an entry and merges into it, a number moves it; entries past the new count go.
fn merge_keyed(target: &mut Map<String, Value>, mut source: Map<String, Value>) {
    let Some(Value::Object(diff)) = source.remove("k") else {
        return;
    };
    let before = match target.get("k") {
        Some(Value::Object(entries)) => entries.clone(),
        _ => Map::new(),
    };
    let mut entries = before.clone();
    for (index, entry) in &diff {
        if index == "kc" || index == "km" {
            continue;
        }
        match entry {
            Value::Array(moved) => {
                let from = moved.first().map(Value::to_string).unwrap_or_default();
                let mut item = match before.get(&from) {
                    Some(Value::Object(old)) => old.clone(),
                    _ => Map::new(),
                };
                if let Some(Value::Object(change)) = moved.get(1) {
                    merge_into(&mut item, change.clone());
                }
                entries.insert(index.clone(), Value::Object(item));
            }
            Value::Number(from) => {
                let item = before.get(&from.to_string()).cloned().unwrap_or_default();
                entries.insert(index.clone(), item);
            }
            Value::Object(change) => {
                let slot = entries
                    .entry(index.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                match slot {
                    Value::Object(item) => merge_into(item, change.clone()),
                    other => *other = Value::Object(change.clone()),
                }
            }
            _ => {}
        }
    }
    let count = diff.get("kc").and_then(Value::as_u64).unwrap_or(0);
    entries.retain(|index, _| index == "kc" || index.parse::<u64>().is_ok_and(|i| i < count));
    entries.insert("kc".into(), Value::from(count));
    target.insert("k".into(), Value::Object(entries));
    // Statics, templates and anything else of the comprehension's diff replace the old.
    for (key, value) in source {
        target.insert(key, value);
    }
}

/// One component's tree after a diff (see [`Rendered::merge_components`]).
fn resolve_component(
    cid: &str,
    new: &Map<String, Value>,
    old: &Map<String, Value>,
    resolved: &mut Map<String, Value>,
    depth: u32,
) -> Value {
    if let Some(done) = resolved.get(cid) {
        return done.clone();
    }
    let Some(Value::Object(diff)) = new.get(cid) else {
        return Value::Null;
    };
    let merge = |base: &Value, diff: &Map<String, Value>| {
        let mut merged = base.as_object().cloned().unwrap_or_default();
        merge_into(&mut merged, diff.clone());
        merged
    };
    match diff.get("s") {
        Some(Value::Number(shared)) if depth < 16 => {
            let shared = shared.as_i64().unwrap_or(0);
            let base = if shared > 0 {
                resolve_component(&shared.to_string(), new, old, resolved, depth + 1)
            } else {
                let id = shared.checked_neg().unwrap_or(0);
                old.get(&id.to_string()).cloned().unwrap_or_default()
            };
            let mut merged = merge(&base, diff);
            merged.insert("s".into(), base.get("s").cloned().unwrap_or_default());
            Value::Object(merged)
        }
        Some(_) => Value::Object(diff.clone()),
        None => match old.get(cid) {
            Some(base) => Value::Object(merge(base, diff)),
            None => Value::Object(diff.clone()),
        },
    }
}

#[cfg(test)]
mod tests;
