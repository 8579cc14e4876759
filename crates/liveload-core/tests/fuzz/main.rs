//! Fuzz targets for everything liveload-core reads from people and agents, as seeded property
//! tests: scenario YAML, CSV data, durations, thresholds, and agents' metric snapshots.
//!
//! Why property tests and not cargo-fuzz: they run on stable Rust inside `cargo test`, in
//! bounded time, with a fixed seed, so CI is reproducible and every failure prints its input
//! (proptest shrinks it first). Each target asserts more than "no panic" where it can: errors
//! carry a position inside the input, values that parse round-trip.
//!
//! `cargo test -p liveload-core --test fuzz` runs each target's default case count (the whole
//! suite stays well under a minute in a debug build on 2 cores). Longer runs:
//! `LIVELOAD_FUZZ_CASES=100000 cargo test -p liveload-core --test fuzz --release`, and
//! `LIVELOAD_FUZZ_SEED=<n>` explores another part of the input space.

mod data;
mod durations;
mod metrics;
mod scenario;
mod support;
mod thresholds;
mod yaml_gen;
