//! The one configuration every target uses: a fixed seed, a case count, no files.
//!
//! (The proto, SSH and CLI crates keep a copy of this small module: they cannot share a test
//! crate without a dependency cycle through liveload-core.)

use proptest::test_runner::{Config, FileFailurePersistence, RngAlgorithm, RngSeed};

/// The seed of every run unless `LIVELOAD_FUZZ_SEED` says otherwise.
const DEFAULT_SEED: u64 = 0x11fe_10ad_0012_0007;

/// A number from the environment, for longer or different runs.
fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.trim().parse().ok()
}

/// The proptest configuration of a target that runs `default_cases` cases in the test command.
///
/// `LIVELOAD_FUZZ_CASES` replaces the count for every target (a longer run), and
/// `LIVELOAD_FUZZ_SEED` the seed. ChaCha with a fixed seed makes a run reproducible on any
/// machine; failures are not persisted to files (the seed and the printed input say it all).
pub fn config(default_cases: u32) -> Config {
    let cases = env_number("LIVELOAD_FUZZ_CASES").map_or(default_cases, |n| n as u32);
    Config {
        cases,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(env_number("LIVELOAD_FUZZ_SEED").unwrap_or(DEFAULT_SEED)),
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..Config::default()
    }
}
