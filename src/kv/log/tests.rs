use std::fs::OpenOptions;

use super::*;

fn open(dir: &tempfile::TempDir) -> Log {
    Log::open(dir.path()).unwrap()
}

fn file_len(dir: &tempfile::TempDir) -> u64 {
    fs::metadata(dir.path().join(LOG_FILE)).unwrap().len()
}

#[test]
fn appended_entries_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir);
    assert_eq!(log.last(), Position::default());
    log.append(2, "a", b"1").unwrap();
    let last = log.append(2, "b", b"2").unwrap();
    log.append(4, "a", b"3").unwrap();
    assert_eq!(last, Position { epoch: 2, index: 2 });
    drop(log);
    let log = open(&dir);
    assert_eq!(log.last(), Position { epoch: 4, index: 3 });
    assert_eq!(log.get("a"), Some(&b"3"[..]));
    assert_eq!(log.get("b"), Some(&b"2"[..]));
    assert_eq!(log.max_epoch(), 4);
}

#[test]
fn a_torn_last_entry_is_cut_off_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir);
    log.append(2, "a", b"1").unwrap();
    log.append(2, "b", b"2").unwrap();
    let intact = file_len(&dir);
    drop(log);
    let torn = Entry {
        epoch: 2,
        index: 3,
        key: "c".into(),
        value: b"3".to_vec(),
    }
    .encode();
    let mut file = OpenOptions::new()
        .append(true)
        .open(dir.path().join(LOG_FILE))
        .unwrap();
    file.write_all(&torn[..torn.len() - 2]).unwrap();
    drop(file);

    let mut log = open(&dir);
    assert_eq!(log.last(), Position { epoch: 2, index: 2 });
    assert_eq!(log.get("c"), None);
    assert_eq!(
        file_len(&dir),
        intact,
        "the torn bytes are gone from the file"
    );
    log.append(2, "c", b"again").unwrap();
    drop(log);
    assert_eq!(open(&dir).get("c"), Some(&b"again"[..]));
}

#[test]
fn a_last_entry_with_a_bad_checksum_is_cut_off_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir);
    log.append(2, "a", b"1").unwrap();
    let intact = file_len(&dir);
    log.append(2, "b", b"2").unwrap();
    drop(log);
    let path = dir.path().join(LOG_FILE);
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    fs::write(&path, bytes).unwrap();

    let log = open(&dir);
    assert_eq!(log.last(), Position { epoch: 2, index: 1 });
    assert_eq!(file_len(&dir), intact);
}

#[test]
fn truncate_after_removes_the_suffix_and_restores_overwritten_values() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir);
    log.append(2, "k", b"old").unwrap();
    log.append(2, "k", b"new").unwrap();
    log.append(2, "other", b"x").unwrap();
    log.truncate_after(1).unwrap();
    assert_eq!(log.last(), Position { epoch: 2, index: 1 });
    assert_eq!(log.get("k"), Some(&b"old"[..]));
    assert_eq!(log.get("other"), None);
    log.append(3, "k", b"newer").unwrap();
    drop(log);
    let log = open(&dir);
    assert_eq!(log.last(), Position { epoch: 3, index: 2 });
    assert_eq!(log.get("k"), Some(&b"newer"[..]));
}

#[test]
fn truncate_after_the_last_index_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir);
    log.append(2, "k", b"v").unwrap();
    log.truncate_after(1).unwrap();
    log.truncate_after(5).unwrap();
    assert_eq!(log.last().index, 1);
}

#[test]
fn the_masters_bytes_replicate_unchanged() {
    let (master_dir, standby_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut master = open(&master_dir);
    for i in 0..5 {
        master.append(2, &format!("k{i}"), b"v").unwrap();
    }
    let mut standby = open(&standby_dir);
    let first = master.read_after(0, 1).unwrap();
    assert_eq!(
        standby.append_replicated(&first).unwrap().index,
        1,
        "one entry at least"
    );
    let rest = master.read_after(1, u64::MAX).unwrap();
    assert_eq!(standby.append_replicated(&rest).unwrap(), master.last());
    assert!(master.read_after(5, u64::MAX).unwrap().is_empty());
    assert_eq!(
        fs::read(standby_dir.path().join(LOG_FILE)).unwrap(),
        fs::read(master_dir.path().join(LOG_FILE)).unwrap()
    );
}

#[test]
fn read_after_stops_at_whole_entries_within_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir);
    for i in 0..4 {
        log.append(2, &format!("k{i}"), b"v").unwrap();
    }
    let one = log.read_after(0, 1).unwrap().len() as u64;
    assert_eq!(log.read_after(0, 2 * one).unwrap().len() as u64, 2 * one);
    assert_eq!(
        log.read_after(0, 2 * one + 1).unwrap().len() as u64,
        2 * one
    );
    assert_eq!(log.read_after(2, u64::MAX).unwrap().len() as u64, 2 * one);
}

#[test]
fn entries_that_do_not_follow_the_log_are_refused() {
    let (master_dir, standby_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut master = open(&master_dir);
    master.append(2, "a", b"1").unwrap();
    master.append(2, "b", b"2").unwrap();
    let mut standby = open(&standby_dir);
    let second = master.read_after(1, u64::MAX).unwrap();
    let err = standby.append_replicated(&second).unwrap_err();
    assert!(
        err.to_string().contains("entry 2 where 1 was expected"),
        "{err}"
    );
    assert_eq!(standby.last().index, 0);
    assert_eq!(file_len(&standby_dir), 0);
}

#[test]
fn run_start_finds_the_first_entry_of_an_epoch_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir);
    for epoch in [1, 1, 2, 2, 2, 5] {
        log.append(epoch, "k", b"v").unwrap();
    }
    assert_eq!(log.run_start(1), 1);
    assert_eq!(log.run_start(2), 1);
    assert_eq!(log.run_start(5), 3);
    assert_eq!(log.run_start(6), 6);
    assert_eq!(log.epoch_at(0), Some(0));
    assert_eq!(log.epoch_at(7), None);
}

#[test]
fn epoch_end_is_the_last_entry_of_an_epoch_at_or_below_a_bound() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir);
    for epoch in [2, 2, 3, 3, 3, 4] {
        log.append(epoch, "k", b"v").unwrap();
    }
    assert_eq!(log.epoch_end(3, 6), Some(5));
    assert_eq!(log.epoch_end(3, 4), Some(4));
    assert_eq!(log.epoch_end(2, 99), Some(2));
    assert_eq!(log.epoch_end(7, 6), None);
}
