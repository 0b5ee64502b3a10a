//! From what the API server shows of a pair (its `HAPair`, the member pods and Leases) and the
//! operator's own judgement of lease freshness, to the protocol's [`Observation`].
//!
//! This module is pure: it performs no I/O, reads no clock and decides nothing. When anything is
//! missing, malformed or belongs to another pod, the member counts as failed (`Down`): an
//! observation may only make the decision more conservative.
//!
//! Application failure (`app_failed`): an application container of the pod is not running, or
//! the pod's application containers restarted more often than when the member was last `X`
//! (the status keeps that count per pod, [`MemberStatus::app_restarts`]). The kubelet restarts a
//! crashed container in the same pod, where it finds the role file it had: without the count,
//! a crash between two observations would go unseen.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::ResourceExt;

use crate::crd::{HAPair, MemberStatus, ANNOTATION_FORCE_START, LABEL_ROLE};
use crate::mailbox::{self, CommandEnvelope, Report};
use crate::protocol::{
    Command, ForceStartRequest, Instance, Member, MemberState, MemberView, Observation, PerMember,
    Role,
};

use super::liveness::LeaseClock;
use super::resources::AGENT_CONTAINER;

/// What the operator saw of one member.
#[derive(Debug, Clone, Copy)]
pub struct MemberObjects<'a> {
    pub pod: Option<&'a Pod>,
    pub lease: Option<&'a Lease>,
    /// What the operator's monotonic clock says of the Lease's renewals.
    pub clock: LeaseClock,
}

/// The observation of the pair.
pub fn observe(hapair: &HAPair, members: PerMember<MemberObjects<'_>>) -> Observation {
    let status = hapair.status.clone().unwrap_or_default();
    let view = |m: Member| member_view(members.get(m), status.members.get(m));
    let views = PerMember::new(view(Member::A), view(Member::B));
    Observation {
        lingering: PerMember::new(
            lingering(&members.a, &views.a),
            lingering(&members.b, &views.b),
        ),
        members: views,
        roles: PerMember::new(role_label(members.a.pod), role_label(members.b.pod)),
        initialized: status.initialized,
        recorded_terms: status.recorded_terms.into(),
        force_start: force_start(hapair),
    }
}

/// Whether the holder of `lease`, by its own report, may process: it acknowledged `M`/`SM`, or
/// a command to process is addressed to it that it has neither acknowledged nor fenced over.
pub fn holder_may_process(lease: &Lease) -> bool {
    let Some(report) = report(Some(lease)) else {
        return false;
    };
    let pending =
        envelope(Some(lease)).is_some_and(|e| awaited(&e, &report) && e.command.may_process());
    report.state.is_processing() || (pending && report.fenced.is_none())
}

/// Whether the reporting agent may still acknowledge the command: it is addressed to its pod,
/// newer than its acknowledgement and above its floor (a command an earlier agent of the pod
/// applied, or one it fenced over, is never applied again: waiting for it would wait forever).
fn awaited(envelope: &CommandEnvelope, report: &Report) -> bool {
    let ack = report.ack.map_or(0, |a| a.seq);
    envelope.pod == report.pod && envelope.seq > ack.max(report.floor)
}

/// An instance other than the observed one may still process: a former holder of the Lease,
/// or (for a failed member) the holder itself, whose containers may run on although the API
/// shows its pod gone, terminating or replaced, until it reports it stopped or its lease
/// expires.
fn lingering(objects: &MemberObjects<'_>, view: &MemberView) -> bool {
    let holder =
        !view.is_up() && objects.clock.fresh && objects.lease.is_some_and(holder_may_process);
    holder || objects.clock.former_holder_may_process
}

/// The `hapair.io/force-start` annotation.
pub fn force_start(hapair: &HAPair) -> Option<ForceStartRequest> {
    let value = hapair.annotations().get(ANNOTATION_FORCE_START)?;
    Some(match value.trim().parse::<Member>() {
        Ok(m) => ForceStartRequest::Member(m),
        Err(_) => ForceStartRequest::Invalid(value.clone()),
    })
}

/// The role label a pod carries. A value that is no role counts as `master`, so the decision
/// replaces it before anything is promoted.
fn role_label(pod: Option<&Pod>) -> Option<Role> {
    let value = pod?.labels().get(LABEL_ROLE)?;
    Some(value.parse().unwrap_or(Role::Master))
}

/// The pod's UID as the protocol's 128-bit number.
pub fn pod_uid(pod: &Pod) -> Option<u128> {
    let hex: String = pod.uid()?.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    u128::from_str_radix(&hex, 16).ok()
}

fn report(lease: Option<&Lease>) -> Option<Report> {
    Report::parse(lease?.metadata.annotations.as_ref()?).ok()?
}

/// The member's last acknowledged command by any of its pods.
fn member_acked(lease: Option<&Lease>) -> Option<Command> {
    mailbox::member_acked(lease?.metadata.annotations.as_ref()?)
}

/// The command on the Lease (a malformed one is treated as none: the next command replaces it).
pub fn envelope(lease: Option<&Lease>) -> Option<CommandEnvelope> {
    CommandEnvelope::parse(lease?.metadata.annotations.as_ref()?).ok()?
}

fn member_view(objects: &MemberObjects<'_>, last: &MemberStatus) -> MemberView {
    let report = report(objects.lease);
    let envelope = envelope(objects.lease);
    match up_instance(objects, report.as_ref()) {
        Some((report, uid)) => up_view(report, uid, envelope, objects, last),
        None => down_view(report.as_ref(), envelope, member_acked(objects.lease)),
    }
}

/// Restarts of the pod's application containers, in all.
pub fn app_restarts(pod: Option<&Pod>) -> i32 {
    app_statuses(pod).iter().map(|c| c.restart_count).sum()
}

/// The restarts the status recorded for this very pod when the member was last `X`.
fn restart_baseline(pod: Option<&Pod>, last: &MemberStatus) -> Option<i32> {
    let uid = pod.and_then(|p| p.uid())?;
    (last.pod_uid.as_ref() == Some(&uid)).then_some(last.app_restarts)?
}

/// The pod runs, with its agent, and the fresh Lease holds a report of this very pod whose agent
/// is not stopping (a stopping agent applies nothing more: the kubelet is ending it).
fn up_instance<'r>(
    objects: &MemberObjects<'_>,
    report: Option<&'r Report>,
) -> Option<(&'r Report, u128)> {
    let pod = objects.pod?;
    let report = report?;
    let running = pod.status.as_ref()?.phase.as_deref() == Some("Running");
    let alive = running && pod.metadata.deletion_timestamp.is_none() && objects.clock.fresh;
    let ours = pod.uid().as_deref() == Some(report.pod.as_str());
    let agent_running = container_statuses(pod)
        .iter()
        .any(|c| c.name == AGENT_CONTAINER && is_running(c));
    (alive && ours && agent_running && !report.stopping)
        .then(|| pod_uid(pod))
        .flatten()
        .map(|uid| (report, uid))
}

fn up_view(
    report: &Report,
    uid: u128,
    envelope: Option<CommandEnvelope>,
    objects: &MemberObjects<'_>,
    last: &MemberStatus,
) -> MemberView {
    let ack = report.ack.map_or(0, |a| a.seq);
    let pending = envelope.filter(|e| awaited(e, report)).map(|e| e.command);
    let apps = app_statuses(objects.pod);
    let restarts = app_restarts(objects.pod);
    let restarted = report.state != MemberState::X
        && restart_baseline(objects.pod, last).is_some_and(|b| restarts > b);
    MemberView::Up {
        instance: Instance { pod: uid, ack },
        record: report.record.clone(),
        state: report.state,
        pending,
        app_failed: apps.is_empty() || apps.iter().any(|c| !is_running(c)) || restarted,
        caught_up: !apps.is_empty() && apps.iter().all(|c| c.ready),
    }
}

/// A failed member: what it last reported, and a command it may have applied without
/// acknowledging it (any command not acknowledged by the pod it was addressed to).
fn down_view(
    report: Option<&Report>,
    envelope: Option<CommandEnvelope>,
    member_acked: Option<Command>,
) -> MemberView {
    let acked_by_addressee = |e: &CommandEnvelope| {
        report.is_some_and(|r| r.pod == e.pod && r.ack.is_some_and(|a| a.seq >= e.seq))
    };
    MemberView::Down {
        last_acked: report
            .and_then(|r| r.ack)
            .map(|a| a.command)
            .or(member_acked),
        last_standing: report.and_then(|r| r.record.standing()),
        in_doubt: envelope
            .filter(|e| !acked_by_addressee(e))
            .map(|e| e.command),
    }
}

fn container_statuses(pod: &Pod) -> &[ContainerStatus] {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or(&[])
}

fn app_statuses(pod: Option<&Pod>) -> Vec<&ContainerStatus> {
    pod.map(container_statuses)
        .unwrap_or(&[])
        .iter()
        .filter(|c| c.name != AGENT_CONTAINER)
        .collect()
}

fn is_running(c: &ContainerStatus) -> bool {
    c.state.as_ref().is_some_and(|s| s.running.is_some())
}

/// The state a member's report shows, for status (`X` when there is no report).
pub fn reported_state(lease: Option<&Lease>) -> MemberState {
    report(lease).map_or(MemberState::X, |r| r.state)
}

#[cfg(test)]
mod tests;
