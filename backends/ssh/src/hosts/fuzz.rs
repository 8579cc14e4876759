//! Fuzz target: the hosts file (`parse`), from arbitrary text and from TOML built of its real
//! keys with wrong types, huge numbers, odd strings and deep nesting. Seeded property tests
//! (stable Rust, bounded time); `LIVELOAD_FUZZ_CASES` and `LIVELOAD_FUZZ_SEED` for longer or
//! different runs.

use std::collections::HashSet;

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, RngAlgorithm, RngSeed, TestCaseError};

use super::*;

/// The seed of every run unless `LIVELOAD_FUZZ_SEED` says otherwise.
const DEFAULT_SEED: u64 = 0x11fe_10ad_0012_0007;

/// A number from the environment, for longer or different runs.
fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.trim().parse().ok()
}

/// The proptest configuration (the same helper as in liveload-core's and liveload-proto's
/// fuzz targets): `default_cases` cases, a fixed ChaCha seed, no failure files.
fn config(default_cases: u32) -> Config {
    let cases = env_number("LIVELOAD_FUZZ_CASES").map_or(default_cases, |n| n as u32);
    Config {
        cases,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(env_number("LIVELOAD_FUZZ_SEED").unwrap_or(DEFAULT_SEED)),
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..Config::default()
    }
}

/// Every answer of `parse(text, "h.toml")`: hosts that keep the file's promises, or an error
/// that names the file (and a line inside it, when it gives one).
fn check(text: &str, result: Result<Vec<Host>, Error>) -> Result<(), TestCaseError> {
    match result {
        Ok(hosts) => {
            prop_assert!(!hosts.is_empty());
            let names: HashSet<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
            prop_assert_eq!(names.len(), hosts.len(), "names are unique");
            for host in &hosts {
                prop_assert!(host.max_users != Some(0));
                if let Some(jump) = &host.jump {
                    prop_assert!(jump.jump.is_none() && jump.max_users.is_none());
                }
            }
        }
        Err(Error::InvalidOption { option, message }) => {
            prop_assert_eq!(option, "--hosts");
            let rest = message.strip_prefix("h.toml:");
            prop_assert!(rest.is_some(), "{}", message);
            let line = rest.unwrap().split(':').next().unwrap_or("");
            if let Ok(line) = line.parse::<usize>() {
                prop_assert!(
                    line >= 1 && line <= text.matches('\n').count() + 1,
                    "{}",
                    message
                );
            }
        }
        Err(other) => return Err(TestCaseError::fail(format!("{other:?}"))),
    }
    Ok(())
}

/// A TOML value for any key: right, of the wrong type, huge, or odd.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\"10.0.0.5\"".to_string()),
        Just("\"loadtest\"".to_string()),
        (0u32..70_000).prop_map(|n| n.to_string()),
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("18446744073709551616".to_string()),
        Just("99999999999999999999999999".to_string()),
        Just("1e400".to_string()),
        Just("nan".to_string()),
        Just("true".to_string()),
        Just("1979-05-27T07:32:00Z".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("\"~/.ssh/id\"".to_string()),
        "\"[^\"\\\\\\n]{0,10}\"",
        any::<String>().prop_map(|s| format!("{s:?}")),
        (1usize..300).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n))),
        (1usize..40).prop_map(|n| { format!("{}\"a\"{}", "{ jump = ".repeat(n), " }".repeat(n)) }),
    ]
}

const KEYS: &[&str] = &[
    "name",
    "address",
    "port",
    "user",
    "identity",
    "agent",
    "max_users",
    "jump",
    "bogus",
];

/// `key = value` lines.
fn table_body() -> impl Strategy<Value = String> {
    proptest::collection::vec((proptest::sample::select(KEYS), value()), 0..6).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(k, v)| format!("{k} = {v}\n"))
            .collect()
    })
}

/// A hosts file: an optional `[defaults]`, some `[[host]]`s, now and then a stranger.
fn hosts_file() -> impl Strategy<Value = String> {
    let header = prop_oneof![
        4 => Just("[[host]]"),
        1 => Just("[defaults]"),
        1 => Just("[host]"),
        1 => Just("[[defaults]]"),
        1 => Just("[other]"),
    ];
    proptest::collection::vec((header, table_body()), 0..5).prop_map(|tables| {
        tables
            .into_iter()
            .map(|(h, body)| format!("{h}\n{body}"))
            .collect()
    })
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn arbitrary_text(text in any::<String>()) {
        check(&text, parse(&text, "h.toml"))?;
    }

    #[test]
    fn structured_hosts_files(text in hosts_file()) {
        check(&text, parse(&text, "h.toml"))?;
    }

    /// A well-formed file reads back its hosts: address, port and cap as written.
    #[test]
    fn valid_hosts_read_back(
        hosts in proptest::collection::btree_map("[a-z]{1,8}", (any::<u16>(), 1u32..10_000), 1..5),
    ) {
        let text: String = hosts
            .iter()
            .map(|(a, (port, max))| {
                format!("[[host]]\naddress = \"{a}\"\nuser = \"u\"\nport = {port}\nmax_users = {max}\n")
            })
            .collect();
        let parsed = parse(&text, "h.toml").map_err(|e| TestCaseError::fail(e.to_string()))?;
        let got: Vec<(String, u16, Option<u32>)> =
            parsed.into_iter().map(|h| (h.address, h.port, h.max_users)).collect();
        let want: Vec<(String, u16, Option<u32>)> =
            hosts.into_iter().map(|(a, (p, m))| (a, p, Some(m))).collect();
        prop_assert_eq!(got, want);
    }
}

/// Deep nesting: the TOML parser refuses it (or reads it) without overflowing the stack.
#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    for text in [
        format!("[[host]]\naddress = {}", "[".repeat(100_000)),
        format!(
            "[[host]]\naddress = \"a\"\njump = {}",
            "{ jump = ".repeat(100_000)
        ),
        format!(
            "[[host]]\naddress = {}{}",
            "[".repeat(5_000),
            "]".repeat(5_000)
        ),
    ] {
        let result = parse(&text, "h.toml");
        assert!(result.is_err());
        check(&text, result).unwrap();
    }
}
