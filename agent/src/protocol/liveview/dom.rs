//! Reading a LiveView's rendered HTML as a person reads the page: elements by CSS selector
//! (`tl`'s: tag, `#id`, `.class`, `[attr]`, `[attr=value]` and its `~= ^= $= *=` forms,
//! compounds, descendant and child combinators, lists), their attributes and text, the page's
//! text, and a form's fields as the browser would submit them.
//!
//! There is no layout: "visible" means present and not `hidden` (nor inside a `hidden`
//! element's subtree as far as the selector's element itself carries it); text is the text
//! nodes with a line break after each block element, entities decoded.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow};

/// One element: tag name, attributes (entities decoded) and text.
#[derive(Debug, Clone, PartialEq)]
pub struct Element {
    /// Lower-case tag name.
    pub tag: String,
    /// Attributes by name; a bare attribute has an empty value.
    pub attrs: BTreeMap<String, String>,
    /// Its text.
    pub text: String,
}

impl Element {
    /// An attribute's value.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.get(name).map(String::as_str)
    }
}

/// A field of a form as submitted: its name, value and kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// `name`.
    pub name: String,
    /// The value the page holds (`value`, a textarea's text, a select's chosen option).
    pub value: String,
    /// `input type` (`text` without), `select` or `textarea`.
    pub kind: String,
    /// A checkbox or radio button is ticked.
    pub checked: bool,
}

/// Elements that end a line of text.
const BLOCKS: [&str; 16] = [
    "p", "div", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "form", "br",
    "section", "table",
];

fn parse(html: &str) -> Result<tl::VDom<'_>> {
    tl::parse(html, tl::ParserOptions::default())
        .map_err(|e| anyhow!("the LiveView's HTML could not be read: {e}"))
}

fn unsupported(selector: &str) -> anyhow::Error {
    anyhow!(
        "'{selector}' is not a selector the liveview engine reads (tag, #id, .class, [attr], \
         [attr=value], compounds, descendant and child combinators)"
    )
}

/// Every element matching `selector`, in document order.
pub fn query(html: &str, selector: &str) -> Result<Vec<Element>> {
    let dom = parse(html)?;
    let parser = dom.parser();
    let found = dom
        .query_selector(selector)
        .ok_or_else(|| unsupported(selector))?;
    Ok(found
        .filter_map(|handle| handle.get(parser)?.as_tag().map(|t| element(t, parser)))
        .collect())
}

/// The first element matching `selector` that is not `hidden`.
pub fn visible(html: &str, selector: &str) -> Result<Option<Element>> {
    Ok(query(html, selector)?
        .into_iter()
        .find(|e| e.attr("hidden").is_none()))
}

/// The page's text.
pub fn text(html: &str) -> Result<String> {
    let dom = parse(html)?;
    let parser = dom.parser();
    let mut out = String::new();
    for handle in dom.children() {
        if let Some(node) = handle.get(parser) {
            write_text(node, parser, &mut out, 0);
        }
    }
    Ok(out)
}

fn element(tag: &tl::HTMLTag<'_>, parser: &tl::Parser<'_>) -> Element {
    let attrs = tag
        .attributes()
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), decode(&v.unwrap_or_default())))
        .collect();
    let mut text = String::new();
    for child in tag.children().top().iter() {
        if let Some(node) = child.get(parser) {
            write_text(node, parser, &mut text, 0);
        }
    }
    Element {
        tag: tag.name().as_utf8_str().to_ascii_lowercase(),
        attrs,
        text: text.trim().to_string(),
    }
}

fn write_text(node: &tl::Node<'_>, parser: &tl::Parser<'_>, out: &mut String, depth: u32) {
    match node {
        tl::Node::Raw(raw) => out.push_str(&decode(&raw.as_utf8_str())),
        tl::Node::Tag(tag) if depth < 256 => {
            let name = tag.name().as_utf8_str().to_ascii_lowercase();
            if matches!(name.as_str(), "script" | "style" | "template") {
                return;
            }
            for child in tag.children().top().iter() {
                if let Some(child) = child.get(parser) {
                    write_text(child, parser, out, depth + 1);
                }
            }
            if BLOCKS.contains(&name.as_str()) && !out.ends_with('\n') {
                out.push('\n');
            }
        }
        _ => {}
    }
}

/// The first `form` matching `form_selector` with its fields, or the first form holding an
/// element matching `inner` (a submit button), when `form_selector` is `None`.
pub fn form(
    html: &str,
    form_selector: &str,
    inner: Option<&str>,
) -> Result<Option<(Element, Vec<Field>)>> {
    let dom = parse(html)?;
    let parser = dom.parser();
    let forms = dom
        .query_selector(form_selector)
        .ok_or_else(|| unsupported(form_selector))?;
    for handle in forms {
        let Some(form) = handle.get(parser).and_then(tl::Node::as_tag) else {
            continue;
        };
        if let Some(inner) = inner {
            let mut holds = form
                .query_selector(parser, inner)
                .ok_or_else(|| unsupported(inner))?;
            if holds.next().is_none() {
                continue;
            }
        }
        let mut fields = Vec::new();
        let inputs = form
            .query_selector(parser, "input, select, textarea")
            .expect("a valid selector");
        for input in inputs {
            if let Some(input) = input.get(parser).and_then(tl::Node::as_tag) {
                fields.extend(field(input, parser));
            }
        }
        return Ok(Some((element(form, parser), fields)));
    }
    Ok(None)
}

/// A form control as a field (`None` without a name).
fn field(input: &tl::HTMLTag<'_>, parser: &tl::Parser<'_>) -> Option<Field> {
    let control = element(input, parser);
    let name = control.attr("name")?.to_string();
    let checked = control.attr("checked").is_some();
    let (kind, value) = match control.tag.as_str() {
        "textarea" => ("textarea".to_string(), control.text.clone()),
        "select" => {
            let options = input
                .query_selector(parser, "option")
                .expect("a valid selector");
            let options: Vec<Element> = options
                .filter_map(|o| o.get(parser)?.as_tag().map(|t| element(t, parser)))
                .collect();
            let chosen = options
                .iter()
                .find(|o| o.attr("selected").is_some())
                .or(options.first());
            let value = chosen.map_or(String::new(), |o| {
                o.attr("value").map_or(o.text.clone(), str::to_string)
            });
            ("select".to_string(), value)
        }
        _ => {
            let kind = control.attr("type").unwrap_or("text").to_ascii_lowercase();
            let default = if matches!(kind.as_str(), "checkbox" | "radio") {
                "on"
            } else {
                ""
            };
            (kind, control.attr("value").unwrap_or(default).to_string())
        }
    };
    Some(Field {
        name,
        value,
        kind,
        checked,
    })
}

/// HTML's character references in text and attribute values: the named ones a server's
/// escaping produces, and numeric ones.
pub fn decode(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let end = rest.find(';').filter(|&end| end <= 10);
        let decoded = end.and_then(|end| {
            let name = &rest[1..end];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" | "#39" => Some('\''),
                "nbsp" => Some('\u{a0}'),
                _ => {
                    let number = name.strip_prefix('#')?;
                    let code = match number.strip_prefix(['x', 'X']) {
                        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                        None => number.parse().ok()?,
                    };
                    char::from_u32(code)
                }
            }?;
            Some((c, end))
        });
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"<h1 id="title">Counter</h1><p>Count: <span id="count">3</span></p><button id="inc" phx-click="inc" phx-value-by="1">+1</button><p id="gone" hidden>x</p><form id="note" phx-submit="save"><input id="t" type="text" name="note[text]" value="a &amp; b"><input type="hidden" name="note[kind]" value="memo"/><input type="checkbox" name="ok" checked><select name="s"><option value="x">X</option><option value="y" selected>Y</option></select><textarea name="ta">hi</textarea><button id="save" type="submit">Save</button></form><ul><li class="note">one</li><li class="note">two</li></ul>"#;

    #[test]
    fn elements_are_found_with_their_attributes_and_text() {
        let inc = query(PAGE, "#inc").unwrap();
        assert_eq!(inc.len(), 1);
        assert_eq!(inc[0].attr("phx-click"), Some("inc"));
        assert_eq!(inc[0].attr("phx-value-by"), Some("1"));
        assert_eq!(query(PAGE, "li.note").unwrap().len(), 2);
        assert_eq!(query(PAGE, "ul > li").unwrap()[1].text, "two");
        assert_eq!(query(PAGE, "[name=\"note[kind]\"]").unwrap().len(), 1);
        assert_eq!(query(PAGE, "#t").unwrap()[0].attr("value"), Some("a & b"));
        assert!(visible(PAGE, "#gone").unwrap().is_none());
        assert!(visible(PAGE, "#count").unwrap().is_some());
        let page = text(PAGE).unwrap();
        assert!(page.contains("Count: 3\n"), "{page:?}");
        assert!(page.contains("one\ntwo"), "{page:?}");
    }

    #[test]
    fn a_form_is_found_by_itself_or_by_its_button() {
        let (form_el, fields) = form(PAGE, "form", Some("#save")).unwrap().unwrap();
        assert_eq!(form_el.attr("phx-submit"), Some("save"));
        let named: Vec<(&str, &str)> = fields
            .iter()
            .map(|f| (f.name.as_str(), f.value.as_str()))
            .collect();
        assert_eq!(
            named,
            [
                ("note[text]", "a & b"),
                ("note[kind]", "memo"),
                ("ok", "on"),
                ("s", "y"),
                ("ta", "hi")
            ]
        );
        assert!(fields[2].checked);
        assert!(form(PAGE, "form", Some("#inc")).unwrap().is_none());
        assert!(form(PAGE, "#note", None).unwrap().is_some());
    }

    #[test]
    fn an_attribute_after_a_bare_one_keeps_its_name() {
        // y21/tl 0.7.8 read this as `ata-phx-session`: every LiveView page's main element.
        let html =
            r#"<div id="phx-F2" data-phx-main data-phx-session="S.1" data-phx-static="T">x</div>"#;
        let main = &query(html, "[data-phx-main]").unwrap()[0];
        assert_eq!(main.attr("data-phx-session"), Some("S.1"));
        assert_eq!(main.attr("data-phx-static"), Some("T"));
    }

    #[test]
    fn references_are_decoded_and_broken_ones_kept() {
        assert_eq!(
            decode("a &lt;b&gt; &#39;c&#x27; &amp;amp; &bogus; &"),
            "a <b> 'c' &amp; &bogus; &"
        );
    }
}
