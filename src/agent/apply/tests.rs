//! The apply logic against fakes that log every effect into one journal, so the order of
//! persist → role → ack is visible.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;
use crate::agent::acting::tests::FakeRole;
use crate::agent::acting::Acting;
use crate::agent::fence::FenceTimer;
use crate::protocol::{Priority, Term};
use crate::store::Record;

const ME: &str = "pod-a-1";
const PAIR: &str = "pair-uid";

type Journal = Arc<Mutex<Vec<String>>>;

struct FakeStore {
    journal: Journal,
    on_disk: Arc<Mutex<ReadOutcome>>,
    fail_writes: Arc<Mutex<bool>>,
}

impl RecordIo for FakeStore {
    fn read(&self) -> Result<ReadOutcome, StoreError> {
        Ok(self.on_disk.lock().unwrap().clone())
    }

    fn write(&self, standing: Standing) -> Result<(), StoreError> {
        if *self.fail_writes.lock().unwrap() {
            return Err(StoreError::Write {
                step: crate::store::WriteStep::CreateTemp,
                path: PathBuf::from("/vol/.hapair/record.tmp"),
                cause: io::Error::from(io::ErrorKind::ReadOnlyFilesystem),
            });
        }
        self.journal
            .lock()
            .unwrap()
            .push(format!("persist {}", standing));
        *self.on_disk.lock().unwrap() = ReadOutcome::Valid(Record {
            pair_uid: PAIR.into(),
            member: Member::A,
            standing,
            written_unix: 0,
        });
        Ok(())
    }
}

struct FakeReporter {
    journal: Journal,
    sent: Vec<Report>,
}

impl Reporter for FakeReporter {
    type Error = ();

    async fn report(&mut self, report: &Report) -> Result<(), ()> {
        let ack = report.ack.map_or("none".into(), |a| a.seq.to_string());
        self.journal
            .lock()
            .unwrap()
            .push(format!("report state={} ack={ack}", report.state));
        self.sent.push(report.clone());
        Ok(())
    }
}

struct Rig {
    applier: Applier<FakeStore, FakeRole>,
    reporter: FakeReporter,
    journal: Journal,
    on_disk: Arc<Mutex<ReadOutcome>>,
    fail_writes: Arc<Mutex<bool>>,
    role: FakeRole,
}

impl Rig {
    fn new(on_disk: ReadOutcome) -> Rig {
        Rig::build(on_disk, false)
    }

    fn with_role_handshake(on_disk: ReadOutcome) -> Rig {
        Rig::build(on_disk, true)
    }

    fn build(on_disk: ReadOutcome, handshake: bool) -> Rig {
        let journal = Journal::default();
        let role = FakeRole {
            journal: journal.clone(),
            ..FakeRole::default()
        };
        let timer = FenceTimer::new(Duration::from_secs(7), Instant::now());
        let acting = Acting::start(role.clone(), timer).unwrap();
        let shared = Shared::new(acting.with_role_handshake(handshake));
        journal.lock().unwrap().clear(); // forget the start's role X
        let on_disk = Arc::new(Mutex::new(on_disk));
        let fail_writes = Arc::new(Mutex::new(false));
        let store = FakeStore {
            journal: journal.clone(),
            on_disk: on_disk.clone(),
            fail_writes: fail_writes.clone(),
        };
        let view = on_disk.lock().unwrap().view();
        let applier = Applier::new(ME.into(), Member::A, store, view, shared);
        let reporter = FakeReporter {
            journal: journal.clone(),
            sent: Vec::new(),
        };
        Rig {
            applier,
            reporter,
            journal,
            on_disk,
            fail_writes,
            role,
        }
    }

    async fn step(&mut self, wire: &str, seq: u64, pod: &str) {
        let envelope = CommandEnvelope {
            command: wire.parse().unwrap(),
            seq,
            pod: pod.into(),
        };
        self.applier
            .step(Ok(Some(&envelope)), false, &mut self.reporter)
            .await
            .unwrap();
    }

    fn journal(&self) -> Vec<String> {
        std::mem::take(&mut *self.journal.lock().unwrap())
    }

    fn last_report(&self) -> &Report {
        self.reporter.sent.last().expect("a report was sent")
    }

    fn standing_on_disk(&self) -> Option<Standing> {
        match &*self.on_disk.lock().unwrap() {
            ReadOutcome::Valid(r) => Some(r.standing),
            _ => None,
        }
    }
}

fn valid(priority: Priority, term: u64) -> ReadOutcome {
    ReadOutcome::Valid(Record {
        pair_uid: PAIR.into(),
        member: Member::A,
        standing: Standing::new(priority, Term(term)),
        written_unix: 0,
    })
}

#[tokio::test]
async fn command_is_persisted_then_acted_then_acknowledged() {
    let mut rig = Rig::new(valid(Priority::Two, 0));
    rig.step("SM/1", 1, ME).await;
    assert_eq!(
        rig.journal(),
        ["persist 1@1", "role SM", "report state=SM ack=1"]
    );
    let report = rig.last_report();
    assert_eq!(
        report.record,
        RecordView::Valid(Standing::new(Priority::One, Term(1)))
    );
    assert_eq!(report.ack.unwrap().command.to_string(), "SM/1");
    assert_eq!(report.error, None);
}

#[tokio::test]
async fn failed_persist_is_never_acknowledged_and_leaves_the_role_unchanged() {
    let mut rig = Rig::new(valid(Priority::Two, 0));
    rig.step("SM/1", 1, ME).await;
    rig.journal();
    *rig.fail_writes.lock().unwrap() = true;
    rig.step("SL/1", 2, ME).await;
    assert_eq!(rig.journal(), ["report state=SM ack=1"]);
    let report = rig.last_report();
    assert_eq!(report.ack.unwrap().seq, 1);
    let error = report.error.as_deref().unwrap();
    assert!(
        error.contains("cannot persist SL/1") && error.contains("read-only"),
        "{error}"
    );
    assert_eq!(
        rig.standing_on_disk(),
        Some(Standing::new(Priority::One, Term(1)))
    );

    *rig.fail_writes.lock().unwrap() = false;
    rig.step("SL/1", 2, ME).await;
    assert_eq!(
        rig.journal(),
        ["persist 3@1", "role SL", "report state=SL ack=2"],
        "the same command is retried once the volume is writable"
    );
    assert_eq!(rig.last_report().error, None);
}

#[tokio::test]
async fn with_the_role_handshake_m_is_reported_only_after_the_application_replied() {
    let mut rig = Rig::with_role_handshake(valid(Priority::Two, 0));
    rig.step("SM/1", 1, ME).await;
    rig.journal();
    let m = "M/1/0b7e1c9a-0000-4000-8000-00000000000b.3";
    rig.step(m, 2, ME).await;
    assert!(rig.applier.awaiting_reply());
    assert_eq!(
        rig.journal(),
        [
            "persist 2@1",
            "clear applied",
            "role M",
            "report state=SM ack=1"
        ],
        "M written; the new record reported, the acknowledgement not"
    );
    assert_eq!(rig.last_report().ack.unwrap().seq, 1);
    rig.step(m, 2, ME).await;
    assert_eq!(rig.journal(), Vec::<String>::new(), "still no reply");
    *rig.role.applied.lock().unwrap() = Some("M\n".into());
    rig.step(m, 2, ME).await;
    assert_eq!(rig.journal(), ["report state=M ack=2"]);
    assert!(!rig.applier.awaiting_reply());
}

#[tokio::test]
async fn command_for_another_pod_or_an_old_seq_is_ignored() {
    let mut rig = Rig::new(valid(Priority::Two, 0));
    rig.step("SM/1", 5, "pod-a-0").await;
    assert_eq!(rig.journal(), ["report state=X ack=none"]);
    rig.step("SM/1", 5, ME).await;
    rig.journal();
    rig.step("SL/1", 4, ME).await;
    rig.step("SL/1", 5, ME).await;
    assert_eq!(
        rig.journal(),
        Vec::<String>::new(),
        "nothing written, nothing re-sent"
    );
    assert_eq!(rig.last_report().ack.unwrap().seq, 5);
}

#[tokio::test]
async fn init_writes_the_initial_priority_and_leaves_role_x() {
    let mut rig = Rig::new(ReadOutcome::Missing);
    rig.step("INIT/0", 1, ME).await;
    assert_eq!(
        rig.journal(),
        ["persist 2@0", "role X", "report state=X ack=1"]
    );
    assert_eq!(
        rig.standing_on_disk(),
        Some(Standing::new(Priority::Two, Term(0)))
    );
}

#[tokio::test]
async fn init_applied_again_by_a_restarted_agent_is_harmless_but_never_overwrites() {
    let mut rig = Rig::new(valid(Priority::Two, 0));
    rig.step("INIT/0", 1, ME).await;
    assert_eq!(rig.last_report().ack.unwrap().seq, 1);

    let mut rig = Rig::new(valid(Priority::One, 3));
    rig.step("INIT/0", 1, ME).await;
    assert_eq!(rig.journal(), ["report state=X ack=none"]);
    let error = rig.last_report().error.clone().unwrap();
    assert!(
        error.contains("already holds a record (priority 1, term 3)"),
        "{error}"
    );
    assert_eq!(
        rig.standing_on_disk(),
        Some(Standing::new(Priority::One, Term(3)))
    );
}

#[tokio::test]
async fn x_writes_nothing_to_the_record() {
    let mut rig = Rig::new(valid(Priority::One, 2));
    rig.step("SM/2", 1, ME).await;
    rig.journal();
    rig.step("X/2", 2, ME).await;
    assert_eq!(rig.journal(), ["role X", "report state=X ack=2"]);
    assert_eq!(
        rig.standing_on_disk(),
        Some(Standing::new(Priority::One, Term(2)))
    );
}

#[tokio::test]
async fn a_corrupt_record_is_overwritten_only_by_sm() {
    let corrupt = ReadOutcome::Corrupt {
        path: PathBuf::from("/vol/.hapair/record"),
        reason: "checksum mismatch".into(),
    };
    let mut rig = Rig::new(corrupt);
    rig.step("SL/3", 1, ME).await;
    assert_eq!(rig.journal(), ["report state=X ack=none"]);
    let report = rig.last_report();
    assert!(matches!(report.record, RecordView::Corrupt(_)));
    let error = report.error.as_deref().unwrap();
    assert!(
        error.contains("refused SL/3") && error.contains("checksum mismatch"),
        "{error}"
    );

    rig.step("SM/4", 2, ME).await;
    assert_eq!(
        rig.journal(),
        ["persist 1@4", "role SM", "report state=SM ack=2"]
    );
}

#[tokio::test]
async fn a_failed_role_write_is_not_acknowledged() {
    let mut rig = Rig::new(ReadOutcome::Missing);
    *rig.role.fail.lock().unwrap() = true;
    rig.step("SL/1", 1, ME).await;
    assert_eq!(rig.journal(), ["persist 3@1", "report state=X ack=none"]);
    let error = rig.last_report().error.clone().unwrap();
    assert!(error.contains("role file"), "{error}");
}

#[tokio::test]
async fn an_unchanged_report_is_sent_only_to_renew() {
    let mut rig = Rig::new(ReadOutcome::Missing);
    rig.applier
        .step(Ok(None), false, &mut rig.reporter)
        .await
        .unwrap();
    rig.applier
        .step(Ok(None), false, &mut rig.reporter)
        .await
        .unwrap();
    rig.applier
        .step(Ok(None), true, &mut rig.reporter)
        .await
        .unwrap();
    assert_eq!(
        rig.journal(),
        ["report state=X ack=none", "report state=X ack=none"]
    );
}

#[tokio::test]
async fn an_unreadable_command_is_reported_and_not_applied() {
    let mut rig = Rig::new(ReadOutcome::Missing);
    let err = MailboxError::Missing {
        key: crate::mailbox::COMMAND_SEQ,
        why: "test",
    };
    rig.applier
        .step(Err(&err), false, &mut rig.reporter)
        .await
        .unwrap();
    let error = rig.last_report().error.clone().unwrap();
    assert!(error.contains("hapair.io/command-seq"), "{error}");
}

#[tokio::test]
async fn a_terminating_agent_fences_and_reports_that_it_is_stopping() {
    let mut rig = Rig::new(ReadOutcome::Missing);
    rig.step("SM/1", 1, ME).await;
    rig.journal();
    assert!(!rig.applier.report().stopping);
    rig.applier.terminating();
    let report = rig.applier.report();
    assert_eq!(report.state, MemberState::X);
    assert!(report.stopping);
    assert!(report.fenced.unwrap().contains("SIGTERM"));
    assert_eq!(rig.journal(), ["role X"]);
}

#[tokio::test]
async fn losing_the_lease_fences_a_processing_member() {
    let mut rig = Rig::new(ReadOutcome::Missing);
    rig.step("SM/1", 1, ME).await;
    rig.journal();
    rig.applier.lost("pod-a-2");
    let report = rig.applier.report();
    assert_eq!(report.state, MemberState::X);
    assert!(report.fenced.unwrap().contains("pod-a-2"));
    assert_eq!(rig.journal(), ["role X"]);
}
