//! The `HAPair` status computed from one observation and its decision: the summary columns,
//! each member, the conditions, the bounded history, and the cache the protocol reads back
//! (`initialized`, `recordedTerms`). Written before any step is carried out, so a later decision
//! cannot forget a member's claim to have processed (DESIGN invariant 4).
//!
//! This module is pure: the caller passes the time and writes the result.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::crd::{
    ConditionStatus, ConditionType, HAPairStatus, HistoryEntry, MemberStatus, NewCondition,
    RecordStatus,
};
use crate::protocol::{
    Decision, Member, MemberState, MemberView, Observation, PerMember, Transition, Wait,
};

use super::observe;

/// What the operator itself holds back, beside the decision.
#[derive(Debug, Clone, Default)]
pub struct Held {
    /// `spec.paused` or the annotation: nothing is changed.
    pub paused: bool,
    /// Why a missing member pod is not recreated yet (its re-creation back-off), if one is not.
    pub pod_backoff: Option<String>,
}

/// The new status, and the history entry when the pair state changed.
pub fn next_status(
    old: &HAPairStatus,
    obs: &Observation,
    decision: &Decision,
    pods: PerMember<Option<&Pod>>,
    generation: Option<i64>,
    held: &Held,
    now: Time,
) -> (HAPairStatus, Option<HistoryEntry>) {
    let mut status = old.clone();
    for m in Member::BOTH {
        let previous = old.members.get(m);
        *status.members.get_mut(m) = member_status(previous, obs.member(m), *pods.get(m), &now);
    }
    status.summarize();
    status.initialized = old.initialized
        || Member::BOTH
            .iter()
            .any(|m| obs.member(*m).known_standing().is_some());
    status.recorded_terms = obs.processing_terms().into();
    status.observed_generation = generation;
    set_conditions(&mut status, decision, held, generation, now.clone());
    let changed = old.pair_state != status.pair_state;
    let entry = changed.then(|| HistoryEntry {
        time: now,
        from: old.pair_state(),
        to: decision.pair_state,
        transition: transition(old, decision).map(|t| t.id().to_string()),
        reason: why(decision),
    });
    if let Some(entry) = &entry {
        status.push_history(entry.clone());
    }
    (status, entry)
}

/// The seed transition of the change to `decision.pair_state`, named with the previous entry's.
fn transition(old: &HAPairStatus, decision: &Decision) -> Option<Transition> {
    let previous = old
        .history
        .last()
        .and_then(|e| e.transition.as_deref())
        .and_then(|id| id.parse().ok());
    Transition::of_change(old.pair_state(), decision, previous)
}

fn why(decision: &Decision) -> String {
    if let Some(wait) = &decision.wait {
        return wait.reason();
    }
    let reasons: Vec<&str> = decision
        .steps
        .iter()
        .filter_map(|s| match s {
            crate::protocol::Step::Command { why, .. } => Some(why.as_str()),
            _ => None,
        })
        .collect();
    reasons.join("; ")
}

fn member_status(
    previous: &MemberStatus,
    view: &MemberView,
    pod: Option<&Pod>,
    now: &Time,
) -> MemberStatus {
    let standing = view.known_standing();
    let (record, ready) = match view {
        MemberView::Up {
            record, caught_up, ..
        } => (Some(RecordStatus::from(record)), *caught_up),
        MemberView::Down { .. } => (previous.record.clone(), false),
    };
    let state = view.state();
    let last_transition_time = if previous.state == state {
        previous.last_transition_time.clone()
    } else {
        Some(now.clone())
    };
    let pod_uid = pod.and_then(|p| p.uid());
    MemberStatus {
        state,
        priority: standing.map(|s| s.priority).or(previous.priority),
        term: standing.map(|s| s.term).or(previous.term),
        pod: pod.map(|p| p.name_any()),
        app_restarts: restart_baseline(previous, view, pod, &pod_uid),
        pod_uid,
        ready,
        last_transition_time,
        record,
    }
}

/// The application restarts a later restart is compared with: taken anew whenever the member
/// is `X` (a failure was handled, or nothing was started yet) or its pod is new; kept while
/// the member is in any other state, so a crash and restart in between is seen.
fn restart_baseline(
    previous: &MemberStatus,
    view: &MemberView,
    pod: Option<&Pod>,
    pod_uid: &Option<String>,
) -> Option<i32> {
    let keep = view.state() != MemberState::X && previous.pod_uid == *pod_uid;
    match (keep, previous.app_restarts) {
        (true, Some(baseline)) => Some(baseline),
        _ => pod.map(|p| observe::app_restarts(Some(p))),
    }
}

/// Members whose record cannot be trusted, with the file and the reason.
fn unusable_records(status: &HAPairStatus) -> String {
    let problems: Vec<String> = Member::BOTH
        .into_iter()
        .filter_map(|m| {
            let record = status.members.get(m).record.as_ref()?;
            let why = record.reason.as_ref()?;
            Some(format!(
                "member {m}'s record cannot be used ({why}); it is never started automatically \
                 (force-start it only if you know its data is the latest)"
            ))
        })
        .collect();
    problems.join("; ")
}

fn set_conditions(
    status: &mut HAPairStatus,
    decision: &Decision,
    held: &Held,
    generation: Option<i64>,
    now: Time,
) {
    let paused = held.paused;
    let pair = decision.pair_state;
    let available = pair.processor().is_some();
    let healthy = available
        && !pair.a.eq(&pair.b)
        && Member::BOTH.iter().all(|m| {
            use crate::protocol::MemberState::*;
            matches!(pair.get(*m), M | SL)
        });
    let (waiting_peer, needs_force) = match &decision.wait {
        Some(Wait::WaitingForPeer(r)) => (Some(r.clone()), None),
        Some(Wait::NeedsForceStart(r)) => (None, Some(r.clone())),
        _ => (None, None),
    };
    let unusable = unusable_records(status);
    let mut set = |type_, on: bool, reason: &str, message: &str| {
        let status_value = if on {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        };
        status.set_condition(
            NewCondition {
                type_,
                status: status_value,
                reason,
                message,
                observed_generation: generation,
            },
            now.clone(),
        );
    };
    let pair_text = pair.to_string();
    let available_reason = if available {
        "MemberProcessing"
    } else {
        "NoMemberProcessing"
    };
    set(
        ConditionType::Available,
        available,
        available_reason,
        &pair_text,
    );
    let (degraded_reason, degraded_message) = match &decision.wait {
        Some(wait @ Wait::Lingering(_)) => ("PreviousInstanceMayProcess", wait.reason()),
        _ if !unusable.is_empty() => ("RecordUnusable", format!("{pair_text}: {unusable}")),
        _ if held.pod_backoff.is_some() => (
            "MemberPodBackOff",
            format!("{pair_text}: {}", held.pod_backoff.as_deref().unwrap_or("")),
        ),
        _ if healthy => ("PairHealthy", pair_text.clone()),
        _ => ("NoUpToDateStandby", pair_text.clone()),
    };
    set(
        ConditionType::Degraded,
        !healthy,
        degraded_reason,
        &degraded_message,
    );
    set(
        ConditionType::WaitingForPeer,
        waiting_peer.is_some(),
        if waiting_peer.is_some() {
            "PeerMustRecover"
        } else {
            "NotWaiting"
        },
        waiting_peer.as_deref().unwrap_or(""),
    );
    set(
        ConditionType::NeedsForceStart,
        needs_force.is_some(),
        if needs_force.is_some() {
            "NoAutomaticDecision"
        } else {
            "NotNeeded"
        },
        needs_force.as_deref().unwrap_or(""),
    );
    set(
        ConditionType::Paused,
        paused,
        if paused { "PausedByUser" } else { "NotPaused" },
        if paused {
            "spec.paused or the hapair.io/paused annotation: nothing is changed"
        } else {
            ""
        },
    );
}
