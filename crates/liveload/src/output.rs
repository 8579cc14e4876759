//! Rendering results and errors: tables for people, JSON for machines.

use liveload_core::run::{Plan, RunReport};
use liveload_core::{Error, NodeHandle};

use crate::cli::OutputFormat;

const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * MIB;

/// Print an error and return its exit code.
pub fn error(error: &Error, format: OutputFormat) -> i32 {
    match format {
        OutputFormat::Json => println!("{}", error.to_json()),
        OutputFormat::Text => {
            eprintln!("error[{}]: {error}", error.code());
            if let Some(hint) = error.hint() {
                eprintln!("  hint: {hint}");
            }
        }
    }
    error.exit_code()
}

/// Say a scenario file is valid, with a short summary.
pub fn valid(
    path: &std::path::Path,
    scenario: &liveload_core::scenario::Scenario,
    format: OutputFormat,
) {
    fn count(steps: &[liveload_core::proto::Step]) -> usize {
        steps
            .iter()
            .map(|s| match &s.kind {
                liveload_core::proto::StepKind::Group { steps }
                | liveload_core::proto::StepKind::Repeat { steps, .. } => 1 + count(steps),
                _ => 1,
            })
            .sum()
    }
    let steps = count(&scenario.steps);
    match format {
        OutputFormat::Json => println!(
            "{}",
            serde_json::json!({"valid": true, "file": path, "name": scenario.name, "steps": steps,
                "users": scenario.users, "duration_s": scenario.duration.as_secs_f64(),
                "data_rows": scenario.data.as_ref().map(|d| d.rows.len()),
                "mix": scenario.mix.iter().map(|p| serde_json::json!({
                    "scenario": p.name, "engine": p.engine, "users": p.users})).collect::<Vec<_>>()})
        ),
        OutputFormat::Text if !scenario.mix.is_empty() => {
            let parts: Vec<String> = scenario
                .mix
                .iter()
                .map(|p| format!("{} ({:?}, {} users)", p.name, p.engine, p.users).to_lowercase())
                .collect();
            println!(
                "{}: valid mix '{}': {}; {} users for {:?}",
                path.display(),
                scenario.name,
                parts.join(", "),
                scenario.users,
                scenario.duration,
            );
        }
        OutputFormat::Text => println!(
            "{}: valid scenario '{}': {} steps, {} users for {:?}{}",
            path.display(),
            scenario.name,
            steps,
            scenario.users,
            scenario.duration,
            scenario
                .data
                .as_ref()
                .map_or(String::new(), |d| format!(", {} data rows", d.rows.len()))
        ),
    }
}

/// Print a plan.
pub fn plan(plan: &Plan, format: OutputFormat) {
    match format {
        OutputFormat::Json => println!("{}", serde_json::json!({ "plan": plan })),
        OutputFormat::Text => {
            print!("{}", plan_text(plan));
            if let Some(note) = &plan.size_note {
                println!("Note: {note}");
            }
            if let Some(price) = plan.node_hourly_price {
                println!(
                    "Cost: about ${:.2} per hour ({} node(s) x ${price:.4}/h; estimate: prices in backends/<name>/README.md)",
                    price * plan.nodes as f64,
                    plan.nodes
                );
            }
            if let Some(floor) = plan.boot_floor_s.filter(|f| *f >= 1.0) {
                println!(
                    "Boot: creating {} node(s) takes at least {} at the provider's documented create rate (each node's own boot comes on top)",
                    plan.nodes,
                    liveload_core::run::human_duration(floor)
                );
            }
            if let Some(advice) = &plan.boot_advice {
                println!("Hint: {advice}");
            }
        }
    }
}

fn plan_text(plan: &Plan) -> String {
    let p = &plan.sizing.profile;
    let c = &plan.capacity;
    format!(
        "Plan: {nodes} node(s) x up to {upn} users for {users} users (limit {max} nodes)\n\
         Node size ({source}): {mem:.1} GiB memory, {cores:.2} cores\n\
         Why: usable = {mem:.1} GiB x {f} - {head:.0} MiB = {usable:.0} MiB; \
         by memory = ({usable:.0} - {bm:.0} browser) / {cm:.3} per user = {bym}; \
         by cpu = {cores:.2} cores x {cpc:.1} per core = {byc}; users per node = min = {upn}\n",
        nodes = plan.nodes,
        upn = plan.users_per_node,
        users = plan.users,
        max = plan.max_nodes,
        source = plan.source,
        mem = plan.node_memory_bytes as f64 / GIB,
        cores = plan.node_cores,
        f = plan.sizing.memory_safety_factor,
        head = plan.sizing.reserved_headroom_bytes as f64 / MIB,
        usable = c.usable_memory_bytes as f64 / MIB,
        bm = p.browser_memory_usage_bytes as f64 / MIB,
        cm = p.context_memory_usage_bytes as f64 / MIB,
        bym = c.by_memory,
        cpc = p.browser_contexts_per_core,
        byc = c.by_cpu,
    )
}

/// Print a run's report.
pub fn report(report: &RunReport, format: OutputFormat) {
    match format {
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string(report).expect("a report serialises")
        ),
        OutputFormat::Text => print!("{}", report_text(report)),
    }
}

fn report_text(r: &RunReport) -> String {
    let mut out = String::new();
    out.push_str(&format!("\nRun {} (scenario '{}')\n", r.run_id, r.scenario));
    out.push_str(&plan_text(&r.plan));
    out.push_str("\nNodes (facts measured by each agent):\n");
    out.push_str(&format!(
        "  {:<28} {:>10} {:>10} {:>6} {:>6} {:>9} {:>6} {:>7}  {}\n",
        "NODE", "HOST MEM", "USABLE", "CORES", "SHARE", "CAPACITY", "USERS", "READY", "CHROMIUM"
    ));
    for n in &r.nodes {
        out.push_str(&format!(
            "  {:<28} {:>8.1}Gi {:>8.1}Gi {:>6.2} {:>6} {:>9} {:>6} {:>6.2}s  {}\n",
            n.id,
            n.facts.total_memory_bytes as f64 / GIB,
            n.facts.effective_memory_bytes as f64 / GIB,
            n.facts.effective_cores,
            n.facts
                .host_share
                .map_or("-".to_string(), |s| format!("1/{s}")),
            n.capacity.users,
            n.users,
            n.ready_after_s,
            n.facts
                .chromium
                .as_ref()
                .map_or("none", |c| c.version.as_str()),
        ));
    }
    out.push_str("\nLatency (ms, merged over all nodes):\n");
    out.push_str(&format!(
        "  {:<40} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
        "METRIC", "COUNT", "p50", "p90", "p95", "p99", "max"
    ));
    for (name, s) in &r.latencies {
        out.push_str(&format!(
            "  {:<40} {:>8} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}\n",
            name, s.count, s.p50_ms, s.p90_ms, s.p95_ms, s.p99_ms, s.max_ms
        ));
    }
    // The one row of the table that is not a time: say its unit where it is read.
    if r.latencies.contains_key("page.cls") {
        out.push_str("  (page.cls is the layout-shift score in thousandths: 13.1 means 0.0131)\n");
    }
    if let Some(cost) = r.cost_usd {
        out.push_str(&format!(
            "\nCost: about ${cost:.2} (nodes from create to the end of the run){}\n",
            if r.cost_cap_reached {
                "; stopped at --max-cost"
            } else {
                ""
            }
        ));
    }
    if !r.lost_nodes.is_empty() {
        out.push_str("\nLost nodes:\n");
        for l in &r.lost_nodes {
            out.push_str(&format!(
                "  {} after {:.1}s: {} (its {} unfinished user(s) counted failed)\n",
                l.id, l.at_s, l.reason, l.users_failed
            ));
        }
    }
    if let Some(&held) = r.counters.get("node_memory_exhausted") {
        out.push_str(&format!(
            "\nMemory: node(s) reached their memory budget {held} time(s); new iterations were held until memory fell ({} held): the plan under-estimates this scenario's memory per user\n",
            r.counters.get("iterations_held_for_memory").copied().unwrap_or(0)
        ));
    }
    for s in r.node_series.iter().filter(|s| s.memory_warning.is_some()) {
        out.push_str(&format!(
            "Memory: {}: {}\n",
            s.node,
            s.memory_warning.as_deref().unwrap_or_default()
        ));
    }
    let hot: Vec<_> = r.node_series.iter().filter(|s| s.hot.is_some()).collect();
    if !hot.is_empty() {
        out.push_str("\nNodes that ran hot (their latencies are suspect: the load generator was saturated):\n");
        for s in hot {
            out.push_str(&format!(
                "  {}: {}\n",
                s.node,
                s.hot.as_deref().unwrap_or_default()
            ));
        }
    }
    let errors = liveload_core::report::top_errors(r, 5);
    if !errors.is_empty() {
        out.push_str("\nTop errors:\n");
        for (message, count) in errors {
            out.push_str(&format!("  {count:>6}  {message}\n"));
        }
    }
    if !r.thresholds.is_empty() {
        out.push_str("\nThresholds:\n");
        for t in &r.thresholds {
            out.push_str(&format!(
                "  {} {:<50} observed {}{}\n",
                if t.passed { "PASS" } else { "FAIL" },
                t.expr,
                t.observed
                    .map_or("no data".to_string(), |v| format!("{v:.3}")),
                if t.aborted_run {
                    "  (aborted the run)"
                } else {
                    ""
                }
            ));
        }
    }
    out.push_str(&format!(
        "\nUsers: {} succeeded, {} failed (of {}); iterations: {} ok, {} failed\n",
        r.users_succeeded, r.users_failed, r.users, r.iterations_ok, r.iterations_failed
    ));
    out.push_str(&format!(
        "Boot: {:.2}s until every node's facts were in; run: {:.1}s; every node destroyed.\n",
        r.boot_s, r.run_s
    ));
    out
}

/// Write `result.json`, `report.html` and `report.md` into `dir`.
pub fn write_report_files(report: &RunReport, dir: &std::path::Path) -> Result<(), Error> {
    let io = |what: &str, e| Error::io(format!("writing {what} in {}", dir.display()), e);
    std::fs::create_dir_all(dir).map_err(|e| io("the report directory", e))?;
    let json = serde_json::to_string_pretty(report).expect("a report serialises");
    std::fs::write(dir.join("result.json"), json).map_err(|e| io("result.json", e))?;
    std::fs::write(dir.join("report.html"), liveload_core::report::html(report))
        .map_err(|e| io("report.html", e))?;
    std::fs::write(
        dir.join("report.md"),
        liveload_core::report::markdown(report),
    )
    .map_err(|e| io("report.md", e))?;
    // Captured failures (`on_failure: screenshot`), under the names the report links to. The
    // names are the controller's own (`failures/NNN-slug.png`), never an agent's text.
    for (path, bytes) in &report.failures.files {
        let file = dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(path, e))?;
        }
        std::fs::write(&file, bytes).map_err(|e| io(path, e))?;
    }
    Ok(())
}

fn read_result(path: &std::path::Path) -> Result<RunReport, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    serde_json::from_str(&text).map_err(|e| Error::InvalidOption {
        option: path.display().to_string(),
        message: format!("not a liveload result.json: {e}"),
    })
}

/// `liveload report A.json [B.json]`: re-render A's report, or compare A and B.
pub fn rerender(args: &crate::cli::ReportArgs) -> Result<(), Error> {
    let a = read_result(&args.result)?;
    let dir = args.out.clone().unwrap_or_else(|| {
        args.result
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default()
    });
    match &args.compare {
        None => {
            write_report_files(&a, &dir)?;
            println!("wrote {}/report.html and report.md", dir.display());
        }
        Some(path) => {
            let b = read_result(path)?;
            let text = liveload_core::report::compare_markdown(&a, &b);
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
            std::fs::write(dir.join("compare.md"), &text)
                .map_err(|e| Error::io("writing compare.md", e))?;
            print!("{text}");
        }
    }
    Ok(())
}

/// Print what cleanup destroyed.
pub fn cleanup(cleaned: &crate::run_cmd::Cleaned, format: OutputFormat) {
    match format {
        OutputFormat::Json => println!(
            "{}",
            serde_json::json!({ "destroyed": cleaned.destroyed, "spared": cleaned.spared })
        ),
        OutputFormat::Text => {
            for node in &cleaned.destroyed {
                println!(
                    "destroyed {} (run {}, {})",
                    node.id, node.run_id, node.detail
                );
            }
            println!("{} node(s) destroyed", cleaned.destroyed.len());
            let mut runs: Vec<&str> = cleaned.spared.iter().map(|n| n.run_id.as_str()).collect();
            runs.dedup();
            if !runs.is_empty() {
                println!(
                    "{} node(s) of runs still going on from this machine left alone ({}); --force destroys them too",
                    cleaned.spared.len(),
                    runs.join(", ")
                );
            }
        }
    }
}

/// Print a node list.
pub fn nodes(nodes: &[NodeHandle], format: OutputFormat) {
    match format {
        OutputFormat::Json => println!("{}", serde_json::json!({ "nodes": nodes })),
        OutputFormat::Text => {
            for node in nodes {
                println!("{}\trun {}\t{}", node.id, node.run_id, node.detail);
            }
            if nodes.is_empty() {
                println!("no nodes");
            }
        }
    }
}
