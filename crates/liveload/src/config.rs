//! Config layering: every option of `run`, `plan`, `demo`, `cleanup`, `nodes` and the backends'
//! own commands can come from, in rising precedence,
//!
//! 1. the built-in default,
//! 2. a config file (`liveload.toml` in the working directory, or `--config FILE` /
//!    `LIVELOAD_CONFIG`), top-level keys for run options and one `[backend]` section per
//!    backend,
//! 3. an environment variable `LIVELOAD_<OPTION>` (`LIVELOAD_<BACKEND>_<OPTION>` for a
//!    backend's option),
//! 4. a flag.
//!
//! clap already orders flags > environment > default, so the file slots in by becoming the
//! default: each value it sets replaces the built-in default of its option before parsing.
//! [`Provenance`] remembers which defaults came from the file, so `liveload config` can say
//! where every effective value came from.
//!
//! Secrets never sit in the file: a key that names a token, secret or password is refused
//! unless it is a `*_file` path.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};
use liveload_core::Error;
use liveload_core::registry::Registered;
use toml::de::{DeTable, DeValue};

/// The config file's name in the working directory.
pub const FILE_NAME: &str = "liveload.toml";

/// The subcommands whose options the file and the environment may set.
pub const LAYERED: &[&str] = &[
    "run",
    "plan",
    "doctor",
    "calibrate",
    "demo",
    "cleanup",
    "nodes",
    "config",
    "serve",
];

/// One value the config file sets.
#[derive(Debug, Clone)]
struct Entry {
    /// The option's id (`users`, `fly_app`).
    id: String,
    /// The key as written (`users`, `fly.app`), for messages.
    key: String,
    /// Its value(s) as the option's parser expects text.
    values: Vec<String>,
    /// 1-based line in the file.
    line: usize,
}

/// A parsed config file.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    path: PathBuf,
    entries: Vec<Entry>,
}

/// Where effective values came from: the file's entries by option id.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    file: Option<PathBuf>,
    lines: HashMap<String, usize>,
}

/// Where one effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A flag on the command line.
    Flag,
    /// An environment variable.
    Env(String),
    /// The config file, at a line.
    File(PathBuf, usize),
    /// The built-in default.
    Default,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Flag => f.write_str("flag"),
            Source::Env(name) => write!(f, "env {name}"),
            Source::File(path, line) => write!(f, "{}:{line}", path.display()),
            Source::Default => f.write_str("default"),
        }
    }
}

/// The config file to read: `--config FILE` (found in the raw arguments, since the file must
/// be read before the arguments can be parsed), else `LIVELOAD_CONFIG`, else `./liveload.toml`
/// when it exists. A file named explicitly must exist.
pub fn locate(args: &[OsString]) -> Result<Option<PathBuf>, Error> {
    let mut named = None;
    let mut words = args.iter().map(|a| a.to_string_lossy());
    while let Some(word) = words.next() {
        if word == "--" {
            break;
        }
        if word == "--config" {
            named = words.next().map(|w| PathBuf::from(w.as_ref()));
        } else if let Some(path) = word.strip_prefix("--config=") {
            named = Some(PathBuf::from(path));
        }
    }
    let named = named.or_else(|| std::env::var_os("LIVELOAD_CONFIG").map(PathBuf::from));
    match named {
        Some(path) if path.is_file() => Ok(Some(path)),
        Some(path) => Err(Error::InvalidOption {
            option: "--config".into(),
            message: format!("{} does not exist or is not a file", path.display()),
        }),
        None => Ok(Path::new(FILE_NAME)
            .is_file()
            .then(|| PathBuf::from(FILE_NAME))),
    }
}

impl ConfigFile {
    /// Read and check the file's shape: top-level keys are run options, tables are backends'
    /// sections. Whether each key names a real option is checked against the command line in
    /// [`layer`].
    pub fn load(path: &Path, backends: &[&'static str]) -> Result<ConfigFile, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        Self::parse(path, &text, backends)
    }

    /// [`load`](Self::load) from text.
    pub fn parse(path: &Path, text: &str, backends: &[&'static str]) -> Result<ConfigFile, Error> {
        let at = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let invalid = |line: usize, message: String| Error::InvalidOption {
            option: format!("{}:{line}", path.display()),
            message,
        };
        let table = DeTable::parse(text).map_err(|e| {
            let line = e.span().map_or(1, |s| at(s.start));
            invalid(line, e.message().to_string())
        })?;
        let mut entries = Vec::new();
        for (key, value) in table.get_ref() {
            let line = at(key.span().start);
            match value.get_ref() {
                DeValue::Table(section) => {
                    let name = key.get_ref().as_ref();
                    if !backends.contains(&name) {
                        return Err(invalid(
                            line,
                            format!(
                                "unknown section [{name}]: sections are backends ({})",
                                backends.join(", ")
                            ),
                        ));
                    }
                    for (inner, value) in section {
                        let dotted = format!("{name}.{}", inner.get_ref());
                        let id = format!("{name}_{}", inner.get_ref().replace('-', "_"));
                        entries.push(entry(&id, dotted, value.get_ref(), at(inner.span().start))?);
                    }
                }
                other => {
                    let id = key.get_ref().replace('-', "_");
                    entries.push(entry(&id, key.get_ref().to_string(), other, line)?);
                }
            }
        }
        // The parser's map is ordered by key; messages and tests read better in file order.
        entries.sort_by_key(|e| e.line);
        for e in &entries {
            refuse_secret(e).map_err(|m| invalid(e.line, m))?;
        }
        Ok(ConfigFile {
            path: path.to_path_buf(),
            entries,
        })
    }
}

/// One key's value as the text clap would get from a flag.
fn entry(id: &str, key: String, value: &DeValue<'_>, line: usize) -> Result<Entry, Error> {
    let values = match value {
        DeValue::Array(items) => items
            .iter()
            .map(|item| scalar(item.get_ref()))
            .collect::<Option<Vec<_>>>(),
        other => scalar(other).map(|v| vec![v]),
    }
    .ok_or_else(|| Error::InvalidOption {
        option: key.clone(),
        message: format!(
            "line {line}: a value must be a string, number, boolean or a list of them"
        ),
    })?;
    Ok(Entry {
        id: id.to_string(),
        key,
        values,
        line,
    })
}

fn scalar(value: &DeValue<'_>) -> Option<String> {
    match value {
        DeValue::String(s) => Some(s.to_string()),
        DeValue::Boolean(b) => Some(b.to_string()),
        DeValue::Integer(i) => {
            let digits = i.as_str().replace('_', "");
            let digits = digits
                .trim_start_matches("0x")
                .trim_start_matches("0o")
                .trim_start_matches("0b");
            i64::from_str_radix(digits, i.radix())
                .ok()
                .map(|n| n.to_string())
        }
        DeValue::Float(f) => Some(f.as_str().replace('_', "")),
        _ => None,
    }
}

/// Is `id` an option whose value would itself be a secret?
pub fn is_secret(id: &str) -> bool {
    !id.ends_with("_file")
        && ["token", "secret", "password"]
            .iter()
            .any(|word| id.contains(word))
}

fn refuse_secret(entry: &Entry) -> Result<(), String> {
    // A database URL is fine in the file, unless it carries a password.
    if entry.id == "database" && entry.values.iter().any(|v| carries_password(v)) {
        return Err(format!(
            "`{}`: this URL carries a password, and secrets are not written in the config \
             file; set LIVELOAD_DATABASE instead",
            entry.key
        ));
    }
    if is_secret(&entry.id) {
        return Err(format!(
            "`{}`: secrets are not written in the config file; give a file that holds it (`{}_file`) or use the provider's environment variable",
            entry.key, entry.key
        ));
    }
    Ok(())
}

/// Does a database URL (or libpq `key=value` string) carry a password?
pub fn carries_password(database: &str) -> bool {
    database.contains("password=")
        || database
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('@'))
            .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

/// The environment variable of option `id`.
pub fn env_name(id: &str) -> String {
    format!("LIVELOAD_{}", id.to_uppercase())
}

/// Give every layered option its `LIVELOAD_*` variable and the file's values as defaults.
/// Fails, naming file and line, on a key that is no option of any layered command.
pub fn layer(
    command: Command,
    backends: &[Box<dyn Registered>],
    file: Option<&ConfigFile>,
) -> Result<(Command, Provenance), Error> {
    let entries: Vec<Entry> = file.map(|f| f.entries.clone()).unwrap_or_default();
    let mut seen: Vec<String> = Vec::new();
    let mut command = command;
    let mut names: Vec<String> = LAYERED.iter().map(|s| s.to_string()).collect();
    names.extend(
        backends
            .iter()
            .filter_map(|b| b.command())
            .map(|c| c.get_name().to_string()),
    );
    for name in &names {
        // `serve` exists only in a build with the server (the demo's build has none).
        if command.find_subcommand(name).is_none() {
            continue;
        }
        command =
            command.mut_subcommand(name.as_str(), |sub| layer_command(sub, &entries, &mut seen));
    }
    if let Some(unknown) = entries.iter().find(|e| !seen.contains(&e.id)) {
        let file = file.expect("entries come from a file");
        return Err(Error::InvalidOption {
            option: format!("{}:{}", file.path.display(), unknown.line),
            message: format!(
                "unknown key `{}` (see `liveload config --help` for the options; backend options go in their section, e.g. [fly] app = ...)",
                unknown.key
            ),
        });
    }
    let provenance = Provenance {
        file: file.map(|f| f.path.clone()),
        lines: entries.iter().map(|e| (e.id.clone(), e.line)).collect(),
    };
    Ok((command, provenance))
}

/// [`layer`] for one command and its subcommands.
fn layer_command(mut command: Command, entries: &[Entry], seen: &mut Vec<String>) -> Command {
    let ids: Vec<String> = command
        .get_arguments()
        .filter(|a| {
            !a.is_positional() && !matches!(a.get_id().as_str(), "help" | "version" | "config")
        })
        .map(|a| a.get_id().to_string())
        .collect();
    for id in ids {
        let from_file = entries.iter().find(|e| e.id == id).cloned();
        if from_file.is_some() {
            seen.push(id.clone());
        }
        command = command.mut_arg(id.as_str(), |arg| {
            let arg = if arg.get_env().is_none() {
                arg.env(env_name(&id))
            } else {
                arg
            };
            match &from_file {
                Some(e) if matches!(arg.get_action(), ArgAction::Append) => {
                    arg.default_values(e.values.clone())
                }
                Some(e) => arg.default_value(e.values.last().cloned().unwrap_or_default()),
                None => arg,
            }
        });
    }
    let subs: Vec<String> = command
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for sub in subs {
        command = command.mut_subcommand(sub.as_str(), |c| layer_command(c, entries, seen));
    }
    command
}

impl Provenance {
    /// Where the effective value of `id` in `matches` came from.
    pub fn source(&self, matches: &ArgMatches, id: &str) -> Source {
        match matches.value_source(id) {
            Some(ValueSource::CommandLine) => Source::Flag,
            Some(ValueSource::EnvVariable) => Source::Env(env_name(id)),
            _ => match (&self.file, self.lines.get(id)) {
                (Some(path), Some(line)) => Source::File(path.clone(), *line),
                _ => Source::Default,
            },
        }
    }
}

/// One line of `liveload config`.
#[derive(Debug, serde::Serialize)]
struct Row {
    /// As the file writes it: `users`, `fly.app`.
    key: String,
    /// The effective value (`null` when unset; secrets redacted).
    value: Option<String>,
    /// Where it came from.
    source: String,
}

/// `liveload config`: every option of a run with the selected backend, its effective value
/// and where it came from. Secrets are never printed (the file refuses them; a provider's own
/// variables, such as FLY_API_TOKEN, are read by the backend and not shown here).
pub fn show(
    matches: &ArgMatches,
    args: &crate::cli::ConfigArgs,
    backends: &[Box<dyn Registered>],
    provenance: &Provenance,
) -> i32 {
    let selected = args.backend.backend.as_str();
    let backend_ids: Vec<(&'static str, Vec<String>)> = backends
        .iter()
        .map(|b| (b.name(), b.option_ids()))
        .collect();
    let is_backend_option = |id: &str| {
        backend_ids
            .iter()
            .any(|(_, ids)| ids.iter().any(|i| i == id))
    };
    let row = |key: String, id: &str| Row {
        key,
        value: matches.try_get_raw(id).ok().flatten().map(|values| {
            if is_secret(id) {
                "***".to_string()
            } else {
                values
                    .map(|v| v.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(",")
            }
        }),
        source: provenance.source(matches, id).to_string(),
    };
    let own = <crate::cli::ConfigArgs as clap::Args>::augment_args(Command::new("config"));
    let mut rows: Vec<Row> = own
        .get_arguments()
        .map(|a| a.get_id().as_str())
        .filter(|id| !is_backend_option(id))
        .map(|id| row(id.to_string(), id))
        .collect();
    if let Some((name, ids)) = backend_ids.iter().find(|(name, _)| *name == selected) {
        for id in ids {
            let key = format!(
                "{name}.{}",
                id.strip_prefix(&format!("{name}_")).unwrap_or(id)
            );
            rows.push(row(key, id));
        }
    }
    if args.run.output == crate::cli::OutputFormat::Json {
        let doc = serde_json::json!({ "backend": selected, "options": rows });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("serialises")
        );
    } else {
        println!("# effective configuration; precedence: flag > env > config file > default");
        for r in &rows {
            let value = r.value.as_deref().unwrap_or("(unset)");
            println!("{:<40} # {}", format!("{} = {value}", r.key), r.source);
        }
    }
    liveload_core::error::exit_code::OK
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConfigFile, Error> {
        ConfigFile::parse(Path::new("liveload.toml"), text, &["local", "fly"])
    }

    /// A build without the server has no `serve`; layering must skip the layered commands a
    /// build lacks (it once panicked there, so the demo's build could not start).
    #[test]
    fn layering_skips_commands_this_build_lacks() {
        let command = Command::new("liveload")
            .subcommand(Command::new("run").arg(clap::Arg::new("users").long("users").num_args(1)));
        let file = parse("users = 7\n").unwrap();
        let (command, _) = layer(command, &[], Some(&file)).unwrap();
        let matches = command.try_get_matches_from(["liveload", "run"]).unwrap();
        let run = matches.subcommand_matches("run").unwrap();
        assert_eq!(
            run.get_one::<String>("users").map(String::as_str),
            Some("7")
        );
    }

    #[test]
    fn keys_map_to_option_ids_with_their_lines() {
        let file = parse("users = 1_000\n\n[fly]\napp = \"shop\"\nregions = [\"ams\", \"fra\"]\n")
            .unwrap();
        let got: Vec<_> = file
            .entries
            .iter()
            .map(|e| (e.id.as_str(), e.values.clone(), e.line))
            .collect();
        assert_eq!(
            got,
            [
                ("users", vec!["1000".to_string()], 1),
                ("fly_app", vec!["shop".to_string()], 4),
                ("fly_regions", vec!["ams".to_string(), "fra".to_string()], 5),
            ]
        );
    }

    #[test]
    fn secrets_and_strangers_are_refused_with_their_line() {
        let err = parse("users = 3\n[fly]\ntoken = \"abc\"\n").unwrap_err();
        assert!(err.to_string().contains("liveload.toml:3"), "{err}");
        assert!(err.to_string().contains("token_file"), "{err}");
        assert!(
            !err.to_string().contains("abc"),
            "the secret is not repeated: {err}"
        );
        parse("[fly]\ntoken_file = \"/run/secrets/fly\"\n").unwrap();
        let err = parse("\n[aws]\nregion = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains(":2"), "{err}");
        assert!(err.to_string().contains("local, fly"), "{err}");
        let err = parse("users = \n").unwrap_err();
        assert!(err.to_string().contains("liveload.toml:1"), "{err}");
    }
}
