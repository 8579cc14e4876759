//! Lowering of `load:` (how users arrive) and `throttle:` (how fast they may iterate).
//!
//! Both sections are flat maps whose keys only make sense in some combinations, so the checks
//! here name the combination that is wrong ("ramp_to belongs to the open model") rather than
//! leaving it to a generic parser message.

use std::time::Duration;

use super::lower::{Located, duration};
use super::raw::{RawLoad, RawModel, RawThrottle};
use super::{ALL_USERS_AT_ONCE, Load, Throttle, parse_duration};
use liveload_proto::UserLoop;

/// The workload model and the number of users the cluster is sized for.
///
/// `users` is the file's `users:` (1 when absent) for the closed model; the open model replaces
/// it with `max_users`, because the cluster must hold the most arrivals in progress at once.
pub(super) fn lower_load(
    load: Option<RawLoad>,
    users: Option<u64>,
) -> Result<(Load, u64), Located> {
    let users = users.unwrap_or(1);
    match load {
        None => Ok((ALL_USERS_AT_ONCE, users)),
        Some(load) if load.model == RawModel::Closed => Ok((closed(load)?, users)),
        Some(load) => open(load),
    }
}

/// `model: closed`: an optional ramp, smooth or in steps.
fn closed(load: RawLoad) -> Result<Load, Located> {
    if load.rate.is_some() || load.ramp_to.is_some() || load.max_users.is_some() {
        return Err(Located::new(
            "load: rate, ramp_to and max_users belong to the open model (model: open)",
            "load",
        ));
    }
    if load.ramp_steps == Some(0) || (load.ramp_steps.is_some() && load.ramp_up.is_none()) {
        return Err(Located::new(
            "load: ramp_steps needs ramp_up and at least 1 step",
            "ramp_steps",
        ));
    }
    Ok(Load::Closed {
        ramp_up: load.ramp_up.as_deref().map(duration).transpose()?,
        ramp_steps: load.ramp_steps,
    })
}

/// `model: open`: an arrival rate (possibly ramping) and a cap on arrivals in progress, which
/// is also the number of users the cluster is sized for.
fn open(load: RawLoad) -> Result<(Load, u64), Located> {
    let (Some(rate), Some(max_users)) = (load.rate, load.max_users) else {
        return Err(Located::new(
            "load: the open model needs rate (arrivals per second) and max_users",
            "load",
        ));
    };
    let positive = |v: f64| v.is_finite() && v > 0.0;
    if !positive(rate) || load.ramp_to.is_some_and(|r| !positive(r)) || max_users == 0 {
        return Err(Located::new(
            "load: rate and ramp_to must be more than 0 per second, max_users at least 1",
            "rate",
        ));
    }
    if load.ramp_up.is_some() || load.ramp_steps.is_some() {
        return Err(Located::new(
            "load: ramp_up and ramp_steps belong to the closed model; ramp an open model with ramp_to",
            "ramp_up",
        ));
    }
    let open = Load::Open {
        rate,
        ramp_to: load.ramp_to,
        max_users,
    };
    Ok((open, max_users))
}

/// `iterations:` and `pacing:`, checked against the model: they, and `on_start:`/`on_stop:`
/// (`(on_start, on_stop)`: whether the file has them), belong to the closed model (an
/// open-model arrival runs the steps once). The step lists are the caller's to fill in.
pub(super) fn lower_user_loop(
    iterations: Option<u64>,
    pacing: Option<String>,
    (on_start, on_stop): (bool, bool),
    load: &Load,
) -> Result<UserLoop, Located> {
    let closed_only = [
        ("iterations", iterations.is_some()),
        ("pacing", pacing.is_some()),
        ("on_start", on_start),
        ("on_stop", on_stop),
    ];
    if matches!(load, Load::Open { .. })
        && let Some((key, _)) = closed_only.iter().find(|(_, present)| *present)
    {
        return Err(Located::new(
            format!("{key} belongs to the closed model: an open-model arrival runs the steps once"),
            *key,
        ));
    }
    if iterations == Some(0) {
        return Err(Located::new("iterations must be at least 1", "iterations"));
    }
    let pacing = pacing.as_deref().map(duration).transpose()?;
    if pacing.is_some_and(|p| p.is_zero()) {
        return Err(Located::new(
            "pacing must be more than 0 (leave it out for back-to-back iterations)",
            "pacing",
        ));
    }
    Ok(UserLoop {
        iterations,
        pacing_ms: pacing.map(|p| u64::try_from(p.as_millis()).unwrap_or(u64::MAX)),
        ..UserLoop::default()
    })
}

/// Every `coordinate` step of a user's three step lists, nested ones included, in order:
/// (point, group, timeout in ms).
pub fn coordinate_points(lists: [&[liveload_proto::Step]; 3]) -> Vec<(String, u32, u64)> {
    fn walk(steps: &[liveload_proto::Step], out: &mut Vec<(String, u32, u64)>) {
        use liveload_proto::StepKind;
        for step in steps {
            match &step.kind {
                StepKind::Coordinate {
                    point,
                    group,
                    timeout_ms,
                } => out.push((point.clone(), *group, *timeout_ms)),
                StepKind::Group { steps } | StepKind::Repeat { steps, .. } => walk(steps, out),
                _ => {}
            }
        }
    }
    let mut points = Vec::new();
    for steps in lists {
        walk(steps, &mut points);
    }
    points
}

/// `coordinate` steps, wherever they are: closed model only (open-model arrivals reuse user
/// ids, so two arrivals could wait as one user), and each step's timeout shorter than the
/// iteration timeout (else the iteration always ends first, and the group waits for a user
/// who left).
pub(super) fn check_coordinate(
    lists: [&[liveload_proto::Step]; 3],
    load: &Load,
    iteration_timeout: Duration,
) -> Result<(), Located> {
    let points = coordinate_points(lists);
    if matches!(load, Load::Open { .. })
        && let Some((point, _, _)) = points.first()
    {
        return Err(Located::new(
            format!(
                "coordinate '{point}' belongs to the closed model: open-model arrivals reuse user ids"
            ),
            "coordinate",
        ));
    }
    let limit = iteration_timeout.as_millis();
    if let Some((point, _, timeout)) = points.iter().find(|(_, _, t)| u128::from(*t) >= limit) {
        return Err(Located::new(
            format!(
                "coordinate '{point}': its timeout ({timeout} ms) must be shorter than iteration_timeout ({limit} ms), or the iteration ends before the group does"
            ),
            "coordinate",
        ));
    }
    Ok(())
}

/// `sizing:` — what this scenario's users cost, when the file says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScenarioSizing {
    /// A profile file from `liveload calibrate`, resolved against the scenario's directory.
    pub profile: Option<std::path::PathBuf>,
    /// Memory of one browser with no user, MiB.
    pub browser_memory_mib: Option<u64>,
    /// Memory each user adds, MiB.
    pub context_memory_mib: Option<u64>,
    /// Users one core drives.
    pub contexts_per_core: Option<f64>,
}

impl ScenarioSizing {
    /// `base` with this block applied: its profile file's figures, then its own.
    pub fn apply(
        &self,
        base: crate::sizing::BrowserProfile,
    ) -> crate::Result<crate::sizing::BrowserProfile> {
        let mut profile = match &self.profile {
            Some(path) => crate::profile::CalibratedProfile::load(path)?.browser_profile(),
            None => base,
        };
        if let Some(mib) = self.browser_memory_mib {
            profile.browser_memory_usage_bytes = mib << 20;
        }
        if let Some(mib) = self.context_memory_mib {
            profile.context_memory_usage_bytes = mib << 20;
        }
        if let Some(per_core) = self.contexts_per_core {
            profile.browser_contexts_per_core = per_core;
        }
        Ok(profile)
    }
}

/// `sizing:`: figures that make sense (a positive memory per user and users per core; MiB
/// that fit in bytes), and the profile path against the scenario's directory.
pub(super) fn lower_sizing(
    sizing: Option<super::raw::RawSizing>,
    scenario_path: &std::path::Path,
) -> Result<ScenarioSizing, Located> {
    let Some(sizing) = sizing else {
        return Ok(ScenarioSizing::default());
    };
    let mib_ok =
        |mib: Option<u64>, zero_ok: bool| mib.is_none_or(|m| (zero_ok || m > 0) && m <= (1 << 30));
    if !mib_ok(sizing.browser_memory_mib, true) {
        return Err(Located::new(
            "sizing: browser_memory_mib is out of range",
            "browser_memory_mib",
        ));
    }
    if !mib_ok(sizing.context_memory_mib, false) {
        return Err(Located::new(
            "sizing: context_memory_mib must be at least 1",
            "context_memory_mib",
        ));
    }
    if sizing
        .contexts_per_core
        .is_some_and(|c| !(c > 0.0 && c.is_finite()))
    {
        return Err(Located::new(
            "sizing: contexts_per_core must be more than 0",
            "contexts_per_core",
        ));
    }
    Ok(ScenarioSizing {
        profile: sizing.profile.map(|file| {
            scenario_path
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .join(file)
        }),
        browser_memory_mib: sizing.browser_memory_mib,
        context_memory_mib: sizing.context_memory_mib,
        contexts_per_core: sizing.contexts_per_core,
    })
}

/// The throttle; no limits when the section is absent.
pub(super) fn lower_throttle(throttle: Option<RawThrottle>) -> Result<Throttle, Located> {
    let Some(throttle) = throttle else {
        return Ok(Throttle::default());
    };
    let rate = throttle.rate.as_deref().map(throttle_rate).transpose()?;
    let interarrival = throttle.interarrival.as_deref().map(duration).transpose()?;
    if throttle.parallelism == Some(0) {
        return Err(Located::new(
            "throttle: parallelism must be at least 1",
            "parallelism",
        ));
    }
    Ok(Throttle {
        rate,
        interarrival,
        parallelism: throttle.parallelism,
    })
}

/// `10/s`, `600/1m`: a positive count per period. A bare unit (`/s`) means one of it.
fn throttle_rate(text: &str) -> Result<(u64, Duration), Located> {
    let (limit, per) = text.split_once('/').ok_or_else(|| {
        Located::new(
            format!("throttle rate '{text}' should read like 10/s or 600/1m"),
            text,
        )
    })?;
    let limit: u64 = limit
        .trim()
        .parse()
        .ok()
        .filter(|l| *l > 0)
        .ok_or_else(|| {
            Located::new(
                format!("throttle rate '{text}': '{limit}' is not a positive count"),
                text,
            )
        })?;
    let per = per.trim();
    let per = if per.starts_with(|c: char| c.is_ascii_digit()) {
        per.to_string()
    } else {
        format!("1{per}")
    };
    // Located at the whole rate: the period alone (`s`) is too short to find reliably.
    let per = parse_duration(&per).map_err(|m| Located::new(m, text))?;
    Ok((limit, per))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::tests::{location, parse};
    use super::super::{Load, Scenario};

    #[test]
    fn a_sizing_block_is_read_checked_and_applied() {
        let head = "name: d\nbase_url: http://x\nsizing: { profile: p.json, context_memory_mib: 50, contexts_per_core: 2.5 }\nsteps:\n  - navigate: /\n";
        let s = Scenario::from_yaml(std::path::Path::new("dir/s.yaml"), head).unwrap();
        assert_eq!(
            s.sizing.profile.as_deref(),
            Some(std::path::Path::new("dir/p.json")),
            "next to the scenario file"
        );
        assert_eq!(s.sizing.context_memory_mib, Some(50));
        // Without its profile file, applying it fails naming the file.
        assert!(
            s.sizing
                .apply(Default::default())
                .unwrap_err()
                .to_string()
                .contains("p.json")
        );
        let figures = parse("name: d\nbase_url: http://x\nsizing: { context_memory_mib: 50 }\nsteps:\n  - navigate: /\n").unwrap();
        let applied = figures.sizing.apply(Default::default()).unwrap();
        assert_eq!(applied.context_memory_usage_bytes, 50 << 20);
        assert_eq!(
            applied.browser_memory_usage_bytes,
            crate::sizing::BrowserProfile::default().browser_memory_usage_bytes,
            "what the block leaves out stays"
        );
        for bad in [
            "context_memory_mib: 0",
            "contexts_per_core: 0",
            "contexts_per_core: -1",
            "flavour: big",
        ] {
            let text = format!(
                "name: d\nbase_url: http://x\nsizing: {{ {bad} }}\nsteps:\n  - navigate: /\n"
            );
            assert!(parse(&text).is_err(), "{bad} is refused");
        }
    }

    #[test]
    fn workload_models_and_throttles() {
        let s: Scenario = parse(
            "name: d\nbase_url: http://x\nload: { model: open, rate: 5, ramp_to: 20, max_users: 40 }\nthrottle: { rate: 600/1m, interarrival: 50ms, parallelism: 8 }\nsteps:\n  - reload\n",
        )
        .unwrap();
        assert_eq!(s.users, 40, "sized for the most arrivals at once");
        assert_eq!(
            s.load,
            Load::Open {
                rate: 5.0,
                ramp_to: Some(20.0),
                max_users: 40
            }
        );
        assert_eq!(s.throttle.rate, Some((600, Duration::from_secs(60))));
        assert_eq!(s.throttle.interarrival, Some(Duration::from_millis(50)));
        let s = parse("name: d\nbase_url: http://x\nload: { model: closed, ramp_up: 10s }\nthrottle: { rate: 10/s }\nsteps:\n  - reload\n").unwrap();
        assert_eq!(
            s.load,
            Load::Closed {
                ramp_up: Some(Duration::from_secs(10)),
                ramp_steps: None
            }
        );
        assert_eq!(s.throttle.rate, Some((10, Duration::from_secs(1))));
        for (bad, line) in [
            ("load: { model: open, rate: 5 }\n", 3),
            ("load: { model: closed, rate: 5 }\n", 3),
            ("load: { model: sideways }\n", 3),
            ("throttle: { rate: lots }\n", 3),
            ("throttle: { rate: 0/s }\n", 3),
        ] {
            let (l, _, m) = location(
                parse(&format!(
                    "name: d\nbase_url: http://x\n{bad}steps:\n  - reload\n"
                ))
                .unwrap_err(),
            );
            assert_eq!(l, line, "{bad}: {m}");
        }
    }

    #[test]
    fn a_user_loop_is_read_and_checked_against_the_model() {
        let s = parse(
            "name: d\nbase_url: http://x\niterations: 3\npacing: 2s\non_start:\n  - navigate: /login\n  - extract: { var: token, selector: h1 }\nsteps:\n  - navigate: '/?t={{token}}'\non_stop:\n  - navigate: '/out?t={{token}}'\n",
        )
        .unwrap();
        assert_eq!(s.user_loop.iterations, Some(3));
        assert_eq!(s.user_loop.pacing_ms, Some(2000));
        assert_eq!(s.user_loop.on_start.len(), 2);
        assert_eq!(
            s.user_loop.on_stop.len(),
            1,
            "on_start's variables reach on_stop"
        );
        // A variable on_stop extracts is not known to the iteration's steps before it.
        let late = parse(
            "name: d\nbase_url: http://x\nsteps:\n  - navigate: '/?t={{token}}'\non_stop:\n  - extract: { var: token, selector: h1 }\n",
        );
        assert!(location(late.unwrap_err()).2.contains("token"));
        for (text, wrong) in [
            ("iterations: 0\n", "iterations must be at least 1"),
            ("pacing: 0s\n", "pacing must be more than 0"),
            (
                "iterations: 2\nload: { model: open, rate: 1, max_users: 2 }\n",
                "iterations belongs to the closed model",
            ),
            (
                "on_stop: [reload]\nload: { model: open, rate: 1, max_users: 2 }\n",
                "on_stop belongs to the closed model",
            ),
        ] {
            let err = parse(&format!(
                "name: d\nbase_url: http://x\n{text}steps:\n  - navigate: /\n"
            ))
            .unwrap_err();
            assert!(location(err).2.contains(wrong), "{text}");
        }
    }

    #[test]
    fn generators_are_known_templates_and_their_arguments_checked() {
        let ok = "name: d\nbase_url: http://x\nsteps:\n  - navigate: '/?a={{uuid}}&b={{ seq }}&c={{random_string 8}}&d={{random_int 1 100}}'\n";
        assert!(parse(ok).is_ok());
        let err = parse(
            "name: d\nbase_url: http://x\nsteps:\n  - navigate: '/?d={{random_int 100 1}}'\n",
        )
        .unwrap_err();
        let (line, _, message) = location(err);
        assert_eq!(line, 4);
        assert!(message.contains("low bound is above"), "{message}");
        let err = parse("name: d\nbase_url: http://x\nsteps:\n  - navigate: '/?d={{nope}}'\n")
            .unwrap_err();
        assert!(
            location(err).2.contains("random_int LOW HIGH"),
            "the message lists the generators"
        );
    }

    #[test]
    fn coordinate_is_closed_model_only_and_shorter_than_the_iteration() {
        let step = "steps:\n  - group: { name: g, steps: [ { coordinate: { name: room, group: 2, timeout: 40s } } ] }\n";
        let err = parse(&format!("name: d\nbase_url: http://x\n{step}")).unwrap_err();
        let message = location(err).2;
        assert!(
            message.contains("shorter than iteration_timeout"),
            "{message}"
        );
        let open = "name: d\nbase_url: http://x\nload: { model: open, rate: 1, max_users: 2 }\nsteps:\n  - coordinate: { name: room, group: 2 }\n";
        assert!(
            location(parse(open).unwrap_err())
                .2
                .contains("closed model")
        );
        let fine =
            "name: d\nbase_url: http://x\nsteps:\n  - coordinate: { name: room, group: 2 }\n";
        assert!(
            parse(fine).is_ok(),
            "5 s by default, under the 30 s iteration timeout"
        );
    }
}
