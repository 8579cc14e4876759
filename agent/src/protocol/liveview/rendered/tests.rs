use serde_json::json;

use super::Rendered;

#[test]
fn statics_interleave_with_dynamics_and_diffs_change_only_theirs() {
    let mut view = Rendered::new(json!({
        "s": ["<p id=\"a\">", "</p><div>", "</div>"],
        "0": "1",
        "1": {"s": ["<b>", "</b><i>", "</i>"], "0": "x", "1": "y"},
        "r": 1
    }));
    assert_eq!(
        view.to_html(),
        "<p id=\"a\">1</p><div><b>x</b><i>y</i></div>"
    );
    // A nested part without statics merges into the old one; one with statics replaces it.
    view.merge(json!({"0": "2", "1": {"1": "z"}}));
    assert_eq!(
        view.to_html(),
        "<p id=\"a\">2</p><div><b>x</b><i>z</i></div>"
    );
    view.merge(json!({"1": {"s": ["<u>", "</u>"], "0": "new"}}));
    assert_eq!(view.to_html(), "<p id=\"a\">2</p><div><u>new</u></div>");
    // A diff with statics at the top replaces the whole tree.
    view.merge(json!({"s": ["only"]}));
    assert_eq!(view.to_html(), "only");
}

#[test]
fn keyed_comprehensions_add_change_move_and_drop_entries() {
    let mut view = Rendered::new(json!({
        "s": ["<ul>", "</ul>"],
        "0": {"s": ["<li>", "</li>"], "k": {"0": {"0": "a"}, "1": {"0": "b"}, "kc": 2}}
    }));
    assert_eq!(view.to_html(), "<ul><li>a</li><li>b</li></ul>");
    // Changed in place, and a new one.
    view.merge(json!({"0": {"k": {"1": {"0": "B"}, "2": {"0": "c"}, "kc": 3}}}));
    assert_eq!(view.to_html(), "<ul><li>a</li><li>B</li><li>c</li></ul>");
    // Moved: position 0 takes old 2, position 1 old 0 with a change; then dropped past 2.
    view.merge(json!({"0": {"k": {"0": 2, "1": [0, {"0": "A"}], "km": 2, "kc": 2}}}));
    assert_eq!(view.to_html(), "<ul><li>c</li><li>A</li></ul>");
    view.merge(json!({"0": {"k": {"kc": 0}}}));
    assert_eq!(view.to_html(), "<ul></ul>");
}

#[test]
fn shared_templates_and_components_render() {
    let view = Rendered::new(json!({
        "s": ["<main>", "", "</main>"],
        "0": {"s": 0, "p": {"0": ["<em>", "</em>"]}, "0": "t"},
        "1": 1,
        "c": {
            "1": {"s": ["<section>", "</section>"], "0": "one"},
            "2": {"s": 1, "0": "two"}
        }
    }));
    assert_eq!(
        view.to_html(),
        "<main><em>t</em><section>one</section></main>"
    );
    let mut view = view;
    // Component 2 shares component 1's statics; component 1 changes by a diff.
    view.merge(json!({"1": 2, "c": {"1": {"0": "ONE"}}}));
    assert_eq!(
        view.to_html(),
        "<main><em>t</em><section>two</section></main>"
    );
    view.merge(json!({"1": 1}));
    assert_eq!(
        view.to_html(),
        "<main><em>t</em><section>ONE</section></main>"
    );
    // Statics taken from an old component (a negative id).
    view.merge(json!({"1": 3, "c": {"3": {"s": -1, "0": "three"}}}));
    assert_eq!(
        view.to_html(),
        "<main><em>t</em><section>three</section></main>"
    );
}

#[test]
fn streams_are_reported_not_rendered_wrong() {
    let mut view = Rendered::new(json!({"s": ["<ul>", "</ul>"], "0": "x"}));
    assert_eq!(view.unsupported, None);
    view.merge(
        json!({"0": {"s": ["<li>", "</li>"], "k": {"kc": 0}, "stream": ["ref", [], [], false]}}),
    );
    assert_eq!(view.unsupported, Some("LiveView streams"));
}

#[test]
fn malformed_trees_render_what_they_can_without_panicking() {
    for tree in [
        json!(null),
        json!({"s": "not a list"}),
        json!({"s": [1, 2], "0": [true]}),
        json!({"s": 7}),
        json!({"s": ["a", "b"], "0": 99}),
        json!({"s": ["<ul>", "</ul>"], "0": {"s": ["x"], "k": {"kc": 1_000_000_000u64}}}),
        json!({"c": {"1": {"s": 1}}, "s": ["", ""], "0": 1}),
        json!({"c": {"1": {"s": 2}, "2": {"s": 1}}, "s": ["", ""], "0": 1}),
    ] {
        let view = Rendered::new(tree);
        let _ = view.to_html();
    }
}

#[test]
fn templates_are_resolved_with_the_diff_that_brought_them() {
    // Each diff numbers its templates from 0: an untouched part keeps the statics it was
    // rendered with.
    let mut view = Rendered::new(json!({
        "s": ["", "|", ""],
        "0": {"s": 0, "0": "a"},
        "1": {"s": 1, "0": "b"},
        "p": {"0": ["<i>", "</i>"], "1": ["<b>", "</b>"]}
    }));
    assert_eq!(view.to_html(), "<i>a</i>|<b>b</b>");
    view.merge(json!({"1": {"s": 0, "0": "c"}, "p": {"0": ["<u>", "</u>"]}}));
    assert_eq!(view.to_html(), "<i>a</i>|<u>c</u>");
    // A comprehension's entries share the diff's templates too.
    view.merge(
        json!({"0": {"s": 0, "k": {"0": {"0": {"s": 1, "0": "x"}}, "kc": 1}},
        "p": {"0": ["[", "]"], "1": ["(", ")"]}}),
    );
    assert_eq!(view.to_html(), "[(x)]|<u>c</u>");
}

#[test]
fn hook_events_and_old_comprehensions_are_not_read_as_the_tree() {
    let mut view = Rendered::new(json!({"s": ["<p>", "</p>"], "0": "x"}));
    view.merge(json!({"0": "y", "e": [["saved", {"stream": 1, "d": 2}]], "t": "Title"}));
    assert_eq!(view.unsupported, None);
    assert_eq!(view.to_html(), "<p>y</p>");
    view.merge(json!({"0": {"s": ["<li>", "</li>"], "d": [["a"], ["b"]]}}));
    assert_eq!(
        view.unsupported,
        Some("LiveView 1.0 comprehensions (`d`; 1.1 or later is read)")
    );
}
