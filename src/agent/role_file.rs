//! The role file: how the agent tells the application in its pod what to do. One line:
//! `SM`, `M`, `SL <peer address>` (or `SL` without a known peer address) or `X`.
//!
//! Replaced atomically (temp file in the same directory, then rename), so the application reads
//! the old line or the new one, never a mix. It is not fsynced: it lives in a pod-scoped
//! directory, says nothing durable, and a fresh agent always rewrites it (`X`) at start. The
//! durable fact is the priority record, written before the role file.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::acting::RoleIo;
use crate::protocol::MemberState;

/// The line the application reads for `state`.
pub fn role_line(state: MemberState, peer_address: Option<&str>) -> String {
    match (state, peer_address) {
        (MemberState::SL, Some(peer)) => format!("SL {peer}\n"),
        (state, _) => format!("{state}\n"),
    }
}

/// `<role file>.applied`: where the application replies with the line it acted on (the role
/// handshake).
pub fn applied_path(role_file: &Path) -> PathBuf {
    let mut name = role_file.as_os_str().to_owned();
    name.push(".applied");
    PathBuf::from(name)
}

/// Where the application reads its role.
#[derive(Debug, Clone)]
pub struct RoleFile {
    path: PathBuf,
    temp: PathBuf,
    /// The pod-scoped command floor (see [`RoleIo`]), hidden beside the role file.
    floor: PathBuf,
    /// Written after `SL`: where the slave receives handover data from.
    peer_address: Option<String>,
}

impl RoleFile {
    /// The role file at `path`; its temp file is `.<name>.tmp` beside it (same file system, so
    /// the rename is atomic).
    pub fn new(path: PathBuf, peer_address: Option<String>) -> Self {
        let name = path
            .file_name()
            .map_or_else(|| "role".into(), |n| n.to_string_lossy().into_owned());
        let temp = path.with_file_name(format!(".{name}.tmp"));
        let floor = path.with_file_name(format!(".{name}.floor"));
        RoleFile {
            path,
            temp,
            floor,
            peer_address,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the file's content with `line`, atomically.
    pub fn write_line(&self, line: &str) -> io::Result<()> {
        replace(&self.temp, &self.path, line)
    }
}

/// Writes `content` to `temp`, then renames it over `path`.
fn replace(temp: &Path, path: &Path, content: &str) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(temp)?;
    file.write_all(content.as_bytes())?;
    drop(file);
    fs::rename(temp, path)
}

impl RoleIo for RoleFile {
    fn write_role(&mut self, state: MemberState) -> io::Result<()> {
        self.write_line(&role_line(state, self.peer_address.as_deref()))
    }

    /// A floor file that is there but unreadable is an error: guessing could apply a command
    /// twice.
    fn read_floor(&self) -> io::Result<u64> {
        match fs::read_to_string(&self.floor) {
            Ok(text) => text.trim().parse().map_err(|e| {
                let path = self.floor.display();
                io::Error::other(format!(
                    "{path} holds {text:?}, not a sequence number ({e}); delete the pod to start over"
                ))
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    fn write_floor(&mut self, seq: u64) -> io::Result<()> {
        replace(&self.temp, &self.floor, &format!("{seq}\n"))
    }

    fn applied(&self) -> io::Result<Option<String>> {
        match fs::read_to_string(applied_path(&self.path)) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn clear_applied(&mut self) -> io::Result<()> {
        match fs::remove_file(applied_path(&self.path)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_name_the_state_and_the_peer_for_a_slave() {
        assert_eq!(role_line(MemberState::SM, Some("10.0.0.2")), "SM\n");
        assert_eq!(role_line(MemberState::M, None), "M\n");
        assert_eq!(
            role_line(MemberState::SL, Some("10.0.0.2:7000")),
            "SL 10.0.0.2:7000\n"
        );
        assert_eq!(role_line(MemberState::SL, None), "SL\n");
        assert_eq!(role_line(MemberState::X, Some("x")), "X\n");
    }

    #[test]
    fn write_replaces_the_whole_file_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut role = RoleFile::new(dir.path().join("role"), Some("10.0.0.2:7000".into()));
        role.write_role(MemberState::SL).unwrap();
        assert_eq!(
            fs::read_to_string(role.path()).unwrap(),
            "SL 10.0.0.2:7000\n"
        );
        role.write_role(MemberState::X).unwrap();
        assert_eq!(fs::read_to_string(role.path()).unwrap(), "X\n");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["role"]);
    }

    #[test]
    fn the_floor_survives_a_new_role_file_instance_and_garbage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut role = RoleFile::new(dir.path().join("role"), None);
        assert_eq!(role.read_floor().unwrap(), 0);
        role.write_floor(17).unwrap();
        let again = RoleFile::new(dir.path().join("role"), None);
        assert_eq!(again.read_floor().unwrap(), 17);
        fs::write(dir.path().join(".role.floor"), "seventeen").unwrap();
        let err = again.read_floor().unwrap_err().to_string();
        assert!(err.contains("delete the pod"), "{err}");
    }

    #[test]
    fn the_reply_is_read_beside_the_role_file_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let mut role = RoleFile::new(dir.path().join("role"), None);
        assert_eq!(role.applied().unwrap(), None);
        role.clear_applied().unwrap(); // nothing to clear is fine
        fs::write(dir.path().join("role.applied"), "M\n").unwrap();
        assert_eq!(role.applied().unwrap().as_deref(), Some("M\n"));
        role.clear_applied().unwrap();
        assert_eq!(role.applied().unwrap(), None);
    }

    #[test]
    fn write_into_a_missing_directory_fails() {
        let dir = tempfile::tempdir().unwrap();
        let mut role = RoleFile::new(dir.path().join("nope").join("role"), None);
        assert!(role.write_role(MemberState::X).is_err());
    }
}
