//! When the pair cannot prove who processed last it waits, and only a person's force-start moves
//! it (seed figures 4 and 5), against the real local cluster. A member "down" here is a hung
//! node: its pod's containers frozen, so it neither renews its Lease nor comes back on its own.

mod support;

use hapair::crd::ConditionType;
use hapair::protocol::Member;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use support::pair::*;
use support::*;

async fn annotate_force_start(t: &PairUnderTest, value: &str) {
    let patch = json!({"metadata": {"annotations": {"hapair.io/force-start": value}}});
    t.pairs
        .patch("x", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

fn has_force_start(p: &hapair::crd::HAPair) -> bool {
    p.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("hapair.io/force-start"))
}

async fn no_master_label(t: &PairUnderTest) -> bool {
    let mut none = true;
    for m in Member::BOTH {
        none &= !pod_has_label(&t.pod(m).await, ROLE_LABEL, ROLE_MASTER);
    }
    none
}

/// From `(M SL)`: the slave hangs → `(SM X)` with priority 1 on the master; the master hangs too
/// → `(X X)`. Only the old slave (priority 3) comes back: it waits (`WaitingForPeer`), no label
/// anywhere. A force-start makes it single master with priority 1 in a newer term. When the old
/// master comes back its priority is 1 too: `[1 1]` is resolved by the term, and it becomes the
/// slave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_member_without_priority_1_waits_until_force_started_and_1_1_resolves_by_term() {
    let t = PairUnderTest::start("waiting").await;
    let first = t.steady().await;
    let second = first.peer();
    let second_hung = t.freeze(second).await;
    t.wait_report(first, "state", "SM").await;
    assert_eq!(t.report(first, "priority").await, "1");
    let first_term = t.report(first, "term").await;
    let first_hung = t.freeze(first).await;
    t.wait_state(&["(X X)"]).await;

    second_hung.thaw();
    let waiting = t
        .wait_pair(|p| PairUnderTest::condition(p, ConditionType::WaitingForPeer).0)
        .await;
    let (_, why) = PairUnderTest::condition(&waiting, ConditionType::WaitingForPeer);
    eprintln!("waiting: {why}");
    assert!(
        no_master_label(&t).await,
        "a waiting pair labels nobody master"
    );
    assert_eq!(t.report(second, "priority").await, "3");

    annotate_force_start(&t, second.as_str()).await;
    t.wait_role(second, ROLE_MASTER).await;
    t.wait_report(second, "priority", "1").await;
    let forced_term = t.report(second, "term").await;
    assert!(
        forced_term.parse::<u64>().unwrap() > first_term.parse::<u64>().unwrap(),
        "force-start writes a newer term: {forced_term} > {first_term}"
    );
    t.wait_pair(|p| !has_force_start(p)).await;
    t.wait_event("ForceStartFulfilled").await;

    first_hung.thaw();
    t.wait_state(&[master_slave(second)]).await;
    t.wait_role(first, "standby").await;
    assert_eq!(
        t.report(first, "priority").await,
        "3",
        "[1 1]: the older term yields"
    );
    t.finish();
}

/// Force-start requests that cannot be honoured (an unknown member; a pair that is running) are
/// removed with a Warning Event that says why, and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_force_start_is_refused_with_a_warning_and_changes_nothing() {
    let t = PairUnderTest::start("bad-force").await;
    let master = t.steady().await;
    for request in ["c", master.peer().as_str()] {
        let before = t.get().await.status.unwrap();
        annotate_force_start(&t, request).await;
        t.wait_pair(|p| !has_force_start(p)).await;
        let after = t.get().await.status.unwrap();
        assert_eq!(after.pair_state, before.pair_state, "force-start={request}");
        assert_eq!(after.priorities, before.priorities, "force-start={request}");
    }
    // Each refusal is published after its annotation is removed: wait for both.
    let invalid = t.wait_event("ForceStartInvalid").await;
    let refused = t.wait_event("ForceStartRefused").await;
    for (e, says) in [
        (&invalid, "'c', which is not a member"),
        (&refused, "the pair is running"),
    ] {
        let note = e.note.as_deref().unwrap_or("");
        eprintln!("{}: {note}", e.reason.as_deref().unwrap_or(""));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert!(note.contains(says), "{note}");
    }
    assert!(pod_has_label(&t.pod(master).await, ROLE_LABEL, ROLE_MASTER));
    t.finish();
}

/// A corrupt priority record on one member's volume: that member is never started
/// automatically, and the status says which file and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_record_is_never_started_and_the_status_names_the_file() {
    let t = PairUnderTest::start("corrupt").await;
    let master = t.steady().await;
    let standby = master.peer();
    let path = t.record_path(standby).await;
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    force_delete_pod(&t.pods, &PairUnderTest::pod_name(standby)).await;
    let p = t
        .wait_pair(|p| {
            p.status.as_ref().is_some_and(|s| {
                let r = s.members.get(standby).record.as_ref();
                r.is_some_and(|r| {
                    r.reason
                        .as_deref()
                        .is_some_and(|w| w.contains(".hapair/record"))
                })
            })
        })
        .await;
    let (degraded, message) = PairUnderTest::condition(&p, ConditionType::Degraded);
    eprintln!("degraded: {message}");
    assert!(degraded);
    assert!(
        message.contains(".hapair/record"),
        "the condition names the file: {message}"
    );
    assert!(!pod_has_label(&t.pod(standby).await, ROLE_LABEL, "standby"));
    assert_eq!(t.report(standby, "state").await, "X", "never started");
    t.wait_role(master, ROLE_MASTER).await;
    t.finish();
}
