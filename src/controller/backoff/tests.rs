use super::*;

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// A member whose pod was created at `t0` and seen, never joined.
fn created_at(t0: Instant) -> Backoff {
    let mut b = Backoff::default();
    assert_eq!(b.missing(t0), Verdict::Create { recreation: None });
    b.created(t0);
    b.observe(false, t0);
    b
}

/// Deletes and recreates the pod at `at` (which must be allowed), returning the re-creation count.
fn recreate(b: &mut Backoff, at: Instant) -> u32 {
    match b.missing(at) {
        Verdict::Create {
            recreation: Some(n),
        } => {
            b.created(at);
            n
        }
        other => panic!("expected a re-creation at once, got {other:?}"),
    }
}

fn wait(b: &mut Backoff, at: Instant) -> (Duration, Duration) {
    match b.missing(at) {
        Verdict::Wait {
            remaining, delay, ..
        } => (remaining, delay),
        other => panic!("expected a wait, got {other:?}"),
    }
}

#[test]
fn a_pod_never_seen_is_created_at_once_and_is_no_re_creation() {
    let mut b = Backoff::default();
    assert_eq!(
        b.missing(Instant::now()),
        Verdict::Create { recreation: None }
    );
}

#[test]
fn the_first_re_creation_is_immediate_even_right_after_the_creation() {
    let t0 = Instant::now();
    let mut b = created_at(t0);
    assert_eq!(recreate(&mut b, t0), 1);
}

#[test]
fn repeated_re_creations_wait_1_2_4_seconds_after_the_previous_creation() {
    let t0 = Instant::now();
    let mut b = created_at(t0);
    let mut at = t0;
    recreate(&mut b, at);
    for expected in [1.0, 2.0, 4.0, 8.0] {
        let (remaining, delay) = wait(&mut b, at + secs(0.25));
        assert_eq!(delay, secs(expected));
        assert_eq!(remaining, secs(expected - 0.25));
        at += secs(expected);
        recreate(&mut b, at);
    }
}

#[test]
fn the_wait_is_capped_at_60_seconds() {
    let t0 = Instant::now();
    let mut b = created_at(t0);
    let mut at = t0;
    for _ in 0..40 {
        at += MAX_DELAY;
        recreate(&mut b, at);
    }
    assert_eq!(wait(&mut b, at).1, MAX_DELAY);
}

#[test]
fn a_pod_that_lived_longer_than_the_wait_is_recreated_at_once_but_still_counted() {
    let t0 = Instant::now();
    let mut b = created_at(t0);
    recreate(&mut b, t0);
    assert_eq!(recreate(&mut b, t0 + secs(5.0)), 2, "1 s had passed");
    assert_eq!(wait(&mut b, t0 + secs(6.0)).1, secs(2.0));
}

#[test]
fn a_member_that_stayed_joined_resets_its_back_off() {
    let t0 = Instant::now();
    let mut b = created_at(t0);
    recreate(&mut b, t0);
    recreate(&mut b, t0 + secs(1.0));
    let joined = t0 + secs(3.0);
    b.observe(true, joined);
    let almost = joined + STABLE - secs(0.1);
    b.observe(true, almost);
    assert_eq!(recreate(&mut b.clone(), almost), 3, "not yet reset");
    b.observe(true, joined + STABLE);
    assert_eq!(recreate(&mut b, joined + STABLE), 1, "counted anew");
    assert_eq!(
        wait(&mut b, joined + STABLE).1,
        secs(1.0),
        "the next one waits"
    );
}

#[test]
fn leaving_the_pair_before_stable_restarts_the_stable_clock() {
    let t0 = Instant::now();
    let mut b = created_at(t0);
    recreate(&mut b, t0);
    b.observe(true, t0 + secs(0.5));
    b.observe(false, t0 + secs(1.5));
    b.observe(true, t0 + secs(2.0));
    b.observe(true, t0 + secs(3.5));
    assert_eq!(
        recreate(&mut b, t0 + secs(3.5)),
        2,
        "never joined 2 s in a row"
    );
}

#[test]
fn a_wait_is_reported_first_once_per_re_creation() {
    let t0 = Instant::now();
    let mut b = created_at(t0);
    recreate(&mut b, t0);
    let first = |v: Verdict| matches!(v, Verdict::Wait { first: true, .. });
    assert!(first(b.missing(t0)));
    assert!(!first(b.missing(t0 + secs(0.5))));
    recreate(&mut b, t0 + secs(1.0));
    assert!(first(b.missing(t0 + secs(1.0))));
}

#[test]
fn members_are_kept_apart() {
    let backoffs = Backoffs::default();
    let t0 = Instant::now();
    backoffs.with("uid/a", |b| b.created(t0));
    backoffs.with("uid/a", |b| b.created(t0));
    let verdict = |key: &str| backoffs.with(key, |b| b.missing(t0));
    assert!(matches!(verdict("uid/a"), Verdict::Wait { .. }));
    assert_eq!(verdict("uid/b"), Verdict::Create { recreation: None });
}
