//! `hapair operator` as a production process, against the real local cluster: its HTTP
//! endpoints (/metrics, /healthz, /readyz), leader election between two replicas (only the
//! holder of the Lease acts; when it is killed the other takes over and reconciles), and
//! settings that make it exit with status 2.
//!
//! Operators run locally as child processes, each limited to the test's namespace.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use hapair::crd::HAPair;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::SignedDuration;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};
use support::*;

const T: Duration = Duration::from_secs(120);
const LEASE: &str = "hapair-operator";

/// A pair that is reconciled (objects created, status written) but never acted on.
fn paused_pair(name: &str) -> HAPair {
    let mut pair = support::pair::busybox_pair(name);
    pair.spec.paused = true;
    pair
}

async fn reconciles(addr: SocketAddr, ns: &str, pair: &str) -> f64 {
    let series = format!(r#"hapair_reconciles_total{{namespace="{ns}",pair="{pair}"}}"#);
    let text = metrics_text(addr).await.unwrap_or_default();
    sample(&text, &series).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_metrics_health_and_readiness() {
    let ns = TestNamespace::new("ops-http").await;
    install_crd(&ns.client).await;
    let mut op = LocalProcess::start("operator", operator_command(&ns.name, &[]));
    let addr = op.metrics_addr().await;
    wait_ready(addr, T).await;
    assert_eq!(
        http_get(addr, "/healthz").await.unwrap(),
        (200, "ok\n".into())
    );
    let pairs: Api<HAPair> = ns.api();
    pairs
        .create(&PostParams::default(), &paused_pair("x"))
        .await
        .unwrap();
    // Reconciled: status written, and counted.
    wait_for(&pairs, "x", |p| p.status.is_some(), T).await;
    let text = poll_until("metrics of pair x", T, || async move {
        let text = metrics_text(addr).await?;
        text.contains(r#"hapair_member_state{"#).then_some(text)
    })
    .await;
    assert_eq!(sample(&text, "hapair_leader"), Some(1.0), "{text}");
    assert!(reconciles(addr, &ns.name, "x").await >= 1.0, "{text}");
    assert!(
        text.contains("hapair_reconcile_duration_seconds_count"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"), "not OpenMetrics:\n{text}");
    assert_eq!(http_get(addr, "/nowhere").await.map(|r| r.0), Some(404));
    assert!(op.is_running(), "{}", op.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_acts_and_the_other_takes_over_when_it_is_killed() {
    let ns = TestNamespace::new("ops-leader").await;
    install_crd(&ns.client).await;
    let mut ops = [
        candidate(&ns.name, "op-1", LEASE),
        candidate(&ns.name, "op-2", LEASE),
    ];
    let addrs = [ops[0].metrics_addr().await, ops[1].metrics_addr().await];
    for addr in addrs {
        wait_ready(addr, T).await; // candidates are ready too: they serve metrics
    }
    let leases: Api<Lease> = ns.api();
    let lease = wait_for(&leases, LEASE, |l| !lease_holder(l).is_empty(), T).await;
    let leader = ops
        .iter()
        .position(|o| o.name == lease_holder(&lease))
        .unwrap();
    let other = 1 - leader;
    let gauges = poll_until("one leader=1 and one leader=0", T, || async move {
        let g = [leader_gauge(addrs[0]).await?, leader_gauge(addrs[1]).await?];
        (g[leader] == 1.0 && g[other] == 0.0).then_some(g)
    })
    .await;
    println!("leader {}: gauges {gauges:?}", ops[leader].name);

    // Only the leader reconciles.
    let pairs: Api<HAPair> = ns.api();
    let pods: Api<Pod> = ns.api();
    pairs
        .create(&PostParams::default(), &paused_pair("x"))
        .await
        .unwrap();
    wait_for(&pairs, "x", |p| p.status.is_some(), T).await;
    let pod_a = wait_for(&pods, "x-a", |_| true, T).await;
    assert!(reconciles(addrs[leader], &ns.name, "x").await >= 1.0);
    assert_eq!(reconciles(addrs[other], &ns.name, "x").await, 0.0);

    // Kill the leader: the other takes the Lease, then acts (recreates a deleted member pod).
    ops[leader].kill();
    let killed = Instant::now();
    let (new_holder, other_name) = (ops[other].name.clone(), ops[other].name.clone());
    wait_for(&leases, LEASE, move |l| lease_holder(l) == new_holder, T).await;
    let handover = killed.elapsed();
    let addr = addrs[other];
    poll_until("the new leader's gauge", T, || async move {
        (leader_gauge(addr).await? == 1.0).then_some(())
    })
    .await;
    let acting = killed.elapsed();
    println!(
        "leader handover after SIGKILL: Lease taken by {other_name} after {:.2}s, acting after {:.2}s",
        handover.as_secs_f64(),
        acting.as_secs_f64()
    );
    pods.delete("x-a", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    let old_uid = pod_a.uid();
    wait_for(&pods, "x-a", move |p| p.uid() != old_uid, T).await;
    assert!(reconciles(addr, &ns.name, "x").await >= 1.0);
    assert!(ops[other].is_running(), "{}", ops[other].output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_leader_releases_the_lease_and_hands_over() {
    let ns = TestNamespace::new("ops-release").await;
    install_crd(&ns.client).await; // without it the controller cannot start, nor stop gracefully
    let mut first = candidate(&ns.name, "op-1", LEASE);
    let addr = first.metrics_addr().await;
    poll_until("op-1 to lead", T, || async move {
        (leader_gauge(addr).await? == 1.0).then_some(())
    })
    .await;
    let mut second = candidate(&ns.name, "op-2", LEASE);
    wait_ready(second.metrics_addr().await, T).await;
    let leases: Api<Lease> = ns.api();
    let held = leases.get(LEASE).await.unwrap();
    let renewed = held.spec.unwrap().renew_time.unwrap().0;
    first.terminate(Duration::from_secs(10)).await;
    let stopped = Instant::now();
    let taken = wait_for(&leases, LEASE, |l| lease_holder(l) == "op-2", T).await;
    println!(
        "leader handover after SIGTERM: {:.2}s",
        stopped.elapsed().as_secs_f64()
    );
    // Taken on release, not on expiry: before a renewal seen just before the stop ran out.
    let acquired = taken.spec.unwrap().acquire_time.unwrap().0;
    assert!(
        acquired < renewed + SignedDuration::from_secs(15),
        "op-2 acquired the Lease at {acquired}, op-1 had renewed it at {renewed}"
    );
    assert!(
        first.output().contains("released the Lease"),
        "{}",
        first.output()
    );
    assert!(second.is_running(), "{}", second.output());
}

/// Runs `hapair operator` with `flags` and no POD_NAMESPACE: its exit code and stderr.
fn bad_start(flags: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(hapair_bin())
        .arg("operator")
        .args(flags)
        .env_remove("POD_NAMESPACE")
        .env_remove("HAPAIR_LEADER_ELECT")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn bad_settings_exit_2_and_say_what_to_fix() {
    let (code, err) = bad_start(&["--leader-elect"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--leader-elect needs --leader-election-namespace"),
        "{err}"
    );
    let (code, err) = bad_start(&["--log-format", "xml"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("[possible values: text, json]"), "{err}");
    let (code, err) = bad_start(&["--metrics-addr", "8080"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("invalid value '8080' for '--metrics-addr"),
        "{err}"
    );
}
