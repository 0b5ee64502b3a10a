//! The member's key/value log: the append-only file `kv.log` in its data directory (on the member
//! volume), and the table of current values it implies.
//!
//! It owns recovery at open (a torn or corrupt tail is cut off: every append is fsynced before
//! it is acknowledged, so only an unacknowledged append can be torn), the master's appends, the
//! standby's appends of the master's bytes, cutting a suffix the master does not have, and
//! reading a range for the standby. It never decides who may write: that is [`super::node`].

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::entry::{Decoded, Entry, Position};
use crate::store::sync_dir;

/// The log's file name in the data directory.
pub const LOG_FILE: &str = "kv.log";

/// A log operation failed; the message names the file and what to check.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(
        "cannot {action} {}: {source}; check that the data volume is mounted, writable and not full",
        .path.display()
    )]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the master's entries do not follow this log: {0}")]
    NotAContinuation(String),
    #[error("the epoch file {} is unreadable: {reason}; it must hold the highest epoch this member opened", .path.display())]
    EpochFile { path: PathBuf, reason: String },
}

/// The durable log and its table.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    index: Index,
}

/// What a scan of the log's bytes found: where each entry starts, its epoch, the table.
#[derive(Debug, Default)]
struct Index {
    /// `starts[i]`: byte offset of the entry with index `i + 1`.
    starts: Vec<u64>,
    /// `epochs[i]`: epoch of the entry with index `i + 1`.
    epochs: Vec<u64>,
    /// Bytes of intact entries.
    len: u64,
    max_epoch: u64,
    table: BTreeMap<String, Vec<u8>>,
}

impl Index {
    fn scan(bytes: &[u8]) -> (Index, Option<String>) {
        let mut index = Index::default();
        let mut at = 0;
        while at < bytes.len() {
            let (entry, used) = match Entry::decode(&bytes[at..]) {
                Decoded::Entry(entry, used) => (entry, used),
                Decoded::Incomplete => return (index, Some("a torn last entry".into())),
                Decoded::Corrupt(why) => return (index, Some(why)),
            };
            if entry.index != index.last_index() + 1 {
                let why = format!("index {} follows {}", entry.index, index.last_index());
                return (index, Some(why));
            }
            index.push(&entry, used as u64);
            at += used;
        }
        (index, None)
    }

    fn push(&mut self, entry: &Entry, bytes: u64) {
        self.starts.push(self.len);
        self.epochs.push(entry.epoch);
        self.len += bytes;
        self.max_epoch = self.max_epoch.max(entry.epoch);
        self.table.insert(entry.key.clone(), entry.value.clone());
    }

    fn last_index(&self) -> u64 {
        self.epochs.len() as u64
    }
}

impl Log {
    /// Opens (or creates) the log in `dir`, cutting off a torn or corrupt tail.
    pub fn open(dir: &Path) -> Result<Log, LogError> {
        create_dir_durably(dir)?;
        let path = dir.join(LOG_FILE);
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io_error("open", &path))?;
        if !existed {
            sync_dir(dir).map_err(io_error("flush the directory of", &path))?;
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(io_error("read", &path))?;
        let (index, cut) = Index::scan(&bytes);
        let log = Log {
            dir: dir.to_path_buf(),
            path,
            file,
            index,
        };
        if let Some(why) = cut {
            log.cut_tail(bytes.len() as u64, &why)?;
        }
        Ok(log)
    }

    fn cut_tail(&self, found: u64, why: &str) -> Result<(), LogError> {
        let keep = self.index.len;
        tracing::warn!(log = %self.path.display(), keep, dropped = found - keep, reason = why,
            "cutting the log's unreadable tail (an append that was never acknowledged)");
        self.set_len(keep)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The position of the last entry (`(0, 0)` when empty).
    pub fn last(&self) -> Position {
        Position {
            epoch: self.index.epochs.last().copied().unwrap_or(0),
            index: self.index.last_index(),
        }
    }

    /// The epoch of the entry at `index`; index 0 (before the first entry) has epoch 0.
    pub fn epoch_at(&self, index: u64) -> Option<u64> {
        match index {
            0 => Some(0),
            i => self.index.epochs.get(i as usize - 1).copied(),
        }
    }

    /// The first index of the run of entries of one epoch that ends at `index`.
    pub fn run_start(&self, index: u64) -> u64 {
        let Some(epoch) = self.epoch_at(index) else {
            return index;
        };
        let mut start = index;
        while start > 1 && self.epoch_at(start - 1) == Some(epoch) {
            start -= 1;
        }
        start
    }

    /// The last index of an entry of `epoch` at or below `at_most`. An epoch's entries are one
    /// run in every log (one master wrote them in order), so they match up to there.
    pub fn epoch_end(&self, epoch: u64, at_most: u64) -> Option<u64> {
        (1..=at_most.min(self.index.last_index()))
            .rev()
            .find(|&i| self.epoch_at(i) == Some(epoch))
    }

    /// The highest epoch of any entry.
    pub fn max_epoch(&self) -> u64 {
        self.index.max_epoch
    }

    /// Every key, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.index.table.keys().map(String::as_str)
    }

    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.index.table.get(key).map(Vec::as_slice)
    }

    /// Appends `key = value` as the next entry of `epoch`; returns once it is on disk (fsync).
    pub fn append(&mut self, epoch: u64, key: &str, value: &[u8]) -> Result<Position, LogError> {
        let entry = Entry {
            epoch,
            index: self.index.last_index() + 1,
            key: key.to_string(),
            value: value.to_vec(),
        };
        let bytes = entry.encode();
        self.write_durably(&bytes)?;
        self.index.push(&entry, bytes.len() as u64);
        Ok(entry.position())
    }

    /// Appends the master's encoded entries, which must continue this log exactly; returns the
    /// new last position once they are on disk (one fsync for the batch).
    pub fn append_replicated(&mut self, bytes: &[u8]) -> Result<Position, LogError> {
        let (batch, cut) = Index::scan_after(bytes, self.index.last_index());
        if let Some(why) = cut {
            return Err(LogError::NotAContinuation(why));
        }
        self.write_durably(bytes)?;
        for (entry, used) in batch {
            self.index.push(&entry, used);
        }
        Ok(self.last())
    }

    /// Removes every entry after `index`, durably, and restores the values they overwrote.
    pub fn truncate_after(&mut self, index: u64) -> Result<(), LogError> {
        let Some(&keep) = self.index.starts.get(index as usize) else {
            return Ok(()); // nothing after `index`
        };
        self.set_len(keep)?;
        let mut bytes = vec![0; keep as usize];
        self.file
            .read_exact_at(&mut bytes, 0)
            .map_err(io_error("read", &self.path))?;
        (self.index, _) = Index::scan(&bytes);
        Ok(())
    }

    /// The encoded entries after `index`: at least one if there is one, then as many whole
    /// entries as fit in `max_bytes`.
    pub fn read_after(&self, index: u64, max_bytes: u64) -> Result<Vec<u8>, LogError> {
        let starts = &self.index.starts;
        let Some(&from) = starts.get(index as usize) else {
            return Ok(Vec::new());
        };
        // Entry ends, in order; the first is always sent, the rest while they fit.
        let ends = starts[index as usize + 1..]
            .iter()
            .copied()
            .chain([self.index.len]);
        let mut to = from;
        for end in ends {
            if to > from && end - from > max_bytes {
                break;
            }
            to = end;
        }
        let mut bytes = vec![0; (to - from) as usize];
        self.file
            .read_exact_at(&mut bytes, from)
            .map_err(io_error("read", &self.path))?;
        Ok(bytes)
    }

    /// Writes `bytes` at the end and fsyncs; on failure cuts them off again, so a later append
    /// never follows a partial entry.
    fn write_durably(&mut self, bytes: &[u8]) -> Result<(), LogError> {
        let written = self
            .file
            .write_all(bytes)
            .and_then(|()| self.file.sync_data());
        if let Err(source) = written {
            let _ = self.file.set_len(self.index.len);
            return Err(LogError::Io {
                action: "append to",
                path: self.path.clone(),
                source,
            });
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), LogError> {
        self.file
            .set_len(len)
            .and_then(|()| self.file.sync_all())
            .map_err(io_error("truncate", &self.path))
    }
}

impl Index {
    /// The entries encoded in `bytes`, which must follow index `last`.
    fn scan_after(bytes: &[u8], last: u64) -> (Vec<(Entry, u64)>, Option<String>) {
        let mut out = Vec::new();
        let mut at = 0;
        let mut expected = last + 1;
        while at < bytes.len() {
            match Entry::decode(&bytes[at..]) {
                Decoded::Entry(entry, used) if entry.index == expected => {
                    out.push((entry, used as u64));
                    at += used;
                    expected += 1;
                }
                Decoded::Entry(entry, _) => {
                    let why = format!("entry {} where {expected} was expected", entry.index);
                    return (out, Some(why));
                }
                Decoded::Incomplete => return (out, Some("the batch ends inside an entry".into())),
                Decoded::Corrupt(why) => return (out, Some(why)),
            }
        }
        (out, None)
    }
}

fn create_dir_durably(dir: &Path) -> Result<(), LogError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(io_error("create the data directory", dir))?;
    match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => sync_dir(parent).map_err(io_error("flush the directory of", dir)),
        None => Ok(()),
    }
}

pub(super) fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> LogError {
    let path = path.to_path_buf();
    move |source| LogError::Io {
        action,
        path,
        source,
    }
}

#[cfg(test)]
mod tests;
