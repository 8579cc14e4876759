//! Proof that the JSON Schema and the parser accept exactly the same keys, in every object.
//!
//! The schema is written by hand (see `schema`), so nothing but this test stops it from
//! drifting: a field added to a raw type would be accepted by liveload but flagged as an error
//! by every editor, and a key left in the schema after the parser dropped it would be offered
//! by completion and then refused.
//!
//! Why a probe rather than a derived schema (`schemars`): deriving would add a proc-macro
//! dependency to the core crate, replace the curated patterns and descriptions with attribute
//! noise on every raw field, and still need hand-written impls for `RawStep` and `StringOrMap`,
//! the two types whose keys are the most likely to drift. A probe asks the code that actually
//! parses, including those hand-written visitors, and costs nothing outside tests.
//!
//! How the probe works: [`Explorer`] is a serde `Deserializer` that produces no data. Given a
//! path such as `load.model`, it steers the real `RawScenario` deserialiser down that path by
//! offering, at each level, a map holding just the next key. At the end of the path it makes
//! the type there describe itself:
//!
//! - a derived struct passes its accepted keys (the `fields` slice) to `deserialize_struct`;
//! - a hand-written visitor (a step, a string-or-map) is offered a key no type accepts, and
//!   names the keys it does accept in its `unknown_field` / `unknown_variant` error;
//! - an enum of names passes its variants to `deserialize_enum`.
//!
//! Steering through a key the parser refuses ends in that same "unknown key" error naming the
//! key, which is how a key the schema advertises but the parser rejects is caught.
//!
//! The test walks every object of the schema (following `$ref`s, `oneOf`s and array items) and
//! compares each with what the parser reports at the same path, so it needs no list of raw
//! types: a new step kind or a new argument struct is found by the walk.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Deserialize;
use serde::de::{
    self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};
use serde_json::Value;

use super::raw::{RawScenario, RawStep};
use super::{STEP_KINDS, json_schema};

/// A key no scenario type accepts, offered to make a map name the keys it does accept.
const PROBE: &str = "\u{0}probe";

/// The path segment for "an item of this list".
const ITEM: &str = "[]";

/// What the parser reads at the end of a path.
#[derive(Debug, PartialEq)]
enum Shape {
    /// A map accepting exactly these keys.
    Map(BTreeSet<String>),
    /// One of these names.
    Choice(BTreeSet<String>),
    /// Anything else: a string, a number, a list.
    Value,
}

/// How a probe ended. It is the explorer's serde error type, so it unwinds straight out of the
/// derived and hand-written deserialisers, carrying what was found.
#[derive(Debug)]
enum Probe {
    /// The end of the path was reached, and this is what is there.
    Found(Shape),
    /// The parser refused this key on the way.
    Rejected(String),
    /// Anything else (the path leads through a plain value, a map accepts any key, ...).
    Failed(String),
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for Probe {}

impl de::Error for Probe {
    fn custom<T: fmt::Display>(message: T) -> Self {
        Probe::Failed(message.to_string())
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        refused(field, expected)
    }

    /// Step visitors refuse an unknown kind key as an unknown variant of [`STEP_KINDS`].
    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        refused(variant, expected)
    }
}

/// A key was refused: if it was the probe, the list of accepted keys is the answer.
fn refused(key: &str, expected: &'static [&'static str]) -> Probe {
    if key == PROBE {
        Probe::Found(Shape::Map(names(expected)))
    } else {
        Probe::Rejected(key.to_string())
    }
}

/// A set of names, for comparing lists regardless of order.
fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A deserialiser that walks `path` into whatever type deserialises from it (see the module
/// documentation).
struct Explorer<'p> {
    /// What is left of the path.
    path: &'p [String],
}

impl<'p> Explorer<'p> {
    /// Offer a map: of the probe key at the end of the path, of the next key before it.
    fn map<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Probe> {
        match self.path.split_first() {
            None => visitor.visit_map(OneEntry {
                key: Some(PROBE),
                value: None,
            }),
            Some((key, rest)) if key != ITEM => visitor.visit_map(OneEntry {
                key: Some(key),
                value: Some(Explorer { path: rest }),
            }),
            Some(_) => Err(Probe::Failed("a map has no items".into())),
        }
    }

    /// A plain value: the end of the path, or a dead end.
    fn plain_value<T>(self) -> Result<T, Probe> {
        match self.path.first() {
            None => Err(Probe::Found(Shape::Value)),
            Some(next) => Err(Probe::Failed(format!(
                "a plain value has no `{next}` inside"
            ))),
        }
    }
}

/// Scalar requests all end the path as a [`Shape::Value`].
macro_rules! plain_values {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Probe> {
            self.plain_value()
        }
    )*};
}

impl<'de> Deserializer<'de> for Explorer<'_> {
    type Error = Probe;

    /// Hand-written deserialisers (steps, string-or-map) ask for anything: offer a map.
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Probe> {
        self.map(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Probe> {
        self.map(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Probe> {
        if self.path.is_empty() {
            return Err(Probe::Found(Shape::Map(names(fields))));
        }
        self.map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Probe> {
        if !self.path.is_empty() {
            return Err(Probe::Failed("a choice of names has nothing inside".into()));
        }
        Err(Probe::Found(Shape::Choice(names(variants))))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Probe> {
        match self.path.split_first() {
            None => Err(Probe::Found(Shape::Value)),
            Some((item, rest)) if item == ITEM => {
                visitor.visit_seq(OneItem(Some(Explorer { path: rest })))
            }
            Some((key, _)) => Err(Probe::Failed(format!("a list has no key `{key}`"))),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Probe> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Probe> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _visitor: V,
    ) -> Result<V::Value, Probe> {
        self.plain_value()
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, _: V) -> Result<V::Value, Probe> {
        self.plain_value()
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        _visitor: V,
    ) -> Result<V::Value, Probe> {
        self.plain_value()
    }

    plain_values! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_f32
        deserialize_f64 deserialize_char deserialize_str deserialize_string deserialize_bytes
        deserialize_byte_buf deserialize_unit deserialize_identifier deserialize_ignored_any
    }
}

/// A map of one entry: `key`, whose value explores the rest of the path. The probe key has no
/// value: a visitor that asks for one accepts unknown keys, which the schema would not.
struct OneEntry<'p> {
    /// The key, until the visitor has read it.
    key: Option<&'p str>,
    /// What explores its value; `None` for the probe key.
    value: Option<Explorer<'p>>,
}

impl<'de> MapAccess<'de> for OneEntry<'_> {
    type Error = Probe;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Probe> {
        self.key
            .take()
            .map(|key| seed.deserialize(key.into_deserializer()))
            .transpose()
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Probe> {
        match self.value.take() {
            Some(explorer) => seed.deserialize(explorer),
            None => Err(Probe::Failed("this map accepts any key".into())),
        }
    }
}

/// A list of one item, which explores the rest of the path.
struct OneItem<'p>(Option<Explorer<'p>>);

impl<'de> SeqAccess<'de> for OneItem<'_> {
    type Error = Probe;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Probe> {
        self.0
            .take()
            .map(|explorer| seed.deserialize(explorer))
            .transpose()
    }
}

/// What the parser reads at `path` of a scenario file, or why it cannot get there.
fn parser_shape(path: &[String]) -> Result<Shape, String> {
    match RawScenario::deserialize(Explorer { path }) {
        Ok(_) => Err("the parser read a whole scenario from a probe".into()),
        Err(Probe::Found(shape)) => Ok(shape),
        Err(Probe::Rejected(key)) => Err(format!("the parser rejects the key `{key}`")),
        Err(Probe::Failed(message)) => Err(message),
    }
}

/// The step kinds the parser takes bare, as a string (`- reload`).
fn parser_bare_steps() -> BTreeSet<String> {
    STEP_KINDS
        .iter()
        .filter(|kind| {
            let text: de::value::StrDeserializer<de::value::Error> = kind.into_deserializer();
            RawStep::deserialize(text).is_ok()
        })
        .map(|kind| kind.to_string())
        .collect()
}

/// What the schema says about one path: the keys of its objects, the names of its `enum`.
#[derive(Debug, Default)]
struct SchemaAt {
    /// The union of the `properties` of every object alternative here.
    keys: Option<BTreeSet<String>>,
    /// The names of an `enum` here.
    choices: Option<BTreeSet<String>>,
    /// A map of any keys (`additionalProperties` is a schema), like `map_hosts:`.
    any_keys: bool,
}

/// Every path the schema describes. A `$ref` already being expanded is not followed again:
/// a group's steps are the same steps, checked where the reference was first met.
fn schema_paths(
    node: &Value,
    root: &Value,
    path: &mut Vec<String>,
    expanding: &mut Vec<String>,
    out: &mut BTreeMap<Vec<String>, SchemaAt>,
) {
    if let Some(reference) = node.get("$ref").and_then(Value::as_str) {
        if expanding.iter().any(|r| r == reference) {
            return;
        }
        let pointer = reference.strip_prefix('#').expect("a local $ref");
        let target = root.pointer(pointer).expect("a $ref into the schema");
        expanding.push(reference.to_string());
        schema_paths(target, root, path, expanding, out);
        expanding.pop();
        return;
    }
    let properties = node.get("properties").and_then(Value::as_object);
    let at = out.entry(path.clone()).or_default();
    at.any_keys |= node
        .get("additionalProperties")
        .is_some_and(Value::is_object);
    if let Some(properties) = properties {
        at.keys
            .get_or_insert_default()
            .extend(properties.keys().cloned());
    }
    if let Some(choices) = node.get("enum").and_then(Value::as_array) {
        let choices = choices.iter().map(|c| c.as_str().expect("enum of names"));
        at.choices
            .get_or_insert_default()
            .extend(choices.map(str::to_string));
    }
    let children = properties
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v));
    let items = node.get("items").map(|items| (ITEM, items));
    for (segment, child) in children.chain(items) {
        path.push(segment.to_string());
        schema_paths(child, root, path, expanding, out);
        path.pop();
    }
    for alternative in node
        .get("oneOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        schema_paths(alternative, root, path, expanding, out);
    }
}

/// Every disagreement between `schema` and the parser, one line each.
fn drift(schema: &Value) -> Vec<String> {
    let mut paths = BTreeMap::new();
    schema_paths(schema, schema, &mut Vec::new(), &mut Vec::new(), &mut paths);
    let mut problems = Vec::new();
    for (path, at) in &paths {
        let shown = if path.is_empty() {
            "(top level)".to_string()
        } else {
            path.join(".")
        };
        match parser_shape(path) {
            Ok(shape) => problems.extend(
                disagreements(at, &shape)
                    .into_iter()
                    .map(|p| format!("{shown}: {p}")),
            ),
            Err(why) if at.any_keys && why.contains("accepts any key") => {}
            Err(why) => problems.push(format!("{shown}: the schema describes it, but {why}")),
        }
    }
    problems
}

/// How the schema's view of one path differs from the parser's `shape` there.
///
/// Keys the schema has beyond the parser's list are not reported here: each is a path of its
/// own, checked by [`drift`] to be reachable (a step's `name` is accepted beside the kinds
/// without being one of them).
fn disagreements(at: &SchemaAt, shape: &Shape) -> Vec<String> {
    let mut problems = Vec::new();
    match (&at.keys, shape) {
        (Some(keys), Shape::Map(accepted)) => {
            for key in accepted.difference(keys) {
                problems.push(format!("the parser accepts `{key}`, the schema lacks it"));
            }
        }
        (None, Shape::Map(accepted)) => problems.push(format!(
            "the parser reads a map of {accepted:?}, the schema has no object here"
        )),
        (Some(keys), other) => problems.push(format!(
            "the schema has an object of {keys:?}, the parser reads {other:?}"
        )),
        (None, _) => {}
    }
    match (&at.choices, shape) {
        (Some(choices), Shape::Choice(accepted)) => {
            if choices != accepted {
                problems.push(format!(
                    "the schema offers {choices:?}, the parser accepts {accepted:?}"
                ));
            }
        }
        (None, Shape::Choice(accepted)) => problems.push(format!(
            "the parser accepts only {accepted:?}, the schema any value"
        )),
        // A step: a map of one kind, or a bare kind name.
        (Some(choices), Shape::Map(kinds)) if *kinds == names(STEP_KINDS) => {
            let bare = parser_bare_steps();
            if *choices != bare {
                problems.push(format!(
                    "the schema offers bare steps {choices:?}, the parser accepts {bare:?}"
                ));
            }
        }
        (Some(choices), other) => problems.push(format!(
            "the schema offers {choices:?}, the parser reads {other:?}"
        )),
        (None, _) => {}
    }
    problems
}

#[test]
fn the_schema_accepts_exactly_the_keys_the_parser_accepts() {
    let problems = drift(&json_schema());
    assert!(
        problems.is_empty(),
        "docs/scenario.schema.json and the parser disagree (fix `json_schema()`, then regenerate \
         the file):\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_probe_reaches_every_level() {
    let path = |p: &str| -> Vec<String> { p.split('.').map(str::to_string).collect() };
    assert_eq!(
        parser_shape(&path("load.model")),
        Ok(Shape::Choice(names(&["closed", "open"])))
    );
    assert_eq!(
        parser_shape(&path("steps.[].wait_for")),
        Ok(Shape::Map(names(&[
            "selector",
            "state",
            "text",
            "url",
            "network_idle",
            "js",
            "timeout"
        ])))
    );
    assert_eq!(
        parser_shape(&path("thresholds.[]")),
        Ok(Shape::Map(names(&["expr", "abort_on_fail"])))
    );
    assert_eq!(parser_shape(&path("steps.[].name")), Ok(Shape::Value));
    assert_eq!(
        parser_shape(&path("steps.[].teleport")),
        Err("the parser rejects the key `teleport`".into())
    );
}

/// The test would catch drift both ways: a key missing from the schema, and one the parser
/// rejects.
#[test]
fn drift_is_caught_in_both_directions() {
    let mut schema = json_schema();
    let load = &mut schema["properties"]["load"]["properties"];
    load.as_object_mut().unwrap().remove("ramp_to");
    load["ramp_down"] = serde_json::json!({"type": "number"});
    let problems = drift(&schema);
    assert!(
        problems.contains(&"load: the parser accepts `ramp_to`, the schema lacks it".to_string()),
        "{problems:?}"
    );
    assert!(
        problems.contains(
            &"load.ramp_down: the schema describes it, but the parser rejects the key `ramp_down`"
                .to_string()
        ),
        "{problems:?}"
    );
    let mut schema = json_schema();
    let bare = &mut schema["$defs"]["step"]["oneOf"][0]["enum"];
    bare.as_array_mut().unwrap().push("click".into());
    // Found in each of the three step lists that share the step definition.
    let problems = drift(&schema);
    assert_eq!(
        problems.len(),
        3,
        "a bare step the parser refuses: {problems:?}"
    );
    for list in ["on_start", "steps", "on_stop"] {
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with(list) && p.contains("click")),
            "{list}: {problems:?}"
        );
    }
}
