//! Crash tests of the write sequence: a failure, or a SIGKILL, before every step.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;
use crate::protocol::{Priority, Term};

const PAIR: &str = "0b8e6a52-5c1e-4d7e-9f3a-2f6c1d0e9a11";
const OLD: Standing = Standing {
    priority: Priority::Two,
    term: Term(3),
};
const NEW: Standing = Standing {
    priority: Priority::One,
    term: Term(4),
};
const NEWER: Standing = Standing {
    priority: Priority::Three,
    term: Term(4),
};

fn store(volume: &Path) -> RecordStore {
    RecordStore::new(volume.to_path_buf(), PAIR, Member::A)
}

fn standing_read(store: &RecordStore) -> Option<Standing> {
    match store.read().unwrap() {
        ReadOutcome::Missing => None,
        ReadOutcome::Valid(record) => Some(record.standing),
        other => panic!("torn or foreign record after a crash: {other}"),
    }
}

/// A volume holding `OLD`, except for the `CreateDir` step, which only a fresh volume reaches.
fn volume_before(step: WriteStep) -> (tempfile::TempDir, Option<Standing>) {
    let volume = tempfile::tempdir().unwrap();
    if step == WriteStep::CreateDir {
        return (volume, None);
    }
    store(volume.path()).write(OLD).unwrap();
    (volume, Some(OLD))
}

/// What a write that stopped before `step` must have left: the old record until the rename.
fn expected_after_stop(step: WriteStep, old: Option<Standing>) -> Option<Standing> {
    match step {
        WriteStep::SyncDir => Some(NEW),
        _ => old,
    }
}

fn fail_at(target: WriteStep, kind: io::ErrorKind) -> impl FnMut(WriteStep) -> io::Result<()> {
    move |step| {
        if step == target {
            return Err(io::Error::from(kind));
        }
        Ok(())
    }
}

#[test]
fn failure_before_every_step_leaves_old_or_new_record_and_next_write_succeeds() {
    for step in WriteStep::ALL {
        let (volume, old) = volume_before(step);
        let store = store(volume.path());
        let err = store
            .write_with(NEW, &mut fail_at(step, io::ErrorKind::Other))
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Write { step: s, .. } if s == step),
            "{err}"
        );
        assert_eq!(
            standing_read(&store),
            expected_after_stop(step, old),
            "{step:?}"
        );
        store.write(NEWER).unwrap();
        assert_eq!(
            standing_read(&store),
            Some(NEWER),
            "write after failure at {step:?}"
        );
    }
}

#[test]
fn read_only_volume_error_names_the_file_the_cause_and_that_the_old_record_is_intact() {
    // Injected EROFS: the real read-only mount is exercised in tests/store.rs when the test
    // may mount (root bypasses chmod 0555, so permissions alone cannot make a volume read-only).
    let volume = tempfile::tempdir().unwrap();
    let store = store(volume.path());
    store.write(OLD).unwrap();
    let hook = &mut fail_at(WriteStep::CreateTemp, io::ErrorKind::ReadOnlyFilesystem);
    let message = store.write_with(NEW, hook).unwrap_err().to_string();
    assert!(message.contains(TEMP_FILE), "{message}");
    assert!(message.contains("mounted read-only"), "{message}");
    assert!(message.contains("previous record is intact"), "{message}");
    assert_eq!(standing_read(&store), Some(OLD));
}

#[test]
fn full_volume_error_says_the_old_record_is_intact_and_to_free_space() {
    let volume = tempfile::tempdir().unwrap();
    let store = store(volume.path());
    store.write(OLD).unwrap();
    let hook = &mut fail_at(WriteStep::WriteTemp, io::ErrorKind::StorageFull);
    let message = store.write_with(NEW, hook).unwrap_err().to_string();
    assert!(
        message.contains("writing the temporary record"),
        "{message}"
    );
    assert!(message.contains("volume is full"), "{message}");
    assert!(message.contains("previous record is intact"), "{message}");
    assert_eq!(standing_read(&store), Some(OLD));
}

#[test]
fn failed_directory_flush_says_the_new_record_may_not_survive_power_loss() {
    let volume = tempfile::tempdir().unwrap();
    let store = store(volume.path());
    let hook = &mut fail_at(WriteStep::SyncDir, io::ErrorKind::Other);
    let message = store.write_with(NEW, hook).unwrap_err().to_string();
    assert!(
        message.contains("may not survive a power loss"),
        "{message}"
    );
}

#[test]
fn pair_uid_that_cannot_be_stored_is_refused_before_touching_the_volume() {
    let volume = tempfile::tempdir().unwrap();
    let store = RecordStore::new(volume.path().to_path_buf(), "two\nlines", Member::A);
    let err = store.write(NEW).unwrap_err();
    assert!(matches!(err, StoreError::InvalidPairUid { .. }), "{err}");
    assert!(!volume.path().join(RECORD_DIR).exists());
}

// ---- SIGKILL of a real writer process between steps ----

/// Set in the child: `<volume>\n<step index>\n<marker file>`.
const CHILD_ENV: &str = "HAPAIR_STORE_TEST_PAUSED_WRITER";
const CHILD_TEST: &str = "store::tests::helper_writer_that_pauses_before_a_step_until_killed";

/// Not a scenario: the child process of the SIGKILL tests. It writes `NEW`, signals the parent
/// through a marker file just before the chosen step, and waits there to be killed.
#[test]
#[ignore = "helper: run in a child process by the killed_writer tests"]
fn helper_writer_that_pauses_before_a_step_until_killed() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let [volume, step, marker]: [&str; 3] =
        spec.split('\n').collect::<Vec<_>>().try_into().unwrap();
    let target = WriteStep::ALL[step.parse::<usize>().unwrap()];
    let mut pause = |step: WriteStep| {
        if step == target {
            std::fs::write(marker, b"paused").unwrap();
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        Ok(())
    };
    store(Path::new(volume))
        .write_with(NEW, &mut pause)
        .unwrap();
}

fn spawn_paused_writer(volume: &Path, step: WriteStep, marker: &Path) -> Child {
    let index = WriteStep::ALL.iter().position(|s| *s == step).unwrap();
    let spec = format!("{}\n{index}\n{}", volume.display(), marker.display());
    Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", CHILD_TEST, "--test-threads=1"])
        .env(CHILD_ENV, spec)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_for_marker(child: &mut Child, marker: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !marker.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("paused writer exited ({status}) before reaching its step");
        }
        assert!(
            Instant::now() < deadline,
            "paused writer never reached its step"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn kill_writer_before(step: WriteStep, volume: &Path) -> PathBuf {
    let scratch = tempfile::tempdir().unwrap();
    let marker = scratch.path().join("paused");
    let mut child = spawn_paused_writer(volume, step, &marker);
    wait_for_marker(&mut child, &marker);
    child.kill().unwrap(); // SIGKILL on unix: no destructor, no flush, no cleanup runs.
    child.wait().unwrap();
    marker
}

#[test]
fn killed_writer_before_every_step_leaves_old_or_new_record_and_next_write_succeeds() {
    for step in WriteStep::ALL {
        let (volume, old) = volume_before(step);
        let store = store(volume.path());
        kill_writer_before(step, volume.path());
        assert_eq!(
            standing_read(&store),
            expected_after_stop(step, old),
            "{step:?}"
        );
        store.write(NEWER).unwrap();
        assert_eq!(
            standing_read(&store),
            Some(NEWER),
            "write after kill at {step:?}"
        );
        assert!(
            !store.dir().join(TEMP_FILE).exists(),
            "temp left after a good write"
        );
    }
}

#[test]
fn killed_writer_leaves_temp_file_that_reads_ignore_and_the_next_write_replaces() {
    let (volume, _) = volume_before(WriteStep::SyncTemp);
    let store = store(volume.path());
    kill_writer_before(WriteStep::SyncTemp, volume.path());
    let temp = store.dir().join(TEMP_FILE);
    assert!(
        temp.exists(),
        "the killed writer should have left {TEMP_FILE}"
    );
    assert_eq!(standing_read(&store), Some(OLD));
    store.write(NEWER).unwrap();
    assert_eq!(standing_read(&store), Some(NEWER));
}
