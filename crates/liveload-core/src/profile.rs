//! Sizing profiles measured on the user's own scenario (`liveload calibrate`), and how they
//! are read back (`--profile FILE`).
//!
//! The built-in profile ([`BrowserProfile::default`]) was measured on the demo page. A real
//! page can cost several times that, and then the plan puts too many browsers on each node:
//! nodes swap or kill renderers, and the latencies measured are the load generator's. A
//! calibration runs the scenario's own steps on one node at a rising number of users (a
//! staircase), measures the node's memory, CPU and step latency at each, finds the knee, and
//! fits the three figures sizing needs.

use serde::{Deserialize, Serialize};

use crate::sizing::BrowserProfile;
use crate::{Error, Result};

/// The largest memory figure a profile may hold, MiB (a PiB: anything larger is a broken file).
const MAX_MIB: u64 = 1 << 30;

/// The version of the profile file's format.
pub const PROFILE_VERSION: u32 = 1;

/// One step of the staircase, as measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CalibrationStep {
    /// Users running.
    pub users: u64,
    /// The node's agent and browser memory in the step's steady half, MiB (median).
    pub memory_mib: f64,
    /// Cores busy in the step's steady half (mean).
    pub cpu_cores: f64,
    /// The scenario's step latency, p95 over its steps (think steps excluded), ms.
    pub step_p95_ms: f64,
}

/// Where the knee is: the first step whose p95 is at least `latency_factor` times the
/// single-user p95, or whose CPU is at least `cpu_fraction` of the node's cores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KneeRule {
    /// p95 growth that marks the knee (1.5).
    pub latency_factor: f64,
    /// CPU share that marks the knee (0.85).
    pub cpu_fraction: f64,
}

impl Default for KneeRule {
    fn default() -> Self {
        KneeRule {
            latency_factor: 1.5,
            cpu_fraction: 0.85,
        }
    }
}

/// A profile measured on one scenario: what `--profile FILE` reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibratedProfile {
    /// [`PROFILE_VERSION`].
    pub version: u32,
    /// Memory of the browser with no user, MiB (the fit's intercept).
    pub browser_memory_mib: u64,
    /// Memory each user adds, MiB (the fit's slope).
    pub context_memory_mib: u64,
    /// Users one core drives before the knee.
    pub contexts_per_core: f64,
    /// What it was measured on.
    pub measured_on: MeasuredOn,
    /// The staircase.
    pub steps: Vec<CalibrationStep>,
    /// The users at the knee, when the staircase reached it.
    pub knee_users: Option<u64>,
    /// How to read the figures (e.g. no knee within the staircase: users per core is a floor).
    pub note: String,
}

/// The node and scenario a profile was measured on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeasuredOn {
    /// The scenario's name.
    pub scenario: String,
    /// SHA-256 of the scenario file, hex.
    pub scenario_sha256: String,
    /// Chromium's version on the node.
    pub chromium: String,
    /// The node's memory, bytes, and cores, as its agent measured them.
    pub node_memory_bytes: u64,
    /// See [`MeasuredOn::node_memory_bytes`].
    pub node_cores: f64,
    /// liveload's version.
    pub liveload_version: String,
    /// When, Unix seconds.
    pub unix_s: u64,
}

impl CalibratedProfile {
    /// The profile's figures as sizing uses them.
    pub fn browser_profile(&self) -> BrowserProfile {
        BrowserProfile {
            browser_memory_usage_bytes: self.browser_memory_mib << 20,
            context_memory_usage_bytes: self.context_memory_mib << 20,
            browser_contexts_per_core: self.contexts_per_core,
        }
    }

    /// Read a profile file; errors name the file and what is wrong.
    pub fn load(path: &std::path::Path) -> Result<CalibratedProfile> {
        let bad = |message: String| Error::InvalidOption {
            option: "--profile".into(),
            message: format!("{}: {message}", path.display()),
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let profile: CalibratedProfile =
            serde_json::from_str(&text).map_err(|e| bad(format!("not a liveload profile: {e}")))?;
        if profile.version != PROFILE_VERSION {
            return Err(bad(format!(
                "profile version {} (this liveload reads {PROFILE_VERSION}): calibrate again",
                profile.version
            )));
        }
        if profile.context_memory_mib == 0
            || !(profile.contexts_per_core > 0.0 && profile.contexts_per_core.is_finite())
        {
            return Err(bad(
                "memory per user and users per core must be positive".into()
            ));
        }
        if profile.browser_memory_mib > MAX_MIB || profile.context_memory_mib > MAX_MIB {
            return Err(bad(format!("memory figures above {MAX_MIB} MiB")));
        }
        Ok(profile)
    }
}

/// SHA-256 of `bytes`, hex: what a profile records of the scenario it was measured on.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The index of the knee in `steps` (ordered by users), if any.
pub fn knee(steps: &[CalibrationStep], cores: f64, rule: KneeRule) -> Option<usize> {
    let base = steps.first()?.step_p95_ms;
    steps.iter().position(|s| {
        (base > 0.0 && s.step_p95_ms >= rule.latency_factor * base)
            || (cores > 0.0 && s.cpu_cores >= rule.cpu_fraction * cores)
    })
}

/// Fit the three figures: memory = browser + users × per user (least squares over the steps
/// before the knee, at least two), users per core from the last step before the knee.
/// `None` when the steps cannot support a fit (fewer than two usable steps).
pub fn fit(steps: &[CalibrationStep], cores: f64, rule: KneeRule) -> Option<(u64, u64, f64)> {
    let knee = knee(steps, cores, rule);
    let usable = &steps[..knee.unwrap_or(steps.len())];
    // Memory stays linear past the knee (it is CPU or latency that gave): the knee's step, and
    // the next when the knee is the first, still tell memory per user.
    let memory_steps = &steps[..knee
        .map_or(steps.len(), |k| (k + 1).max(2))
        .min(steps.len())];
    if memory_steps.len() < 2 || cores <= 0.0 {
        return None;
    }
    let n = memory_steps.len() as f64;
    let mean_x = memory_steps.iter().map(|s| s.users as f64).sum::<f64>() / n;
    let mean_y = memory_steps.iter().map(|s| s.memory_mib).sum::<f64>() / n;
    let sxx: f64 = memory_steps
        .iter()
        .map(|s| (s.users as f64 - mean_x).powi(2))
        .sum();
    let sxy: f64 = memory_steps
        .iter()
        .map(|s| (s.users as f64 - mean_x) * (s.memory_mib - mean_y))
        .sum();
    if sxx <= 0.0 {
        return None;
    }
    // Memory that does not grow with users is a failed measurement, not a free user.
    let slope = sxy / sxx;
    if !(slope > 0.0 && slope.is_finite()) {
        return None;
    }
    let intercept = (mean_y - slope * mean_x).max(0.0);
    // Below the knee every step was fine: the last of them is what a core can drive. With the
    // knee at the first step, one user per core is all the staircase can vouch for.
    let good_users = usable.last().map_or(1, |s| s.users).max(1);
    let per_core = (good_users as f64 / cores).max(0.1);
    Some((
        intercept.ceil() as u64,
        slope.ceil() as u64,
        (per_core * 10.0).floor() / 10.0,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(users: u64, memory_mib: f64, cpu: f64, p95: f64) -> CalibrationStep {
        CalibrationStep {
            users,
            memory_mib,
            cpu_cores: cpu,
            step_p95_ms: p95,
        }
    }

    #[test]
    fn the_knee_is_where_latency_or_cpu_gives() {
        let steps = [
            step(1, 200.0, 0.2, 100.0),
            step(2, 240.0, 0.4, 110.0),
            step(4, 320.0, 0.9, 160.0),
            step(8, 480.0, 1.8, 400.0),
        ];
        assert_eq!(
            knee(&steps, 2.0, KneeRule::default()),
            Some(2),
            "p95 160 >= 1.5 x 100"
        );
        assert_eq!(knee(&steps[..2], 2.0, KneeRule::default()), None);
        let cpu_bound = [step(1, 200.0, 0.5, 100.0), step(2, 240.0, 1.8, 110.0)];
        assert_eq!(
            knee(&cpu_bound, 2.0, KneeRule::default()),
            Some(1),
            "1.8 >= 0.85 x 2"
        );
    }

    /// 160 MiB of browser and 40 per user, exactly: the fit finds them; users per core is the
    /// last step before the knee over the cores.
    #[test]
    fn the_fit_recovers_a_linear_cost() {
        let steps = [
            step(1, 200.0, 0.2, 100.0),
            step(2, 240.0, 0.4, 105.0),
            step(4, 320.0, 0.8, 120.0),
            step(8, 480.0, 1.9, 300.0),
        ];
        let (browser, per_user, per_core) = fit(&steps, 2.0, KneeRule::default()).unwrap();
        assert_eq!((browser, per_user), (160, 40));
        assert_eq!(per_core, 2.0, "4 users before the knee on 2 cores");
        assert!(
            fit(&steps[..1], 2.0, KneeRule::default()).is_none(),
            "one step fits nothing"
        );
        // Memory that does not grow is a failed measurement.
        let flat = [step(1, 0.0, 0.1, 100.0), step(4, 0.0, 0.2, 100.0)];
        assert!(fit(&flat, 2.0, KneeRule::default()).is_none());
        let shrinking = [
            step(1, 230.0, 0.1, 100.0),
            step(2, 250.0, 0.2, 100.0),
            step(4, 0.0, 0.3, 100.0),
        ];
        assert!(fit(&shrinking, 2.0, KneeRule::default()).is_none());
        // A knee at the first step (one user saturates the cores) still fits memory over two.
        let heavy = [step(1, 500.0, 1.9, 100.0), step(2, 800.0, 2.0, 300.0)];
        let (browser, per_user, per_core) = fit(&heavy, 2.0, KneeRule::default()).unwrap();
        assert_eq!((browser, per_user), (200, 300));
        assert_eq!(per_core, 0.5, "one user per core is all it can vouch for");
    }

    #[test]
    fn a_profile_round_trips_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let profile = CalibratedProfile {
            version: PROFILE_VERSION,
            browser_memory_mib: 180,
            context_memory_mib: 60,
            contexts_per_core: 4.0,
            measured_on: MeasuredOn {
                scenario: "s".into(),
                scenario_sha256: "00".into(),
                chromium: "Chromium 1".into(),
                node_memory_bytes: 1 << 30,
                node_cores: 2.0,
                liveload_version: "0".into(),
                unix_s: 0,
            },
            steps: vec![step(1, 240.0, 0.3, 90.0)],
            knee_users: None,
            note: String::new(),
        };
        let path = dir.path().join("p.json");
        std::fs::write(&path, serde_json::to_string(&profile).unwrap()).unwrap();
        let read = CalibratedProfile::load(&path).unwrap();
        assert_eq!(read, profile);
        assert_eq!(read.browser_profile().context_memory_usage_bytes, 60 << 20);
        std::fs::write(&path, "{}").unwrap();
        let err = CalibratedProfile::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("p.json") && err.contains("not a liveload profile"),
            "{err}"
        );
    }
}
