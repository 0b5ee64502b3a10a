//! The durable priority record on a member's own volume: `<volume>/.hapair/record`.
//!
//! This module owns reading the record (missing, valid, corrupt or from another pair — never a
//! guess) and replacing it durably: temp file, fsync, rename, fsync of the directory, so that a
//! crash at any moment leaves the previous record or the new one, never a torn one.
//!
//! It must never decide anything from what it reads (that is [`crate::protocol`]'s job), never
//! use the write time for a decision (it is informational only), and never write on a read path.
//! One writer per volume: the member's own agent.

mod format;

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::protocol::{Member, RecordView, Standing};

/// Directory on the volume holding the record.
pub const RECORD_DIR: &str = ".hapair";
/// The record's file name in [`RECORD_DIR`].
pub const RECORD_FILE: &str = "record";
/// The temporary file a write fills before renaming it over [`RECORD_FILE`].
pub const TEMP_FILE: &str = "record.tmp";
/// No valid record is anywhere near this long; a longer file is rejected unread.
const MAX_RECORD_BYTES: u64 = 4096;

/// What a valid record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub pair_uid: String,
    pub member: Member,
    pub standing: Standing,
    /// When it was written (unix seconds, this node's clock): for people, never for decisions.
    pub written_unix: u64,
}

/// What reading a volume found. Each case is distinct; none is ever turned into another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOutcome {
    /// No record: a fresh volume, or one that lost its data.
    Missing,
    Valid(Record),
    /// A record exists but cannot be trusted (parse, version, checksum, truncation).
    Corrupt {
        path: PathBuf,
        reason: String,
    },
    /// A valid record of another pair or member: this volume must not be used.
    WrongPair {
        path: PathBuf,
        found_pair: String,
        found_member: Member,
        reason: String,
    },
}

impl ReadOutcome {
    /// The form the protocol's observation takes.
    pub fn view(&self) -> RecordView {
        match self {
            ReadOutcome::Missing => RecordView::Missing,
            ReadOutcome::Valid(record) => RecordView::Valid(record.standing),
            ReadOutcome::Corrupt { .. } => RecordView::Corrupt(self.to_string()),
            ReadOutcome::WrongPair { .. } => RecordView::WrongPair(self.to_string()),
        }
    }
}

impl fmt::Display for ReadOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadOutcome::Missing => f.write_str("no record (a fresh volume, or one without data)"),
            ReadOutcome::Valid(r) => write!(
                f,
                "member {} of pair {}: priority {}, term {}",
                r.member, r.pair_uid, r.standing.priority, r.standing.term
            ),
            ReadOutcome::Corrupt { path, reason } => {
                write!(f, "corrupt record {}: {reason}", path.display())
            }
            ReadOutcome::WrongPair { path, reason, .. } => {
                write!(f, "record {} is not ours: {reason}", path.display())
            }
        }
    }
}

/// One step of a durable write, in order. [`WriteStep::CreateDir`] happens only on a volume
/// without [`RECORD_DIR`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteStep {
    /// Create `.hapair/`, then fsync the volume directory so the new entry survives.
    CreateDir,
    /// Create or truncate `record.tmp`.
    CreateTemp,
    /// Write the whole record into `record.tmp`.
    WriteTemp,
    /// fsync `record.tmp`.
    SyncTemp,
    /// Rename `record.tmp` over `record`: the moment the new record replaces the old.
    Rename,
    /// fsync `.hapair/` so the rename survives a power loss.
    SyncDir,
}

impl WriteStep {
    pub const ALL: [WriteStep; 6] = [
        WriteStep::CreateDir,
        WriteStep::CreateTemp,
        WriteStep::WriteTemp,
        WriteStep::SyncTemp,
        WriteStep::Rename,
        WriteStep::SyncDir,
    ];

    fn action(self) -> &'static str {
        match self {
            WriteStep::CreateDir => "creating the record directory",
            WriteStep::CreateTemp => "creating the temporary record",
            WriteStep::WriteTemp => "writing the temporary record",
            WriteStep::SyncTemp => "flushing (fsync) the temporary record",
            WriteStep::Rename => "renaming the temporary record over",
            WriteStep::SyncDir => "flushing (fsync) the record directory",
        }
    }

    /// What a failure of this step left on the volume.
    fn consequence(self) -> &'static str {
        match self {
            WriteStep::CreateDir => "no record was written",
            WriteStep::SyncDir => {
                "the new record is in place but may not survive a power loss: write it again \
                 before acting on it"
            }
            _ => "the previous record is intact and the new one was not written",
        }
    }
}

/// What went wrong reading or writing the record, on which path, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "volume directory {} does not exist or is not a directory: check the volume path or mount",
        .path.display()
    )]
    NoVolume { path: PathBuf },
    #[error("cannot read the record {}: {cause}; {}", .path.display(), hint(.cause))]
    Read { path: PathBuf, cause: io::Error },
    #[error(
        "pair UID {uid:?} cannot be stored (it must be 1 to 253 characters without whitespace or \
         control characters); no record was written"
    )]
    InvalidPairUid { uid: String },
    #[error(
        "{} {} failed: {cause}; {}; {}",
        .step.action(), .path.display(), .step.consequence(), hint(.cause)
    )]
    Write {
        step: WriteStep,
        path: PathBuf,
        cause: io::Error,
    },
}

/// What the user can do about an I/O error.
fn hint(cause: &io::Error) -> &'static str {
    match cause.kind() {
        io::ErrorKind::ReadOnlyFilesystem => "the volume is mounted read-only: mount it read-write",
        io::ErrorKind::StorageFull => "the volume is full: free space on it or expand the claim",
        io::ErrorKind::QuotaExceeded => "the volume's quota is exhausted: raise it or free space",
        io::ErrorKind::PermissionDenied => {
            "the agent lacks permission there: check the volume's ownership and the pod's fsGroup"
        }
        _ => "check the volume (kernel log, mount) and retry",
    }
}

/// Reads `volume_dir`'s record, checking identity only where an expectation is given.
/// Read-only: opens nothing for writing and creates nothing.
pub fn inspect(
    volume_dir: &Path,
    pair_uid: Option<&str>,
    member: Option<Member>,
) -> Result<ReadOutcome, StoreError> {
    let path = volume_dir.join(RECORD_DIR).join(RECORD_FILE);
    let decoded = match read_file(volume_dir, &path)? {
        Found::Nothing => return Ok(ReadOutcome::Missing),
        Found::Unreadable(reason) => Err(reason),
        Found::Bytes(bytes) => format::decode(&bytes),
    };
    match decoded {
        Ok(record) => Ok(check_identity(path, record, pair_uid, member)),
        Err(reason) => Ok(ReadOutcome::Corrupt { path, reason }),
    }
}

/// What is at the record's path.
enum Found {
    Nothing,
    /// Something that cannot be a record, and why.
    Unreadable(String),
    Bytes(Vec<u8>),
}

fn read_file(volume_dir: &Path, path: &Path) -> Result<Found, StoreError> {
    let read_err = |cause| StoreError::Read {
        path: path.to_path_buf(),
        cause,
    };
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return missing(volume_dir),
        Err(e) => return Err(read_err(e)),
    };
    if !file.metadata().map_err(read_err)?.is_file() {
        return Ok(Found::Unreadable("it is not a regular file".into()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_RECORD_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_RECORD_BYTES {
        let reason = format!("it is longer than {MAX_RECORD_BYTES} bytes: not a record");
        return Ok(Found::Unreadable(reason));
    }
    Ok(Found::Bytes(bytes))
}

/// A missing record is only `Missing` on a volume that exists.
fn missing(volume_dir: &Path) -> Result<Found, StoreError> {
    if volume_dir.is_dir() {
        return Ok(Found::Nothing);
    }
    Err(StoreError::NoVolume {
        path: volume_dir.to_path_buf(),
    })
}

fn check_identity(
    path: PathBuf,
    record: Record,
    pair_uid: Option<&str>,
    member: Option<Member>,
) -> ReadOutcome {
    let mut wrong = Vec::new();
    if let Some(expected) = pair_uid.filter(|uid| *uid != record.pair_uid) {
        wrong.push(format!(
            "it belongs to pair {:?}, expected {expected:?}",
            record.pair_uid
        ));
    }
    if let Some(expected) = member.filter(|m| *m != record.member) {
        wrong.push(format!(
            "it is member {}'s, expected member {expected}'s",
            record.member
        ));
    }
    if wrong.is_empty() {
        return ReadOutcome::Valid(record);
    }
    ReadOutcome::WrongPair {
        path,
        found_pair: record.pair_uid,
        found_member: record.member,
        reason: format!(
            "{}: a volume from another pair or member is attached",
            wrong.join("; ")
        ),
    }
}

/// The record of one member of one pair, on that member's volume.
#[derive(Debug, Clone)]
pub struct RecordStore {
    volume_dir: PathBuf,
    pair_uid: String,
    member: Member,
}

impl RecordStore {
    pub fn new(volume_dir: PathBuf, pair_uid: impl Into<String>, member: Member) -> Self {
        RecordStore {
            volume_dir,
            pair_uid: pair_uid.into(),
            member,
        }
    }

    /// `<volume>/.hapair/record`.
    pub fn record_path(&self) -> PathBuf {
        self.dir().join(RECORD_FILE)
    }

    /// Reads the record; another pair's or member's record is [`ReadOutcome::WrongPair`].
    pub fn read(&self) -> Result<ReadOutcome, StoreError> {
        inspect(&self.volume_dir, Some(&self.pair_uid), Some(self.member))
    }

    /// Replaces the record with `standing`, durably: when this returns `Ok` the record survives
    /// a power loss. On `Err` the previous record is intact unless the error says otherwise.
    /// It replaces whatever is there: read first, and never write over a record that is not ours.
    pub fn write(&self, standing: Standing) -> Result<Record, StoreError> {
        self.write_with(standing, &mut |_| Ok(()))
    }

    /// [`RecordStore::write`], calling `hook` before each step; an error from the hook is
    /// reported as that step's failure. Crash tests use it; production passes a no-op.
    #[doc(hidden)]
    pub fn write_with(
        &self,
        standing: Standing,
        hook: &mut dyn FnMut(WriteStep) -> io::Result<()>,
    ) -> Result<Record, StoreError> {
        if !format::valid_pair_uid(&self.pair_uid) {
            return Err(StoreError::InvalidPairUid {
                uid: self.pair_uid.clone(),
            });
        }
        let record = self.record_now(standing);
        self.ensure_dir(hook)?;
        self.replace(&format::encode(&record), hook)?;
        Ok(record)
    }

    fn dir(&self) -> PathBuf {
        self.volume_dir.join(RECORD_DIR)
    }

    fn record_now(&self, standing: Standing) -> Record {
        // A clock before 1970 only spoils the informational write time; 0 says "unknown".
        let written_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Record {
            pair_uid: self.pair_uid.clone(),
            member: self.member,
            standing,
            written_unix,
        }
    }

    /// Creates `.hapair/` if needed and flushes the volume directory so the entry survives.
    fn ensure_dir(
        &self,
        hook: &mut dyn FnMut(WriteStep) -> io::Result<()>,
    ) -> Result<(), StoreError> {
        let dir = self.dir();
        if dir.is_dir() {
            return Ok(());
        }
        let step = WriteStep::CreateDir;
        run(step, &dir, hook, || {
            fs::create_dir(&dir)?;
            sync_dir(&self.volume_dir)
        })
    }

    /// The temp-file, fsync, rename, fsync-directory sequence.
    fn replace(
        &self,
        bytes: &[u8],
        hook: &mut dyn FnMut(WriteStep) -> io::Result<()>,
    ) -> Result<(), StoreError> {
        let dir = self.dir();
        let temp = dir.join(TEMP_FILE);
        let mut file = run(WriteStep::CreateTemp, &temp, hook, || create_temp(&temp))?;
        run(WriteStep::WriteTemp, &temp, hook, || file.write_all(bytes))?;
        run(WriteStep::SyncTemp, &temp, hook, || file.sync_all())?;
        drop(file);
        let record = self.record_path();
        run(WriteStep::Rename, &record, hook, || {
            fs::rename(&temp, &record)
        })?;
        run(WriteStep::SyncDir, &dir, hook, || sync_dir(&dir))
    }
}

/// Runs one write step after the hook, naming the step and path on failure.
fn run<T>(
    step: WriteStep,
    path: &Path,
    hook: &mut dyn FnMut(WriteStep) -> io::Result<()>,
    op: impl FnOnce() -> io::Result<T>,
) -> Result<T, StoreError> {
    hook(step)
        .and_then(|()| op())
        .map_err(|cause| StoreError::Write {
            step,
            path: path.to_path_buf(),
            cause,
        })
}

/// `record.tmp`, emptied if a crashed write left one.
fn create_temp(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(path)
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests;
