//! Failover latency against the real local cluster (`deploy/local/cluster.sh up`, image built by
//! `deploy/local/images.sh`): a pair settles, then its master pod is force-deleted, again and
//! again. For each failover, from the watch of the pods and of the member Leases:
//!
//! - end to end: the delete call → the peer carries the master label;
//! - operator-added: the failed member's agent reported `X` (it stopped processing, on SIGTERM)
//!   or its pod disappeared, whichever the operator needed last → the peer labelled master.
//!   The operator promotes only once the failed member cannot process (DESIGN invariant 1), so
//!   the time the kubelet takes to stop it is not the operator's.
//!
//! `cargo bench --bench failover` runs HAPAIR_BENCH_FAILOVERS failovers (default 20) and prints
//! p50/p90/p99; without `--bench` (as `cargo test --all-targets` runs it) one failover, as a check.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, ResourceExt};
use support::pair::*;
use support::{pod_has_label, ROLE_LABEL, ROLE_MASTER};

/// When things were first seen, by the watches (key: what happened).
type Seen = Arc<Mutex<HashMap<String, Instant>>>;

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let failovers = if measuring { failovers() } else { 1 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let samples = runtime.block_on(run(failovers));
    report(&samples, measuring);
}

fn failovers() -> usize {
    std::env::var("HAPAIR_BENCH_FAILOVERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

struct Sample {
    end_to_end: Duration,
    operator: Duration,
}

async fn run(failovers: usize) -> Vec<Sample> {
    let t = PairUnderTest::start("bench-failover").await;
    let mut master = t.steady().await;
    let seen: Seen = Arc::default();
    let watches = tokio::spawn(watch_all(t.pods.clone(), t.leases.clone(), seen.clone()));
    let mut samples = Vec::new();
    for i in 0..failovers {
        let standby = master.peer();
        let old_uid = t.pod(master).await.uid().unwrap();
        seen.lock().unwrap().clear();
        let t0 = Instant::now();
        t.force_delete(master).await;
        t.wait_role(standby, ROLE_MASTER).await;
        let labelled = first(&seen, &format!("master x-{standby}"), t0).await;
        let stopped = [format!("X {old_uid}"), format!("gone {old_uid}")]
            .iter()
            .filter_map(|k| seen.lock().unwrap().get(k).copied())
            .min()
            .unwrap_or(t0);
        let sample = Sample {
            end_to_end: labelled - t0,
            operator: labelled.saturating_duration_since(stopped),
        };
        eprintln!(
            "failover {}: end to end {:?}, operator-added {:?}",
            i + 1,
            sample.end_to_end,
            sample.operator
        );
        samples.push(sample);
        t.wait_state(&[master_slave(standby)]).await;
        t.wait_role(master, "standby").await;
        master = standby;
    }
    watches.abort();
    t.finish();
    samples
}

/// Waits until the watches saw `key` (the label can reach the waiter before the watch task).
async fn first(seen: &Seen, key: &str, t0: Instant) -> Instant {
    for _ in 0..500 {
        if let Some(at) = seen.lock().unwrap().get(key) {
            return *at;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("{key} not seen by the watch; using the waiter's time");
    t0.max(Instant::now())
}

async fn watch_all(pods: Api<Pod>, leases: Api<Lease>, seen: Seen) {
    let note = |seen: &Seen, key: String| {
        seen.lock().unwrap().entry(key).or_insert_with(Instant::now);
    };
    let pods = watcher(pods, watcher::Config::default()).default_backoff();
    let leases = watcher(leases, watcher::Config::default()).default_backoff();
    let mut pods = pods.boxed();
    let mut leases = leases.boxed();
    loop {
        tokio::select! {
            Some(Ok(event)) = pods.next() => match event {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p)
                    if pod_has_label(&p, ROLE_LABEL, ROLE_MASTER) =>
                {
                    note(&seen, format!("master {}", p.name_any()));
                }
                watcher::Event::Delete(p) => note(&seen, format!("gone {}", p.uid().unwrap_or_default())),
                _ => {}
            },
            Some(Ok(event)) = leases.next() => {
                if let watcher::Event::Apply(l) | watcher::Event::InitApply(l) = event {
                    if lease_annotation(&l, "state") == "X" {
                        note(&seen, format!("X {}", lease_annotation(&l, "pod")));
                    }
                }
            }
        }
    }
}

fn report(samples: &[Sample], measuring: bool) {
    if !measuring {
        println!("failover: smoke run ok (1 failover); cargo bench --bench failover measures");
        return;
    }
    let stats = |name: &str, mut v: Vec<Duration>| {
        v.sort();
        let p = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        println!(
            "{name:>16}: p50 {:>8.1?}  p90 {:>8.1?}  p99 {:>8.1?}  max {:>8.1?}  (n={})",
            p(0.5),
            p(0.9),
            p(0.99),
            v[v.len() - 1],
            v.len()
        );
    };
    stats("end to end", samples.iter().map(|s| s.end_to_end).collect());
    stats(
        "operator-added",
        samples.iter().map(|s| s.operator).collect(),
    );
}
