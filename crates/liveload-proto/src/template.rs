//! Value generators in `{{templates}}`: `{{uuid}}`, `{{seq}}`, `{{random_string 8}}`,
//! `{{random_int 1 100}}`. The controller checks them when it reads a scenario; the agent
//! expands them, a fresh value at each expansion. A user's variable of the same name wins.

/// One generator, parsed from a template's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generator {
    /// A random (version 4) UUID.
    Uuid,
    /// A number unique cluster-wide within the run (not gap-free).
    Seq,
    /// This many random letters and digits.
    RandomString(u32),
    /// A random integer between the two bounds, both included.
    RandomInt(i64, i64),
}

/// The longest `random_string` (characters).
pub const MAX_RANDOM_STRING: u32 = 1024;

/// The generators' names, for messages.
pub const GENERATORS: &str = "uuid, seq, random_string N, random_int LOW HIGH";

impl Generator {
    /// The generator a template names: `None` if the name is not a generator's, `Some(Err)`
    /// with the reason if it is one with wrong arguments.
    pub fn parse(name: &str) -> Option<Result<Generator, String>> {
        let mut words = name.split_whitespace();
        let kind = words.next()?;
        let args: Vec<&str> = words.collect();
        let number = |text: &str| {
            text.parse::<i64>()
                .map_err(|_| format!("'{text}' in {{{{{name}}}}} is not a whole number"))
        };
        let parsed = match (kind, args.as_slice()) {
            ("uuid", []) => Ok(Generator::Uuid),
            ("seq", []) => Ok(Generator::Seq),
            ("random_string", [length]) => number(length).and_then(|n| {
                u32::try_from(n)
                    .ok()
                    .filter(|n| (1..=MAX_RANDOM_STRING).contains(n))
                    .map(Generator::RandomString)
                    .ok_or_else(|| {
                        format!(
                            "random_string takes a length from 1 to {MAX_RANDOM_STRING}, not {n}"
                        )
                    })
            }),
            ("random_int", [low, high]) => {
                let (low, high) = (number(low), number(high));
                low.and_then(|low| high.map(|high| (low, high)))
                    .and_then(|(low, high)| match low <= high {
                        true => Ok(Generator::RandomInt(low, high)),
                        false => Err(format!(
                            "random_int {low} {high}: the low bound is above the high one"
                        )),
                    })
            }
            ("uuid" | "seq" | "random_string" | "random_int", _) => Err(format!(
                "{{{{{name}}}}} has the wrong arguments: the generators are {GENERATORS}"
            )),
            _ => return None,
        };
        Some(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generators_parse_with_their_arguments() {
        assert_eq!(Generator::parse("uuid"), Some(Ok(Generator::Uuid)));
        assert_eq!(Generator::parse(" seq "), Some(Ok(Generator::Seq)));
        assert_eq!(
            Generator::parse("random_string 8"),
            Some(Ok(Generator::RandomString(8)))
        );
        assert_eq!(
            Generator::parse("random_int -5 100"),
            Some(Ok(Generator::RandomInt(-5, 100)))
        );
        assert_eq!(Generator::parse("email"), None);
        assert_eq!(Generator::parse(""), None);
        for wrong in [
            "uuid 4",
            "random_string",
            "random_string 0",
            "random_string 99999",
            "random_int 5 1",
            "random_int 1",
            "random_int a b",
            "random_int 1 99999999999999999999",
        ] {
            assert!(
                matches!(Generator::parse(wrong), Some(Err(_))),
                "{wrong} should be refused"
            );
        }
    }
}
