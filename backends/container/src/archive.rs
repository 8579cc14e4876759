//! The launch files as a tar archive, for the engine's archive upload into a created container.
//!
//! Why an upload and not something simpler: environment variables are readable for the
//! container's whole life (`docker inspect`, `/proc/PID/environ`, every child of the agent);
//! a bind-mounted host file exists on the host, readable by whoever can read its directory. An
//! archive uploaded into the container before it starts puts each file only inside the
//! container's own filesystem, owned by the agent's user and mode 0600, and the agent deletes
//! the token and key once read.

use liveload_core::launch::LaunchFile;

/// The agent image's user (`useradd --uid 10001 liveload` in `images/agent/Dockerfile`).
pub const AGENT_UID: u64 = 10001;

/// A tar archive of `files`, each owned by [`AGENT_UID`] with mode 0600, to be extracted into
/// the launch directory.
pub fn launch_archive(files: &[LaunchFile]) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for file in files {
        let mut header = tar::Header::new_ustar();
        header.set_path(&file.name)?;
        header.set_size(file.contents.len() as u64);
        header.set_mode(0o600);
        header.set_uid(AGENT_UID);
        header.set_gid(AGENT_UID);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder.append(&header, file.contents.as_bytes())?;
    }
    builder.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_the_agents_and_private() {
        let files = [
            LaunchFile {
                name: "token".into(),
                contents: "t".repeat(64),
            },
            LaunchFile {
                name: "tls.key".into(),
                contents: "KEY".into(),
            },
        ];
        let bytes = launch_archive(&files).unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let header = entry.header();
            assert_eq!(header.mode().unwrap(), 0o600);
            assert_eq!(header.uid().unwrap(), AGENT_UID);
            assert_eq!(header.gid().unwrap(), AGENT_UID);
            seen.push((
                entry.path().unwrap().display().to_string(),
                header.size().unwrap(),
            ));
        }
        assert_eq!(seen, [("token".into(), 64), ("tls.key".into(), 3)]);
    }
}
