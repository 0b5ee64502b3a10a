//! `hapair operator` against the real local cluster, the seed's first transitions: a fresh pair
//! comes up `(SM SL)` → `(M SL)` with priorities `[2 3]` on the volumes; when the master's pod is
//! force-deleted the standby takes over (seed 4-4: labelled master, priority 1) without two
//! masters at any instant; the recreated member rejoins as the standby (3-1-x). The history
//! names each transition by its seed id. A spec change then replaces no pod: an Event names the
//! outdated pods and the order in which to delete them.
//!
//! The agent runs from `localhost/hapair:dev` (built by `deploy/local/images.sh`, which
//! `.ci/run` runs before the tests); the operator runs locally as a child process.

mod support;

use std::time::Instant;

use kube::api::{Patch, PatchParams};
use kube::ResourceExt;
use serde_json::json;
use support::pair::*;
use support::ROLE_MASTER;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_pair_comes_up_the_standby_takes_over_when_the_master_pod_is_deleted_and_a_rejoins() {
    let t = PairUnderTest::start("operator").await;
    let master = t.steady().await;
    let standby = master.peer();
    let priorities = [
        t.report(master, "priority").await,
        t.report(standby, "priority").await,
    ];
    eprintln!("steady: {} with {master} master", master_slave(master));
    assert_eq!(
        priorities,
        ["2", "3"],
        "priorities [master standby] on the volumes"
    );

    let t0 = Instant::now();
    t.force_delete(master).await;
    t.wait_role(standby, ROLE_MASTER).await;
    eprintln!(
        "failover: x-{master} deleted -> x-{standby} labelled master in {:?}",
        t0.elapsed()
    );
    let (state, priority) = (
        t.report(standby, "state").await,
        t.report(standby, "priority").await,
    );
    match state.as_str() {
        "SM" => assert_eq!(
            priority, "1",
            "the new master in SM writes priority 1 (seed 4-4)"
        ),
        "M" => assert_eq!(
            priority, "2",
            "the new master caught the recovered peer up: 2"
        ),
        other => panic!("x-{standby} is labelled master but reports state {other}"),
    }

    let t1 = Instant::now();
    let rejoined = t.wait_state(&[master_slave(standby)]).await;
    let ids: Vec<String> = rejoined
        .status
        .unwrap_or_default()
        .history
        .into_iter()
        .filter_map(|h| h.transition)
        .collect();
    let takeover = ids.iter().position(|id| id == "4-4");
    assert!(
        takeover.is_some_and(|i| ids[i..].iter().any(|id| id == "3-1-2")),
        "history names the takeover 4-4, then the rejoin 3-1-2: {ids:?}"
    );
    t.wait_role(master, "standby").await;
    eprintln!(
        "recovery: {} {:?} after the failover",
        master_slave(standby),
        t1.elapsed()
    );

    // A spec change is never applied by deleting pods: the user is told which and in what order.
    let uids = [t.pod(master).await.uid(), t.pod(standby).await.uid()];
    let patch = json!({"spec": {"agentImage": "localhost/hapair:next"}});
    t.pairs
        .patch("x", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let note = t
        .wait_event("MemberPodsOutdated")
        .await
        .note
        .unwrap_or_default();
    let first = note.find(&format!("kubectl delete pod x-{master}"));
    let then = note.find(&format!("kubectl delete pod x-{standby}"));
    assert!(
        first.is_some() && then.is_some() && first < then,
        "both pods are named, the standby (x-{master}) first: {note}"
    );
    let now = [t.pod(master).await.uid(), t.pod(standby).await.uid()];
    assert_eq!(now, uids, "no member pod was deleted");
    t.finish();
}
