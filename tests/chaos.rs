//! The chaos proof (issue 8): the replicated key/value example (deploy/examples/kv.yaml) under
//! random faults in the real local cluster. A client writes unique keys through the master
//! Service and records every acknowledged write; seeded schedules kill the master pod, the
//! standby pod, both pods, the operator and the agent, stall an agent past its lease, and bring
//! members back in random orders, including only one. After each schedule's quiet period every
//! acknowledged write must be on the master; at no instant may two pods carry the master label
//! (watch), nor two members acknowledge writes (the client's epochs, the applications' logs).
//! A wait (the member back first cannot prove it was last) is resolved by bringing the other
//! member back, never by a force-start.
//!
//! The same schedules that take both members down then run against the naive policy ("whoever
//! comes back first is master", here: force-start it), and its lost writes are counted: the
//! other schedules never leave the pair a choice, so both policies act alike there.
//!
//! - `HAPAIR_CHAOS_SEED=<n>` replays a run (the seed is printed first);
//! - `HAPAIR_CHAOS_SCHEDULES=<n>` sets the number of schedules (default 50);
//!   `HAPAIR_CHAOS_SOAK=1` runs 500.
//!
//! The members run `localhost/hapair:dev` (`.ci/run` builds it); `HAPAIR_TEST_IMAGE` overrides.

mod support;

#[path = "chaos/applog.rs"]
mod applog;
#[path = "chaos/harness.rs"]
mod harness;
#[path = "chaos/schedule.rs"]
mod schedule;
#[path = "chaos/writer.rs"]
mod writer;

use std::panic::AssertUnwindSafe;
use std::sync::OnceLock;
use std::time::Duration;

use futures::FutureExt;
use harness::{ChaosPair, Policy, Tally};
use schedule::{schedules, Schedule, KINDS};

/// The run's seed: `HAPAIR_CHAOS_SEED`, else drawn from the clock (and printed).
pub fn seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| match std::env::var("HAPAIR_CHAOS_SEED") {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("HAPAIR_CHAOS_SEED={text:?} is not a number")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    })
}

fn schedule_count() -> usize {
    if let Ok(text) = std::env::var("HAPAIR_CHAOS_SCHEDULES") {
        return text
            .parse()
            .unwrap_or_else(|_| panic!("HAPAIR_CHAOS_SCHEDULES={text:?} is not a number"));
    }
    if std::env::var("HAPAIR_CHAOS_SOAK").is_ok_and(|v| v == "1") {
        500
    } else {
        50
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_random_faults_no_acknowledged_write_is_lost_and_no_two_members_accept_writes() {
    let all = schedules(seed(), schedule_count());
    println!(
        "chaos: seed {} (replay: HAPAIR_CHAOS_SEED={}), {} schedules:",
        seed(),
        seed(),
        all.len()
    );
    for schedule in &all {
        println!("  {schedule}");
    }
    // Three pairs side by side, each with its own namespace, operator and client: the seed's
    // policy on every other schedule each, the naive policy on the full outages.
    let outages: Vec<Schedule> = all
        .iter()
        .filter(|s| s.has_full_outage())
        .cloned()
        .collect();
    let (even, odd): (Vec<Schedule>, Vec<Schedule>) =
        all.iter().cloned().partition(|s| s.number % 2 == 0);
    let (seed_even, seed_odd, naive_run) = tokio::join!(
        run(Policy::Seed, &even),
        run(Policy::Seed, &odd),
        run(Policy::Naive, &outages)
    );
    let seed_run = (seed_even.0.merge(seed_odd.0), seed_even.1.max(seed_odd.1));
    report(&seed_run, &naive_run);
    let seed_run = seed_run.0;

    assert!(
        seed_run.lost.is_empty(),
        "acknowledged writes lost: {:?}",
        seed_run.lost
    );
    assert!(
        seed_run.dual_label.is_empty(),
        "two pods labelled master: {:?}",
        seed_run.dual_label
    );
    assert!(
        seed_run.dual_epoch.is_empty(),
        "two members acknowledged (client): {:?}",
        seed_run.dual_epoch
    );
    assert!(
        seed_run.dual_log.is_empty(),
        "two members acknowledged (app logs): {:?}",
        seed_run.dual_log
    );
    // Each check above must have had something to check.
    assert!(
        seed_run.acked > 0 && seed_run.failovers.iter().any(|f| !f.is_empty()),
        "no write acknowledged or no failover measured"
    );
    assert!(
        seed_run.logged > 0,
        "no acknowledgement seen in the applications' logs"
    );
}

async fn run(policy: Policy, schedules: &[Schedule]) -> (Tally, Duration) {
    let started = std::time::Instant::now();
    let mut pair = ChaosPair::start(policy).await;
    for schedule in schedules {
        // A failure names its schedule and seed: the run's output may be cut to its last lines.
        if let Err(panic) = AssertUnwindSafe(pair.run(schedule)).catch_unwind().await {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            panic!(
                "chaos[{policy:?}] {schedule} failed (replay: HAPAIR_CHAOS_SEED={}): {why}",
                seed()
            );
        }
    }
    (pair.finish(), started.elapsed())
}

fn report(seed_run: &(Tally, Duration), naive: &(Tally, Duration)) {
    println!("\n== chaos report (seed {}) ==", seed());
    for (name, (run, time)) in [("seed policy", seed_run), ("naive policy", naive)] {
        println!(
            "{name}: {} schedules in {:.0}s; {} writes attempted, {} acknowledged, {} lost; \
             full outages that waited: {}, force-started: {}",
            run.schedules,
            time.as_secs_f64(),
            run.attempts,
            run.acked,
            run.lost.len(),
            run.waits,
            run.forced
        );
        let faults: Vec<String> = KINDS
            .iter()
            .zip(run.faults)
            .map(|(kind, n)| format!("{kind} {n}"))
            .collect();
        println!("  faults: {}", faults.join(", "));
        println!(
            "  dual-master instants: label watch {}, client epochs {}, app logs {} ({} \
             acknowledgements logged)",
            run.dual_label.len(),
            run.dual_epoch.len(),
            run.dual_log.len(),
            run.logged
        );
        for (kind, times) in KINDS.iter().zip(&run.failovers) {
            if times.is_empty() {
                continue;
            }
            let mut times = times.clone();
            times.sort();
            println!(
                "  {kind} → first write acknowledged in a new master epoch ({} times): \
                 p50 {} p99 {} max {}",
                times.len(),
                percentile(&times, 50),
                percentile(&times, 99),
                percentile(&times, 100)
            );
        }
        for skipped in &run.skipped {
            println!("  skipped: {skipped}");
        }
    }
}

fn percentile(sorted: &[Duration], p: usize) -> String {
    if sorted.is_empty() {
        return "-".into();
    }
    let i = ((sorted.len() * p).div_ceil(100)).clamp(1, sorted.len()) - 1;
    format!("{:.2}s", sorted[i].as_secs_f64())
}
