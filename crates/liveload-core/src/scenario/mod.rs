//! Scenario files: what simulated users do, in YAML.
//!
//! ```yaml
//! name: checkout
//! base_url: http://127.0.0.1:8080
//! users: 20
//! duration: 30s
//! iteration_timeout: 20s
//! data: { file: users.csv, secret: [password] }   # columns become {{variables}}
//! on_failure: screenshot             # keep a screenshot and the DOM of the first failures
//! steps:
//!   - navigate: /login
//!   - fill: { selector: "#email", value: "{{email}}" }
//!   - click: "#submit"
//!   - wait_for: { text: "Welcome" }
//!   - name: open cart                # any step can be named (its metric: step:<name>)
//!     click: "a.cart"
//!   - think: 1s..3s
//! ```
//!
//! Every error names the file, line and column, and says what was expected. Structural errors
//! (an unknown step, a wrong type, a missing field) carry the parser's own position; errors
//! found after parsing (a bad duration, an unknown `{{variable}}`) are located at the first line
//! holding the offending text.
//!
//! # The pipeline
//!
//! A file becomes a [`Scenario`] in two stages, and the split is what gives every error a
//! position:
//!
//! 1. **Parse** (`raw`): serde reads the YAML into "raw" types that mirror it key for key. They
//!    check shape only, so serde's own errors, with its exact line and column, cover every
//!    structural mistake, however deep.
//! 2. **Lower** (`lower`, `workload`, `data`): the raw values are checked for meaning and turned
//!    into the types the rest of liveload uses, above all the protocol's [`Step`]s that agents
//!    run. Errors here are `Located` by a piece of the offending text, found again in the file.
//!
//! Beside the pipeline: `text` holds the duration and template notations ([`parse_duration`],
//! [`template_variables`]), and `schema` the JSON Schema for editors ([`json_schema`]), which a
//! test keeps in step with the raw types.

mod data;
mod lower;
mod mix;
mod nesting;
mod network;
mod protocol;
mod raw;
mod schema;
#[cfg(test)]
mod schema_drift;
mod text;
mod workload;
pub use data::{DataMode, rows_for_node};
pub use mix::{MixPart, mixed_profile, node_groups};
pub use network::{TargetDistribution, targets_for_node};
pub use workload::{ScenarioSizing, coordinate_points};

use std::path::{Path, PathBuf};
use std::time::Duration;

use liveload_proto::{DataTable, Diagnostics, Engine, HostRules, Step, UserLoop};

pub use schema::json_schema;
pub use text::{MAX_DURATION, MAX_DURATION_TEXT, parse_duration, template_variables};

use crate::threshold::Threshold;
use crate::{Error, Result};
use lower::{Located, Source};
use raw::{RawFailureAction, RawOnFailure, RawScenario, RawThreshold, StringOrMap};

/// A parsed, validated scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// The scenario's name: names the run, the lock, the report.
    pub name: String,
    /// The targets: base URLs that relative step URLs join, at least one (`base_url:`, or
    /// `base_urls:`). Read the first with [`base_url`](Self::base_url); replace them all with
    /// [`set_base_url`](Self::set_base_url).
    pub base_urls: Vec<String>,
    /// How users are spread over several `base_urls`.
    pub target_distribution: TargetDistribution,
    /// What users are: browsers (the default) or protocol users (`engine: http`).
    pub engine: Engine,
    /// Hosts the browsers must not reach, the only ones they may, and host names sent to
    /// another address.
    pub host_rules: HostRules,
    /// Users to simulate (overridden by `--users`).
    pub users: u64,
    /// How long users iterate.
    pub duration: Duration,
    /// The longest one iteration may take.
    pub iteration_timeout: Duration,
    /// How long element steps and waits without their own `timeout:` wait.
    pub step_timeout: Duration,
    /// What to keep of failed iterations.
    pub on_failure: OnFailure,
    /// The steps of one iteration.
    pub steps: Vec<Step>,
    /// Per-user data from a CSV file.
    pub data: Option<DataTable>,
    /// Where `data` was read from (resolved against the scenario's folder), for messages.
    pub data_file: Option<PathBuf>,
    /// How users take `data`'s rows.
    pub data_mode: DataMode,
    /// Pass/fail criteria.
    pub thresholds: Vec<Threshold>,
    /// How users arrive.
    pub load: Load,
    /// Cluster-wide limits on iterations.
    pub throttle: Throttle,
    /// URL schemes users may open beyond `http`, `https`, `data` and `about:blank`.
    pub allow_schemes: Vec<String>,
    /// The scenario's own sizing figures (`sizing:`): below `--profile` and the sizing flags,
    /// above the built-in profile.
    pub sizing: ScenarioSizing,
    /// What each user does around its iterations: `on_start`/`on_stop` steps, a number of
    /// iterations, a pacing (closed model).
    pub user_loop: UserLoop,
    /// A run file's scenarios (`mix:`), run together; empty for a scenario.
    pub mix: Vec<MixPart>,
}

/// How users arrive (the workload model).
#[derive(Debug, Clone, PartialEq)]
pub enum Load {
    /// `users` users loop over the steps until the duration ends; their starts are spread
    /// evenly over `ramp_up` (all at once without it).
    Closed {
        /// Time over which users start.
        ramp_up: Option<Duration>,
        /// Start users in this many equal batches over `ramp_up` (a staircase) instead of one by
        /// one; `None` ramps smoothly.
        ramp_steps: Option<u32>,
    },
    /// Arrivals per second, cluster-wide, each running the steps once as a new visitor.
    Open {
        /// Arrivals per second at the start.
        rate: f64,
        /// Arrivals per second at the end of the duration (a linear ramp); `None` keeps `rate`.
        ramp_to: Option<f64>,
        /// Most arrivals in progress at once, cluster-wide (also what the cluster is sized
        /// for); arrivals beyond are dropped and counted as `arrivals_dropped`.
        max_users: u64,
    },
}

/// What to keep of a failed iteration, for the report (`on_failure:`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnFailure {
    /// Nothing beyond the error's message and first occurrence (the default).
    #[default]
    Nothing,
    /// A screenshot and the DOM of the first `per_error` failed iterations of each distinct
    /// error, per agent.
    Screenshot {
        /// How many per error message.
        per_error: u32,
    },
}

/// How many failures of each error `on_failure: screenshot` keeps when it does not say.
pub const DEFAULT_CAPTURES_PER_ERROR: u32 = 3;

/// Cluster-wide limits on iterations; each node enforces its share (by its share of users),
/// so the cluster never goes above the limit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Throttle {
    /// At most `limit` iteration starts per `per`.
    pub rate: Option<(u64, Duration)>,
    /// At least this long between two iteration starts.
    pub interarrival: Option<Duration>,
    /// At most this many iterations at once.
    pub parallelism: Option<u64>,
}

/// Whether parsing may open the files a scenario names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Files {
    Read,
    Refused,
}

impl Scenario {
    /// A scenario with defaults around `steps` (for code that builds scenarios directly).
    pub fn new(name: &str, base_url: &str, steps: Vec<Step>) -> Scenario {
        Scenario {
            name: name.to_string(),
            base_urls: vec![base_url.trim_end_matches('/').to_string()],
            target_distribution: TargetDistribution::RoundRobin,
            engine: Engine::Browser,
            host_rules: HostRules::default(),
            users: 1,
            duration: DEFAULT_DURATION,
            iteration_timeout: DEFAULT_ITERATION_TIMEOUT,
            step_timeout: DEFAULT_STEP_TIMEOUT,
            on_failure: OnFailure::Nothing,
            steps,
            data: None,
            data_file: None,
            data_mode: DataMode::Cycle,
            thresholds: Vec::new(),
            load: ALL_USERS_AT_ONCE,
            throttle: Throttle::default(),
            allow_schemes: Vec::new(),
            sizing: ScenarioSizing::default(),
            user_loop: UserLoop::default(),
            mix: Vec::new(),
        }
    }
}

// Defaults for what a file leaves out, shared with `Scenario::new` so that a scenario built in
// code behaves like the smallest file.

/// How long users iterate.
const DEFAULT_DURATION: Duration = Duration::from_secs(30);
/// The longest one iteration may take.
const DEFAULT_ITERATION_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest an element action waits for its element.
const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// The closed model without a ramp.
const ALL_USERS_AT_ONCE: Load = Load::Closed {
    ramp_up: None,
    ramp_steps: None,
};

/// Variables every user has.
pub const BUILTIN_VARIABLES: [&str; 2] = ["user_id", "iteration"];

/// The step kinds, as written in scenario files.
pub const STEP_KINDS: &[&str] = &[
    "navigate",
    "reload",
    "click",
    "fill",
    "clear",
    "press",
    "check",
    "uncheck",
    "select",
    "hover",
    "focus",
    "blur",
    "wait_for",
    "liveview_connected",
    "liveview_idle",
    "liveview_submit",
    "assert",
    "extract",
    "coordinate",
    "think",
    "eval",
    "group",
    "repeat",
    "halt",
    "fail",
    "request",
    "ws_connect",
    "ws_send",
    "ws_expect",
    "ws_close",
];

impl Scenario {
    /// The (first) target: what a single user, a calibration or a probe uses.
    pub fn base_url(&self) -> &str {
        &self.base_urls[0]
    }

    /// The target user `user_id` goes to on the first node (`liveload try`).
    pub fn target_of(&self, user_id: u64) -> &str {
        match self.target_distribution {
            TargetDistribution::RoundRobin => {
                &self.base_urls[(user_id % self.base_urls.len() as u64) as usize]
            }
            TargetDistribution::PerNode => self.base_url(),
        }
    }

    /// Send every user to `url` (`--base-url`), whatever targets the file named.
    pub fn set_base_url(&mut self, url: &str) {
        self.base_urls = vec![url.trim_end_matches('/').to_string()];
    }

    /// What agents record for debugging in a run of this scenario: its failure captures
    /// (tracing and iteration limits are for `liveload try`, which sets them itself).
    pub fn diagnostics(&self) -> Diagnostics {
        Diagnostics {
            captures_per_error: match self.on_failure {
                OnFailure::Nothing => 0,
                OnFailure::Screenshot { per_error } => per_error,
            },
            ..Diagnostics::default()
        }
    }

    /// The sizing profile this scenario's users cost by default: the built-in one of its
    /// engine (a mix: its scenarios' in their proportions) under its own `sizing:` block.
    /// `--profile` and the sizing flags override it (the CLI; the server takes no such flags).
    pub fn sizing_profile(&self) -> Result<crate::sizing::BrowserProfile> {
        if self.mix.is_empty() {
            self.sizing
                .apply(crate::sizing::BrowserProfile::for_engine(self.engine))
        } else {
            self.sizing.apply(mixed_profile(&self.mix))
        }
    }

    /// Read and validate a scenario file (and its CSV data file, if any).
    pub fn from_file(path: &Path) -> Result<Scenario> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Scenario {
            file: path.to_path_buf(),
            line: 1,
            column: 1,
            message: format!("cannot read the file: {e}"),
        })?;
        Self::from_yaml(path, &text)
    }

    /// Parse and validate scenario text; `path` names the file in errors and anchors the data
    /// file's relative path.
    pub fn from_yaml(path: &Path, text: &str) -> Result<Scenario> {
        Self::parse(path, text, Files::Read)
    }

    /// [`Scenario::from_yaml`] for text from someone who may not read this machine's files
    /// (a server's API client): a `data:` file or a `mix:` of scenario files is refused, with
    /// its line and column, before any path is opened. `path` only names the text in errors.
    pub fn from_untrusted_yaml(path: &Path, text: &str) -> Result<Scenario> {
        Self::parse(path, text, Files::Refused)
    }

    fn parse(path: &Path, text: &str, files: Files) -> Result<Scenario> {
        let source = Source::new(path, text);
        nesting::check(text).map_err(|(line, column, message)| Error::Scenario {
            file: path.to_path_buf(),
            line,
            column,
            message,
        })?;
        let mut raw: RawScenario =
            serde_yaml_ng::from_str(text).map_err(|e| source.parse_error(e))?;
        if files == Files::Refused {
            let refused = |key: &str| {
                source.locate(lower::Located::new(
                    format!(
                        "`{key}:` reads files on the machine that parses the scenario, which a \
                         scenario sent to a server may not do; put the steps (and the data's \
                         values) in the scenario itself"
                    ),
                    format!("{key}:"),
                ))
            };
            if raw.data.is_some() {
                return Err(refused("data"));
            }
            if !raw.mix.is_empty() {
                return Err(refused("mix"));
            }
        }
        let mix = std::mem::take(&mut raw.mix);
        check_outline(&raw, !mix.is_empty()).map_err(|e| source.locate(e))?;
        let mut scenario = Self::lower(raw, path).map_err(|e| source.locate(e))?;
        if !mix.is_empty() {
            mix::load(path, &mut scenario, mix)?;
        }
        Ok(scenario)
    }

    /// Everything after parsing, one section at a time.
    ///
    /// The order is part of the behaviour: a file with several mistakes reports the first one
    /// met here, so reordering these lines changes which error users see. Data comes before
    /// the steps because its columns are variables the steps may use.
    fn lower(mut raw: RawScenario, path: &Path) -> std::result::Result<Scenario, Located> {
        use std::mem::take;
        let (base_urls, target_distribution) = network::lower_targets(
            raw.base_url.take(),
            take(&mut raw.base_urls),
            raw.base_url_distribution,
        )?;
        let host_rules = network::lower_host_rules(
            take(&mut raw.block_hosts),
            take(&mut raw.allow_hosts),
            take(&mut raw.map_hosts),
        )?;
        let timings = Timings::lower(&raw)?;
        let data = data::read_data(path, raw.data.as_ref())?;
        let think_time = raw
            .think_time
            .as_deref()
            .unwrap_or(lower::DEFAULT_THINK_TIME);
        let start_stop = (!raw.on_start.is_empty(), !raw.on_stop.is_empty());
        let [on_start, steps, on_stop] = lower::lower_user_steps(
            raw.on_start,
            raw.steps,
            raw.on_stop,
            data.as_ref(),
            think_time,
        )?;
        let thresholds = lower_thresholds(raw.thresholds)?;
        let (load, users) = workload::lower_load(raw.load, raw.users)?;
        let throttle = workload::lower_throttle(raw.throttle)?;
        data::check_mode(raw.data.as_ref().map(|d| d.mode).unwrap_or_default(), &load)?;
        let on_failure = lower_on_failure(raw.on_failure)?;
        let allow_schemes = lower::lower_schemes(raw.allow_schemes)?;
        let sizing = workload::lower_sizing(raw.sizing, path)?;
        let user_loop = workload::lower_user_loop(raw.iterations, raw.pacing, start_stop, &load)?;
        let engine = raw.engine.unwrap_or_default();
        protocol::check_engine(engine, [&on_start, &steps, &on_stop])?;
        workload::check_coordinate(
            [&on_start, &steps, &on_stop],
            &load,
            timings.iteration_timeout,
        )?;
        let user_loop = UserLoop {
            on_start,
            on_stop,
            ..user_loop
        };
        Ok(Scenario {
            name: raw.name,
            base_urls,
            target_distribution,
            engine,
            host_rules,
            users,
            duration: timings.duration,
            iteration_timeout: timings.iteration_timeout,
            step_timeout: timings.step_timeout,
            on_failure,
            steps,
            data,
            data_file: raw.data.as_ref().map(|d| data::data_path(path, d)),
            data_mode: raw.data.as_ref().map(|d| d.mode).unwrap_or_default(),
            thresholds,
            load,
            throttle,
            allow_schemes,
            sizing,
            user_loop,
            mix: Vec::new(),
        })
    }
}

/// What every scenario needs and serde cannot check: at least one step; a run file (`mix:`)
/// none, and no engine or users of its own.
fn check_outline(raw: &RawScenario, mixing: bool) -> std::result::Result<(), Located> {
    if mixing {
        let own = [
            (!raw.steps.is_empty(), "steps"),
            (!raw.on_start.is_empty(), "on_start"),
            (!raw.on_stop.is_empty(), "on_stop"),
            (raw.engine.is_some(), "engine"),
            (raw.users.is_some(), "users"),
        ];
        if let Some((_, key)) = own.iter().find(|(set, _)| *set) {
            return Err(Located::new(
                format!("{key}: a run file with mix: takes it from its scenarios"),
                *key,
            ));
        }
        return Ok(());
    }
    if raw.steps.is_empty() {
        return Err(Located::new(
            "steps: a scenario needs at least one step",
            "steps",
        ));
    }
    Ok(())
}

/// The scenario's three timings, with their defaults.
struct Timings {
    /// How long users iterate (never zero).
    duration: Duration,
    /// The longest one iteration may take.
    iteration_timeout: Duration,
    /// The longest an element action waits for its element.
    step_timeout: Duration,
}

impl Timings {
    /// Parse the timings the file sets; the others take their defaults.
    fn lower(raw: &RawScenario) -> std::result::Result<Timings, Located> {
        let or_default = |text: &Option<String>, default: Duration| match text {
            None => Ok(default),
            Some(text) => lower::duration(text),
        };
        let timings = Timings {
            duration: or_default(&raw.duration, DEFAULT_DURATION)?,
            iteration_timeout: or_default(&raw.iteration_timeout, DEFAULT_ITERATION_TIMEOUT)?,
            step_timeout: or_default(&raw.step_timeout, DEFAULT_STEP_TIMEOUT)?,
        };
        if timings.duration.is_zero() {
            return Err(Located::new("duration must be more than 0", "duration"));
        }
        Ok(timings)
    }
}

/// `on_failure:`: `screenshot` (with an optional `per_error`) or `none`.
fn lower_on_failure(
    raw: Option<StringOrMap<RawOnFailure>>,
) -> std::result::Result<OnFailure, Located> {
    let Some(StringOrMap(raw)) = raw else {
        return Ok(OnFailure::Nothing);
    };
    match (raw.action, raw.per_error) {
        (RawFailureAction::None, _) => Ok(OnFailure::Nothing),
        (RawFailureAction::Screenshot, Some(0)) => Err(Located::new(
            "on_failure.per_error must be at least 1 (or use `on_failure: none`)",
            "per_error",
        )),
        (RawFailureAction::Screenshot, per_error) => Ok(OnFailure::Screenshot {
            per_error: per_error.unwrap_or(DEFAULT_CAPTURES_PER_ERROR),
        }),
    }
}

/// Parse each threshold expression, located at the expression's text.
fn lower_thresholds(
    raw: Vec<StringOrMap<RawThreshold>>,
) -> std::result::Result<Vec<Threshold>, Located> {
    raw.into_iter()
        .map(|StringOrMap(t)| {
            Threshold::parse(&t.expr, t.abort_on_fail).map_err(|m| Located::new(m, t.expr.trim()))
        })
        .collect()
}

#[cfg(test)]
mod tests;
