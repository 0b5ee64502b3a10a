//! `hapair operator` against the real local cluster: a fresh pair comes up as `(M SL)` with
//! priorities `[2 3]` on the volumes, and when the master's pod is force-deleted the standby
//! takes over (labelled master, priority 1) without two masters at any instant; the recreated
//! x-a rejoins as the standby: `(SL M)`.
//!
//! The agent runs from `localhost/hapair:dev` (built by `deploy/local/images.sh`, which
//! `.ci/run` runs before the tests); the operator runs locally as a child process.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use hapair::crd::HAPair;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::Api;
use serde_json::json;
use support::*;

const T: Duration = Duration::from_secs(180);

fn pair(name: &str) -> HAPair {
    serde_json::from_value(json!({
        "apiVersion": "hapair.io/v1alpha1",
        "kind": "HAPair",
        "metadata": {"name": name},
        "spec": {
            "template": {"spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [{
                    "name": "app",
                    "image": BUSYBOX_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c", "while true; do sleep 1; done"],
                    "readinessProbe": {
                        "exec": {"command": ["test", "-f", "/run/hapair/role"]},
                        "periodSeconds": 1,
                    },
                }],
            }},
            "volumeClaimTemplate": {
                "storageClassName": STORAGE_CLASS,
                "resources": {"requests": {"storage": "1Gi"}},
            },
            "lease": {"durationSeconds": 6, "renewIntervalSeconds": 1, "fenceMarginSeconds": 2},
        },
    }))
    .unwrap()
}

fn pair_state(p: &HAPair) -> &str {
    p.status.as_ref().map_or("", |s| s.pair_state.as_str())
}

fn annotation<'a>(lease: &'a Lease, key: &str) -> &'a str {
    lease
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map_or("", String::as_str)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_pair_comes_up_the_standby_takes_over_when_the_master_pod_is_deleted_and_a_rejoins() {
    let ns = TestNamespace::new("operator").await;
    install_crd(&ns.client).await;
    let watchdog = Watchdog::start(ns.client.clone(), &ns.name).await;
    let mut cmd = Command::new(hapair_bin());
    cmd.args([
        "operator",
        "--namespace",
        &ns.name,
        "--agent-image",
        HAPAIR_IMAGE,
    ]);
    let operator = LocalProcess::start("operator", cmd);

    let pairs: Api<HAPair> = ns.api();
    let pods: Api<Pod> = ns.api();
    let leases: Api<Lease> = ns.api();
    pairs
        .create(&PostParams::default(), &pair("x"))
        .await
        .unwrap();

    // A fresh pair normally starts as (M SL) (a has the higher initial priority); if x-a's pod
    // could not be created at first (v1.20: its ServiceAccount's token not yet there), b alone
    // starts and the pair settles as (SL M). Either is correct; the test fails over the master.
    let p = wait_for(
        &pairs,
        "x",
        |p| matches!(pair_state(p), "(M SL)" | "(SL M)"),
        T,
    )
    .await;
    let (master, standby) = match pair_state(&p) {
        "(M SL)" => ("a", "b"),
        _ => ("b", "a"),
    };
    let (master_pod, standby_pod) = (format!("x-{master}"), format!("x-{standby}"));
    wait_for(
        &pods,
        &master_pod,
        |p| pod_has_label(p, ROLE_LABEL, ROLE_MASTER),
        T,
    )
    .await;
    let m = leases.get(&master_pod).await.unwrap();
    let s = leases.get(&standby_pod).await.unwrap();
    let priorities = [
        annotation(&m, "hapair.io/priority"),
        annotation(&s, "hapair.io/priority"),
    ];
    eprintln!("steady: {} with {master} master", pair_state(&p));
    assert_eq!(
        priorities,
        ["2", "3"],
        "priorities [master standby] on the volumes"
    );

    let t0 = Instant::now();
    force_delete_pod(&pods, &master_pod).await;
    wait_for(
        &pods,
        &standby_pod,
        |p| pod_has_label(p, ROLE_LABEL, ROLE_MASTER),
        T,
    )
    .await;
    let failover = t0.elapsed();
    eprintln!(
        "failover: pod {master_pod} deleted -> {standby_pod} labelled master in {failover:?}"
    );

    let s = leases.get(&standby_pod).await.unwrap();
    let (state, priority) = (
        annotation(&s, "hapair.io/state"),
        annotation(&s, "hapair.io/priority"),
    );
    match state {
        "SM" => assert_eq!(
            priority, "1",
            "the new master in SM writes priority 1 (seed 4-4)"
        ),
        "M" => assert_eq!(
            priority, "2",
            "the new master caught the recovered peer up: 2"
        ),
        other => panic!("{standby_pod} is labelled master but reports state {other}"),
    }
    // Recovery: the operator recreates the deleted pod; it rejoins as the standby (3-1-x).
    let t1 = Instant::now();
    let settled = if master == "a" { "(SL M)" } else { "(M SL)" };
    wait_for(&pairs, "x", |p| pair_state(p) == settled, T).await;
    wait_for(
        &pods,
        &master_pod,
        |p| pod_has_label(p, ROLE_LABEL, "standby"),
        T,
    )
    .await;
    eprintln!("recovery: {settled} {:?} after the failover", t1.elapsed());
    watchdog.assert_clean();
    drop(operator);
}
