//! Target: `parse_duration`, which reads every duration a person writes (scenario keys, CLI
//! flags, `liveload.toml`, threshold limits).

use std::time::Duration;

use liveload_core::scenario::{MAX_DURATION, parse_duration};
use proptest::prelude::*;

use crate::support::config;

/// Nanoseconds per unit, as written.
const UNITS: [(&str, u64); 4] = [
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Text shaped like a duration: digits, dots, spaces and a unit or something like one.
fn duration_like() -> impl Strategy<Value = String> {
    (
        "[ \t]{0,2}",
        "[0-9.]{0,30}",
        "[ ]?",
        prop_oneof![
            Just("ms"),
            Just("s"),
            Just("m"),
            Just("h"),
            Just(""),
            Just("d"),
            Just("µs"),
            Just("S"),
            Just("..1s"),
        ],
        "[ \t]{0,2}",
    )
        .prop_map(|(a, number, gap, unit, b)| format!("{a}{number}{gap}{unit}{b}"))
}

proptest! {
    #![proptest_config(config(2000))]

    /// Any text: a duration within the bound, or an error that quotes the text.
    #[test]
    fn any_text_parses_within_the_bound_or_is_quoted(
        text in prop_oneof![any::<String>(), duration_like()],
    ) {
        match parse_duration(&text) {
            Ok(d) => prop_assert!(d <= MAX_DURATION, "{text:?} gave {d:?}"),
            Err(message) => prop_assert!(
                message.contains(&format!("'{}'", text.trim())),
                "{text:?}: {message}"
            ),
        }
    }

    /// A whole number of any unit: exact below the bound, an error naming it above.
    #[test]
    fn whole_numbers_are_exact_or_refused_by_the_bound(
        n in prop_oneof![0u64..100_000, any::<u64>()],
        unit in 0usize..4,
    ) {
        let (suffix, nanos) = UNITS[unit];
        let text = format!("{n}{suffix}");
        let expected = u128::from(n) * u128::from(nanos);
        match parse_duration(&text) {
            Ok(d) => prop_assert_eq!(d.as_nanos(), expected),
            Err(message) => {
                prop_assert!(expected > MAX_DURATION.as_nanos(), "{text}: {message}");
                prop_assert!(message.contains("10 years"), "{message}");
            }
        }
    }

    /// A duration within the bound, written as milliseconds or as fractional seconds, reads
    /// back as itself (exactly, or to the precision of an f64 for a fraction).
    #[test]
    fn durations_round_trip(nanos in 0..=MAX_DURATION.as_nanos() as u64) {
        let d = Duration::from_nanos(nanos);
        let whole_ms = Duration::from_millis(d.as_millis() as u64);
        prop_assert_eq!(parse_duration(&format!("{}ms", whole_ms.as_millis())).unwrap(), whole_ms);
        let text = format!("{}.{:09}s", d.as_secs(), d.subsec_nanos());
        let back = parse_duration(&text).unwrap();
        let error = back.abs_diff(d).as_nanos() as f64;
        // An f64 holds 53 bits: relative error 2^-52, plus the final rounding to 1 ns.
        prop_assert!(error <= 1.0 + nanos as f64 * f64::EPSILON * 2.0, "{text} -> {back:?}");
    }

    /// Long runs of digits, with or without a fraction: refused by the bound, never a panic.
    #[test]
    fn huge_numbers_are_refused_with_the_bound(
        digits in "[1-9][0-9]{19,400}",
        fraction in proptest::option::of("[0-9]{0,20}"),
        unit in 0usize..4,
    ) {
        let number = match fraction {
            Some(f) => format!("{digits}.{f}"),
            None => digits,
        };
        let text = format!("{number}{}", UNITS[unit].0);
        let message = parse_duration(&text).unwrap_err();
        prop_assert!(message.contains("10 years"), "{text}: {message}");
    }
}
