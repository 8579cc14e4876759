//! A real image registry for the tests: Debian's `docker-registry` (the CNCF distribution
//! registry, 2.8.2 on bookworm) on a free port of 127.0.0.1, with files in a temporary
//! directory, optionally behind basic authentication; stopped when dropped.
//!
//! Tests push images straight through the distribution API ([`Registry::push`]): a config
//! blob carrying the labels under test and a manifest, no layers. That is all `doctor` reads,
//! and it takes milliseconds where building an image takes seconds.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

/// The user and password of a registry started with [`Registry::start_with_auth`].
pub const USER: &str = "agent";
/// See [`USER`].
pub const PASSWORD: &str = "s3cret";
/// [`USER`]'s bcrypt line for the htpasswd file (the registry accepts only bcrypt).
const HTPASSWD: &str = "agent:$2b$05$tQ/HXsy6MncYFa6UPzWSDeT8/FGrv0N.G8BHlD9Nm4spBkYgUfmEG\n";

/// A running registry.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub address: String,
    auth: bool,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary() -> PathBuf {
    let path = PathBuf::from("/usr/bin/docker-registry");
    assert!(
        path.is_file(),
        "docker-registry is missing: run scripts/test.sh, which installs Debian's docker-registry"
    );
    path
}

impl Registry {
    /// A registry anyone may read and write.
    pub fn start() -> Registry {
        Self::start_inner(false)
    }

    /// A registry that answers 401 without [`USER`] and [`PASSWORD`].
    pub fn start_with_auth() -> Registry {
        Self::start_inner(true)
    }

    fn start_inner(auth: bool) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog: {{disabled: true}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\nhttp:\n  addr: 127.0.0.1:0\n  secret: liveload-tests\n",
            dir.path().join("data").display()
        );
        if auth {
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, HTPASSWD).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: liveload-tests\n    path: {}\n",
                file.display()
            ));
        }
        let config_file = dir.path().join("config.yml");
        std::fs::write(&config_file, config).unwrap();
        let mut child = Command::new(binary())
            .arg("serve")
            .arg(&config_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("docker-registry starts");
        // It logs `listening on 127.0.0.1:PORT` once the port is bound; keep draining its
        // log afterwards so it never blocks on a full pipe.
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (found, address) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut found = Some(found);
            for line in stderr.lines().map_while(Result::ok) {
                if let Some(at) = line.find("listening on ")
                    && let Some(sender) = found.take()
                {
                    let rest = &line[at + "listening on ".len()..];
                    let end = rest.find(['"', ' ', ',']).unwrap_or(rest.len());
                    let _ = sender.send(rest[..end].to_string());
                }
            }
        });
        let address = address
            .recv_timeout(Duration::from_secs(20))
            .expect("docker-registry listens");
        Registry {
            child,
            address,
            auth,
            _dir: dir,
        }
    }

    /// Push image `REPO:TAG` whose config carries `labels`; returns its reference
    /// (`127.0.0.1:PORT/REPO:TAG`).
    pub fn push(&self, repository: &str, tag: &str, labels: &[(&str, &str)]) -> String {
        let labels: serde_json::Map<String, serde_json::Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux", "config": {"Labels": labels},
            "rootfs": {"type": "layers", "diff_ids": []}
        })
        .to_string();
        let digest = format!("sha256:{:x}", Sha256::digest(config.as_bytes()));
        let (status, location) =
            self.http("POST", &format!("/v2/{repository}/blobs/uploads/"), "", b"");
        assert_eq!(status, 202, "upload starts");
        let location = location.expect("an upload location");
        // The location may be absolute (http://127.0.0.1:PORT/...) or a path.
        let path = location
            .split_once(&self.address)
            .map_or(location.as_str(), |(_, path)| path)
            .to_string();
        let separator = if path.contains('?') { '&' } else { '?' };
        let (status, _) = self.http(
            "PUT",
            &format!("{path}{separator}digest={digest}"),
            "application/octet-stream",
            config.as_bytes(),
        );
        assert_eq!(status, 201, "the config blob is stored");
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": config.len()},
            "layers": []
        })
        .to_string();
        let (status, _) = self.http(
            "PUT",
            &format!("/v2/{repository}/manifests/{tag}"),
            "application/vnd.oci.image.manifest.v1+json",
            manifest.as_bytes(),
        );
        assert_eq!(status, 201, "the manifest is stored");
        format!("{}/{repository}:{tag}", self.address)
    }

    /// One HTTP/1.1 request; returns the status and the `Location` header.
    fn http(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> (u16, Option<String>) {
        let mut stream = TcpStream::connect(&self.address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.address,
            body.len()
        );
        if !content_type.is_empty() {
            head.push_str(&format!("Content-Type: {content_type}\r\n"));
        }
        if self.auth {
            let credentials =
                base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
            head.push_str(&format!("Authorization: Basic {credentials}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body).unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        let status = answer
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let location = answer.lines().take_while(|l| !l.is_empty()).find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("location")
                .then(|| value.trim().to_string())
        });
        (status, location)
    }
}
