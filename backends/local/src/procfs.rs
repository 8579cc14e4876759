//! Reading processes from Linux's `/proc`: what the local backend needs to find an agent's
//! process group (its Chromium included) without trusting a recorded pid blindly.

/// One process, as `/proc/<pid>/stat` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Process {
    /// Its pid.
    pub pid: i32,
    /// Its state letter (`R`, `S`, `Z` for a zombie, ...).
    pub state: char,
    /// Its process group.
    pub pgrp: i32,
    /// CPU time used so far (user + system), in clock ticks.
    pub cpu_ticks: u64,
}

impl Process {
    /// Its command line, arguments joined by spaces.
    pub fn cmdline(&self) -> String {
        std::fs::read(format!("/proc/{}/cmdline", self.pid))
            .unwrap_or_default()
            .split(|&b| b == 0)
            .map(|part| String::from_utf8_lossy(part).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Parse the text of `/proc/<pid>/stat`.
pub fn parse_stat(pid: i32, stat: &str) -> Option<Process> {
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state(0) ppid(1) pgrp(2) ... utime(11) stime(12).
    Some(Process {
        pid,
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        cpu_ticks: fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?,
    })
}

/// Every process on this machine, zombies included.
pub fn processes() -> Vec<Process> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            parse_stat(
                pid,
                &std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?,
            )
        })
        .collect()
}

/// The live (not zombie) processes of process group `pgrp`.
pub fn group(pgrp: i32) -> Vec<Process> {
    processes()
        .into_iter()
        .filter(|p| p.pgrp == pgrp && p.state != 'Z')
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_names() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0";
        let p = parse_stat(1234, stat).unwrap();
        assert_eq!((p.state, p.pgrp, p.cpu_ticks), ('S', 1234, 10));
        assert!(parse_stat(1, "garbage").is_none());
    }

    #[test]
    fn finds_this_process() {
        let me = std::process::id() as i32;
        let found = processes().into_iter().find(|p| p.pid == me).unwrap();
        assert!(!found.cmdline().is_empty());
        assert!(group(found.pgrp).iter().any(|p| p.pid == me));
    }
}
