//! The priority record on a real directory, through the public API: round trip, every read
//! outcome, damaged files, a leftover temp file, and a read-only volume.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use hapair::protocol::{Member, Priority, RecordView, Standing, Term};
use hapair::store::{inspect, ReadOutcome, RecordStore, StoreError, RECORD_DIR, TEMP_FILE};

const PAIR: &str = "0b8e6a52-5c1e-4d7e-9f3a-2f6c1d0e9a11";
const OTHER_PAIR: &str = "d41d8cd9-8f00-4b20-9e80-0998ecf8427e";

fn standing(priority: Priority, term: u64) -> Standing {
    Standing::new(priority, Term(term))
}

fn store(volume: &Path) -> RecordStore {
    RecordStore::new(volume.to_path_buf(), PAIR, Member::A)
}

/// A volume holding a valid record of member a, and the record file's bytes.
fn written_volume() -> (tempfile::TempDir, RecordStore, Vec<u8>) {
    let volume = tempfile::tempdir().unwrap();
    let store = store(volume.path());
    store.write(standing(Priority::One, 4)).unwrap();
    let bytes = fs::read(store.record_path()).unwrap();
    (volume, store, bytes)
}

fn assert_corrupt(outcome: ReadOutcome, path: &Path, what: &str) -> String {
    match outcome {
        ReadOutcome::Corrupt { path: p, reason } => {
            assert_eq!(p, path, "{what}");
            reason
        }
        other => panic!("{what}: expected Corrupt, got {other:?}"),
    }
}

#[test]
fn written_record_reads_back_with_identity_and_standing() {
    let (_volume, store, bytes) = written_volume();
    let ReadOutcome::Valid(record) = store.read().unwrap() else {
        panic!("not valid")
    };
    assert_eq!(record.pair_uid, PAIR);
    assert_eq!(record.member, Member::A);
    assert_eq!(record.standing, standing(Priority::One, 4));
    assert!(record.written_unix > 1_600_000_000);
    assert!(String::from_utf8(bytes)
        .unwrap()
        .starts_with("hapair-record v1\n"));
}

#[test]
fn each_write_replaces_the_previous_record() {
    let (_volume, store, _) = written_volume();
    store.write(standing(Priority::Two, 4)).unwrap();
    store.write(standing(Priority::Three, 5)).unwrap();
    let outcome = store.read().unwrap();
    assert_eq!(
        outcome.view(),
        RecordView::Valid(standing(Priority::Three, 5))
    );
}

#[test]
fn fresh_volume_is_missing_and_reading_creates_nothing() {
    let volume = tempfile::tempdir().unwrap();
    assert_eq!(store(volume.path()).read().unwrap(), ReadOutcome::Missing);
    assert!(!volume.path().join(RECORD_DIR).exists());
}

#[test]
fn volume_directory_that_does_not_exist_is_an_error_not_missing() {
    let volume = tempfile::tempdir().unwrap();
    let gone = volume.path().join("not-mounted");
    let err = store(&gone).read().unwrap_err();
    assert!(matches!(err, StoreError::NoVolume { .. }), "{err}");
    assert!(err.to_string().contains("not-mounted"), "{err}");
}

#[test]
fn record_of_another_pair_is_wrong_pair_naming_both_uids() {
    let (volume, _, _) = written_volume();
    let other = RecordStore::new(volume.path().to_path_buf(), OTHER_PAIR, Member::A);
    let ReadOutcome::WrongPair {
        found_pair,
        found_member,
        reason,
        ..
    } = other.read().unwrap()
    else {
        panic!("not wrong-pair")
    };
    assert_eq!((found_pair.as_str(), found_member), (PAIR, Member::A));
    assert!(
        reason.contains(PAIR) && reason.contains(OTHER_PAIR),
        "{reason}"
    );
}

#[test]
fn record_of_the_peer_member_is_wrong_pair() {
    let (volume, _, _) = written_volume();
    let peer = RecordStore::new(volume.path().to_path_buf(), PAIR, Member::B);
    let outcome = peer.read().unwrap();
    assert!(matches!(
        outcome,
        ReadOutcome::WrongPair {
            found_member: Member::A,
            ..
        }
    ));
    assert!(matches!(outcome.view(), RecordView::WrongPair(_)));
}

#[test]
fn inspect_without_expectations_accepts_any_valid_record() {
    let (volume, _, _) = written_volume();
    let outcome = inspect(volume.path(), None, None).unwrap();
    assert!(matches!(outcome, ReadOutcome::Valid(_)), "{outcome}");
    let outcome = inspect(volume.path(), None, Some(Member::B)).unwrap();
    assert!(
        matches!(outcome, ReadOutcome::WrongPair { .. }),
        "{outcome}"
    );
}

#[test]
fn any_single_flipped_byte_in_the_file_is_corrupt_never_valid_or_wrong_pair() {
    let (_volume, store, good) = written_volume();
    let path = store.record_path();
    for at in 0..good.len() {
        for flip in [0x01u8, 0x20, 0x80, 0xff] {
            let mut bad = good.clone();
            bad[at] ^= flip;
            fs::write(&path, &bad).unwrap();
            assert_corrupt(
                store.read().unwrap(),
                &path,
                &format!("byte {at} ^ {flip:#x}"),
            );
        }
    }
}

#[test]
fn record_truncated_at_every_length_is_corrupt_even_when_empty() {
    let (_volume, store, good) = written_volume();
    let path = store.record_path();
    for len in 0..good.len() {
        fs::write(&path, &good[..len]).unwrap();
        assert_corrupt(store.read().unwrap(), &path, &format!("truncated to {len}"));
    }
}

#[test]
fn trailing_garbage_after_the_record_is_corrupt() {
    let (_volume, store, mut bytes) = written_volume();
    bytes.extend_from_slice(b"\0\0\0\0");
    fs::write(store.record_path(), &bytes).unwrap();
    assert_corrupt(store.read().unwrap(), &store.record_path(), "garbage");
}

#[test]
fn oversized_file_and_directory_in_place_of_the_record_are_corrupt_with_reason() {
    let (_volume, store, _) = written_volume();
    let path = store.record_path();
    fs::write(&path, vec![b'x'; 1 << 20]).unwrap();
    let reason = assert_corrupt(store.read().unwrap(), &path, "oversized");
    assert!(reason.contains("longer than"), "{reason}");
    fs::remove_file(&path).unwrap();
    fs::create_dir(&path).unwrap();
    let reason = assert_corrupt(store.read().unwrap(), &path, "directory");
    assert!(reason.contains("not a regular file"), "{reason}");
}

#[test]
fn corrupt_view_names_the_file_and_the_reason() {
    let (_volume, store, _) = written_volume();
    fs::write(store.record_path(), b"hapair-record v9\n").unwrap();
    let RecordView::Corrupt(text) = store.read().unwrap().view() else {
        panic!("not corrupt")
    };
    assert!(text.contains("/.hapair/record"), "{text}");
    assert!(text.contains("unknown format version"), "{text}");
}

#[test]
fn leftover_longer_temp_file_is_ignored_by_reads_and_fully_overwritten_by_writes() {
    let (_volume, store, _) = written_volume();
    let temp = store.record_path().with_file_name(TEMP_FILE);
    fs::write(&temp, vec![b'#'; 3000]).unwrap();
    assert!(matches!(store.read().unwrap(), ReadOutcome::Valid(_)));
    store.write(standing(Priority::Two, 4)).unwrap();
    let outcome = store.read().unwrap();
    assert_eq!(
        outcome.view(),
        RecordView::Valid(standing(Priority::Two, 4))
    );
    assert!(!temp.exists());
}

/// A read-only bind mount of a directory over itself, undone on drop. Root ignores mode bits,
/// so this is how a test run as root gets a really read-only volume.
struct ReadOnlyMount(PathBuf);

impl ReadOnlyMount {
    fn new(dir: &Path) -> Option<Self> {
        let mount = |args: &[&str]| {
            Command::new("mount")
                .args(args)
                .arg(dir)
                .arg(dir)
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !mount(&["--bind"]) {
            return None;
        }
        let guard = ReadOnlyMount(dir.to_path_buf());
        mount(&["-o", "remount,bind,ro"]).then_some(guard)
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn read_only_volume_fails_the_write_with_a_clear_error_and_keeps_the_old_record() {
    let (volume, store, before) = written_volume();
    let Some(_ro) = ReadOnlyMount::new(volume.path()) else {
        // Without mount privileges the injected-EROFS test in src/store/tests.rs covers it.
        eprintln!("skipped: cannot bind-mount read-only here (needs CAP_SYS_ADMIN)");
        return;
    };
    let message = store
        .write(standing(Priority::Three, 9))
        .unwrap_err()
        .to_string();
    assert!(message.contains("record.tmp"), "{message}");
    assert!(message.contains("mounted read-only"), "{message}");
    assert!(message.contains("previous record is intact"), "{message}");
    assert_eq!(fs::read(store.record_path()).unwrap(), before);
    let outcome = store.read().unwrap();
    assert_eq!(
        outcome.view(),
        RecordView::Valid(standing(Priority::One, 4))
    );
}

#[test]
fn read_only_fresh_volume_fails_creating_the_record_directory() {
    let volume = tempfile::tempdir().unwrap();
    let Some(_ro) = ReadOnlyMount::new(volume.path()) else {
        eprintln!("skipped: cannot bind-mount read-only here (needs CAP_SYS_ADMIN)");
        return;
    };
    let message = store(volume.path())
        .write(standing(Priority::Two, 0))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("creating the record directory"),
        "{message}"
    );
    assert!(message.contains("mounted read-only"), "{message}");
    assert!(message.contains("no record was written"), "{message}");
}
