//! The demo target's pages, one module each. A module owns its HTML and its handlers and
//! exposes `routes()`, a [`Router`](axum::Router) with its paths only; [`crate::app`] merges
//! them. Paths must not overlap: axum panics at start-up on a route registered twice.

pub(crate) mod about;
pub(crate) mod actionability;
pub(crate) mod api;
pub(crate) mod clicks;
pub(crate) mod health;
pub(crate) mod home;
pub(crate) mod liveview;
pub(crate) mod probe;
pub(crate) mod seen;
pub(crate) mod table;
pub(crate) mod vitals;
