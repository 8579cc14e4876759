use super::super::tests::{HEAD, location, parse};
use super::*;

#[test]
fn unknown_template_variable_is_located() {
    let (line, column, message) = location(
        parse(&format!(
            "{HEAD}  - navigate: /\n  - fill: {{ selector: '#n', value: '{{{{nmae}}}}' }}\n"
        ))
        .unwrap_err(),
    );
    assert_eq!(line, 5);
    assert!(column > 10);
    assert!(
        message.contains("nmae") && message.contains("user_id"),
        "{message}"
    );
}

#[test]
fn variables_are_known_only_after_they_are_set() {
    let err = parse(&format!(
        "{HEAD}  - navigate: '/{{{{later}}}}'\n  - eval: {{ js: '1', var: later }}\n"
    ))
    .unwrap_err();
    assert!(err.to_string().contains("later"));
}

#[test]
fn allowed_schemes_are_url_schemes_lowercased() {
    let head = "name: t\nbase_url: http://x\nsteps:\n  - navigate: /\n";
    let scenario = parse(&format!(
        "{head}allow_schemes: [FILE, 'chrome-extension:']\n"
    ))
    .unwrap();
    assert_eq!(scenario.allow_schemes, ["file", "chrome-extension"]);
    let err = parse(&format!("{head}allow_schemes: ['fi le']\n")).unwrap_err();
    assert!(
        err.to_string().contains("'fi le' is not a URL scheme"),
        "{err}"
    );
    assert!(parse(head).unwrap().allow_schemes.is_empty());
}

#[test]
fn locate_counts_characters_from_one() {
    assert_eq!(locate("a\n  é x\n", "x"), Some((2, 5)));
    assert_eq!(locate("a\n", "zz"), None);
}
