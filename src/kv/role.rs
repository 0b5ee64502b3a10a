//! The role file as the application reads it (the agent writes it: src/agent/role_file.rs), and
//! the `.applied` reply the application writes once it acts on a line.
//!
//! The file is polled every [`POLL`]: the agent fences a master by writing `X` about a second
//! before its peer may be promoted, so the application must notice within a small part of that.
//! Polling also survives the agent's rename-over-the-file replacement without any watch setup.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;

use crate::agent::role_file::{applied_path, role_line, RoleFile};
use crate::protocol::MemberState;

/// How often the role file is read.
pub const POLL: Duration = Duration::from_millis(50);

/// One line of the role file: the state to act in and, for `SL`, where the master is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleLine {
    pub state: MemberState,
    pub peer: Option<String>,
}

impl RoleLine {
    pub const STOPPED: RoleLine = RoleLine {
        state: MemberState::X,
        peer: None,
    };

    /// `SM`, `M`, `SL <peer>`, `SL` or `X`, with or without the trailing newline.
    pub fn parse(text: &str) -> Result<RoleLine, String> {
        let mut words = text.split_whitespace();
        let state: MemberState = words
            .next()
            .ok_or("the role file is empty")?
            .parse()
            .map_err(|e| format!("{e}"))?;
        let peer = words.next().map(str::to_string);
        if words.next().is_some() || (peer.is_some() && state != MemberState::SL) {
            return Err(format!(
                "{text:?} is not a role line (SM, M, SL <peer>, SL or X)"
            ));
        }
        Ok(RoleLine { state, peer })
    }

    /// The line as the agent writes it.
    pub fn to_line(&self) -> String {
        role_line(self.state, self.peer.as_deref())
    }
}

/// What the role file says now: a missing file (the agent has not started) or one that is not a
/// role line counts as `X`, so nothing is processed on a guess.
pub fn read(path: &Path) -> Result<RoleLine, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => RoleLine::parse(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RoleLine::STOPPED),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Polls the role file and publishes every change of its line.
pub fn watch(path: PathBuf) -> watch::Receiver<RoleLine> {
    let (tx, rx) = watch::channel(RoleLine::STOPPED);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL);
        let mut last_problem = None;
        loop {
            tick.tick().await;
            let line = read(&path).unwrap_or_else(|problem| {
                if last_problem.as_ref() != Some(&problem) {
                    tracing::warn!(%problem, "acting as X until the role file is a role line");
                    last_problem = Some(problem);
                }
                RoleLine::STOPPED
            });
            tx.send_if_modified(|current| {
                let changed = *current != line;
                *current = line;
                changed
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    rx
}

/// Replaces `<role file>.applied` with `line`, atomically (like the role file itself).
pub fn write_applied(role_file: &Path, line: &RoleLine) -> std::io::Result<()> {
    RoleFile::new(applied_path(role_file), None).write_line(&line.to_line())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_the_agent_writes_parses_back() {
        for (state, peer) in [
            (MemberState::SM, None),
            (MemberState::M, None),
            (MemberState::SL, Some("10.88.0.7:8080".to_string())),
            (MemberState::SL, None),
            (MemberState::X, None),
        ] {
            let line = RoleLine { state, peer };
            assert_eq!(RoleLine::parse(&line.to_line()), Ok(line));
        }
    }

    #[test]
    fn anything_else_is_refused_with_the_reason() {
        for text in ["", "MASTER", "M 10.0.0.1:1", "SL a b"] {
            assert!(RoleLine::parse(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn a_missing_role_file_reads_as_stopped() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(&dir.path().join("role")), Ok(RoleLine::STOPPED));
    }

    #[test]
    fn the_applied_reply_sits_beside_the_role_file() {
        let dir = tempfile::tempdir().unwrap();
        let role = dir.path().join("role");
        let line = RoleLine::parse("SL 10.0.0.2:8080").unwrap();
        write_applied(&role, &line).unwrap();
        let applied = std::fs::read_to_string(dir.path().join("role.applied")).unwrap();
        assert_eq!(applied, "SL 10.0.0.2:8080\n");
    }
}
