//! Failures of a running pair against the real local cluster, one test per seed scenario: the
//! slave fails (4-2), the master's pod ends without being deleted (as on eviction), both fail and
//! come back (5-5), the master's application crashes inside its pod, the master is cut off from
//! the API server (partition: it fences itself before the peer is promoted), an agent container
//! restarts inside its pod, and the operator dies in the middle of a failover. The watchdog
//! asserts in every test that no two pods ever carry the master label at once.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use hapair::controller::resources::AGENT_CONTAINER;
use hapair::protocol::Member;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Service};
use support::pair::*;
use support::*;

/// Seed 4-2: the slave fails (graceful delete: its agent reports `X` on SIGTERM) → `(SM X)`, the
/// master writes priority 1; its pod is recreated at once. That pod is force-deleted before it
/// joined: the next re-creation backs off (a Warning says so), then the slave rejoins and the
/// pair is `(M SL)` again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slave_failure_leaves_a_single_master_with_priority_1_and_the_slave_rejoins() {
    let t = PairUnderTest::start("slave-fails").await;
    let master = t.steady().await;
    let slave = master.peer();
    let old_slave = t.pod(slave).await;
    delete_pod(&t.pods, &PairUnderTest::pod_name(slave)).await;
    t.wait_report(master, "state", "SM").await;
    assert_eq!(t.report(master, "priority").await, "1", "seed 4-2 writes 1");
    // Its recreated pod is lost again before it joined the pair: the next re-creation backs off.
    let slave_pod = PairUnderTest::pod_name(slave);
    let recreated = wait_for(
        &t.pods,
        &slave_pod,
        |p| p.metadata.uid != old_slave.metadata.uid,
        T,
    )
    .await;
    t.force_delete(slave).await;
    let held = t.wait_event("MemberPodBackOff").await;
    let note = held.note.unwrap_or_default();
    assert_eq!(held.type_.as_deref(), Some("Warning"), "{note}");
    assert!(
        note.contains(&format!(
            "member {slave}'s pod {slave_pod} was recreated 1 time(s)"
        )) && note.contains("again 1s after"),
        "the Warning says which member, why and how long: {note}"
    );
    let rejoined = t.wait_state(&[master_slave(master)]).await;
    let new_slave = t.pod(slave).await;
    assert_ne!(new_slave.metadata.uid, recreated.metadata.uid, "a new pod");
    assert!(
        t.events("MemberPodRecreated").await.len() >= 2,
        "each re-creation is a Normal Event"
    );
    let history: Vec<String> = rejoined
        .status
        .unwrap()
        .history
        .iter()
        .map(|h| h.to.to_string())
        .collect();
    let single = if master == Member::A {
        "(SM X)"
    } else {
        "(X SM)"
    };
    assert!(
        history.iter().any(|s| s == single),
        "history {history:?} passes {single}"
    );
    t.wait_role(master, ROLE_MASTER).await;
    t.finish();
}

/// A master pod that ended without being deleted (evicted, past its deadline): nothing of it runs
/// again, so its member is down for good unless the pod goes. The operator fails over (4-4),
/// deletes the ended pod with a Warning saying why it ended, and the member comes back in a new
/// pod as slave. The kubelet ends the pod for real: `activeDeadlineSeconds` is set on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_master_pod_fails_over_and_its_member_comes_back_in_a_new_pod() {
    let t = PairUnderTest::start("pod-ended").await;
    let master = t.steady().await;
    let old = t.pod(master).await;
    let deadline = serde_json::json!({"spec": {"activeDeadlineSeconds": 1}});
    t.pods
        .patch(
            &PairUnderTest::pod_name(master),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Strategic(&deadline),
        )
        .await
        .unwrap();
    let ended = t.wait_event("MemberPodEnded").await;
    let note = ended.note.unwrap_or_default();
    assert_eq!(ended.type_.as_deref(), Some("Warning"), "{note}");
    assert!(
        note.contains(&format!("member {master}'s pod x-{master} ended"))
            && note.contains("DeadlineExceeded"),
        "the Warning says which pod ended and the kubelet's reason: {note}"
    );
    t.wait_state(&[master_slave(master.peer())]).await;
    t.wait_role(master.peer(), ROLE_MASTER).await;
    let recreated = t.wait_role(master, "standby").await;
    assert_ne!(recreated.metadata.uid, old.metadata.uid, "a new pod");
    t.finish();
}

/// Seed 5-5: both pods of `(M SL)` are killed at once and both come back: the pair resumes on
/// the member that processed last (priority 2 beats 3), never on the other one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_killed_resume_on_the_last_processor() {
    let t = PairUnderTest::start("both-fail").await;
    let master = t.steady().await;
    let before = (t.pod(Member::A).await, t.pod(Member::B).await);
    tokio::join!(t.force_delete(Member::A), t.force_delete(Member::B));
    let resumed = t
        .wait_pair(|p| {
            pair_state(p) == master_slave(master)
                && p.status.as_ref().is_some_and(|s| {
                    s.members.a.pod_uid != before.0.metadata.uid
                        && s.members.b.pod_uid != before.1.metadata.uid
                })
        })
        .await;
    let status = resumed.status.unwrap();
    let last = status.history.last().unwrap();
    eprintln!("resumed: {} ({})", last.to, last.reason);
    t.wait_role(master, ROLE_MASTER).await;
    assert!(
        !pod_has_label(&t.pod(master.peer()).await, ROLE_LABEL, ROLE_MASTER),
        "the member that did not process last must not be master"
    );
    t.finish();
}

/// The master's application container crashes and the kubelet restarts it in the same pod: a
/// failure. The member is stopped (`X` acknowledged: the restarted application reads role `X`,
/// and the restart count in the status is taken anew only then) before anyone processes again;
/// the pair then resumes by the seed's rules, here on the member with the higher priority.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_application_crash_is_a_failure_fenced_before_anyone_processes_again() {
    let t = PairUnderTest::start("app-crash").await;
    let master = t.steady().await;
    let pod = t.pod(master).await;
    crash_container(&pod, "app");
    let handled = t
        .wait_pair(|p| {
            p.status
                .as_ref()
                .is_some_and(|s| s.members.get(master).app_restarts == Some(1))
        })
        .await;
    eprintln!("handled: {}", pair_state(&handled));
    let settled = t.wait_state(&["(M SL)", "(SL M)"]).await;
    let new_master = if pair_state(&settled) == "(M SL)" {
        Member::A
    } else {
        Member::B
    };
    t.wait_role(new_master, ROLE_MASTER).await;
    for m in Member::BOTH {
        let role = role_file(&t.pod(m).await).unwrap_or_default();
        let expected = if m == new_master { "M" } else { "SL" };
        assert_eq!(
            role.split_whitespace().next(),
            Some(expected),
            "x-{m}'s role file"
        );
    }
    assert_eq!(
        t.pod(master).await.metadata.uid,
        pod.metadata.uid,
        "same pod"
    );
    t.finish();
}

/// The agent container crashes and the kubelet restarts it in the same pod. A fresh agent starts
/// at `X` and never applies again what its pod applied; it reports that floor, so the operator
/// stops waiting for that command and commands the member anew. The standby's agent: the pair is
/// `(M SL)` again on the same master. The master's agent: its application is told `X` at once;
/// the standby takes over (4-4), or, when the operator sees the fresh agent's `X` before the
/// member counts as failed, figure 4 resumes on that member (both are the seed's). Either way
/// the member rejoins from the same pod and every role file matches the labels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_agent_restarted_is_commanded_anew_and_rejoins() {
    let t = PairUnderTest::start("agent-crash").await;
    let master = t.steady().await;
    for crashed in [master.peer(), master] {
        let acked: u64 = t.report(crashed, "ack").await.parse().unwrap();
        let pod = t.pod(crashed).await;
        crash_container(&pod, AGENT_CONTAINER);
        let name = PairUnderTest::pod_name(crashed);
        let restarted = |p: &Pod| restart_count(p, AGENT_CONTAINER) == 1;
        wait_for(&t.pods, &name, restarted, T).await;
        let commanded_anew = |l: &Lease| {
            let ack = lease_annotation(l, "ack").parse().unwrap_or(0);
            ack > acked && lease_annotation(l, "state") != "X"
        };
        wait_for(&t.leases, &name, commanded_anew, T).await;
        let settled = t.steady().await;
        if crashed != master {
            assert_eq!(settled, master, "a standby's agent restart moves no master");
        }
        let uid = t.pod(crashed).await.metadata.uid;
        assert_eq!(uid, pod.metadata.uid, "{name}: the same pod");
        for m in Member::BOTH {
            let expected = if m == settled { "M\n" } else { "SL\n" };
            let role = role_file(&t.pod(m).await);
            assert_eq!(role.as_deref(), Some(expected), "x-{m}'s role file");
        }
    }
    t.finish();
}

/// A partition: the master's pod cannot reach the API server (its traffic to the apiserver's
/// Service address is dropped inside the pod's network namespace). Its agent fences itself
/// (role `X`) before its lease expires, and only then is the standby promoted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_master_fences_itself_before_the_standby_is_promoted() {
    let t = PairUnderTest::start("partition").await;
    let master = t.steady().await;
    let standby = master.peer();
    let pod = t.pod(master).await;
    let cut = Partition::cut(&pod, &apiserver_address(&t).await);
    let t0 = Instant::now();
    t.wait_role(standby, ROLE_MASTER).await;
    let promoted_after = t0.elapsed();
    let role = role_file(&pod).expect("the partitioned pod still runs");
    assert_eq!(
        role.trim(),
        "X",
        "x-{master} must be fenced before x-{standby} is master"
    );
    assert!(
        promoted_after >= Duration::from_secs(LEASE_SECONDS - 1),
        "promoted after {promoted_after:?}: before the lease could expire"
    );
    eprintln!("partition: x-{standby} promoted {promoted_after:?} after the cut");
    drop(cut);
    t.wait_state(&[master_slave(standby)]).await;
    t.finish();
}

/// The operator is killed right after it wrote the promoting command during a failover; a new
/// operator (with no memory) completes the failover correctly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_killed_in_the_middle_of_a_failover_is_harmless() {
    let mut t = PairUnderTest::start("operator-killed").await;
    let master = t.steady().await;
    let standby = master.peer();
    t.force_delete(master).await;
    t.wait_pair(|p| {
        p.status
            .as_ref()
            .is_some_and(|s| s.members.get(master).state.to_string() == "X")
    })
    .await;
    wait_for(
        &t.leases,
        &PairUnderTest::pod_name(standby),
        |l| lease_annotation(l, "command").starts_with("SM/"),
        T,
    )
    .await;
    t.restart_operator();
    t.wait_role(standby, ROLE_MASTER).await;
    t.wait_state(&[master_slave(standby)]).await;
    assert_eq!(
        t.report(master, "priority").await,
        "3",
        "the old master rejoined as slave"
    );
    t.finish();
}

/// The role file of a running pod, read through its agent container's root on this machine.
fn role_file(pod: &Pod) -> Option<String> {
    let pid = container_pid(pod, "hapair-agent");
    std::fs::read_to_string(format!("/proc/{pid}/root/run/hapair/role")).ok()
}

/// The `kubernetes` Service's address: how pods reach the API server.
async fn apiserver_address(t: &PairUnderTest) -> String {
    let services: kube::Api<Service> = kube::Api::namespaced(t.ns.client.clone(), "default");
    let svc = services.get("kubernetes").await.unwrap();
    svc.spec
        .and_then(|s| s.cluster_ip)
        .expect("the kubernetes Service has an address")
}

/// Drops the pod's traffic to the API server's Service address, inside the pod's network
/// namespace; restored on drop.
struct Partition {
    pid: u32,
    rule: Vec<String>,
}

impl Partition {
    fn cut(pod: &Pod, apiserver: &str) -> Partition {
        let pid = container_pid(pod, "hapair-agent");
        let rule = ["OUTPUT", "-d", apiserver, "-j", "DROP"]
            .map(String::from)
            .to_vec();
        iptables(pid, "-I", &rule);
        Partition { pid, rule }
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        iptables(self.pid, "-D", &self.rule);
    }
}

fn iptables(pid: u32, op: &str, rule: &[String]) {
    let status = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "iptables", op])
        .args(rule)
        .status()
        .expect("nsenter");
    assert!(
        status.success(),
        "iptables {op} {rule:?} in the pod's network namespace"
    );
}
