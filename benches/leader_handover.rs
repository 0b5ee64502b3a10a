//! Leader handover of `hapair operator --leader-elect`, against the real local cluster: two
//! replicas compete for one Lease; the leader is stopped and the time until the other holds the
//! Lease, and until it reports `hapair_leader 1` (acting), is measured.
//!
//! - SIGTERM: the leader releases the Lease; the candidate's watch sees it at once.
//! - SIGKILL: nothing is released; the candidate takes the Lease once it expired (15 s after the
//!   last renewal, renewed every 10 s). Each round first waits a random part of the renewal
//!   interval, so that the kill falls anywhere in the renewal cycle.
//!
//! `cargo bench --bench leader_handover` runs HAPAIR_BENCH_ROUNDS rounds of each (default 8).
//! Without `--bench` (as `cargo test --all-targets` runs it) one SIGTERM round checks the path.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use support::*;

const T: Duration = Duration::from_secs(60);
/// The renewal interval of `hapair operator` (Lease duration 15 s, renewed 5 s before expiry).
const RENEW_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq)]
enum Stop {
    Term,
    Kill,
}

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let rounds = if measuring { rounds() } else { 1 };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let ns = TestNamespace::new("bench-handover").await;
        let stops: &[Stop] = if measuring {
            &[Stop::Term, Stop::Kill]
        } else {
            &[Stop::Term]
        };
        for &stop in stops {
            let mut taken = Vec::new();
            let mut acting = Vec::new();
            for round in 0..rounds {
                let (lease, act) = handover(&ns, stop, round).await;
                taken.push(lease);
                acting.push(act);
            }
            report(stop, &mut taken, &mut acting);
        }
    });
}

fn rounds() -> usize {
    std::env::var("HAPAIR_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
}

/// One handover on a Lease of its own: (stop → Lease taken, stop → acting).
async fn handover(ns: &TestNamespace, stop: Stop, round: usize) -> (Duration, Duration) {
    let tag = if stop == Stop::Term { "term" } else { "kill" };
    let lease = format!("bench-{tag}-{round}");
    let (first, second) = (format!("{lease}-1"), format!("{lease}-2"));
    let mut leader = candidate(&ns.name, &first, &lease);
    let addr = leader.metrics_addr().await;
    poll_until("the first replica to lead", T, || async move {
        (leader_gauge(addr).await? == 1.0).then_some(())
    })
    .await;
    let mut next = candidate(&ns.name, &second, &lease);
    let next_addr = next.metrics_addr().await;
    wait_ready(next_addr, T).await;
    if stop == Stop::Kill {
        // A deliberate phase offset within the renewal cycle, not a synchronisation.
        tokio::time::sleep(random_below(RENEW_INTERVAL)).await;
    }
    let leases: Api<Lease> = ns.api();
    let stopped = Instant::now();
    match stop {
        Stop::Term => leader.terminate(T).await,
        Stop::Kill => leader.kill(),
    }
    let holder = second.clone();
    wait_for(&leases, &lease, move |l| lease_holder(l) == holder, T).await;
    let taken = stopped.elapsed();
    poll_until("the second replica to act", T, || async move {
        (leader_gauge(next_addr).await? == 1.0).then_some(())
    })
    .await;
    let acting = stopped.elapsed();
    next.kill();
    (taken, acting)
}

fn random_below(limit: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    limit.mul_f64(f64::from(nanos) / 1e9)
}

fn report(stop: Stop, taken: &mut [Duration], acting: &mut [Duration]) {
    let name = if stop == Stop::Term {
        "SIGTERM (Lease released)"
    } else {
        "SIGKILL (Lease expires)"
    };
    taken.sort();
    acting.sort();
    let s = |d: Duration| format!("{:.3}s", d.as_secs_f64());
    let p50 = |v: &[Duration]| v[v.len() / 2];
    println!(
        "leader handover after {name}, {} rounds: Lease taken p50 {} max {}; acting p50 {} min {} max {}",
        taken.len(),
        s(p50(taken)),
        s(taken[taken.len() - 1]),
        s(p50(acting)),
        s(acting[0]),
        s(acting[acting.len() - 1]),
    );
}
