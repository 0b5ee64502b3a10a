//! Master epochs: every time this member starts processing it opens a new epoch, and the entries
//! it writes carry it. `(epoch, index)` names one entry in every log that holds it, which is what
//! lets a standby find where its history and the master's part (log matching).
//!
//! That needs each epoch opened once, by one member: member a opens even epochs, b odd ones, and
//! each member records the highest epoch it opened in the file `epoch` beside its log (durably,
//! before writing in it), because its own entries of that epoch may later be cut from its log.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use super::log::{io_error, Log, LogError};
use crate::protocol::Member;
use crate::store::sync_dir;

/// The file holding the highest epoch this member opened.
pub const EPOCH_FILE: &str = "epoch";

/// Opens a new epoch for `member`, above every epoch in `log` and every epoch it opened before;
/// returns once it is recorded durably.
pub fn open_next(log: &Log, member: Member) -> Result<u64, LogError> {
    let path = log.dir().join(EPOCH_FILE);
    let opened = read_opened(&path)?;
    let epoch = next_for(member, opened.max(log.max_epoch()));
    replace(log.dir(), &epoch.to_string()).map_err(io_error("write", &path))?;
    Ok(epoch)
}

/// The smallest epoch of `member` above `floor`: even for a, odd for b.
pub fn next_for(member: Member, floor: u64) -> u64 {
    let parity = u64::from(member == Member::B);
    let next = floor + 1;
    if next % 2 == parity {
        next
    } else {
        next + 1
    }
}

fn read_opened(path: &Path) -> Result<u64, LogError> {
    match fs::read_to_string(path) {
        Ok(text) => text.trim().parse().map_err(|e| LogError::EpochFile {
            path: path.to_path_buf(),
            reason: format!("{text:?} is not a number ({e})"),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io_error("read", path)(e)),
    }
}

/// Temp file, fsync, rename, fsync of the directory: the old number or the new one survives.
fn replace(dir: &Path, text: &str) -> io::Result<()> {
    let temp = dir.join(format!(".{EPOCH_FILE}.tmp"));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    fs::rename(&temp, dir.join(EPOCH_FILE))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_open_disjoint_epochs_above_the_floor() {
        assert_eq!(next_for(Member::A, 0), 2);
        assert_eq!(next_for(Member::B, 0), 1);
        assert_eq!(next_for(Member::A, 2), 4);
        assert_eq!(next_for(Member::B, 2), 3);
        assert_eq!(next_for(Member::B, 3), 5);
    }

    #[test]
    fn an_epoch_is_never_opened_twice_even_after_its_entries_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path()).unwrap();
        let first = open_next(&log, Member::A).unwrap();
        log.append(first, "k", b"v").unwrap();
        log.truncate_after(0).unwrap();
        let second = open_next(&log, Member::A).unwrap();
        assert!(second > first, "{second} after {first}");
    }

    #[test]
    fn a_new_epoch_is_above_the_peers_epochs_in_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path()).unwrap();
        log.append(7, "k", b"v").unwrap();
        assert_eq!(open_next(&log, Member::A).unwrap(), 8);
    }

    #[test]
    fn a_damaged_epoch_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(EPOCH_FILE), "seven").unwrap();
        let log = Log::open(dir.path()).unwrap();
        let msg = open_next(&log, Member::A).unwrap_err().to_string();
        assert!(
            msg.contains("epoch") && msg.contains("not a number"),
            "{msg}"
        );
    }
}
