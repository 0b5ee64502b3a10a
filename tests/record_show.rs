//! `hapair record show`: what it prints, its exit codes, and that it never writes.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use hapair::protocol::{Member, Priority, Standing, Term};
use hapair::store::{RecordStore, RECORD_DIR};

const PAIR: &str = "0b8e6a52-5c1e-4d7e-9f3a-2f6c1d0e9a11";

fn show(volume: &Path, extra: &[&str]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_hapair"))
        .args(["record", "show"])
        .arg(volume)
        .args(extra)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (status.code().unwrap(), text(stdout), text(stderr))
}

fn volume_with_record() -> (tempfile::TempDir, RecordStore) {
    let volume = tempfile::tempdir().unwrap();
    let store = RecordStore::new(volume.path().to_path_buf(), PAIR, Member::B);
    store
        .write(Standing::new(Priority::Three, Term(7)))
        .unwrap();
    (volume, store)
}

#[test]
fn valid_record_prints_member_priority_term_pair_and_time_and_exits_0() {
    let (volume, _) = volume_with_record();
    let (code, out, _) = show(volume.path(), &[]);
    assert_eq!(code, 0, "{out}");
    for line in [
        "member    b",
        "priority  3",
        "term      7",
        PAIR,
        "informational",
    ] {
        assert!(out.contains(line), "{line:?} missing from:\n{out}");
    }
}

#[test]
fn expected_pair_and_member_that_match_exit_0() {
    let (volume, _) = volume_with_record();
    let (code, out, _) = show(volume.path(), &["--pair-uid", PAIR, "--member", "b"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn fresh_volume_exits_3_and_nothing_is_created() {
    let volume = tempfile::tempdir().unwrap();
    let (code, out, _) = show(volume.path(), &[]);
    assert_eq!(code, 3, "{out}");
    assert!(out.starts_with("missing:"), "{out}");
    assert!(
        !volume.path().join(RECORD_DIR).exists(),
        "show created the record directory"
    );
}

#[test]
fn corrupt_record_exits_4_with_the_file_and_the_reason_and_is_left_untouched() {
    let (volume, store) = volume_with_record();
    let mut bytes = fs::read(store.record_path()).unwrap();
    bytes[30] ^= 0x01;
    fs::write(store.record_path(), &bytes).unwrap();
    let (code, out, _) = show(volume.path(), &[]);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains("/.hapair/record") && out.contains("checksum mismatch"),
        "{out}"
    );
    assert_eq!(fs::read(store.record_path()).unwrap(), bytes);
}

#[test]
fn record_of_another_pair_or_member_exits_5_naming_what_differs() {
    let (volume, _) = volume_with_record();
    let (code, out, _) = show(volume.path(), &["--pair-uid", "other-pair"]);
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("other-pair") && out.contains(PAIR), "{out}");
    let (code, out, _) = show(volume.path(), &["--member", "a"]);
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("member b's, expected member a's"), "{out}");
}

#[test]
fn volume_path_that_does_not_exist_exits_1_with_the_path_named() {
    let volume = tempfile::tempdir().unwrap();
    let gone = volume.path().join("not-mounted");
    let (code, _, err) = show(&gone, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("not-mounted") && err.contains("does not exist"),
        "{err}"
    );
}

#[test]
fn bad_member_argument_is_a_usage_error() {
    let volume = tempfile::tempdir().unwrap();
    let (code, _, err) = show(volume.path(), &["--member", "c"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("use 'a' or 'b'"), "{err}");
}

#[test]
fn help_documents_every_exit_code() {
    let out = Command::new(env!("CARGO_BIN_EXE_hapair"))
        .args(["record", "show", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for code in [
        "0  a valid",
        "1  the volume",
        "3  no record",
        "4  corrupt",
        "5  a valid",
    ] {
        assert!(help.contains(code), "{code:?} missing from:\n{help}");
    }
}
