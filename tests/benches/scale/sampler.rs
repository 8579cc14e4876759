//! Where the controller's time and memory go, phase by phase: the run's own events mark the
//! phases (the observer reads the controller's CPU time at each), and a thread samples the
//! process's resident memory for each phase's peak.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use liveload_core::run::{Event, Observer};

/// The controller runtimes' thread names: `lv-ctl-N`, a new N for each backend measured, since
/// the runtime of the one before may still be winding down (see `controller_runtime`).
pub fn controller_threads(generation: usize) -> String {
    format!("lv-ctl-{generation}")
}

/// One phase's figures.
pub struct Phase {
    pub name: &'static str,
    pub wall_s: f64,
    pub cpu_s: f64,
    pub peak_rss_mib: f64,
}

/// Every phase's figures, in order.
pub struct Figures {
    pub phases: Vec<Phase>,
}

/// A phase boundary: the phase that begins, when, and the controller's CPU seconds then.
struct Mark {
    name: &'static str,
    at: Instant,
    cpu_s: f64,
    peak_rss_kib: u64,
}

/// The phases so far; an [`Observer`] of the run.
pub struct Phases {
    /// The name of the controller's threads.
    threads: String,
    marks: Mutex<Vec<Mark>>,
}

impl Phases {
    /// Phases of the controller whose threads are named `threads`.
    pub fn new(threads: String) -> Phases {
        Phases {
            threads,
            marks: Mutex::new(Vec::new()),
        }
    }

    fn begin(&self, name: &'static str) {
        let mark = Mark {
            name,
            at: Instant::now(),
            cpu_s: controller_cpu_s(&self.threads),
            peak_rss_kib: rss_kib(),
        };
        self.marks.lock().unwrap().push(mark);
    }

    /// The run returned: the last phase ends.
    pub fn finished(&self) {
        self.begin("done");
    }

    /// Raise the current phase's peak to `kib` if higher.
    fn saw_rss(&self, kib: u64) {
        if let Some(mark) = self.marks.lock().unwrap().last_mut() {
            mark.peak_rss_kib = mark.peak_rss_kib.max(kib);
        }
    }
}

impl Observer for Phases {
    fn event(&self, event: &Event) {
        match event {
            Event::Planned(_) => self.begin("boot"),
            Event::Started => self.begin("run"),
            Event::TearingDown { .. } => self.begin("teardown"),
            _ => {}
        }
    }
}

/// The thread that samples memory.
pub struct Sampler {
    phases: Arc<Phases>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Sampler {
    /// Sample every 50 ms until [`Sampler::stop`].
    pub fn start(phases: Arc<Phases>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (phases, stop) = (phases.clone(), stop.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    phases.saw_rss(rss_kib());
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        });
        Sampler {
            phases,
            stop,
            thread,
        }
    }

    /// Stop sampling; the figures of every phase that ended.
    pub fn stop(self) -> Figures {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the sampler");
        let marks = self.phases.marks.lock().unwrap();
        let phases = marks
            .windows(2)
            .map(|pair| Phase {
                name: pair[0].name,
                wall_s: (pair[1].at - pair[0].at).as_secs_f64(),
                cpu_s: pair[1].cpu_s - pair[0].cpu_s,
                peak_rss_mib: pair[0].peak_rss_kib as f64 / 1024.0,
            })
            .collect();
        Figures { phases }
    }
}

/// CPU seconds (user + system) of this process's threads named `threads`.
fn controller_cpu_s(threads: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let ticks: u64 = tasks
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|comm| comm.trim_end() == threads)
        })
        .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
        .map(|stat| {
            // Fields after the command's closing parenthesis start at field 3 (state);
            // utime and stime are fields 14 and 15.
            let after = stat.rsplit(')').next().unwrap_or("");
            let fields: Vec<u64> = after
                .split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|f| f.parse().ok())
                .collect();
            fields.iter().sum::<u64>()
        })
        .sum();
    ticks as f64 / rustix::param::clock_ticks_per_second().max(1) as f64
}

/// The process's resident memory, KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
