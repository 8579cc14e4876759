//! Fuzz target: the config file (`ConfigFile::parse`), from arbitrary text and from TOML built
//! of real option keys and backend sections with wrong types, huge numbers, odd strings and
//! deep nesting. Seeded property tests (stable Rust, bounded time); `LIVELOAD_FUZZ_CASES`
//! and `LIVELOAD_FUZZ_SEED` for longer or different runs.

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

const BACKENDS: &[&str] = &["local", "fly"];

/// Every answer of `ConfigFile::parse`: entries on lines inside the file, no secret among
/// them; or an error that names the file and a line inside it, or the key.
fn check(text: &str, result: Result<ConfigFile, Error>) -> Result<(), TestCaseError> {
    let lines = text.matches('\n').count() + 1;
    match result {
        Ok(file) => {
            for e in &file.entries {
                prop_assert!((1..=lines).contains(&e.line), "{e:?}");
                prop_assert!(!is_secret(&e.id), "{e:?}");
            }
            prop_assert!(file.entries.windows(2).all(|w| w[0].line <= w[1].line));
        }
        Err(Error::InvalidOption { option, message }) => {
            // Either `liveload.toml:LINE` or the key itself (a value of the wrong type).
            if let Some(line) = option.strip_prefix("liveload.toml:") {
                let line: usize = line.parse().unwrap();
                prop_assert!((1..=lines).contains(&line), "{option}: {message}");
            } else {
                prop_assert!(message.starts_with("line "), "{option}: {message}");
            }
        }
        Err(other) => return Err(TestCaseError::fail(format!("{other:?}"))),
    }
    Ok(())
}

/// A TOML value: right for some option, of the wrong type, huge, or odd.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..1000).prop_map(|n| n.to_string()),
        Just("\"30s\"".to_string()),
        Just("\"6000000000000000000m\"".to_string()),
        Just("18446744073709551616".to_string()),
        Just("-9223372036854775808".to_string()),
        Just("0x7fff_ffff_ffff_ffff".to_string()),
        Just("0b1".to_string()),
        Just("0o777".to_string()),
        Just("1_000".to_string()),
        Just("1e400".to_string()),
        Just("-inf".to_string()),
        Just("nan".to_string()),
        Just("true".to_string()),
        Just("1979-05-27".to_string()),
        Just("[\"ams\", \"fra\"]".to_string()),
        Just("[[1], 2]".to_string()),
        Just("{ a = 1 }".to_string()),
        any::<String>().prop_map(|s| format!("{s:?}")),
        (1usize..300).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n))),
    ]
}

/// Option keys, backend sections' keys, secrets and strangers.
const KEYS: &[&str] = &[
    "users",
    "duration",
    "max-allowed-nodes",
    "creation_timeout",
    "grace",
    "ttl",
    "tls",
    "report_dir",
    "app",
    "regions",
    "token",
    "token_file",
    "api_password",
    "bogus",
    "\"quoted key\"",
    "a.b",
];

fn config_file() -> impl Strategy<Value = String> {
    let line = (proptest::sample::select(KEYS), value()).prop_map(|(k, v)| format!("{k} = {v}\n"));
    let section = prop_oneof![
        Just(String::new()),
        Just("[fly]\n".to_string()),
        Just("[local]\n".to_string()),
        Just("[aws]\n".to_string()),
        Just("[[fly]]\n".to_string()),
        Just("[fly.inner]\n".to_string()),
    ];
    proptest::collection::vec((section, proptest::collection::vec(line, 0..4)), 1..4).prop_map(
        |parts| {
            parts
                .into_iter()
                .map(|(header, lines)| format!("{header}{}", lines.concat()))
                .collect()
        },
    )
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn arbitrary_text(text in any::<String>()) {
        check(&text, ConfigFile::parse(Path::new("liveload.toml"), &text, BACKENDS))?;
    }

    #[test]
    fn structured_config_files(text in config_file()) {
        check(&text, ConfigFile::parse(Path::new("liveload.toml"), &text, BACKENDS))?;
    }

    /// A run option written in the file reads back as the text its flag would get.
    #[test]
    fn values_read_back(users in any::<i64>(), seconds in 0u32..100_000) {
        let text = format!("users = {users}\nduration = \"{seconds}s\"\n");
        let file = ConfigFile::parse(Path::new("liveload.toml"), &text, BACKENDS)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let got: Vec<(&str, &[String], usize)> = file
            .entries
            .iter()
            .map(|e| (e.id.as_str(), e.values.as_slice(), e.line))
            .collect();
        let (users, duration) = (vec![users.to_string()], vec![format!("{seconds}s")]);
        prop_assert_eq!(got, vec![("users", &users[..], 1), ("duration", &duration[..], 2)]);
    }
}

/// Deep nesting: the TOML parser refuses it without overflowing the stack.
#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    for text in [
        format!("users = {}", "[".repeat(100_000)),
        format!("users = {}", "{ a = ".repeat(100_000)),
    ] {
        let result = ConfigFile::parse(Path::new("liveload.toml"), &text, BACKENDS);
        assert!(result.is_err());
        check(&text, result).unwrap();
    }
}
