//! Each change the operator observes on the way through a seed transition, named as SPEC.md's
//! table names that transition.

use super::*;
use crate::protocol::MemberState::{M, SL, SM, X};
use crate::protocol::{PerMember, Wait};

fn decision(to: (MemberState, MemberState), cause: Option<Transition>) -> Decision {
    Decision {
        pair_state: PerMember::new(to.0, to.1),
        steps: Vec::new(),
        wait: None,
        force_start: None,
        transition: cause,
    }
}

/// The ids of the changes through `states`, each decided with the cause given beside it.
fn ids(states: &[((MemberState, MemberState), Option<Transition>)]) -> Vec<Option<&'static str>> {
    let mut previous = None;
    states
        .windows(2)
        .map(|w| {
            let from = PerMember::new(w[0].0 .0, w[0].0 .1);
            let t = Transition::of_change(from, &decision(w[1].0, w[1].1), previous);
            previous = t;
            t.map(Transition::id)
        })
        .collect()
}

const MASTER_FAILED: Option<Transition> = Some(Transition::MasterFailed);
const SLAVE_FAILED: Option<Transition> = Some(Transition::SlaveFailed);
const SM_FAILED: Option<Transition> = Some(Transition::SingleMasterFailed);
const ADMIT: Option<Transition> = Some(Transition::PeerRecovered);
const PROMOTE: Option<Transition> = Some(Transition::PeerCaughtUp);

#[test]
fn master_fails_is_4_4_then_its_recovery_3_1_1_and_3_1_2() {
    let seen = ids(&[
        ((M, SL), None),
        ((X, SL), MASTER_FAILED),
        ((X, SM), ADMIT),
        ((SL, SM), PROMOTE),
        ((SL, M), None),
    ]);
    assert_eq!(
        seen,
        [Some("4-4"), Some("4-4"), Some("3-1-1"), Some("3-1-2")]
    );
}

#[test]
fn slave_fails_is_4_2_then_its_recovery_3_1_1_and_3_1_2() {
    let seen = ids(&[
        ((M, SL), None),
        ((M, X), SLAVE_FAILED),
        ((SM, X), None),
        ((SM, SL), PROMOTE),
        ((M, SL), None),
    ]);
    assert_eq!(
        seen,
        [Some("4-2"), Some("4-2"), Some("3-1-1"), Some("3-1-2")]
    );
}

#[test]
fn both_recover_a_higher_is_1_2_1_then_1_2_2() {
    let seen = ids(&[
        ((M, SL), None),
        ((X, X), None),
        ((SM, X), ADMIT),
        ((SM, SL), PROMOTE),
        ((M, SL), None),
    ]);
    assert_eq!(
        seen,
        [Some("5-5"), Some("1-2-1"), Some("1-2-1"), Some("1-2-2")]
    );
}

#[test]
fn both_recover_b_higher_is_1_1_1_then_1_1_2() {
    let seen = ids(&[
        ((SL, M), None),
        ((X, X), None),
        ((X, SM), ADMIT),
        ((SL, SM), None),
        ((SL, M), None),
    ]);
    assert_eq!(
        seen,
        [Some("5-5"), Some("1-1-1"), Some("1-1-1"), Some("1-1-2")]
    );
}

#[test]
fn single_master_fails_is_5_6_and_its_slave_stops_as_5_6() {
    let seen = ids(&[((SM, SL), None), ((X, SL), SM_FAILED), ((X, X), None)]);
    assert_eq!(seen, [Some("5-6"), Some("5-6")]);
    assert_eq!(ids(&[((SM, SL), None), ((X, X), None)]), [Some("5-6")]);
}

#[test]
fn slave_failing_during_a_takeover_is_both_failed_5_5() {
    let seen = ids(&[((M, SL), None), ((X, SL), MASTER_FAILED), ((X, X), None)]);
    assert_eq!(seen, [Some("4-4"), Some("5-5")]);
}

#[test]
fn slave_of_single_master_fails_is_5_7_lone_single_master_fails_5_8_and_resumes_2_2() {
    let seen = ids(&[
        ((SM, SL), None),
        ((SM, X), None),
        ((X, X), None),
        ((SM, X), None),
    ]);
    assert_eq!(seen, [Some("5-7"), Some("5-8"), Some("2-2")]);
}

#[test]
fn force_start_is_named_force_start() {
    let mut d = decision((SM, X), None);
    d.force_start = Some(ForceStartVerdict::Fulfilled(Member::A));
    d.wait = None;
    assert_eq!(
        Transition::of_change(PerMember::new(X, X), &d, Some(Transition::BothFailed)),
        Some(Transition::ForceStart)
    );
}

#[test]
fn a_failed_application_fenced_by_the_operator_is_no_seed_transition() {
    let fenced = decision((X, SL), None);
    assert_eq!(
        Transition::of_change(PerMember::new(M, SL), &fenced, None),
        None
    );
    let mut waiting = decision((X, X), None);
    waiting.wait = Some(Wait::WaitingForPeer("b".into()));
    assert_eq!(
        Transition::of_change(PerMember::new(X, X), &waiting, None),
        None
    );
}

#[test]
fn every_id_reads_back_and_nothing_else_does() {
    for t in Transition::ALL {
        assert_eq!(t.id().parse::<Transition>(), Ok(t));
    }
    let ids: Vec<&str> = Transition::ALL.iter().map(|t| t.id()).collect();
    for id in crate::protocol::SUMMARY
        .split_whitespace()
        .filter(|w| w.starts_with(['1', '2', '3', '4', '5']) && w.contains('-'))
    {
        assert!(ids.contains(&id.trim_end_matches(',')), "{id} has no name");
    }
    assert!("4-3".parse::<Transition>().is_err());
}
