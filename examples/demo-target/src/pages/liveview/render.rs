//! The two LiveViews' state and their rendered trees in LiveView's diff format: `s` (statics,
//! the template's fixed parts), `"0"`, `"1"` ... (dynamics between them: text, or a nested
//! tree), and a keyed comprehension (`k`: entries by position, `kc`: their count) for the
//! list of saved notes. A diff carries only the dynamics that changed, as Phoenix's change
//! tracking sends them.

use serde_json::{Map, Value, json};

/// The counter view's template: dynamics 0 count, 1 page, 2 the input's value, 3 characters
/// typed, 4 the last saved note, 5 the saved notes (a comprehension), 6 the server's ticks.
const COUNTER: [&str; 8] = [
    r#"<h1 id="title">Counter</h1><p>Count: <span id="count">"#,
    r#"</span></p><button id="inc" phx-click="inc" phx-value-by="1">+1</button> <button id="add5" phx-click="inc" phx-value-by="5">+5</button> <button id="leave" phx-click="leave">leave</button><p>Page <span id="page">"#,
    r#"</span> <a id="next-page" href="/lv?page=2" data-phx-link="patch" data-phx-link-state="push">page 2</a> <a id="to-other" href="/lv/other" data-phx-link="redirect" data-phx-link-state="push">other view</a></p><form id="note" phx-change="validate" phx-submit="save"><input id="note-text" type="text" name="note[text]" value=""#,
    r#""/><input type="hidden" name="note[kind]" value="memo"/><select id="size" name="note[size]"><option value="small">small</option><option value="large">large</option></select><button id="save" type="submit">Save</button></form><p>Typed <span id="chars">"#,
    r#"</span> characters</p><p>Saved: <span id="saved">"#,
    r#"</span></p><ul id="notes">"#,
    r#"</ul><p id="tick">"#,
    r#"</p>"#,
];

/// The other view's template: dynamic 0, how many times this socket joined it.
const OTHER: [&str; 2] = [
    r#"<h1 id="title">Other</h1><p>Visits: <span id="visits">"#,
    r#"</span></p><a id="back" href="/lv" data-phx-link="redirect" data-phx-link-state="push">back</a>"#,
];

/// Which LiveView a URL mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Counter,
    Other,
}

/// One mounted LiveView's assigns.
pub(super) struct View {
    pub(super) kind: Kind,
    pub(super) count: u64,
    pub(super) page: u64,
    pub(super) typed: String,
    pub(super) saved: Vec<String>,
    pub(super) tick: u64,
    pub(super) visits: u64,
}

impl View {
    /// The view a path (with its query) mounts; `visits` is the socket's joins of it so far.
    pub(super) fn mount(path: &str, visits: u64) -> View {
        let (route, query) = path.split_once('?').unwrap_or((path, ""));
        let kind = if route.ends_with("/lv/other") {
            Kind::Other
        } else {
            Kind::Counter
        };
        View {
            kind,
            count: 0,
            page: page_of(query),
            typed: String::new(),
            saved: Vec::new(),
            tick: 0,
            visits,
        }
    }

    /// The whole tree, as a join reply carries it.
    pub(super) fn rendered(&self) -> Value {
        match self.kind {
            Kind::Counter => {
                let mut tree = Map::new();
                tree.insert("s".into(), json!(COUNTER));
                for (i, part) in [
                    self.count.to_string(),
                    self.page.to_string(),
                    escape(&self.typed),
                    self.typed.chars().count().to_string(),
                    escape(self.saved.last().map_or("", String::as_str)),
                ]
                .into_iter()
                .enumerate()
                {
                    tree.insert(i.to_string(), Value::String(part));
                }
                let mut notes = self.notes();
                notes["s"] = json!([r#"<li class="note">"#, "</li>"]);
                tree.insert("5".into(), notes);
                tree.insert("6".into(), Value::String(self.tick_text()));
                Value::Object(tree)
            }
            Kind::Other => json!({"s": OTHER, "0": self.visits.to_string()}),
        }
    }

    /// The saved notes as a keyed comprehension without statics (a diff of dynamic 5).
    pub(super) fn notes(&self) -> Value {
        let mut entries = Map::new();
        for (i, note) in self.saved.iter().enumerate() {
            entries.insert(i.to_string(), json!({"0": escape(note)}));
        }
        entries.insert("kc".into(), json!(self.saved.len()));
        json!({"k": entries})
    }

    pub(super) fn tick_text(&self) -> String {
        if self.tick == 0 {
            String::new()
        } else {
            format!("tick {}", self.tick)
        }
    }
}

/// `page=N` of a query string (1 without).
pub(super) fn page_of(query: &str) -> u64 {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("page="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// Text made safe inside an element or a quoted attribute.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The HTML of a full tree (the dead render): statics interleaved with dynamics, a
/// comprehension's entries each through its statics.
pub(super) fn to_html(tree: &Value) -> String {
    let mut out = String::new();
    write_html(tree, None, &mut out);
    out
}

fn write_html(tree: &Value, statics: Option<&Vec<Value>>, out: &mut String) {
    let Some(statics) = tree["s"].as_array().or(statics) else {
        return;
    };
    if let Some(entries) = tree.get("k") {
        let count = entries["kc"].as_u64().unwrap_or(0);
        for i in 0..count {
            write_html(&entries[i.to_string()], Some(statics), out);
        }
        return;
    }
    for (i, part) in statics.iter().enumerate() {
        out.push_str(part.as_str().unwrap_or_default());
        match tree.get(i.to_string()) {
            Some(Value::String(text)) => out.push_str(text),
            Some(nested @ Value::Object(_)) => write_html(nested, None, out),
            _ => {}
        }
    }
}
