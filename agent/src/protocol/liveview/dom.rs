//! Reading a LiveView's rendered HTML as a person reads the page: elements by CSS selector
//! ([`Selector`]), their attributes and text, the page's text, and a form's fields as the
//! browser would submit them. `tl` parses the HTML; the page is then kept as a flat list of
//! elements in document order, each with its parent, which the selector matcher walks.
//!
//! There is no layout: "visible" means present and neither it nor an ancestor `hidden`; text
//! is the text nodes with a line break after each block element, entities decoded.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow};

use super::selector::{self, Selector};

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

impl selector::Node for Element {
    fn tag(&self) -> &str {
        &self.tag
    }
    fn attrs(&self) -> &BTreeMap<String, String> {
        &self.attrs
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

/// How deep the page's elements may nest (deeper ones are not read).
const MAX_DEPTH: usize = 256;

/// A page: its elements in document order, each with its parent's index and the part of the
/// page's text it holds, and that text.
struct Page {
    /// The elements, their `text` left empty (see [`Page::element`]).
    elements: Vec<Element>,
    parents: Vec<Option<usize>>,
    /// Each element's text as a range of `text` (its text nodes come in document order).
    ranges: Vec<(usize, usize)>,
    text: String,
}

impl Page {
    fn read(html: &str) -> Result<Page> {
        let dom = tl::parse(html, tl::ParserOptions::default())
            .map_err(|e| anyhow!("the LiveView's HTML could not be read: {e}"))?;
        let parser = dom.parser();
        let mut page = Page {
            elements: Vec::new(),
            parents: Vec::new(),
            ranges: Vec::new(),
            text: String::new(),
        };
        let mut open = Vec::new();
        for handle in dom.children() {
            if let Some(node) = handle.get(parser) {
                page.add(node, parser, &mut open);
            }
        }
        Ok(page)
    }

    /// Add `node` and what it holds; `open` are the indexes of its ancestors.
    fn add(&mut self, node: &tl::Node<'_>, parser: &tl::Parser<'_>, open: &mut Vec<usize>) {
        match node {
            tl::Node::Raw(raw) => self.text.push_str(&decode(&raw.as_utf8_str())),
            tl::Node::Tag(tag) if open.len() < MAX_DEPTH => {
                let name = tag.name().as_utf8_str().to_ascii_lowercase();
                let attrs = tag
                    .attributes()
                    .iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), decode(&v.unwrap_or_default())))
                    .collect();
                let index = self.elements.len();
                self.parents.push(open.last().copied());
                self.ranges.push((self.text.len(), self.text.len()));
                let hides_text = matches!(name.as_str(), "script" | "style" | "template");
                self.elements.push(Element {
                    tag: name.clone(),
                    attrs,
                    text: String::new(),
                });
                if hides_text {
                    return;
                }
                open.push(index);
                for child in tag.children().top().iter() {
                    if let Some(child) = child.get(parser) {
                        self.add(child, parser, open);
                    }
                }
                open.pop();
                if BLOCKS.contains(&name.as_str()) && !self.text.ends_with('\n') {
                    self.text.push('\n');
                }
                self.ranges[index].1 = self.text.len();
            }
            _ => {}
        }
    }

    /// The element at `index`, with its text.
    fn element(&self, index: usize) -> Element {
        let (start, end) = self.ranges[index];
        Element {
            text: self.text[start..end].trim().to_string(),
            ..self.elements[index].clone()
        }
    }

    /// The element at `index` and its ancestors, the root first.
    fn chain(&self, index: usize) -> Vec<&Element> {
        let mut chain = vec![&self.elements[index]];
        let mut at = self.parents[index];
        while let Some(parent) = at {
            chain.push(&self.elements[parent]);
            at = self.parents[parent];
        }
        chain.reverse();
        chain
    }

    /// Indexes of the elements matching `selector`, in document order.
    fn select(&self, selector: &Selector) -> Vec<usize> {
        (0..self.elements.len())
            .filter(|&i| selector.may_match(&self.elements[i]) && selector.matches(&self.chain(i)))
            .collect()
    }

    /// Whether `index` is inside `ancestor`.
    fn inside(&self, index: usize, ancestor: usize) -> bool {
        let mut at = self.parents[index];
        while let Some(parent) = at {
            if parent == ancestor {
                return true;
            }
            at = self.parents[parent];
        }
        false
    }

    fn hidden(&self, index: usize) -> bool {
        self.chain(index).iter().any(|e| e.attr("hidden").is_some())
    }
}

fn parse_selector(selector: &str) -> Result<Selector> {
    Selector::parse(selector).map_err(|e| anyhow!(e))
}

/// Every element matching `selector`, in document order.
pub fn query(html: &str, selector: &str) -> Result<Vec<Element>> {
    let selector = parse_selector(selector)?;
    let page = Page::read(html)?;
    Ok(page
        .select(&selector)
        .into_iter()
        .map(|i| page.element(i))
        .collect())
}

/// The first element matching `selector` that is visible (neither it nor an ancestor
/// `hidden`).
pub fn visible(html: &str, selector: &str) -> Result<Option<Element>> {
    let selector = parse_selector(selector)?;
    let page = Page::read(html)?;
    Ok(page
        .select(&selector)
        .into_iter()
        .find(|&i| !page.hidden(i))
        .map(|i| page.element(i)))
}

/// The page's text.
pub fn text(html: &str) -> Result<String> {
    Ok(Page::read(html)?.text)
}

/// The first element matching `form_selector` with its fields (the `input`, `select` and
/// `textarea` inside it); with `inner`, the first such element holding an element matching
/// `inner` (the submit button clicked).
pub fn form(
    html: &str,
    form_selector: &str,
    inner: Option<&str>,
) -> Result<Option<(Element, Vec<Field>)>> {
    let form_selector = parse_selector(form_selector)?;
    let inner = inner.map(parse_selector).transpose()?;
    let page = Page::read(html)?;
    let inner = inner.map(|s| page.select(&s));
    for form in page.select(&form_selector) {
        if let Some(inner) = &inner
            && !inner.iter().any(|&i| page.inside(i, form))
        {
            continue;
        }
        let fields = (form + 1..page.elements.len())
            .filter(|&i| page.inside(i, form))
            .filter_map(|i| field(&page, i))
            .collect();
        return Ok(Some((page.element(form), fields)));
    }
    Ok(None)
}

/// A form control as a field (`None` for anything else, or without a name).
fn field(page: &Page, index: usize) -> Option<Field> {
    if !matches!(
        page.elements[index].tag.as_str(),
        "input" | "select" | "textarea"
    ) {
        return None;
    }
    let control = &page.element(index);
    let name = control.attr("name")?.to_string();
    let checked = control.attr("checked").is_some();
    let (kind, value) = match control.tag.as_str() {
        "textarea" => ("textarea".to_string(), control.text.clone()),
        "select" => {
            let options: Vec<Element> = (index + 1..page.elements.len())
                .filter(|&i| page.elements[i].tag == "option" && page.inside(i, index))
                .map(|i| page.element(i))
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
        assert_eq!(query(PAGE, "ul li").unwrap()[1].text, "two");
        assert_eq!(query(PAGE, "form [type=checkbox]").unwrap().len(), 1);
        assert_eq!(query(PAGE, "ul .note, #title").unwrap()[0].text, "Counter");
        assert_eq!(query(PAGE, "p li").unwrap().len(), 0);
        assert_eq!(query(PAGE, "ul > li").unwrap().len(), 2);
        for unsupported in ["li:first-child", "h1 + p"] {
            let err = query(PAGE, unsupported).unwrap_err().to_string();
            assert!(
                err.contains("not a selector the liveview engine reads"),
                "{err}"
            );
        }
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
        assert!(form(PAGE, "form", Some("form button")).unwrap().is_some());
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
