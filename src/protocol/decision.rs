//! The decision: from one observation of the pair to the next steps, in the order that keeps the
//! invariants (DESIGN.md): master labels come off first, commands follow, labels go on only for
//! states a member acknowledged. The decision is level-triggered and idempotent: deciding again
//! on the same observation yields the same steps, and a command already pending is not repeated.

use super::command::Command;
use super::member::{Member, PerMember};
use super::observation::{ForceStartRequest, Instance, MemberView, Observation, RecordView};
use super::resume::{resume, Resume, Wait};
use super::state::{MemberState, PairState, Role};
use super::transition::Transition;

/// One thing the operator must do. Steps are carried out in order; on any failure the operator
/// stops and decides again from a fresh observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Set (or remove, with `None`) the role label on the member's pod.
    Label { member: Member, role: Option<Role> },
    /// Write this command for the member's agent.
    Command {
        member: Member,
        command: Command,
        why: String,
    },
}

/// What became of a force-start request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForceStartVerdict {
    /// Honoured: the member is being started (keep the request until it acknowledged).
    Accepted(Member),
    /// The named member processes: the request is done and can be removed.
    Fulfilled(Member),
    /// Not honoured; remove the request and tell the user why.
    Refused(String),
    /// The request names no member; remove it and tell the user.
    Invalid(String),
}

/// The outcome of one decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub pair_state: PairState,
    pub steps: Vec<Step>,
    /// Why the pair is not progressing, if it is not.
    pub wait: Option<Wait>,
    pub force_start: Option<ForceStartVerdict>,
    /// The seed transition the wanted commands carry out, as far as this observation shows
    /// ([`Transition::of_change`] names the change with it): the failure answered (4-2, 4-4,
    /// 5-6), the resumption after `(X X)` (1-x-1, 2-2, force-start), or a recovered peer
    /// admitted as `SL` or its master promoted (3-1-x, also the end of 1-x-x).
    pub transition: Option<Transition>,
}

/// A command the protocol wants, before comparing it with what is pending.
struct Want {
    member: Member,
    command: Command,
    why: String,
    transition: Option<Transition>,
}

/// What the pair needs next.
#[derive(Default)]
struct Plan {
    wants: Vec<Want>,
    wait: Option<Wait>,
    force_start: Option<ForceStartVerdict>,
}

impl Plan {
    fn want(mut self, member: Member, command: Command, why: impl Into<String>) -> Self {
        self.wants.push(Want {
            member,
            command,
            why: why.into(),
            transition: None,
        });
        self
    }

    /// A command that carries out seed transition `t`; the reason starts with its id.
    fn want_seed(self, member: Member, command: Command, t: Transition, why: &str) -> Self {
        self.want(member, command, format!("{t}: {why}")).tagged(t)
    }

    /// The last wanted command carries out seed transition `t`.
    fn tagged(mut self, t: Transition) -> Self {
        if let Some(w) = self.wants.last_mut() {
            w.transition = Some(t);
        }
        self
    }

    fn wait(mut self, wait: Wait) -> Self {
        self.wait = Some(wait);
        self
    }
}

pub fn decide(obs: &Observation) -> Decision {
    let pair_state = PerMember::new(obs.member(Member::A).state(), obs.member(Member::B).state());
    let mut plan = plan(obs);
    if let Some(ForceStartRequest::Invalid(name)) = &obs.force_start {
        plan.force_start = Some(ForceStartVerdict::Invalid(format!(
            "force-start names '{name}', which is not a member: use a or b"
        )));
    } else if plan.force_start.is_none() {
        plan.force_start = refuse_if_requested(obs, &plan);
    }
    let transition = match plan.force_start {
        Some(ForceStartVerdict::Accepted(_)) => Some(Transition::ForceStart),
        _ => plan.wants.iter().find_map(|w| w.transition),
    };
    let mut steps = unlabel_steps(obs);
    steps.extend(command_steps(obs, plan.wants));
    steps.extend(label_steps(obs));
    if let Some(m) = Member::BOTH.into_iter().find(|m| *obs.lingering.get(*m)) {
        if let Some(first) = steps.iter().position(promotes) {
            steps.truncate(first);
            plan.wait = Some(Wait::Lingering(m));
        }
    }
    Decision {
        pair_state,
        steps,
        wait: plan.wait,
        force_start: plan.force_start,
        transition,
    }
}

/// A step that lets a member process or receive clients. While some instance may linger, the
/// decision stops before the first one: exactly what an operator crash at that point would do.
fn promotes(step: &Step) -> bool {
    match step {
        Step::Command { command, .. } => command.may_process(),
        Step::Label { role, .. } => *role == Some(Role::Master),
    }
}

/// Healthy processor: acknowledged `M`/`SM` and its application has not failed since.
fn healthy_processor(v: &MemberView) -> bool {
    matches!(v, MemberView::Up { state, app_failed: false, .. } if state.is_processing())
}

/// May be processing now or soon: acknowledged `M`/`SM` (even if its application failed and
/// restarted on the old role), or holds an unacknowledged command to process, or an
/// unacknowledged `X`: that may have overwritten a command to process which the agent was
/// already carrying out; only the acknowledgement of the `X` proves it stopped.
fn may_process(v: &MemberView) -> bool {
    match v {
        MemberView::Up { state, pending, .. } => {
            state.is_processing()
                || pending.is_some_and(|c| c.may_process() || c.target_state() == MemberState::X)
        }
        MemberView::Down { .. } => false,
    }
}

/// The role label a member should carry: only what it acknowledged, and never the master label
/// on a member whose application failed.
fn desired_role(v: &MemberView) -> Option<Role> {
    match v {
        MemberView::Up {
            state,
            app_failed: false,
            ..
        } => Role::of(*state),
        _ => None,
    }
}

fn unlabel_steps(obs: &Observation) -> Vec<Step> {
    Member::BOTH
        .into_iter()
        .filter(|m| {
            *obs.roles.get(*m) == Some(Role::Master)
                && desired_role(obs.member(*m)) != Some(Role::Master)
        })
        .map(|m| Step::Label {
            member: m,
            role: desired_role(obs.member(m)),
        })
        .collect()
}

/// Labels go on last, and the master label only while the peer carries none (invariant 1).
fn label_steps(obs: &Observation) -> Vec<Step> {
    Member::BOTH
        .into_iter()
        .filter_map(|m| {
            let want = desired_role(obs.member(m));
            let have = *obs.roles.get(m);
            let peer_master = desired_role(obs.member(m.peer())) == Some(Role::Master);
            let blocked = want == Some(Role::Master) && peer_master;
            let unlabelled_first = have == Some(Role::Master);
            (want != have && !unlabelled_first && !blocked).then_some(Step::Label {
                member: m,
                role: want,
            })
        })
        .collect()
}

/// Turns wanted commands into steps: a command already pending is not repeated; a pending command
/// to process that is no longer wanted is cancelled (`X`) first; nobody is told to process while
/// the peer may process.
fn command_steps(obs: &Observation, wants: Vec<Want>) -> Vec<Step> {
    let mut steps = Vec::new();
    for m in Member::BOTH {
        let MemberView::Up { pending, state, .. } = obs.member(m) else {
            continue;
        };
        let superseded = |p: &Command| {
            wants.iter().any(|w| {
                (w.member == m && !same(w.command, *p))
                    || (w.member == m.peer() && w.command.may_process())
            })
        };
        // A pending command to process was decided on proof that still holds unless the peer
        // must process instead or this member must do something else: only then cancel it.
        let stale = pending.filter(|p| p.may_process() && superseded(p));
        if stale.is_some() && !state.is_processing() {
            steps.push(command(
                m,
                Command::enter(MemberState::X, obs.max_term()),
                "cancel a command that is no longer wanted",
            ));
        }
    }
    for w in wants {
        let peer_busy = w.command.may_process() && may_process(obs.member(w.member.peer()));
        let already = obs
            .member(w.member)
            .unacked()
            .is_some_and(|p| same(w.command, p));
        if peer_busy || already || steps.iter().any(|s| commands(s, w.member)) {
            continue;
        }
        if w.command.may_process() {
            steps.extend(cancel_in_doubt(obs, w.member.peer()));
        }
        steps.push(command(w.member, w.command, &w.why));
    }
    steps
}

/// A failed member's unacknowledged command to process is overwritten with `X` before its peer is
/// told to process: should the same pod return (a healed partition), it must not act on it.
fn cancel_in_doubt(obs: &Observation, m: Member) -> Option<Step> {
    match obs.member(m) {
        MemberView::Down {
            in_doubt: Some(c), ..
        } if c.may_process() => Some(command(
            m,
            Command::enter(MemberState::X, obs.max_term()),
            &format!("cancel {c}, never acknowledged by failed {m}, before its peer processes"),
        )),
        _ => None,
    }
}

/// Two commands ask for the same thing (a pending `SM` stays valid although newer terms appeared;
/// `M` with another standby instance is another command).
fn same(a: Command, b: Command) -> bool {
    match (a, b) {
        (Command::Initialize, Command::Initialize) => true,
        (Command::Master { standby: x, .. }, Command::Master { standby: y, .. }) => x == y,
        (Command::Enter { state: x, .. }, Command::Enter { state: y, .. }) => x == y,
        _ => false,
    }
}

fn commands(step: &Step, m: Member) -> bool {
    matches!(step, Step::Command { member, .. } if *member == m)
}

fn command(member: Member, command: Command, why: &str) -> Step {
    Step::Command {
        member,
        command,
        why: why.to_string(),
    }
}

/// The protocol proper.
fn plan(obs: &Observation) -> Plan {
    let failed = fence_failed_apps(obs);
    if !failed.wants.is_empty() {
        return failed;
    }
    let processors: Vec<Member> = Member::BOTH
        .into_iter()
        .filter(|m| healthy_processor(obs.member(*m)))
        .collect();
    match processors.as_slice() {
        [p] => with_processor(obs, *p),
        [] => without_processor(obs),
        _ => resolve_conflict(obs),
    }
}

/// An application that failed while its member was not stopped: stop the member (`X`) before
/// anything else, so its restarted application cannot process on a stale role.
fn fence_failed_apps(obs: &Observation) -> Plan {
    Member::BOTH
        .into_iter()
        .fold(Plan::default(), |plan, m| match obs.member(m) {
            MemberView::Up {
                app_failed: true,
                state,
                ..
            } if *state != MemberState::X => plan.want(
                m,
                Command::enter(MemberState::X, obs.max_term()),
                format!("{m}'s application failed in state {state}: stop it before anything else"),
            ),
            _ => plan,
        })
}

/// Two processors can only follow a fault outside the protocol; keep the newer term, stop the
/// other (both on a tie). Never observed in the model check; here for robustness.
fn resolve_conflict(obs: &Observation) -> Plan {
    let term = |m: Member| obs.member(m).known_standing().map(|s| s.term);
    Member::BOTH.into_iter().fold(Plan::default(), |plan, m| {
        if term(m) > term(m.peer()) {
            plan
        } else {
            plan.want(
                m,
                Command::enter(MemberState::X, obs.max_term()),
                "both members processing: stop the one with the older term",
            )
        }
    })
}

/// Seed transitions out of a state with one processor `p`.
fn with_processor(obs: &Observation, p: Member) -> Plan {
    let o = p.peer();
    let mut plan = Plan {
        force_start: processing_verdict(obs, p),
        ..Plan::default()
    };
    let term = obs
        .member(p)
        .known_standing()
        .map_or(obs.max_term(), |s| s.term);
    let peer = obs.member(o);
    let peer_is_standby = matches!(
        peer,
        MemberView::Up {
            state: MemberState::SL,
            app_failed: false,
            ..
        }
    );
    match (obs.member(p).state(), caught_up(peer)) {
        (MemberState::M, _) if !peer_is_standby => {
            plan = plan.want_seed(
                p,
                Command::enter(MemberState::SM, obs.max_term().next()),
                Transition::SlaveFailed,
                &format!("{o} failed while {p} was master"),
            );
        }
        (MemberState::SM, Some(standby)) if peer_is_standby => {
            // 1-x-2 or 3-1-2: the history tells which (Transition::of_change).
            plan = plan
                .want(
                    p,
                    Command::Master { term, standby },
                    format!("1-x-2/3-1-2: {o} caught up"),
                )
                .tagged(Transition::PeerCaughtUp);
        }
        (MemberState::SM, _) if admissible(peer) => {
            plan = plan
                .want(
                    o,
                    Command::enter(MemberState::SL, term),
                    format!("1-x-1/3-1-1: {o} recovered: it receives {p}'s handover data"),
                )
                .tagged(Transition::PeerRecovered);
        }
        _ => {}
    }
    plan
}

/// The incarnation of a standby that reports it caught up.
fn caught_up(v: &MemberView) -> Option<Instance> {
    match v {
        MemberView::Up {
            caught_up: true,
            instance,
            ..
        } => Some(*instance),
        _ => None,
    }
}

/// A recovered, stopped member with a usable record may become the standby. A corrupt or foreign
/// record is never overwritten automatically: a human looks first.
fn admissible(v: &MemberView) -> bool {
    matches!(
        v,
        MemberView::Up {
            state: MemberState::X,
            app_failed: false,
            record: RecordView::Valid(_) | RecordView::Missing,
            ..
        }
    )
}

/// Nobody processes: take over (4-4), stop an orphaned standby (5-6), initialize a fresh pair, or
/// resume after `(X X)` (figures 4/5), possibly by force-start.
fn without_processor(obs: &Observation) -> Plan {
    if let Some(plan) = standby_without_master(obs) {
        return plan;
    }
    if let Some(plan) = initialize(obs) {
        return plan;
    }
    match resume(obs) {
        Resume::Start { member, why } => Plan::default().want_seed(
            member,
            Command::enter(MemberState::SM, obs.max_term().next()),
            resumption(obs, member),
            &why,
        ),
        Resume::Wait(wait) => force_start(obs, wait),
    }
}

/// A standby whose master failed. It takes over only if the master was `M` (synchronous, so the
/// standby holds everything: 4-4); after `SM` it had not caught up and must stop (5-6). A master
/// that already recovered is not a failed one: figure 4 compares the two records instead.
fn standby_without_master(obs: &Observation) -> Option<Plan> {
    let o = Member::BOTH.into_iter().find(|m| {
        matches!(
            obs.member(*m),
            MemberView::Up {
                state: MemberState::SL,
                app_failed: false,
                ..
            }
        )
    })?;
    let p = o.peer();
    if obs.member(p).is_up() {
        return None;
    }
    let was_synchronous = failed_as_master(obs.member(p), obs.member(o));
    let plan = Plan::default();
    Some(if was_synchronous {
        plan.want_seed(
            o,
            Command::enter(MemberState::SM, obs.max_term().next()),
            Transition::MasterFailed,
            &format!("{p} stopped while master; {o} holds all its data"),
        )
    } else {
        plan.want_seed(
            o,
            Command::enter(MemberState::X, obs.max_term()),
            Transition::SingleMasterFailed,
            &format!("{p} stopped as single master; {o} had not caught up and cannot take over"),
        )
    })
}

/// 4-4 applies only to a failed member whose last acknowledgement was `M` with this very standby
/// pod (a standby that restarted since may lack writes), and which left no command
/// unacknowledged: its record (priority 2) may be ahead of its acknowledgements, and an
/// unacknowledged `SM` may have let it write asynchronously. A member that already recovered is
/// not a takeover case: both are up, and figure 4 compares their records.
fn failed_as_master(master: &MemberView, standby: &MemberView) -> bool {
    let MemberView::Up { instance, .. } = standby else {
        return false;
    };
    match master {
        MemberView::Down {
            last_acked: Some(Command::Master { standby: s, .. }),
            in_doubt,
            ..
        } => s == instance && in_doubt.is_none_or(|c| c.target_state() == MemberState::M),
        _ => false,
    }
}

/// Seed: initial priorities a=2, b=3 are written once, before automatic operation begins. Only on
/// a pair that never had a record, so an emptied volume is never mistaken for a fresh one.
fn initialize(obs: &Observation) -> Option<Plan> {
    let never_recorded = Member::BOTH
        .iter()
        .all(|m| obs.member(*m).known_standing().is_none());
    if obs.initialized || !never_recorded {
        return None;
    }
    let plan = Member::BOTH
        .into_iter()
        .fold(Plan::default(), |plan, m| match obs.member(m) {
            MemberView::Up {
                record: RecordView::Missing,
                ..
            } => plan.want(
                m,
                Command::Initialize,
                "fresh pair: write the initial priority",
            ),
            _ => plan,
        });
    (!plan.wants.is_empty()).then_some(plan)
}

/// Figures 4/5 gave no answer: wait, unless a human force-starts a recovered member.
fn force_start(obs: &Observation, wait: Wait) -> Plan {
    let refused = |why: String| {
        Plan::default()
            .wait(wait.clone())
            .with_verdict(ForceStartVerdict::Refused(why))
    };
    match &obs.force_start {
        None => Plan::default().wait(wait),
        Some(ForceStartRequest::Invalid(_)) => Plan::default().wait(wait), // decide() says why
        Some(ForceStartRequest::Member(m)) => match obs.member(*m) {
            MemberView::Down { .. } => refused(format!("{m} has not recovered: its pod must run and report its record before it can be force-started")),
            MemberView::Up { record: RecordView::WrongPair(r), .. } => refused(format!("{m}'s volume belongs to another pair ({r}): it is never started")),
            MemberView::Up { .. } => {
                let mut plan = Plan::default().want(
                    *m,
                    Command::enter(MemberState::SM, obs.max_term().next()),
                    format!("force-start {m}: {} (the peer's unreplicated work is given up)", wait.reason()),
                );
                plan.force_start = Some(ForceStartVerdict::Accepted(*m));
                plan
            }
        },
    }
}

impl Plan {
    fn with_verdict(mut self, v: ForceStartVerdict) -> Self {
        self.force_start = Some(v);
        self
    }
}

/// A force-start while `p` processes: done if it names `p`, refused otherwise.
fn processing_verdict(obs: &Observation, p: Member) -> Option<ForceStartVerdict> {
    obs.force_start.as_ref().map(|req| match req {
        ForceStartRequest::Member(m) if *m == p => ForceStartVerdict::Fulfilled(p),
        _ => ForceStartVerdict::Refused(format!(
            "the pair is running ({p} is processing): force-start only applies while the pair waits"
        )),
    })
}

/// A request the plan did not consume: the pair can proceed automatically.
fn refuse_if_requested(obs: &Observation, plan: &Plan) -> Option<ForceStartVerdict> {
    obs.force_start.as_ref().map(|_| {
        let what = plan
            .wants
            .first()
            .map_or("a transition is in progress".to_string(), |w| {
                format!("{} ({})", w.why, w.member)
            });
        ForceStartVerdict::Refused(format!("the pair can proceed automatically: {what}"))
    })
}

/// Figure 4 (both recovered: 1-2-1 or 1-1-1) or figure 5 (one alone with priority 1: 2-2).
fn resumption(obs: &Observation, member: Member) -> Transition {
    if obs.member(member.peer()).is_up() {
        Transition::BothRecovered { higher: member }
    } else {
        Transition::AloneWithPriorityOne
    }
}
