//! CSS selectors for the liveview engine's element steps, matched against the page it keeps
//! ([`super::dom`]): type, `#id`, `.class`, attribute tests (`[a]`, `[a=v]`, `~=`, `^=`, `$=`,
//! `*=`, `|=`; values quoted or not, brackets inside quotes allowed, as in Phoenix's
//! `[name="user[email]"]`), `*`, compounds of them, the descendant and child combinators, and
//! lists (`a, b`). Hand-written: `tl`, the HTML parser, matches compounds only (its
//! combinators match nothing, and it cannot read a bracket inside a quoted value), and a full
//! engine (`selectors`, `cssparser`) would cost a dozen crates for what these few lines do.
//! Pseudo-classes and sibling combinators are refused with the selector named.

use std::collections::BTreeMap;

/// A parsed selector: alternatives, each compounds joined by combinators (left to right).
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    alternatives: Vec<Vec<(Combinator, Compound)>>,
}

/// How a compound relates to the one before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Combinator {
    /// The first compound, or one inside the previous (any depth).
    Descendant,
    /// Directly inside the previous.
    Child,
}

/// What one element must be.
#[derive(Debug, Clone, Default, PartialEq)]
struct Compound {
    tag: Option<String>,
    id: Option<String>,
    classes: Vec<String>,
    attributes: Vec<AttributeTest>,
}

/// An attribute's name and, unless only its presence is tested, an operator (`=`, `~`, `^`,
/// `$`, `*`, `|`) and a value.
type AttributeTest = (String, Option<(char, String)>);

/// What the matcher needs of an element: its tag, attributes and parent.
pub trait Node {
    /// Lower-case tag name.
    fn tag(&self) -> &str;
    /// Attributes by lower-case name.
    fn attrs(&self) -> &BTreeMap<String, String>;
}

fn refused(selector: &str, why: &str) -> String {
    format!(
        "'{selector}' is not a selector the liveview engine reads ({why}; it reads tag, #id, \
         .class, [attr], [attr=value] and ~= ^= $= *= |=, compounds, descendant and child \
         combinators, lists)"
    )
}

impl Selector {
    /// Parse `text`; an error names the selector and what is wrong with it.
    pub fn parse(text: &str) -> Result<Selector, String> {
        let mut alternatives = Vec::new();
        let mut current: Vec<(Combinator, Compound)> = Vec::new();
        let mut combinator = Combinator::Descendant;
        let mut chars = text.chars().peekable();
        loop {
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            match chars.peek() {
                None | Some(',') => {
                    if current.is_empty() || combinator == Combinator::Child {
                        return Err(refused(text, "an empty part"));
                    }
                    alternatives.push(std::mem::take(&mut current));
                    if chars.next().is_none() {
                        break;
                    }
                    continue;
                }
                Some('>') => {
                    if current.is_empty() || combinator == Combinator::Child {
                        return Err(refused(text, "a '>' with nothing before it"));
                    }
                    chars.next();
                    combinator = Combinator::Child;
                    continue;
                }
                Some('+' | '~') => return Err(refused(text, "sibling combinators")),
                Some(':') => return Err(refused(text, "pseudo-classes")),
                Some(_) => {}
            }
            let compound = compound(&mut chars).map_err(|why| refused(text, why))?;
            current.push((combinator, compound));
            combinator = Combinator::Descendant;
        }
        Ok(Selector { alternatives })
    }

    /// Whether `element` matches the last compound of an alternative: a cheap test before
    /// [`Selector::matches`] looks at its ancestors.
    pub fn may_match<N: Node>(&self, element: &N) -> bool {
        self.alternatives
            .iter()
            .any(|parts| parts.last().is_some_and(|(_, last)| last.matches(element)))
    }

    /// Whether the element at the end of `chain` (the root first) matches.
    pub fn matches<N: Node>(&self, chain: &[&N]) -> bool {
        self.alternatives
            .iter()
            .any(|parts| matches_from(parts, chain))
    }
}

/// Right to left: the last part matches the chain's last element, the others its ancestors.
fn matches_from<N: Node>(parts: &[(Combinator, Compound)], chain: &[&N]) -> bool {
    let (Some(((combinator, last), before)), Some((element, ancestors))) =
        (parts.split_last(), chain.split_last())
    else {
        return parts.is_empty();
    };
    if !last.matches(*element) {
        return false;
    }
    if before.is_empty() {
        return true;
    }
    match combinator {
        Combinator::Child => matches_from(before, ancestors),
        Combinator::Descendant => {
            (1..=ancestors.len()).any(|end| matches_from(before, &ancestors[..end]))
        }
    }
}

impl Compound {
    fn matches<N: Node>(&self, element: &N) -> bool {
        let attrs = element.attrs();
        self.tag.as_ref().is_none_or(|tag| tag == element.tag())
            && self
                .id
                .as_ref()
                .is_none_or(|id| attrs.get("id") == Some(id))
            && self.classes.iter().all(|class| {
                attrs
                    .get("class")
                    .is_some_and(|list| list.split_whitespace().any(|c| c == class))
            })
            && self.attributes.iter().all(|(name, test)| {
                let Some(value) = attrs.get(name) else {
                    return false;
                };
                match test {
                    None => true,
                    Some(('=', wanted)) => value == wanted,
                    Some(('~', wanted)) => value.split_whitespace().any(|w| w == wanted),
                    Some(('^', wanted)) => !wanted.is_empty() && value.starts_with(wanted.as_str()),
                    Some(('$', wanted)) => !wanted.is_empty() && value.ends_with(wanted.as_str()),
                    Some(('*', wanted)) => !wanted.is_empty() && value.contains(wanted.as_str()),
                    Some(('|', wanted)) => {
                        value == wanted || value.starts_with(&format!("{wanted}-"))
                    }
                    Some(_) => false,
                }
            })
    }
}

/// A name: letters, digits, `-`, `_` (and anything beyond ASCII).
fn name(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> String {
    let mut out = String::new();
    while let Some(c) = chars.next_if(|c| c.is_alphanumeric() || matches!(c, '-' | '_')) {
        out.push(c);
    }
    out
}

/// One compound: `tag#id.class[attr]...`.
fn compound(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
) -> Result<Compound, &'static str> {
    let mut compound = Compound::default();
    if chars.next_if_eq(&'*').is_none() {
        let tag = name(chars);
        if !tag.is_empty() {
            compound.tag = Some(tag.to_ascii_lowercase());
        }
    }
    let mut empty = compound.tag.is_none();
    loop {
        match chars.peek() {
            Some('#') => {
                chars.next();
                compound.id = Some(name(chars)).filter(|n| !n.is_empty());
                compound.id.as_ref().ok_or("an empty #id")?;
            }
            Some('.') => {
                chars.next();
                let class = name(chars);
                if class.is_empty() {
                    return Err("an empty .class");
                }
                compound.classes.push(class);
            }
            Some('[') => {
                chars.next();
                compound.attributes.push(attribute(chars)?);
            }
            Some(':') => return Err("pseudo-classes"),
            Some(c) if c.is_whitespace() || matches!(c, ',' | '>' | '+' | '~') => break,
            None => break,
            Some(_) if empty => return Err("an unexpected character"),
            Some(_) => return Err("an unexpected character"),
        }
        empty = false;
    }
    Ok(compound)
}

/// The inside of `[...]`, after the `[`.
fn attribute(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
) -> Result<AttributeTest, &'static str> {
    while chars.next_if(|c| c.is_whitespace()).is_some() {}
    let attribute = name(chars).to_ascii_lowercase();
    if attribute.is_empty() {
        return Err("an attribute test without a name");
    }
    while chars.next_if(|c| c.is_whitespace()).is_some() {}
    let op = match chars.next() {
        Some(']') => return Ok((attribute, None)),
        Some('=') => '=',
        Some(op @ ('~' | '^' | '$' | '*' | '|')) => {
            chars
                .next_if_eq(&'=')
                .ok_or("an attribute operator without '='")?;
            op
        }
        _ => return Err("an attribute test that does not close"),
    };
    while chars.next_if(|c| c.is_whitespace()).is_some() {}
    let mut value = String::new();
    match chars.next_if(|c| *c == '"' || *c == '\'') {
        Some(quote) => loop {
            match chars.next() {
                Some(c) if c == quote => break,
                Some('\\') => value.extend(chars.next()),
                Some(c) => value.push(c),
                None => return Err("a quoted value that does not close"),
            }
        },
        None => {
            while let Some(c) = chars.next_if(|c| *c != ']' && !c.is_whitespace()) {
                value.push(c);
            }
        }
    }
    while chars.next_if(|c| c.is_whitespace()).is_some() {}
    chars
        .next_if_eq(&']')
        .ok_or("an attribute test that does not close")?;
    Ok((attribute, Some((op, value))))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct El(&'static str, BTreeMap<String, String>);
    impl Node for El {
        fn tag(&self) -> &str {
            self.0
        }
        fn attrs(&self) -> &BTreeMap<String, String> {
            &self.1
        }
    }
    fn el(tag: &'static str, attrs: &[(&str, &str)]) -> El {
        El(
            tag,
            attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn compounds_and_combinators_match_like_css() {
        let form = el("form", &[("id", "note"), ("class", "a b")]);
        let div = el("div", &[]);
        let input = el("input", &[("name", "note[text]"), ("type", "text")]);
        let chain = [&form, &div, &input];
        let yes = |s: &str| Selector::parse(s).unwrap().matches(&chain);
        assert!(yes("input"));
        assert!(yes("form input"));
        assert!(yes("form.a.b#note div > input"));
        assert!(yes(r#"[name="note[text]"]"#));
        assert!(yes("input[type=text][name^=note]"));
        assert!(yes("#nope, input[name$='t]']"));
        assert!(yes("*[name*=text]"));
        assert!(!yes("form > input"));
        assert!(!yes("div form input"));
        assert!(!yes("input.a"));
        assert!(!yes("[name^='']"));
    }

    #[test]
    fn what_it_does_not_read_is_refused_by_name() {
        for bad in [
            "li:first-child",
            "h1 + p",
            "h1 ~ p",
            "",
            "a,",
            "> a",
            "a > > b",
            "[x",
            "[=v]",
            "a!",
            "#",
            "[a='v]",
        ] {
            let err = Selector::parse(bad).unwrap_err();
            assert!(
                err.contains("not a selector the liveview engine reads"),
                "{bad}: {err}"
            );
        }
    }
}
