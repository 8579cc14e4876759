//! The two small languages inside scenario strings: durations (`500ms`, `2m`) and
//! `{{variable}}` templates.
//!
//! Both are public because other parts of liveload read the same notations: the CLI parses
//! `--duration` with [`parse_duration`], thresholds parse their limits with it, so a duration
//! means the same thing wherever a user writes one.

use std::time::Duration;

/// Parse `500ms`, `20s`, `2m`, `1h` (a number, then a unit).
///
/// The number may have a fraction (`1.5s`) and a space may separate it from the unit. The error
/// is a message for a person: it quotes the text and lists the units.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| {
        format!("invalid duration '{text}': expected a number and a unit, like 500ms, 20s, 2m, 1h")
    })?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "invalid duration '{text}': unknown unit '{other}', use ms, s, m or h"
            ));
        }
    };
    Ok(Duration::from_secs_f64(seconds))
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
    }
}
