//! One test per transition of the seed's figure 2 (ids 1-1-1 … 5-8), plus waiting, force-start
//! and the `[1 1]` case, driven through the model with the real decision function: the operator
//! observes, decides, commands; agents write the priority, act, acknowledge.

mod model;

use hapair::protocol::{
    decide, resume, ForceStartVerdict, Member, MemberState, MemberView, Observation, PerMember,
    Priority, RecordView, Resume, Standing, Term, Transition, Wait,
};
use model::{instance, World};
use MemberState::{M, SL, SM, X};

const A: Member = Member::A;
const B: Member = Member::B;

/// A fresh pair settled: initial priorities a=2, b=3, then `(SM SL)` and `(M SL)`.
fn running_pair() -> World {
    let w = World::fresh(0, 0).settle(decide);
    assert_eq!(w.pair_state(), (M, SL));
    assert_eq!(w.priorities(), (Some(2), Some(3)));
    w
}

/// The ground-truth pair states passed through while settling (consecutive duplicates removed).
fn states_while_settling(w: &World, recover: bool) -> (Vec<(MemberState, MemberState)>, World) {
    let mut seen = vec![w.pair_state()];
    let mut w = w.clone();
    while let Some(next) = w.progress(decide, recover) {
        w = next;
        if seen.last() != Some(&w.pair_state()) {
            seen.push(w.pair_state());
        }
    }
    (seen, w)
}

fn single_master_slave() -> World {
    let mut w = World::fresh(0, 0);
    w.catch_up_allowed = false;
    let w = w.settle(decide);
    assert_eq!(w.pair_state(), (SM, SL));
    assert_eq!(w.priorities(), (Some(1), Some(3)));
    w
}

/// The seed ids the operator records while `w` settles, observing after every step as the
/// controller does: each change of the observed pair state (starting from `before`'s), named by
/// `Transition::of_change` with the decision on the new state and the previous id.
fn ids_while_settling(before: &World, w: &World, recover: bool) -> (Vec<&'static str>, World) {
    let mut from = decide(&before.snapshot().obs).pair_state;
    let (mut seen, mut previous, mut w) = (Vec::new(), None, w.clone());
    for _ in 0..500 {
        let d = decide(&w.snapshot().obs);
        if d.pair_state != from {
            previous = Transition::of_change(from, &d, previous);
            seen.push(previous.map_or("-", Transition::id));
            from = d.pair_state;
        }
        match w.progress(decide, recover) {
            Some(next) => w = next,
            None => break,
        }
    }
    (seen, w)
}

fn wait_of(w: &World) -> Option<Wait> {
    decide(&w.snapshot().obs).wait
}

#[test]
fn fresh_pair_writes_initial_priorities_and_comes_up_single_master_then_master() {
    let (states, w) = states_while_settling(&World::fresh(0, 0), true);
    assert!(states.contains(&(SM, SL)), "passes (SM SL): {states:?}");
    assert_eq!(w.pair_state(), (M, SL));
    assert!(w.has_master());
}

#[test]
fn seed_1_2_1_and_1_2_2_both_recover_a_higher_becomes_single_master_then_master() {
    let w = running_pair().with_crash(A).with_crash(B);
    assert_eq!(w.pair_state(), (X, X));
    let (states, w) = states_while_settling(&w, true);
    assert!(states.contains(&(SM, SL)), "{states:?}");
    assert_eq!(w.pair_state(), (M, SL));
    assert_eq!(w.priorities(), (Some(2), Some(3)));
}

#[test]
fn seed_1_1_1_and_1_1_2_both_recover_b_higher_becomes_single_master_then_master() {
    let w = running_pair()
        .with_crash(A)
        .settle_without_recovery(decide)
        .settle(decide);
    assert_eq!(w.pair_state(), (SL, M));
    let w = w.with_crash(A).with_crash(B);
    let (states, w) = states_while_settling(&w, true);
    assert!(states.contains(&(SL, SM)), "{states:?}");
    assert_eq!(w.pair_state(), (SL, M));
    assert_eq!(w.priorities(), (Some(3), Some(2)));
}

#[test]
fn seed_2_2_only_a_recovers_with_priority_1_becomes_single_master() {
    let w = running_pair().with_crash(B).settle_without_recovery(decide);
    let w = w
        .with_crash(A)
        .with_recovery(A)
        .settle_without_recovery(decide);
    assert_eq!(w.pair_state(), (SM, X));
    assert_eq!(w.priorities(), (Some(1), Some(3)));
}

#[test]
fn only_a_recovers_without_priority_1_waits_for_peer_and_no_one_is_labelled() {
    let w = running_pair().with_crash(A).with_crash(B);
    let w = w.with_recovery(A).settle_without_recovery(decide);
    assert_eq!(w.pair_state(), (X, X));
    assert!(matches!(wait_of(&w), Some(Wait::WaitingForPeer(_))));
    assert!(w.labels.a.is_none() && w.labels.b.is_none());
    let w = w.settle(decide); // b comes back: figure 4 decides for a
    assert_eq!(w.pair_state(), (M, SL));
}

#[test]
fn seed_3_1_1_and_3_1_2_a_recovers_to_slave_of_single_master_b() {
    let w = running_pair().with_crash(A).settle_without_recovery(decide);
    assert_eq!(w.pair_state(), (X, SM));
    let (states, w) = states_while_settling(&w, true);
    assert!(states.contains(&(SL, SM)), "{states:?}");
    assert_eq!(w.pair_state(), (SL, M));
}

#[test]
fn seed_4_2_slave_fails_master_becomes_single_master_and_writes_1() {
    let w = running_pair().with_crash(B).settle_without_recovery(decide);
    assert_eq!(w.pair_state(), (SM, X));
    assert_eq!(w.priorities(), (Some(1), Some(3)));
}

#[test]
fn seed_4_4_master_fails_slave_takes_over_and_writes_1() {
    let w = running_pair().with_crash(A).settle_without_recovery(decide);
    assert_eq!(w.pair_state(), (X, SM));
    assert_eq!(w.priorities(), (Some(2), Some(1)));
    assert!(w.node(B).disk.unwrap().term > w.node(A).disk.unwrap().term);
}

#[test]
fn seed_5_5_both_fail_from_master_slave_and_resume_on_the_master() {
    let w = running_pair().with_crash(A).with_crash(B);
    assert_eq!(
        (w.pair_state(), w.priorities()),
        ((X, X), (Some(2), Some(3)))
    );
    assert_eq!(w.settle(decide).pair_state(), (M, SL));
}

#[test]
fn seed_5_6_single_master_fails_slave_cannot_take_over() {
    let w = single_master_slave()
        .with_crash(A)
        .settle_without_recovery(decide);
    assert_eq!(w.pair_state(), (X, X));
    assert_eq!(w.priorities(), (Some(1), Some(3)));
    assert!(matches!(wait_of(&w), Some(Wait::WaitingForPeer(_))));
}

#[test]
fn seed_5_7_slave_fails_from_single_master_slave() {
    let w = single_master_slave()
        .with_crash(B)
        .settle_without_recovery(decide);
    assert_eq!(w.pair_state(), (SM, X));
    assert_eq!(w.priorities(), (Some(1), Some(3)));
}

#[test]
fn seed_5_8_single_master_fails_and_resumes_alone_with_priority_1() {
    let w = running_pair().with_crash(B).settle_without_recovery(decide);
    let w = w.with_crash(A);
    assert_eq!(
        (w.pair_state(), w.priorities()),
        ((X, X), (Some(1), Some(3)))
    );
    let w = w.with_recovery(A).settle_without_recovery(decide);
    assert_eq!(w.pair_state(), (SM, X));
}

#[test]
fn force_start_makes_a_waiting_member_single_master_with_a_newer_term() {
    let w = running_pair().with_crash(A).with_crash(B);
    let w = w.with_recovery(B).settle_without_recovery(decide);
    assert!(matches!(wait_of(&w), Some(Wait::WaitingForPeer(_))));
    let w = w.with_force_start(B).settle_without_recovery(decide);
    assert_eq!(w.pair_state(), (X, SM));
    assert_eq!(w.priorities(), (Some(2), Some(1)));
    assert!(
        w.force.is_none(),
        "the annotation is removed once acknowledged"
    );
}

#[test]
fn force_start_while_the_pair_runs_is_refused_and_changes_nothing() {
    let w = running_pair().with_force_start(B);
    let d = decide(&w.snapshot().obs);
    assert!(matches!(d.force_start, Some(ForceStartVerdict::Refused(_))));
    assert!(d.steps.is_empty());
    let w = w.settle(decide);
    assert_eq!(w.pair_state(), (M, SL));
    assert!(w.force.is_none());
}

#[test]
fn priorities_1_1_after_force_start_resolve_to_the_higher_term() {
    // a alone as SM (1@t), fails; b force-started (1@t+1), fails: [1 1], b is newer.
    let w = running_pair()
        .with_crash(B)
        .settle_without_recovery(decide)
        .with_crash(A);
    let w = w
        .with_recovery(B)
        .settle_without_recovery(decide)
        .with_force_start(B);
    let w = w.settle_without_recovery(decide).with_crash(B);
    assert_eq!(w.priorities(), (Some(1), Some(1)));
    let w = w.settle(decide);
    assert_eq!(w.pair_state(), (SL, M));
}

fn up(record: Standing, inc: u8, m: Member) -> MemberView {
    MemberView::Up {
        instance: instance(m, inc, 0),
        record: RecordView::Valid(record),
        state: X,
        pending: None,
        app_failed: false,
        caught_up: false,
    }
}

#[test]
fn priorities_1_1_with_equal_terms_need_a_force_start() {
    let one = Standing::new(Priority::One, Term(4));
    let obs = Observation {
        members: PerMember::new(up(one, 1, A), up(one, 1, B)),
        roles: PerMember::default(),
        initialized: true,
        recorded_terms: PerMember::new(Term(4), Term(4)),
        force_start: None,
        lingering: PerMember::default(),
    };
    assert!(matches!(
        resume(&obs),
        Resume::Wait(Wait::NeedsForceStart(_))
    ));
    assert!(decide(&obs).steps.is_empty());
}

#[test]
fn lone_member_with_priority_1_waits_when_the_status_knows_a_newer_term() {
    let obs = Observation {
        members: PerMember::new(
            up(Standing::new(Priority::One, Term(3)), 1, A),
            MemberView::Down {
                last_acked: None,
                last_standing: None,
                in_doubt: None,
            },
        ),
        roles: PerMember::default(),
        initialized: true,
        recorded_terms: PerMember::new(Term(0), Term(5)),
        force_start: None,
        lingering: PerMember::default(),
    };
    assert!(matches!(
        resume(&obs),
        Resume::Wait(Wait::WaitingForPeer(_))
    ));
}

#[test]
fn master_application_crash_is_fenced_before_the_standby_is_promoted() {
    let w = running_pair().with_app_crash(A);
    let d = decide(&w.snapshot().obs);
    let first_command = d.steps.iter().find_map(|s| match s {
        hapair::protocol::Step::Command {
            member, command, ..
        } => Some((*member, *command)),
        _ => None,
    });
    assert_eq!(
        first_command.map(|(m, c)| (m, c.target_state())),
        Some((A, X))
    );
    let w = w.settle(decide);
    assert!(w.has_master());
    assert!(w.check().is_ok());
}

#[test]
fn corrupt_record_is_never_started_automatically() {
    let obs = Observation {
        members: PerMember::new(
            MemberView::Up {
                instance: instance(A, 1, 0),
                record: RecordView::Corrupt("/data/.hapair/record: checksum mismatch".into()),
                state: X,
                pending: None,
                app_failed: false,
                caught_up: false,
            },
            up(Standing::new(Priority::Three, Term(2)), 1, B),
        ),
        roles: PerMember::default(),
        initialized: true,
        recorded_terms: PerMember::new(Term(0), Term(2)),
        force_start: None,
        lingering: PerMember::default(),
    };
    let d = decide(&obs);
    assert!(matches!(d.wait, Some(Wait::NeedsForceStart(ref r)) if r.contains("priority 3")));
    assert!(d.steps.is_empty());
}

#[test]
fn a_running_pair_settles_with_nothing_left_to_do() {
    let mut w = World::fresh(0, 0);
    let mut steps = 0;
    while let Some(next) = w.progress(decide, true) {
        w = next;
        steps += 1;
        assert!(
            steps < 100,
            "never settles: {:?} {:?}",
            w.pair_state(),
            decide(&w.snapshot().obs).steps
        );
    }
}

#[test]
fn nobody_is_promoted_while_a_failed_masters_instance_may_linger() {
    let w = running_pair().with_crash(A);
    let mut obs = w.snapshot().obs;
    let free = decide(&obs);
    assert!(
        free.steps.iter().any(promotes),
        "without lingering, b is promoted: {free:?}"
    );
    obs.lingering = PerMember::new(true, false);
    let held = decide(&obs);
    assert!(!held.steps.iter().any(promotes), "{held:?}");
    assert_eq!(held.wait, Some(Wait::Lingering(A)));
    assert_eq!(
        held.steps[..],
        free.steps[..held.steps.len()],
        "a prefix of the same steps"
    );
}

fn promotes(step: &hapair::protocol::Step) -> bool {
    match step {
        hapair::protocol::Step::Command { command, .. } => command.may_process(),
        hapair::protocol::Step::Label { role, .. } => *role == Some(hapair::protocol::Role::Master),
    }
}

#[test]
fn seed_ids_of_a_running_pair_failing_and_recovering_match_the_seed_table() {
    let pair = running_pair();
    let (ids, taken_over) = ids_while_settling(&pair, &pair.with_crash(A), false);
    assert_eq!(ids, ["4-4", "4-4"], "master fails: (X SL), then (X SM)");
    let (ids, _) = ids_while_settling(&taken_over, &taken_over, true);
    assert_eq!(ids, ["3-1-1", "3-1-2"], "a recovers: (SL SM), then (SL M)");

    let (ids, single) = ids_while_settling(&pair, &pair.with_crash(B), false);
    assert_eq!(ids, ["4-2", "4-2"], "slave fails: (M X), then (SM X)");
    let (ids, _) = ids_while_settling(&single, &single, true);
    assert_eq!(ids, ["3-1-1", "3-1-2"], "b recovers: (SM SL), then (M SL)");

    let crashed = pair.with_crash(A).with_crash(B);
    let (ids, _) = ids_while_settling(&pair, &crashed, true);
    assert_eq!(
        ids,
        ["5-5", "1-2-1", "1-2-1", "1-2-2"],
        "both fail, a higher"
    );
}

#[test]
fn seed_ids_of_a_fresh_pair_and_of_b_resuming_match_the_seed_table() {
    let fresh = World::fresh(0, 0);
    let (ids, _) = ids_while_settling(&fresh, &fresh, true);
    assert_eq!(ids, ["1-2-1", "1-2-1", "1-2-2"], "a=2 beats b=3");

    let b_master = running_pair()
        .with_crash(A)
        .settle_without_recovery(decide)
        .settle(decide);
    assert_eq!(b_master.pair_state(), (SL, M));
    let crashed = b_master.with_crash(A).with_crash(B);
    let (ids, _) = ids_while_settling(&b_master, &crashed, true);
    assert_eq!(
        ids,
        ["5-5", "1-1-1", "1-1-1", "1-1-2"],
        "both fail, b higher"
    );
}

#[test]
fn seed_ids_of_a_single_master_pair_failing_match_the_seed_table() {
    let sm_sl = single_master_slave();
    let (ids, _) = ids_while_settling(&sm_sl, &sm_sl.with_crash(A), false);
    assert_eq!(
        ids,
        ["5-6", "5-6"],
        "single master fails: (X SL), b stopped"
    );
    let (ids, alone) = ids_while_settling(&sm_sl, &sm_sl.with_crash(B), false);
    assert_eq!(ids, ["5-7"]);
    let (ids, down) = ids_while_settling(&alone, &alone.with_crash(A), false);
    assert_eq!(ids, ["5-8"]);
    let (ids, _) = ids_while_settling(&down, &down.with_recovery(A), false);
    assert_eq!(ids, ["2-2"], "a alone with priority 1");
}

#[test]
fn seed_id_of_a_force_start_is_force_start() {
    let down = running_pair().with_crash(A).with_crash(B);
    let waiting = down.with_recovery(B).settle_without_recovery(decide);
    let (ids, w) = ids_while_settling(&waiting, &waiting.with_force_start(B), false);
    assert_eq!(ids, ["force-start"]);
    assert_eq!(w.pair_state(), (X, SM));
}
