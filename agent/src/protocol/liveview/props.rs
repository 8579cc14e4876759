//! Property tests: what a server sends (any JSON as a diff, any text as a message or as HTML)
//! never panics the LiveView client, and rendering always ends.

use proptest::prelude::*;
use serde_json::{Map, Value};

use super::dom;
use super::rendered::Rendered;
use super::socket::Shared;

/// JSON shaped like rendered trees: objects keyed by the format's keys and small indexes,
/// strings, numbers (component ids, template indexes), arrays.
fn tree() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<i8>().prop_map(|n| Value::from(n as i64)),
        "[a-z<>/ =\"]{0,8}".prop_map(Value::String),
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        let key = prop_oneof![
            Just("s".to_string()),
            Just("k".to_string()),
            Just("kc".to_string()),
            Just("km".to_string()),
            Just("c".to_string()),
            Just("p".to_string()),
            Just("r".to_string()),
            Just("stream".to_string()),
            (0u8..4).prop_map(|i| i.to_string()),
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key, inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

proptest! {
    #[test]
    fn any_sequence_of_diffs_merges_and_renders(first in tree(), diffs in prop::collection::vec(tree(), 0..4)) {
        let mut view = Rendered::new(first);
        let _ = view.to_html();
        for diff in diffs {
            view.merge(diff);
            let _ = view.to_html();
        }
    }

    #[test]
    fn any_message_is_received_without_panicking(text in any::<String>(), payload in tree()) {
        let shared = Shared::default();
        super::socket::receive_for_test(&shared, &text);
        let message = serde_json::json!(["1", "1", "lv:x", "phx_reply", payload]).to_string();
        super::socket::receive_for_test(&shared, &message);
        let message = serde_json::json!(["1", null, "lv:x", "diff", payload]).to_string();
        super::socket::receive_for_test(&shared, &message);
    }

    #[test]
    fn any_html_is_read_without_panicking(html in any::<String>(), tags in "(<[a-z]{1,3}( [a-z-]{1,6}(=\"[^\"]{0,4}\")?){0,3}>|</[a-z]{1,3}>|&[a-z#0-9]{0,5};?|[a-z ]{0,4}){0,20}") {
        for text in [&html, &tags] {
            let _ = dom::query(text, "a");
            let _ = dom::query(text, "[data-phx-main]");
            let _ = dom::text(text);
            let _ = dom::form(text, "form", Some("button"));
            let _ = dom::decode(text);
        }
    }

    #[test]
    fn any_selector_is_parsed_or_refused_without_panicking(selector in any::<String>(), shaped in "([a-z*#.>, ~+:]|\\[[a-z]{0,3}([~^$*|]?=(\"[^\"]{0,3}\"?|'[^']{0,3}'?|[a-z\\]]{0,3}))?\\]?){0,12}") {
        for text in [&selector, &shaped] {
            let _ = super::selector::Selector::parse(text);
            let _ = dom::query("<form id=a><input name=b></form>", text);
        }
    }
}
