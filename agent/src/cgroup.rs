//! The memory and CPU limits of this process's control groups, on cgroup v1 and v2.
//!
//! A container's limit is a cgroup limit: the kernel kills the container past `--memory` and
//! throttles it past `--cpus`, whatever the host has. The agent must report those figures, or
//! the controller would size the node from the host and put too many browsers in it.
//!
//! Where the files are is not fixed: a host may mount cgroup v2 alone (`/sys/fs/cgroup`), v1
//! controllers one per directory (`/sys/fs/cgroup/memory`), or both at once (the "hybrid"
//! layout, v2 at `/sys/fs/cgroup/unified` with no controllers). And inside a container the
//! mount shows only the container's own subtree: `/proc/self/cgroup` says
//! `/libpod_parent/libpod-ID` while the mount's root *is* that directory. So this module reads
//! `/proc/self/mountinfo` to find each hierarchy's mount point and the part of the tree it
//! shows, and `/proc/self/cgroup` to find this process's group in it.
//!
//! Limits bind hierarchically: a parent's limit caps its children. Each group from the leaf up
//! to the mount's root is read, and the smallest limit wins.

use std::path::{Path, PathBuf};

/// Which cgroup version a limit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Per-controller hierarchies (`memory.limit_in_bytes`, `cpu.cfs_quota_us`).
    V1,
    /// The unified hierarchy (`memory.max`, `cpu.max`).
    V2,
}

/// The limits that apply to this process (the smallest along its cgroup path).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct CgroupLimits {
    /// The memory limit, bytes (v2 `memory.max`, v1 `memory.limit_in_bytes`).
    pub memory_max: Option<u64>,
    /// Memory in use by this process's own group, bytes (v2 `memory.current`, v1
    /// `memory.usage_in_bytes`).
    pub memory_current: Option<u64>,
    /// The part of it that is file cache the kernel reclaims first (`inactive_file` in
    /// `memory.stat`; v1 `total_inactive_file`): not memory the node needs.
    pub memory_inactive_file: Option<u64>,
    /// The CPU quota as cores (v2 `cpu.max`, v1 `cpu.cfs_quota_us / cpu.cfs_period_us`).
    pub cpu_max: Option<f64>,
    /// The version the memory limit came from, else the CPU limit's.
    pub version: Option<Version>,
}

/// v1 reports "no limit" as the largest page-aligned counter (`0x7FFFFFFFFFFFF000` on 64-bit
/// kernels), not as a word. No real limit comes near 2^62 bytes.
const V1_UNLIMITED: u64 = 1 << 62;

/// One cgroup hierarchy as `/proc/self/mountinfo` shows it.
#[derive(Debug, Clone, PartialEq)]
struct Mount {
    /// The group shown at the mount point (`/` on the host, the container's own group inside
    /// a container with a host cgroup namespace).
    root: String,
    /// Where it is mounted.
    mount_point: PathBuf,
    /// `None` for v2; the v1 controllers it carries (`memory`, `cpu`, `cpuacct`, ...).
    controllers: Option<Vec<String>>,
}

/// This process's limits, read from the live system.
pub fn read() -> CgroupLimits {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    limits(&mountinfo, &cgroup, Path::new("/"))
}

/// The limits described by `mountinfo` (the text of `/proc/self/mountinfo`) and `cgroup` (of
/// `/proc/self/cgroup`), with every mount point read under `fs_root` (`/` for real; a
/// temporary directory holding a fake tree in tests).
pub fn limits(mountinfo: &str, cgroup: &str, fs_root: &Path) -> CgroupLimits {
    let mounts = parse_mountinfo(mountinfo);
    let mut limits = CgroupLimits::default();
    // v2: one hierarchy, one line "0::/path".
    let v2_dir = cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .and_then(|path| group_dir(&mounts, None, path.trim(), fs_root));
    if let Some((leaf, top)) = &v2_dir {
        limits.memory_current = read_number(&leaf.join("memory.current"));
        limits.memory_inactive_file = read_stat(&leaf.join("memory.stat"), "inactive_file");
        limits.memory_max = smallest(leaf, top, |d| read_number(&d.join("memory.max")));
        limits.cpu_max = smallest(leaf, top, |d| read_cpu_max(&d.join("cpu.max")));
        if limits.memory_max.is_some() || limits.cpu_max.is_some() {
            limits.version = Some(Version::V2);
        }
    }
    // v1: a line per hierarchy, "ID:controller,controller:/path". On a hybrid host the v2
    // hierarchy has no controllers and the figures come from here.
    let v1_path = |controller: &str| {
        cgroup.lines().find_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            controllers
                .split(',')
                .any(|c| c == controller)
                .then(|| path.trim().to_string())
        })
    };
    let v1_dir = |controller: &str| {
        v1_path(controller).and_then(|path| group_dir(&mounts, Some(controller), &path, fs_root))
    };
    if let Some((leaf, top)) = v1_dir("memory") {
        let max = smallest(&leaf, &top, |d| {
            read_number(&d.join("memory.limit_in_bytes")).filter(|&n| n < V1_UNLIMITED)
        });
        if max.is_some() {
            limits.memory_max = min_of(limits.memory_max, max);
            limits.version = Some(Version::V1);
        }
        if limits.memory_current.is_none() {
            limits.memory_current = read_number(&leaf.join("memory.usage_in_bytes"));
            limits.memory_inactive_file =
                read_stat(&leaf.join("memory.stat"), "total_inactive_file");
        }
    }
    if let Some((leaf, top)) = v1_dir("cpu") {
        let cores = smallest(&leaf, &top, read_cfs_quota);
        if cores.is_some() {
            limits.cpu_max = min_of(limits.cpu_max, cores);
            limits.version = limits.version.or(Some(Version::V1));
        }
    }
    limits
}

/// The directory of the group at `path` in the hierarchy that carries `controller` (`None`:
/// v2), and the directory of the mount's root, where walking up stops. `None` when the
/// hierarchy is not mounted, or when this process's group lies outside what the mount shows.
fn group_dir(
    mounts: &[Mount],
    controller: Option<&str>,
    path: &str,
    fs_root: &Path,
) -> Option<(PathBuf, PathBuf)> {
    let mount = mounts.iter().find(|m| match (controller, &m.controllers) {
        (None, None) => true,
        (Some(wanted), Some(carried)) => carried.iter().any(|c| c == wanted),
        _ => false,
    })?;
    let relative = relative_to(path, &mount.root)?;
    let top = fs_root.join(
        mount
            .mount_point
            .strip_prefix("/")
            .unwrap_or(&mount.mount_point),
    );
    Some((top.join(relative), top))
}

/// `path` below `root`, without a leading slash (`""` when equal); `None` if outside it.
fn relative_to<'a>(path: &'a str, root: &str) -> Option<&'a str> {
    let root = root.trim_end_matches('/');
    let rest = path.strip_prefix(root)?;
    if !rest.is_empty() && !rest.starts_with('/') {
        return None; // "/foo2" is not below "/foo"
    }
    Some(rest.trim_start_matches('/'))
}

/// The smallest value `read` finds from `leaf` up to `top`, both included.
fn smallest<T: PartialOrd + Copy>(
    leaf: &Path,
    top: &Path,
    read: impl Fn(&Path) -> Option<T>,
) -> Option<T> {
    let mut best: Option<T> = None;
    let mut dir = Some(leaf);
    while let Some(d) = dir {
        if !d.starts_with(top) {
            break;
        }
        if let Some(value) = read(d) {
            best = Some(match best {
                Some(b) if b <= value => b,
                _ => value,
            });
        }
        dir = d.parent();
    }
    best
}

fn min_of<T: PartialOrd + Copy>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b < a { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// The cgroup mounts of a `/proc/self/mountinfo` text. Each line is
/// `ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS`;
/// for a v1 hierarchy the super options name its controllers (`rw,memory`).
fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut mounts = Vec::new();
    for line in text.lines() {
        let Some((before, after)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = before.split_whitespace().collect();
        let tail: Vec<&str> = after.split_whitespace().collect();
        let (Some(root), Some(mount_point), Some(fstype)) =
            (fields.get(3), fields.get(4), tail.first())
        else {
            continue;
        };
        let controllers = match *fstype {
            "cgroup2" => None,
            "cgroup" => Some(
                tail.get(2)
                    .unwrap_or(&"")
                    .split(',')
                    .map(str::to_string)
                    .collect(),
            ),
            _ => continue,
        };
        mounts.push(Mount {
            root: unescape(root),
            mount_point: PathBuf::from(unescape(mount_point)),
            controllers,
        });
    }
    mounts
}

/// mountinfo writes space, tab, newline and backslash in paths as octal escapes (`\040`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(u8::is_ascii_digit));
        match (bytes[i], octal) {
            (b'\\', Some(digits)) => {
                let text = std::str::from_utf8(digits).unwrap_or("0");
                out.push(u8::from_str_radix(text, 8).unwrap_or(b'?'));
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A number file; `max` (no limit), `-1` and missing files give `None`.
/// One `KEY VALUE` line of a `memory.stat` file.
fn read_stat(path: &Path, key: &str) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|line| {
            line.strip_prefix(key)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
}

fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// v2 `cpu.max` is `"<quota> <period>"` or `"max <period>"`.
fn read_cpu_max(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut parts = text.split_whitespace();
    let quota: f64 = parts.next()?.parse().ok()?;
    let period: f64 = parts.next()?.parse().ok()?;
    (period > 0.0).then_some(quota / period)
}

/// v1 `cpu.cfs_quota_us` over `cpu.cfs_period_us`; a quota of -1 is no limit.
fn read_cfs_quota(dir: &Path) -> Option<f64> {
    let quota: i64 = std::fs::read_to_string(dir.join("cpu.cfs_quota_us"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let period = read_number(&dir.join("cpu.cfs_period_us"))?;
    (quota > 0 && period > 0).then(|| quota as f64 / period as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, path: &str, text: &str) {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// A cgroup v2 host (or a v2 container): the unified hierarchy at `/sys/fs/cgroup`.
    #[test]
    fn v2_limits_are_the_smallest_along_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        write(r, "sys/fs/cgroup/kubepods/memory.max", "max\n");
        write(r, "sys/fs/cgroup/kubepods/cpu.max", "200000 100000\n");
        write(r, "sys/fs/cgroup/kubepods/pod1/memory.max", "2147483648\n");
        write(
            r,
            "sys/fs/cgroup/kubepods/pod1/memory.current",
            "536870912\n",
        );
        write(r, "sys/fs/cgroup/kubepods/pod1/cpu.max", "max 100000\n");
        write(
            r,
            "sys/fs/cgroup/kubepods/pod1/memory.stat",
            "anon 300000000\nactive_file 1000\ninactive_file 104857600\n",
        );
        let mountinfo = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n";
        let limits = limits(mountinfo, "0::/kubepods/pod1\n", r);
        assert_eq!(limits.memory_max, Some(2 << 30));
        assert_eq!(limits.memory_current, Some(512 << 20));
        assert_eq!(
            limits.memory_inactive_file,
            Some(100 << 20),
            "the reclaimable cache"
        );
        assert_eq!(limits.cpu_max, Some(2.0));
        assert_eq!(limits.version, Some(Version::V2));
    }

    /// This CI host's layout: v1 controllers each in its own directory, and an empty v2
    /// hierarchy at `unified` ("hybrid"). A parent's limit binds its child.
    #[test]
    fn v1_hybrid_host_reads_each_controller_where_it_is_mounted() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        let group = "sys/fs/cgroup/memory/process_api/job1";
        write(r, &format!("{group}/memory.limit_in_bytes"), "4294967296\n");
        write(r, &format!("{group}/memory.usage_in_bytes"), "1073741824\n");
        write(
            r,
            &format!("{group}/memory.stat"),
            "cache 300000000\ninactive_file 5\ntotal_inactive_file 209715200\n",
        );
        write(
            r,
            "sys/fs/cgroup/memory/process_api/memory.limit_in_bytes",
            "3221225472\n",
        );
        write(
            r,
            "sys/fs/cgroup/memory/memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        write(r, "sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1\n");
        write(r, "sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n");
        write(r, "sys/fs/cgroup/cpu/batch/cpu.cfs_quota_us", "250000\n");
        write(r, "sys/fs/cgroup/cpu/batch/cpu.cfs_period_us", "100000\n");
        let mountinfo = "\
33 26 0:28 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu
34 26 0:29 / /sys/fs/cgroup/cpuacct rw,relatime shared:10 - cgroup cgroup rw,cpuacct
36 26 0:31 / /sys/fs/cgroup/memory rw,relatime shared:12 - cgroup cgroup rw,memory
42 26 0:37 / /sys/fs/cgroup/unified rw,relatime shared:18 - cgroup2 cgroup2 rw
";
        let cgroup = "4:memory:/process_api/job1\n2:cpuacct:/\n1:cpu:/batch\n0::/\n";
        let limits = limits(mountinfo, cgroup, r);
        assert_eq!(limits.memory_max, Some(3 << 30), "the parent's 3 GiB binds");
        assert_eq!(
            limits.memory_inactive_file,
            Some(200 << 20),
            "v1's hierarchical total, not the group's own line"
        );
        assert_eq!(limits.memory_current, Some(1 << 30));
        assert_eq!(limits.cpu_max, Some(2.5));
        assert_eq!(limits.version, Some(Version::V1));
    }

    /// Inside a container on a v1 host (podman, Docker with a host cgroup namespace): the
    /// mount shows the container's own group as its root.
    #[test]
    fn v1_container_sees_its_own_group_at_the_mount_point() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        write(
            r,
            "sys/fs/cgroup/memory/memory.limit_in_bytes",
            "1073741824\n",
        );
        write(
            r,
            "sys/fs/cgroup/memory/memory.usage_in_bytes",
            "10485760\n",
        );
        write(r, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "150000\n");
        write(r, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n");
        let id = "/libpod_parent/libpod-15740a72";
        let mountinfo = format!(
            "89 88 0:29 {id} /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup rw,cpu,cpuacct\n\
             92 88 0:32 {id} /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory\n"
        );
        let cgroup = format!("4:memory:{id}\n1:cpu,cpuacct:{id}\n0::{id}\n");
        let limits = limits(&mountinfo, &cgroup, r);
        assert_eq!(limits.memory_max, Some(1 << 30));
        assert_eq!(limits.memory_current, Some(10 << 20));
        assert_eq!(limits.cpu_max, Some(1.5));
        assert_eq!(limits.version, Some(Version::V1));
    }

    /// No limit set, a group outside what the mount shows, or no cgroup at all: no limits,
    /// never a guess.
    #[test]
    fn unlimited_unmapped_or_missing_gives_no_limits() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        write(
            r,
            "sys/fs/cgroup/memory/memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        write(r, "sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1\n");
        write(r, "sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n");
        let mountinfo = "\
33 26 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
36 26 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";
        let unlimited = limits(mountinfo, "4:memory:/\n1:cpu:/\n", r);
        assert_eq!((unlimited.memory_max, unlimited.cpu_max), (None, None));
        assert_eq!(unlimited.version, None);
        let elsewhere = "36 26 0:31 /lxc/a /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert_eq!(
            limits(elsewhere, "4:memory:/lxc/ab\n", r),
            CgroupLimits::default()
        );
        assert_eq!(limits("", "", r), CgroupLimits::default());
    }

    #[test]
    fn mountinfo_paths_are_unescaped() {
        let mounts = parse_mountinfo(
            "36 26 0:31 /a\\040b /sys/fs/cgroup/mem\\040ory rw shared:1 - cgroup cgroup rw,memory\n",
        );
        assert_eq!(mounts[0].root, "/a b");
        assert_eq!(mounts[0].mount_point, Path::new("/sys/fs/cgroup/mem ory"));
        assert_eq!(
            mounts[0].controllers,
            Some(vec!["rw".into(), "memory".into()])
        );
    }

    /// Whatever this host has, reading it never fails and limits are plausible.
    #[test]
    fn reads_this_machine() {
        let limits = read();
        if let Some(max) = limits.memory_max {
            assert!(max > 0 && max < V1_UNLIMITED);
        }
        if let Some(cores) = limits.cpu_max {
            assert!(cores > 0.0);
        }
    }
}
