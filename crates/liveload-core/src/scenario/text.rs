//! The two small languages inside scenario strings: durations (`500ms`, `2m`) and
//! `{{variable}}` templates.
//!
//! Both are public because other parts of liveload read the same notations: the CLI parses
//! `--duration` with [`parse_duration`], thresholds parse their limits with it, so a duration
//! means the same thing wherever a user writes one.

use std::time::Duration;

/// The longest duration liveload accepts anywhere a person writes one: 10 years (3650 days).
///
/// Far above any real load test, far below what overflows: every deadline liveload computes
/// adds a few of these (duration + timeouts + grace) to the clock, and 10 years keeps those sums
/// well inside `Duration` and `Instant`, so no arithmetic on a user's duration can overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(3650 * 24 * 3600);

/// [`MAX_DURATION`] in words, for error messages.
pub const MAX_DURATION_TEXT: &str = "10 years (87600h)";

/// Parse `500ms`, `20s`, `2m`, `1h` (a number, then a unit), up to [`MAX_DURATION`].
///
/// The number may have a fraction (`1.5s`) and a space may separate it from the unit. A whole
/// number is read exactly (integer arithmetic, so `1234ms` is exactly 1.234 s); a fraction is
/// rounded to the nanosecond. The error is a message for a person: it quotes the text and
/// lists the units, or names the bound.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let invalid = || {
        format!("invalid duration '{text}': expected a number and a unit, like 500ms, 20s, 2m, 1h")
    };
    if !number.bytes().any(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let nanos_per_unit: u64 = match unit.trim() {
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3600 * 1_000_000_000,
        other => {
            return Err(format!(
                "invalid duration '{text}': unknown unit '{other}', use ms, s, m or h"
            ));
        }
    };
    let too_long = || format!("duration '{text}' is longer than the limit of {MAX_DURATION_TEXT}");
    // The bound in nanoseconds fits a u64 (3.2e17 < 1.8e19), so every check below is exact.
    let max_nanos = MAX_DURATION.as_nanos() as u64;
    let nanos = if number.contains('.') {
        let value: f64 = number.parse().map_err(|_| invalid())?;
        let nanos = value * nanos_per_unit as f64;
        // A parsed run of digits and dots is never negative nor NaN, but may be infinite.
        if nanos.is_nan() || nanos > max_nanos as f64 {
            return Err(too_long());
        }
        nanos.round() as u64
    } else {
        // Only digits here (at least one): a number too long for a u64 is too long a duration.
        let value: u64 = number.parse().map_err(|_| too_long())?;
        value.checked_mul(nanos_per_unit).ok_or_else(too_long)?
    };
    if nanos > max_nanos {
        return Err(too_long());
    }
    Ok(Duration::from_nanos(nanos))
}

/// The `{{names}}` a template refers to, in order, trimmed of surrounding spaces.
///
/// An unterminated `{{` ends the scan: it is left as literal text, not reported, because the
/// agent substitutes the same way (only complete `{{...}}` pairs are variables).
pub fn template_variables(text: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        names.push(after[..end].trim());
        rest = &after[end + 2..];
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("5 days").is_err());
        assert_eq!(
            parse_duration("1234ms").unwrap(),
            Duration::from_millis(1234)
        );
        assert_eq!(parse_duration("87600h").unwrap(), MAX_DURATION);
    }

    /// Regression (issue 12): `Duration::from_secs_f64` panicked on a product past its range.
    #[test]
    fn a_huge_duration_is_an_error_naming_the_bound() {
        for text in [
            "6000000000000000000m",
            "87601h",
            "315360000.001s",
            "99999999999999999999999999999h",
            "1.0e400s",
            &format!("{}.5s", "9".repeat(400)),
        ] {
            let err = parse_duration(text).unwrap_err();
            assert!(
                err.contains("10 years") || err.contains("invalid"),
                "{text}: {err}"
            );
        }
        let err = parse_duration("6000000000000000000m").unwrap_err();
        assert!(err.contains("limit of 10 years"), "{err}");
    }
}
