use super::*;
use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;

const D: Duration = Duration::from_secs(10);

fn lease(holder: &str, renewed: i64, transitions: i32) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some("x-a".into()),
            namespace: Some("ns".into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }),
    }
}

fn at(t0: Instant, secs: u64) -> Instant {
    t0 + Duration::from_secs(secs)
}

#[test]
fn a_lease_not_renewed_for_the_duration_is_stale_and_a_renewal_refreshes_it() {
    let live = Liveness::default();
    let t0 = Instant::now();
    assert!(live.observe(&lease("p1", 1, 0), false, D, t0).fresh);
    assert!(live.observe(&lease("p1", 1, 0), false, D, at(t0, 9)).fresh);
    assert!(!live.observe(&lease("p1", 1, 0), false, D, at(t0, 10)).fresh);
    assert!(live.observe(&lease("p1", 2, 0), false, D, at(t0, 11)).fresh);
}

#[test]
fn a_former_holder_that_may_process_counts_until_its_last_renewal_expires() {
    let live = Liveness::default();
    let t0 = Instant::now();
    live.observe(&lease("old", 1, 0), true, D, t0);
    live.observe(&lease("old", 2, 0), true, D, at(t0, 3));
    let clock = live.observe(&lease("new", 3, 1), false, D, at(t0, 4));
    assert!(clock.fresh);
    assert!(clock.former_holder_may_process);
    let later = live.observe(&lease("new", 4, 1), false, D, at(t0, 12));
    assert!(
        later.former_holder_may_process,
        "old renewed at 3 s: until 13 s"
    );
    let expired = live.observe(&lease("new", 5, 1), false, D, at(t0, 13));
    assert!(!expired.former_holder_may_process);
}

#[test]
fn a_former_holder_that_reported_it_stopped_does_not_count() {
    let live = Liveness::default();
    let t0 = Instant::now();
    live.observe(&lease("old", 1, 0), true, D, t0);
    live.observe(&lease("old", 2, 0), false, D, at(t0, 1));
    let clock = live.observe(&lease("new", 3, 1), false, D, at(t0, 2));
    assert!(!clock.former_holder_may_process);
}

#[test]
fn a_quick_second_replacement_keeps_the_holder_that_may_still_process() {
    let live = Liveness::default();
    let t0 = Instant::now();
    live.observe(&lease("p1", 1, 0), true, D, t0);
    live.observe(&lease("p2", 2, 1), false, D, at(t0, 1));
    let clock = live.observe(&lease("p3", 3, 2), false, D, at(t0, 2));
    assert!(clock.former_holder_may_process, "p1 may process until 10 s");
}

#[test]
fn after_an_operator_start_a_lease_that_changed_holder_has_an_unknown_former_holder() {
    let t0 = Instant::now();
    let fresh_start = Liveness::default();
    assert!(
        fresh_start
            .observe(&lease("p2", 1, 1), false, D, t0)
            .former_holder_may_process
    );
    assert!(
        !fresh_start
            .observe(&lease("p2", 1, 1), false, D, at(t0, 10))
            .former_holder_may_process
    );
    let never_replaced = Liveness::default();
    assert!(
        !never_replaced
            .observe(&lease("p1", 1, 0), false, D, t0)
            .former_holder_may_process
    );
}
