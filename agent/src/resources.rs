//! What this node's browser costs right now: memory and CPU of the agent's process group (the
//! agent, Chromium and every renderer), sampled once a second with each snapshot.
//!
//! Memory is the group's proportional set size (PSS, `/proc/PID/smaps_rollup`): Chromium's
//! processes share most of their pages, so summing resident sizes would count the shared
//! libraries once per renderer and report several times the truth. Reading `smaps_rollup` is
//! costly, though (the kernel walks the process's page tables: 2 ms for a renderer, 73 ms a
//! second for 36 processes, a third of the agent's CPU at 30 users), so each sample reads it
//! for a tenth of the processes in turn (and for new ones), and estimates the others from
//! their last PSS plus the change of their resident size since (`/proc/PID/statm`, cheap):
//! growth is a renderer's own heap, which counts whole in both. Every process's PSS is read
//! anew at least every ten samples. Where a cgroup limits the
//! node and the agent has it to itself (a container: not one of several local agents sharing
//! their controller's group), the limit is what the kernel enforces, so the cgroup's working
//! set is used instead: `memory.current` (v1 `memory.usage_in_bytes`) less the inactive file
//! cache the kernel reclaims first.
//!
//! CPU is the group's user + system time between two samples, as cores in use: 1.5 means one
//! and a half cores busy on average over the interval. Counted per process, so a renderer
//! that exits between two samples takes none of the others' time with it.

use std::time::Instant;

use liveload_proto::NodeResources;

/// Samples the agent's process group.
pub struct Sampler {
    /// The agent's process group (it leads its own: Chromium and its helpers join it).
    group: i32,
    /// Use the cgroup's memory figure (the node is a memory-limited group).
    cgroup_memory: bool,
    /// Scan `/proc` for the whole group (Chromium and its renderers), or read only this
    /// process (an agent without a browser: hundreds of browserless agents on one host would
    /// otherwise each read every process's stat once a second).
    whole_group: bool,
    /// Each process's CPU time at the last sample, in clock ticks, and when.
    last_cpu: Option<(std::collections::HashMap<i32, u64>, Instant)>,
    /// Each process's last PSS read and its resident size then, both in KiB, by pid and start
    /// time (a pid reused by a new process is a new entry).
    pss: std::collections::HashMap<(i32, u64), (u64, u64)>,
    /// Where the round of exact PSS reads goes on from, in pid order.
    next_read: usize,
    /// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
    ticks_per_s: f64,
}

impl Sampler {
    /// A sampler for this process's group; `cgroup_memory` when a cgroup limits the node and
    /// this agent is alone in it.
    pub fn new(cgroup_memory: bool) -> Sampler {
        Sampler {
            group: rustix::process::getpgrp().as_raw_nonzero().get(),
            cgroup_memory,
            whole_group: true,
            last_cpu: None,
            pss: std::collections::HashMap::new(),
            next_read: 0,
            ticks_per_s: rustix::param::clock_ticks_per_second() as f64,
        }
    }

    /// The same, for an agent that runs no browser: only this process is measured.
    pub fn without_browser(mut self) -> Sampler {
        self.whole_group = false;
        self
    }

    /// Memory and CPU now (CPU: since the previous sample; 0 on the first).
    pub fn sample(&mut self) -> NodeResources {
        // One read of each process's `stat` per sample gives its group, CPU time and start.
        let processes: Vec<ProcStat> = if self.whole_group {
            group_processes(self.group)
        } else {
            ProcStat::read(std::process::id() as i32)
                .into_iter()
                .collect()
        };
        let memory_bytes = if self.cgroup_memory {
            let cgroup = crate::cgroup::read();
            cgroup
                .memory_current
                .map(|current| current.saturating_sub(cgroup.memory_inactive_file.unwrap_or(0)))
        } else {
            None
        }
        .unwrap_or_else(|| self.estimate_pss_bytes(&processes));
        let ticks: std::collections::HashMap<i32, u64> =
            processes.iter().map(|p| (p.pid, p.cpu_ticks)).collect();
        let now = Instant::now();
        let cpu_cores = match &self.last_cpu {
            Some((before, at)) => {
                // A process new since the last sample started within the interval: all its
                // time is the interval's.
                let used: u64 = ticks
                    .iter()
                    .map(|(pid, t)| t.saturating_sub(before.get(pid).copied().unwrap_or(0)))
                    .sum();
                let seconds = now.duration_since(*at).as_secs_f64();
                if seconds > 0.0 {
                    used as f64 / self.ticks_per_s / seconds
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        self.last_cpu = Some((ticks, now));
        NodeResources {
            memory_bytes,
            cpu_cores: (cpu_cores * 1000.0).round() / 1000.0,
            processes: processes.len() as u32,
        }
    }

    /// The group's PSS, in bytes: read exactly for new processes and for a tenth of the others
    /// in turn, estimated for the rest from their resident size's change since their last read.
    fn estimate_pss_bytes(&mut self, processes: &[ProcStat]) -> u64 {
        let mut keys: Vec<(i32, u64)> = processes.iter().map(|p| (p.pid, p.start)).collect();
        keys.sort_unstable();
        self.pss.retain(|key, _| keys.binary_search(key).is_ok());
        let pids: Vec<i32> = keys.iter().map(|(pid, _)| *pid).collect();
        let (due, next) = due_for_reading(&pids, self.next_read);
        self.next_read = next;
        let mut total_kib = 0u64;
        for key in keys {
            let rss = rss_kib(key.0);
            let kib = match (self.pss.get(&key).copied(), rss) {
                (Some(last), Some(rss)) if !due.contains(&key.0) => estimated_kib(last, rss),
                _ => match (pss_kib(key.0), rss) {
                    (Some(pss), Some(rss)) => {
                        self.pss.insert(key, (pss, rss));
                        pss
                    }
                    // Without a resident size to compare later, read it exactly next time.
                    (Some(pss), None) => pss,
                    (None, _) => 0,
                },
            };
            total_kib += kib;
        }
        total_kib * 1024
    }
}

/// What a sample needs of one process's `/proc/PID/stat`.
struct ProcStat {
    pid: i32,
    /// Its process group.
    group: i32,
    /// User + system CPU time, in clock ticks.
    cpu_ticks: u64,
    /// When it started, in clock ticks since boot: with the pid, it names one process even
    /// when the pid is reused.
    start: u64,
}

impl ProcStat {
    /// `pid`'s stat, if it still runs.
    fn read(pid: i32) -> Option<ProcStat> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let fields = stat_fields(&stat)?;
        let number = |i: usize| fields.get(i)?.parse::<u64>().ok();
        Some(ProcStat {
            pid,
            group: fields.get(2)?.parse().ok()?,
            cpu_ticks: number(11)? + number(12)?,
            start: number(19)?,
        })
    }
}

/// Which of `pids` (sorted) have their PSS read exactly this sample: a tenth of them (at least
/// one), from `start` on, wrapping; and where the next sample starts.
fn due_for_reading(pids: &[i32], start: usize) -> (std::collections::HashSet<i32>, usize) {
    let per_sample = pids.len().div_ceil(10).max(1);
    let start = start % pids.len().max(1);
    let due = pids
        .iter()
        .cycle()
        .skip(start)
        .take(per_sample.min(pids.len()))
        .copied()
        .collect();
    (due, start + per_sample)
}

/// A process's PSS now from its last read `(pss, rss then)` and its resident size now: the
/// change of its resident size is its own (a renderer's heap), counted whole in its PSS.
fn estimated_kib((pss, rss_then): (u64, u64), rss_now: u64) -> u64 {
    pss.saturating_add(rss_now).saturating_sub(rss_then)
}

/// Every process in `group`, from one read of each `/proc/PID/stat`.
fn group_processes(group: i32) -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(ProcStat::read)
        .filter(|p| p.group == group)
        .collect()
}

/// The fields of `/proc/PID/stat` after the command name (which may hold spaces and
/// parentheses: everything up to the last `)`): `state` is field 0, `pgrp` 2, `utime` 11,
/// `stime` 12.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let after = &stat[stat.rfind(')')? + 1..];
    Some(after.split_whitespace().collect())
}

/// The proportional set size of `pid`, in KiB (`None` when unreadable: the process ended).
fn pss_kib(pid: i32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|text| parse_pss_kib(&text))
}

/// The resident size of `pid`, in KiB (`/proc/PID/statm`'s second field, in pages).
fn rss_kib(pid: i32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * (rustix::param::page_size() as u64 / 1024))
}

/// The `Pss:` line of an `smaps_rollup`, in KiB.
fn parse_pss_kib(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("Pss:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let stat = "4242 (Web Content (x)) S 1 4242 4242 0 -1 4194560 10 0 0 0 7 3 0 0 20 0 1";
        let fields = stat_fields(stat).unwrap();
        assert_eq!(fields[0], "S");
        assert_eq!(fields[2], "4242", "pgrp");
        assert_eq!(fields[11], "7", "utime");
        assert_eq!(fields[12], "3", "stime");
        assert!(stat_fields("no parenthesis").is_none());
    }

    #[test]
    fn pss_is_read_from_smaps_rollup() {
        let text = "55a0-7ffd ---p 00000000 00:00 0 [rollup]\nRss:  2048 kB\nPss:  1234 kB\nPss_Anon: 1000 kB\n";
        assert_eq!(parse_pss_kib(text), Some(1234));
        assert_eq!(parse_pss_kib("Rss: 1 kB"), None);
    }

    /// This process's group holds at least this process, which uses memory; a busy loop
    /// shows as CPU in use.
    #[test]
    fn pss_between_reads_follows_the_resident_size() {
        assert_eq!(estimated_kib((100, 300), 350), 150, "grew by 50");
        assert_eq!(estimated_kib((100, 300), 250), 50, "shrank by 50");
        assert_eq!(estimated_kib((100, 300), 100), 0, "never below nothing");
    }

    /// Every process's PSS is read anew within ten samples, a tenth of them each time.
    #[test]
    fn exact_reads_rotate_over_every_process() {
        let pids: Vec<i32> = (100..136).collect();
        let (mut start, mut seen) = (0, std::collections::HashSet::new());
        for _ in 0..10 {
            let (due, next) = due_for_reading(&pids, start);
            assert_eq!(due.len(), 4, "a tenth of 36, rounded up");
            seen.extend(due);
            start = next;
        }
        assert_eq!(seen.len(), 36);
        assert_eq!(due_for_reading(&[7], 5).0.len(), 1);
        assert!(due_for_reading(&[], 3).0.is_empty());
    }

    #[test]
    fn samples_this_process_group() {
        let mut sampler = Sampler::new(false);
        let first = sampler.sample();
        assert!(first.processes >= 1);
        assert!(first.memory_bytes > 1024 * 1024, "{first:?}");
        let until = Instant::now() + std::time::Duration::from_millis(300);
        let mut x = 0u64;
        while Instant::now() < until {
            x = x.wrapping_mul(31).wrapping_add(1);
        }
        std::hint::black_box(x);
        let second = sampler.sample();
        assert!(second.cpu_cores > 0.1, "a busy core shows: {second:?}");
    }
}
