//! The arguments of protocol users' steps as written (`engine: http`): `request`,
//! `ws_connect`, `ws_expect`, and `expect:`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de;

use super::Shorthand;

/// `request: URL` (a GET) or `request: { method, url, headers, body | json | form, expect,
/// timeout }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::scenario) struct RequestArg {
    /// `GET` when absent.
    #[serde(default)]
    pub(in crate::scenario) method: Option<String>,
    /// Absolute, or relative to the base URL.
    pub(in crate::scenario) url: String,
    /// Request headers.
    #[serde(default)]
    pub(in crate::scenario) headers: BTreeMap<String, String>,
    /// A text body.
    #[serde(default)]
    pub(in crate::scenario) body: Option<String>,
    /// A JSON body, written as YAML.
    #[serde(default)]
    pub(in crate::scenario) json: Option<serde_json::Value>,
    /// Form fields, sent URL-encoded.
    #[serde(default)]
    pub(in crate::scenario) form: Option<BTreeMap<String, String>>,
    /// What the answer must be.
    #[serde(default)]
    pub(in crate::scenario) expect: Option<ExpectArg>,
    /// Give up after this long.
    #[serde(default)]
    pub(in crate::scenario) timeout: Option<String>,
}

impl Shorthand for RequestArg {
    fn from_string<E: de::Error>(url: String) -> Result<Self, E> {
        Ok(RequestArg {
            method: None,
            url,
            headers: BTreeMap::new(),
            body: None,
            json: None,
            form: None,
            expect: None,
            timeout: None,
        })
    }
}

/// `expect: { status, contains, json }` of a `request`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(in crate::scenario) struct ExpectArg {
    /// One status or a list of them.
    #[serde(default)]
    pub(in crate::scenario) status: Option<Statuses>,
    /// Text the body must contain.
    #[serde(default)]
    pub(in crate::scenario) contains: Option<String>,
    /// JSON path -> the value the body must hold there.
    #[serde(default)]
    pub(in crate::scenario) json: BTreeMap<String, serde_json::Value>,
}

/// `status: 200` or `status: [200, 201]`.
#[derive(Deserialize)]
#[serde(untagged, expecting = "a status (200) or a list of them ([200, 201])")]
pub(in crate::scenario) enum Statuses {
    /// One.
    One(u16),
    /// Several.
    Many(Vec<u16>),
}

/// `ws_connect: URL` or `ws_connect: { url, timeout }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::scenario) struct WsConnectArg {
    /// Absolute (`ws://`, `http://`) or relative to the base URL.
    pub(in crate::scenario) url: String,
    /// Give up after this long.
    #[serde(default)]
    pub(in crate::scenario) timeout: Option<String>,
}

impl Shorthand for WsConnectArg {
    fn from_string<E: de::Error>(url: String) -> Result<Self, E> {
        Ok(WsConnectArg { url, timeout: None })
    }
}

/// `ws_expect: TEXT` (the message contains it) or `ws_expect: { contains, json, timeout }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::scenario) struct WsExpectArg {
    /// Text the message must contain.
    #[serde(default)]
    pub(in crate::scenario) contains: Option<String>,
    /// JSON path -> the value the message must hold there.
    #[serde(default)]
    pub(in crate::scenario) json: BTreeMap<String, serde_json::Value>,
    /// Give up after this long.
    #[serde(default)]
    pub(in crate::scenario) timeout: Option<String>,
}

impl Shorthand for WsExpectArg {
    fn from_string<E: de::Error>(contains: String) -> Result<Self, E> {
        Ok(WsExpectArg {
            contains: Some(contains),
            json: BTreeMap::new(),
            timeout: None,
        })
    }
}
