//! podman for the container backend's tests and the image tests: the agent image built from
//! `images/agent/Dockerfile` (on a Debian base image made here, no registry), and podman's
//! Docker-compatible API service on a unix socket in a temporary directory, stopped when
//! dropped.
//!
//! Everything podman keeps lives under one cache directory outside the clone
//! ([`cache_dir`]: `$LIVELOAD_TEST_CACHE`, else `~/.cache/liveload-tests`), with its own
//! configuration, so the tests never touch the machine's own podman setup and a fresh clone
//! on the same machine reuses the images:
//!
//! - the base image `localhost/debian:bookworm-slim`, made by `mmdebstrap` from Debian's
//!   packages and imported, keyed by what it contains ([`BASE_RECIPE`]);
//! - the agent image `localhost/liveload-agent:test-<hash>`, built with
//!   `podman build --pull=never --target prebuilt` from the agent this workspace built, keyed
//!   by the Dockerfile, the agent binary and the base.
//!
//! `scripts/test.sh` installs podman, runc, netavark, slirp4netns and mmdebstrap
//! (`ensure_podman`); the tests run as root (as CI does).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

/// What the base image is made of: the `mmdebstrap` arguments. Changing them makes a new base.
pub const BASE_RECIPE: &[&str] = &[
    "--variant=minbase",
    "bookworm",
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
];
/// The name the Dockerfile's `FROM` resolves to locally.
pub const BASE_IMAGE: &str = "localhost/debian:bookworm-slim";
/// The network the tests' containers join: podman's user-mode network with the host's
/// loopback reachable at [`HOST_FROM_CONTAINER`], so agents reach a target on this host's
/// 127.0.0.1 and no test traffic goes to a bridge address.
pub const TEST_NETWORK: &str = "slirp4netns:allow_host_loopback=true";
/// This host's 127.0.0.1 as seen from a container on [`TEST_NETWORK`].
pub const HOST_FROM_CONTAINER: &str = "10.0.2.2";
/// The label a test puts on every container it makes, to ask the engine for them later.
pub const OWNER_LABEL: &str = "io.liveload.test-owner";

/// Where the images and podman's state live between runs.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LIVELOAD_TEST_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache/liveload-tests")
}

/// podman's configuration for the tests, written once: its own storage under [`cache_dir`],
/// runc (Debian's crun refuses hybrid cgroup hosts), no default ulimits (raising them fails in
/// some sandboxes), cgroupfs and file logs (no systemd needed).
///
/// Run state goes to a short fixed path ([`run_dir`]): podman and slirp4netns put unix sockets
/// there, a socket path over 108 bytes fails (slirp4netns then hangs for its timeout at every
/// start), and podman records the path in its database at first use, so it must never change.
fn config_files() -> (PathBuf, PathBuf) {
    let dir = cache_dir().join("podman");
    let run = run_dir();
    std::fs::create_dir_all(run.join("tmp")).expect("podman's run directory");
    std::fs::create_dir_all(&dir).expect("podman's cache directory");
    let containers = dir.join("containers.conf");
    let storage = dir.join("storage.conf");
    let write = |path: &Path, text: String| {
        if std::fs::read_to_string(path).ok().as_deref() != Some(text.as_str()) {
            std::fs::write(path, text).expect("writing podman's configuration");
        }
    };
    write(
        &containers,
        format!(
            "[containers]\ndefault_ulimits = []\nlog_driver = \"k8s-file\"\n\
             [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\n\
             events_logger = \"file\"\ntmp_dir = \"{}\"\n\
             [network]\nnetwork_backend = \"netavark\"\n",
            run.join("tmp").display()
        ),
    );
    write(
        &storage,
        format!(
            "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            dir.join("storage").display(),
            run.join("storage").display()
        ),
    );
    (containers, storage)
}

/// Where podman keeps its run state for the tests: `/run/ll-podman` as root (cleared at boot
/// where `/run` is a tmpfs), else under `XDG_RUNTIME_DIR` or the temporary directory.
fn run_dir() -> PathBuf {
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/run/ll-podman");
    }
    let base = std::env::var_os("XDG_RUNTIME_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    base.join("ll-podman")
}

/// A `podman` command with the tests' configuration.
pub fn podman() -> Command {
    let (containers, storage) = config_files();
    let mut command = Command::new("podman");
    command
        .env("CONTAINERS_CONF", containers)
        .env("CONTAINERS_STORAGE_CONF", storage);
    command
}

/// Run `podman args`, panicking with its output if it fails; returns stdout.
pub fn podman_ok(args: &[&str]) -> String {
    let out = podman()
        .args(args)
        .output()
        .expect("podman runs (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "podman {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn image_exists(name: &str) -> bool {
    podman()
        .args(["image", "exists", name])
        .status()
        .is_ok_and(|s| s.success())
}

/// Hex SHA-256 of `parts`, each length-prefixed.
fn digest(parts: &[&[u8]]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    hash.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Hold the cache's build lock (test processes build images one at a time).
fn build_lock() -> std::fs::File {
    std::fs::create_dir_all(cache_dir()).expect("the cache directory");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(cache_dir().join("build.lock"))
        .expect("the build lock");
    file.lock().expect("locking the build lock");
    file
}

/// Make the base image when the cache has none of this recipe: `mmdebstrap` to a tarball,
/// `podman import`, tagged by its recipe and as [`BASE_IMAGE`]. Returns the recipe's key.
pub fn ensure_base_image() -> String {
    let recipe: Vec<&[u8]> = BASE_RECIPE.iter().map(|a| a.as_bytes()).collect();
    let key = digest(&recipe);
    let keyed = format!("localhost/liveload-base:{key}");
    if !image_exists(&keyed) {
        let started = Instant::now();
        let tarball = cache_dir().join(format!("rootfs-{key}.tar"));
        let status = Command::new("mmdebstrap")
            .arg("--quiet")
            .args(&BASE_RECIPE[..2])
            .arg(&tarball)
            .args(&BASE_RECIPE[2..])
            .status()
            .expect("mmdebstrap runs (scripts/test.sh installs it)");
        assert!(status.success(), "mmdebstrap failed");
        podman_ok(&["import", &tarball.display().to_string(), &keyed]);
        let _ = std::fs::remove_file(&tarball);
        eprintln!("base image {keyed} made in {:.1?}", started.elapsed());
    }
    podman_ok(&["tag", &keyed, BASE_IMAGE]);
    key
}

/// The agent image for this workspace's agent, built if the cache lacks it; returns its name.
pub fn agent_image() -> String {
    let _lock = build_lock();
    let base = ensure_base_image();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dockerfile = repo.join("images/agent/Dockerfile");
    let agent = liveload_core::agent_bin::find().expect("liveload-agent is built");
    let context = tempfile::tempdir().expect("a build context");
    let copy = context.path().join("liveload-agent");
    // Stripped: the image needs no debug symbols, and the layer is ten times smaller.
    let stripped = Command::new("strip")
        .arg("-o")
        .arg(&copy)
        .arg(&agent)
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        std::fs::copy(&agent, &copy).expect("copying the agent");
    }
    let key = digest(&[
        &std::fs::read(&dockerfile).expect("images/agent/Dockerfile"),
        &std::fs::read(&copy).expect("the agent"),
        base.as_bytes(),
    ]);
    let image = format!("localhost/liveload-agent:test-{key}");
    if image_exists(&image) {
        return image;
    }
    let started = Instant::now();
    podman_ok(&[
        "build",
        "--pull=never",
        "--layers",
        "--target",
        "prebuilt",
        "-f",
        &dockerfile.display().to_string(),
        "-t",
        &image,
        &context.path().display().to_string(),
    ]);
    eprintln!("agent image {image} built in {:.1?}", started.elapsed());
    remove_older_agent_images(&image);
    image
}

/// Earlier test builds of the agent image (other agents): untagged, so their layers go.
fn remove_older_agent_images(keep: &str) {
    let names = podman_ok(&[
        "images",
        "--format",
        "{{.Repository}}:{{.Tag}}",
        "localhost/liveload-agent",
    ]);
    for name in names.lines().filter(|n| n.contains(":test-") && *n != keep) {
        let _ = podman().args(["rmi", name]).output();
    }
}

/// podman's API service on a unix socket in a temporary directory; stopped when dropped.
pub struct PodmanService {
    /// The socket (`unix://` + this is what `DOCKER_HOST` would say).
    pub socket: PathBuf,
    dir: tempfile::TempDir,
    child: Child,
}

impl PodmanService {
    /// Start a service and wait until it answers.
    pub fn start() -> PodmanService {
        let dir = tempfile::tempdir().expect("a directory for the socket");
        let socket = dir.path().join("podman.sock");
        let log = std::fs::File::create(dir.path().join("service.log")).unwrap();
        let child = podman()
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("podman system service starts");
        let service = PodmanService { socket, dir, child };
        let end = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&service.socket).is_err() {
            assert!(
                Instant::now() < end,
                "podman's API service did not listen: {}",
                service.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        service
    }

    /// What the service logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("service.log")).unwrap_or_default()
    }
}

impl Drop for PodmanService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Names of the containers carrying label `key=value`, through the engine itself (`podman ps`
/// asks the same store the API service uses): the proof that nothing is left.
pub fn containers_labelled(key: &str, value: &str) -> Vec<String> {
    podman_ok(&[
        "ps",
        "--all",
        "--filter",
        &format!("label={key}={value}"),
        "--format",
        "{{.Names}}",
    ])
    .lines()
    .map(str::to_string)
    .collect()
}

/// Force-remove every container labelled `key=value` (a failed test's leftovers).
pub fn remove_labelled(key: &str, value: &str) {
    for name in containers_labelled(key, value) {
        let _ = podman().args(["rm", "--force", &name]).output();
    }
}

/// A fresh owner value for [`OWNER_LABEL`]: `test-<pid>-<random>`, so a later test can tell
/// the containers of a test process that died (killed at its timeout, before its cleanup ran).
pub fn new_owner() -> String {
    let mut bytes = [0u8; 4];
    let _ = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("test-{}-{hex}", std::process::id())
}

/// Remove the containers of test processes that no longer exist.
pub fn remove_orphans() {
    let listed = podman_ok(&[
        "ps",
        "--all",
        "--filter",
        &format!("label={OWNER_LABEL}"),
        "--format",
        &format!("{{{{.Names}}}} {{{{index .Labels \"{OWNER_LABEL}\"}}}}"),
    ]);
    for line in listed.lines() {
        let Some((name, owner)) = line.split_once(' ') else {
            continue;
        };
        let pid = owner.split('-').nth(1).unwrap_or_default();
        if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
            let _ = podman().args(["rm", "--force", name]).output();
        }
    }
}

/// An engine for one test: the agent image, podman's API service, and an owner label on every
/// container the test's backends make. Dropping it removes whatever is still labelled so (a
/// failed test's leftovers), then stops the service.
pub struct Engine {
    /// The agent image.
    pub image: String,
    /// This test's value of [`OWNER_LABEL`].
    pub owner: String,
    /// The API service.
    pub service: PodmanService,
}

impl Engine {
    /// Build (or find) the image and start the service.
    pub fn start() -> Engine {
        let image = agent_image();
        remove_orphans();
        Engine {
            image,
            owner: new_owner(),
            service: PodmanService::start(),
        }
    }

    /// A backend builder on this engine: the image, the test network, the owner label.
    pub fn builder(&self) -> liveload_container::ContainerBackendBuilder {
        liveload_container::ContainerBackend::builder()
            .socket(self.service.socket.display().to_string())
            .image(&self.image)
            .network(Some(TEST_NETWORK.into()))
            .label(OWNER_LABEL, &self.owner)
    }

    /// The containers of this test the engine still holds.
    pub fn left(&self) -> Vec<String> {
        containers_labelled(OWNER_LABEL, &self.owner)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        remove_labelled(OWNER_LABEL, &self.owner);
    }
}

/// The lock the end-to-end tests' heavy Chromium runs share (`liveload_e2e::heavy`, the same
/// file), so a browser run in a container does not starve theirs of the machine's cores.
pub fn heavy() -> std::fs::File {
    let path = std::env::temp_dir().join("liveload-tests-heavy.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .expect("the heavy-test lock file");
    file.lock().expect("locking the heavy-test lock file");
    file
}
