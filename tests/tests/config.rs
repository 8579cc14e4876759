//! Config layering through the real binary: built-in default < liveload.toml < LIVELOAD_*
//! environment < flag, for a run option, a backend option and a secret-bearing option; and
//! what the file refuses.

use std::path::Path;

use liveload_e2e::{json_output, liveload, repo};

/// `liveload config --output json` in `dir` with `env` and `args`: the option rows by key.
fn effective(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> serde_json::Value {
    let mut command = liveload(dir);
    command
        .env_remove("LIVELOAD_USERS")
        .env_remove("LIVELOAD_FLY_APP")
        .env_remove("LIVELOAD_FLY_TOKEN_FILE")
        .envs(env.iter().copied())
        .args(["config", "--output", "json", "--backend", "fly"])
        .args(args);
    let (code, json, out) = json_output(&mut command);
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    json
}

fn row<'a>(doc: &'a serde_json::Value, key: &str) -> (&'a serde_json::Value, &'a str) {
    let row = doc["options"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == key)
        .unwrap_or_else(|| panic!("no row {key} in {doc}"));
    (&row["value"], row["source"].as_str().unwrap())
}

#[test]
fn each_layer_overrides_the_one_below() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, &str, &str); 3] = [
        // key, env variable, flag, the file's line
        ("users", "LIVELOAD_USERS", "--users", "users = 5"),
        (
            "fly.app",
            "LIVELOAD_FLY_APP",
            "--fly-app",
            "app = \"from-file\"",
        ),
        (
            "fly.token_file",
            "LIVELOAD_FLY_TOKEN_FILE",
            "--fly-token-file",
            "token_file = \"/file/token\"",
        ),
    ];
    // Defaults: nothing set anywhere.
    let doc = effective(dir.path(), &[], &[]);
    for (key, ..) in cases {
        assert_eq!(
            row(&doc, key),
            (&serde_json::Value::Null, "default"),
            "{key}"
        );
    }
    assert_eq!(row(&doc, "fly.size").0, "performance-2x");
    // The file.
    std::fs::write(
        dir.path().join("liveload.toml"),
        "users = 5\n\n[fly]\napp = \"from-file\"\ntoken_file = \"/file/token\"\n",
    )
    .unwrap();
    let doc = effective(dir.path(), &[], &[]);
    assert_eq!(row(&doc, "users"), (&"5".into(), "liveload.toml:1"));
    assert_eq!(
        row(&doc, "fly.app"),
        (&"from-file".into(), "liveload.toml:4")
    );
    assert_eq!(
        row(&doc, "fly.token_file"),
        (&"/file/token".into(), "liveload.toml:5")
    );
    // The environment over the file.
    let env = [
        ("LIVELOAD_USERS", "7"),
        ("LIVELOAD_FLY_APP", "from-env"),
        ("LIVELOAD_FLY_TOKEN_FILE", "/env/token"),
    ];
    let doc = effective(dir.path(), &env, &[]);
    for ((key, var, ..), (_, value)) in cases.iter().zip(env) {
        assert_eq!(
            row(&doc, key),
            (&value.into(), format!("env {var}").as_str())
        );
    }
    // Flags over everything.
    let flags = [
        "--users",
        "9",
        "--fly-app",
        "from-flag",
        "--fly-token-file",
        "/flag/token",
    ];
    let doc = effective(dir.path(), &env, &flags);
    assert_eq!(row(&doc, "users"), (&"9".into(), "flag"));
    assert_eq!(row(&doc, "fly.app"), (&"from-flag".into(), "flag"));
    assert_eq!(row(&doc, "fly.token_file"), (&"/flag/token".into(), "flag"));
}

#[test]
fn a_config_file_value_reaches_the_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("liveload.toml"), "users = 3\n").unwrap();
    let scenario = repo().join("examples/demo.yaml");
    let (code, plan, out) = json_output(
        liveload(dir.path())
            .env_remove("LIVELOAD_USERS")
            .args(["plan", "--output", "json"])
            .arg(&scenario),
    );
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(plan["plan"]["users"], 3, "{plan}");
    // --config names another file; flags still win.
    let other = dir.path().join("other.toml");
    std::fs::write(&other, "users = 4\n").unwrap();
    let (_, plan, _) = json_output(
        liveload(dir.path())
            .env_remove("LIVELOAD_USERS")
            .args(["plan", "--output", "json", "--config"])
            .arg(&other)
            .arg(&scenario),
    );
    assert_eq!(plan["plan"]["users"], 4, "{plan}");
}

#[test]
fn the_file_refuses_secrets_unknown_keys_and_sections_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    for (text, line, words) in [
        ("[fly]\ntoken = \"fo1_secret\"\n", 2, "token_file"),
        ("users = 2\n[fly]\nap = \"x\"\n", 3, "unknown key `fly.ap`"),
        ("\n\n[gcp]\nzone = \"x\"\n", 3, "unknown section [gcp]"),
        ("userz = 2\n", 1, "unknown key `userz`"),
    ] {
        std::fs::write(dir.path().join("liveload.toml"), text).unwrap();
        let out = liveload(dir.path()).args(["config"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert!(
            stderr.contains(&format!("liveload.toml:{line}")),
            "{stderr}"
        );
        assert!(stderr.contains(words), "{stderr}");
        assert!(
            !stderr.contains("fo1_secret"),
            "the secret is not echoed: {stderr}"
        );
    }
}

#[test]
fn help_groups_options_by_backend() {
    let dir = tempfile::tempdir().unwrap();
    let out = liveload(dir.path())
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let headings = [
        "Local backend (--backend local):",
        "Fly backend (--backend fly):",
        "SSH backend (--backend ssh):",
        "EC2 backend (--backend ec2):",
    ];
    for heading in headings {
        assert!(help.contains(heading), "{heading} missing from:\n{help}");
    }
    // Each backend's options sit under its own heading.
    let fly = help.find(headings[1]).unwrap();
    let ssh = help.find(headings[2]).unwrap();
    let app = help.find("--fly-app").unwrap();
    assert!(fly < app && app < ssh, "--fly-app is under the Fly heading");
    assert!(help.contains("[env: LIVELOAD_FLY_APP=]"), "{help}");
}

/// Sizing figures, lowest first: built in, the scenario's `sizing:`, `--profile`, the flags.
#[test]
fn sizing_layers_scenario_then_profile_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let profile = serde_json::json!({
        "version": 1, "browser_memory_mib": 300, "context_memory_mib": 70, "contexts_per_core": 3.0,
        "measured_on": {"scenario": "s", "scenario_sha256": "0", "chromium": "Chromium 1",
            "node_memory_bytes": 1, "node_cores": 2.0, "liveload_version": "0", "unix_s": 0},
        "steps": [], "knee_users": null, "note": ""
    });
    std::fs::write(dir.path().join("p.json"), profile.to_string()).unwrap();
    let scenario = liveload_e2e::scenario_file(
        dir.path(),
        "s.yaml",
        "name: s\nbase_url: http://127.0.0.1:9\nsizing: { context_memory_mib: 40 }\nsteps:\n  - navigate: /\n",
    );
    let context_mib = |extra: &[&str]| {
        let (code, value, _) = liveload_e2e::json_output(
            liveload_e2e::liveload(dir.path())
                .args(["plan", scenario.to_str().unwrap(), "--output", "json"])
                .args(extra),
        );
        assert_eq!(code, 0, "{value}");
        value["plan"]["sizing"]["profile"]["context_memory_usage_bytes"]
            .as_u64()
            .unwrap()
            >> 20
    };
    assert_eq!(
        context_mib(&[]),
        40,
        "the scenario's sizing: over the built-in 24"
    );
    let profile_arg = dir.path().join("p.json");
    let profile_arg = profile_arg.to_str().unwrap();
    assert_eq!(
        context_mib(&["--profile", profile_arg]),
        70,
        "--profile over the scenario"
    );
    assert_eq!(
        context_mib(&["--profile", profile_arg, "--context-memory-mib", "90"]),
        90,
        "a flag over everything"
    );
}
