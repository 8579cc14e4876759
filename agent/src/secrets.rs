//! Secret values a user holds, and their redaction from everything the agent reports.
//!
//! A value is secret when the scenario says so (a CSV column listed in `data.secret`, a
//! variable set by `extract`/`eval` with `secret: true`) or when it was typed into a password
//! input. Every text that leaves the agent — error messages (and so the report's error table),
//! `liveload try`'s trace, DOM dumps — passes through [`Secrets::redact`], which replaces each
//! secret value with [`REDACTED`].
//!
//! Redaction works on values, not on names: a secret is hidden wherever it appears, including
//! inside a URL or an error the page produced. What it cannot hide is a value the page itself
//! transforms before showing it (an uppercased password, a token split in two).

use std::collections::BTreeSet;

/// What a secret value is replaced with.
pub const REDACTED: &str = "[secret]";

/// One user's secret values.
#[derive(Debug, Default, Clone)]
pub struct Secrets {
    /// The values, longest first, so that a secret containing another is replaced whole.
    values: Vec<String>,
}

impl Secrets {
    /// Treat `value` as secret from now on (empty values are ignored: they hide nothing).
    pub fn add(&mut self, value: &str) {
        if value.is_empty() || self.values.iter().any(|v| v == value) {
            return;
        }
        self.values.push(value.to_string());
        self.values
            .sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    }

    /// Is there any secret at all? (Redaction is free when there is none.)
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The values, for masking them in the page before a screenshot.
    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// `text` with every secret value replaced by [`REDACTED`].
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for value in &self.values {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), REDACTED);
            }
        }
        out
    }
}

/// The secret values of a user's CSV row: the row's values in the secret columns.
pub fn of_row(columns: &[String], secret_columns: &BTreeSet<&str>, row: &[String]) -> Secrets {
    let mut secrets = Secrets::default();
    for (column, value) in columns.iter().zip(row) {
        if secret_columns.contains(column.as_str()) {
            secrets.add(value);
        }
    }
    secrets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_occurrence_is_redacted_longest_first() {
        let mut s = Secrets::default();
        s.add("hunter2");
        s.add("hunter2-extra");
        s.add("");
        assert_eq!(
            s.redact("login hunter2-extra then hunter2, /u?p=hunter2"),
            "login [secret] then [secret], /u?p=[secret]"
        );
        assert_eq!(Secrets::default().redact("plain"), "plain");
    }

    #[test]
    fn a_rows_secret_columns_are_its_secrets() {
        let columns = vec!["email".to_string(), "password".to_string()];
        let secret: BTreeSet<&str> = ["password"].into_iter().collect();
        let s = of_row(&columns, &secret, &["a@x".into(), "pw-1".into()]);
        assert_eq!(s.redact("a@x pw-1"), "a@x [secret]");
    }
}
