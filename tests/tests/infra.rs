//! The infrastructure files users apply by hand, checked offline: every Terraform and Packer
//! file parses (hcl-rs), every variable used is declared (and every declared one used), the
//! outputs liveload's README promises exist, and every `liveload` flag the module prints is a
//! real option of `liveload run`.

use std::collections::BTreeSet;
use std::path::Path;

use liveload_e2e::*;

/// Every `.tf` / `.hcl` file under `dir`, parsed.
fn parse_dir(dir: &Path, ext: &str) -> Vec<(String, String, hcl::Body)> {
    let mut parsed = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.to_string_lossy().ends_with(ext) {
            let text = std::fs::read_to_string(&path).unwrap();
            let body = hcl::parse(&text)
                .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
            parsed.push((path.display().to_string(), text, body));
        }
    }
    assert!(!parsed.is_empty(), "no {ext} files in {}", dir.display());
    parsed
}

/// Names of the blocks `kind "NAME" { ... }` at the top level.
fn declared(files: &[(String, String, hcl::Body)], kind: &str) -> BTreeSet<String> {
    files
        .iter()
        .flat_map(|(_, _, body)| body.blocks())
        .filter(|b| b.identifier() == kind)
        .filter_map(|b| b.labels().first().map(|l| l.as_str().to_string()))
        .collect()
}

/// Every `var.NAME` in the text.
fn used_vars(files: &[(String, String, hcl::Body)]) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for (_, text, _) in files {
        for (i, _) in text.match_indices("var.") {
            let before = text[..i].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let name: String = text[i + 4..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            used.insert(name);
        }
    }
    used
}

#[test]
fn the_aws_module_is_consistent_and_its_command_uses_real_options() {
    let files = parse_dir(&repo().join("terraform/aws"), ".tf");
    let variables = declared(&files, "variable");
    let used = used_vars(&files);
    assert_eq!(
        used, variables,
        "variables used (left) and declared (right) differ"
    );
    for required in ["controller_cidr", "ami_id", "region", "agent_port"] {
        assert!(variables.contains(required), "variable {required}");
    }
    let outputs = declared(&files, "output");
    for promised in [
        "region",
        "security_group_id",
        "subnet_ids",
        "launch_template_name",
        "agent_port",
        "controller_policy_arn",
        "liveload_command",
    ] {
        assert!(outputs.contains(promised), "output {promised}");
    }
    // The launch template terminates an instance whose agent powered it off.
    let main = files
        .iter()
        .find(|(path, _, _)| path.ends_with("main.tf"))
        .unwrap();
    assert!(
        main.1
            .contains("instance_initiated_shutdown_behavior = \"terminate\"")
    );
    // IMDSv2 only, one hop, as the backend asks in RunInstances.
    assert!(
        main.1
            .contains("http_tokens                 = \"required\"")
    );
    assert!(main.1.contains("http_put_response_hop_limit = 1"));
    // Every flag of the printed command is a `liveload run` option.
    let command = files
        .iter()
        .find(|(path, _, _)| path.ends_with("outputs.tf"))
        .unwrap()
        .1
        .lines()
        .find(|l| l.contains("liveload run --backend ec2"))
        .unwrap()
        .to_string();
    let help = std::process::Command::new(bin("liveload"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let flags: Vec<&str> = command
        .split_whitespace()
        .filter(|w| w.starts_with("--"))
        .collect();
    assert!(flags.len() >= 6, "{command}");
    for flag in flags {
        assert!(
            help.contains(&format!("{flag} ")),
            "{flag} is not an option of `liveload run`"
        );
    }
}

#[test]
fn the_ec2_image_recipe_parses_and_uploads_files_that_exist() {
    let files = parse_dir(&repo().join("images/ec2"), ".pkr.hcl");
    let (_, text, body) = &files[0];
    assert!(body.blocks().any(|b| b.identifier() == "build"));
    assert!(text.contains("chromium-headless-shell"));
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("source      = \"images/") {
            let file = rest.trim_end_matches('"');
            assert!(
                repo().join("images").join(file).exists(),
                "the recipe uploads images/{file}, which is missing"
            );
        }
    }
    let unit = std::fs::read_to_string(repo().join("images/ec2/liveload-agent.service")).unwrap();
    assert!(unit.contains("EnvironmentFile=/etc/liveload/agent.env"));
    assert!(unit.contains("poweroff"), "an exited agent powers off");
    assert!(unit.contains("User=liveload"), "not root");
    // The metadata service is closed to the agent's user before it starts.
    assert!(unit.contains("ExecStartPre=+/usr/sbin/nft -f /usr/local/lib/liveload/imds.nft"));
    let nft = std::fs::read_to_string(repo().join("images/ec2/liveload-imds.nft")).unwrap();
    assert!(nft.contains("meta skuid \"liveload\" ip daddr 169.254.169.254 reject"));
    let recipe = std::fs::read_to_string(repo().join("images/ec2/liveload-agent.pkr.hcl")).unwrap();
    assert!(recipe.contains("/usr/local/lib/liveload/imds.nft") && recipe.contains("nftables"));
    // Where nft exists, the rule file is valid nft syntax.
    if std::path::Path::new("/usr/sbin/nft").exists() {
        let out = std::process::Command::new("/usr/sbin/nft")
            .args(["--check", "-f"])
            .arg(repo().join("images/ec2/liveload-imds.nft"))
            .output()
            .unwrap();
        // `--check` needs the user to exist for `skuid "liveload"`; a missing user is the
        // only acceptable complaint.
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || stderr.contains("liveload"),
            "{stderr}"
        );
    }
}

#[test]
fn the_fly_setup_script_is_valid_sh() {
    let out = std::process::Command::new("bash")
        .args(["-n"])
        .arg(repo().join("terraform/fly/setup.sh"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// The agent container image, read as text (the container tests build and run it with podman:
/// `backends/container/tests/image.rs`): the agent built from this workspace by default, or
/// taken prebuilt by the `prebuilt` target, which comes before the Rust stage so that target
/// never needs a Rust image; Chromium and fonts from Debian, tini as init, a non-root user,
/// and the agent as the entrypoint.
#[test]
fn the_agent_dockerfile_has_what_the_fly_backend_expects() {
    let text = std::fs::read_to_string(repo().join("images/agent/Dockerfile")).unwrap();
    let instructions: Vec<(String, String)> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (word, rest) = l.split_once(' ')?;
            word.chars()
                .all(|c| c.is_ascii_uppercase())
                .then(|| (word.to_string(), rest.to_string()))
        })
        .collect();
    let of = |word: &str| -> Vec<&str> {
        instructions
            .iter()
            .filter(|(w, _)| w == word)
            .map(|(_, rest)| rest.as_str())
            .collect()
    };
    let from = of("FROM");
    assert_eq!(
        from.len(),
        4,
        "runtime, prebuilt, Rust build, default: {from:?}"
    );
    assert!(from[0].ends_with("AS runtime") && from[1] == "runtime AS prebuilt");
    assert!(
        from[2].starts_with("rust:") && from[3] == "runtime",
        "{from:?}"
    );
    assert!(text.contains("-p liveload-agent"), "builds the agent");
    assert!(text.contains("chromium-headless-shell") && text.contains("fonts-"));
    assert!(of("COPY").iter().any(|c| c.starts_with("--from=")));
    let user = of("USER");
    assert!(
        !user.is_empty() && !user.contains(&"root") && !user.contains(&"0"),
        "runs as a non-root user"
    );
    let entry = of("ENTRYPOINT");
    assert_eq!(entry.len(), 1);
    assert!(
        entry[0].contains("tini") && entry[0].contains("liveload-agent"),
        "tini reaps Chromium's zombies and runs the agent: {}",
        entry[0]
    );
    // The port the Fly backend exposes by default.
    assert!(of("EXPOSE").contains(&"7070"));
}

/// `liveload doctor` tells an image or AMI this controller cannot use by the agent protocol
/// they are labelled with: the labels must be the protocol this checkout builds.
#[test]
fn the_image_and_ami_carry_this_checkouts_agent_protocol() {
    let ours = liveload_core::proto::PROTOCOL_VERSION;
    let dockerfile = std::fs::read_to_string(repo().join("images/agent/Dockerfile")).unwrap();
    let label = format!("LABEL {}=\"{ours}\"", liveload_core::doctor::PROTOCOL_LABEL);
    assert!(
        dockerfile.contains(&label),
        "the Dockerfile lacks `{label}`"
    );
    let recipe = std::fs::read_to_string(repo().join("images/ec2/liveload-agent.pkr.hcl")).unwrap();
    let tag = format!("\"{}\" = \"{ours}\"", liveload_ec2::doctor::TAG_PROTOCOL);
    assert!(recipe.contains(&tag), "the Packer recipe lacks `{tag}`");
}
