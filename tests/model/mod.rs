//! A model of the whole pair for exhaustive checking: two members (volume record, pod running or
//! failed, the agent's write-then-act-then-ack steps, the application's role), the members' Leases
//! (commands and reports), pod labels, the HAPair status, and an operator that decides with the
//! real `hapair::protocol::decide` on a view that may be stale and may be lost (restart).
//!
//! Ghost state (not visible to the protocol) tracks which member holds every acknowledged write
//! (`complete`), so "resume only on the member that processed last" can be checked directly.
//!
//! Abstractions, each stated: a failed pod takes its labels with it; a partitioned member fences
//! itself before its lease expires (DESIGN: fencing), so the operator sees it exactly like a
//! crashed one; an application entering `M` does not acknowledge writes before its standby holds
//! all of them (the sync barrier); a `SM` processor may acknowledge a write at any moment.

#![allow(dead_code)]

pub mod explore;

use hapair::protocol::{
    Command, Decision, ForceStartRequest, ForceStartVerdict, Instance, Member, MemberState,
    MemberView, Observation, PerMember, Priority, RecordView, Role, Standing, Step, Term,
};

/// The instance of a member: its pod (incarnation) and how many commands it acknowledged.
pub fn instance(m: Member, inc: u8, acks: u8) -> Instance {
    Instance {
        pod: ((m as u128) << 8) | inc as u128,
        ack: acks as u64,
    }
}

/// The decision function under test (the real one, or a deliberately broken variant).
pub type DecideFn = fn(&Observation) -> Decision;

/// One member's pod and volume.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Node {
    /// The record on the member's own volume (`None`: no record).
    pub disk: Option<Standing>,
    pub running: bool,
    /// Incarnation (pod UID): a recovered pod is a new one.
    pub inc: u8,
    /// Commands this incarnation acknowledged.
    pub acks: u8,
    /// The command the agent is applying and how far it got.
    pub applying: Option<(Sent, Stage)>,
    /// The role file the application follows.
    pub role: MemberState,
    /// The state this incarnation acknowledged.
    pub acked: MemberState,
    pub app_failed: bool,
    pub caught_up: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    PriorityWritten,
    RoleWritten,
}

/// A command as written on a Lease, addressed to an incarnation (pod UID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sent {
    pub cmd: Command,
    pub inc: u8,
}

/// A member's Lease: the operator's command and the agent's reports. Survives pod failures.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Lease {
    pub command: Option<Sent>,
    /// The latest write of `command` is not acknowledged yet (the real Lease numbers writes).
    pub unacked: bool,
    /// The agent picked up the latest write (no write since).
    pub picked: bool,
    /// The command last acknowledged.
    pub ack: Option<Command>,
    /// The incarnation that reported (recovered), its last acknowledged state and record.
    pub holder: Option<u8>,
    pub state: Option<MemberState>,
    pub standing: Option<Standing>,
}

/// The operator's view: an observation plus the pod UIDs it saw (writes are addressed to them).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct View {
    pub obs: Observation,
    pub incs: PerMember<u8>,
    /// The Leases as read: a command is written only if the Lease is unchanged since
    /// (resourceVersion precondition; on a conflict the operator observes again).
    pub leases: PerMember<Lease>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct World {
    pub nodes: PerMember<Node>,
    pub leases: PerMember<Lease>,
    /// Role label on each member's pod.
    pub labels: PerMember<Option<Role>>,
    /// HAPair status (cache): initialized flag and highest term recorded.
    pub initialized: bool,
    pub recorded_terms: PerMember<Term>,
    /// The force-start annotation.
    pub force: Option<Member>,
    pub view: Option<View>,
    /// Ghost: the member holds every acknowledged write.
    pub complete: PerMember<bool>,
    /// Ghost: a command issued by an accepted force-start, and whether one was ever applied.
    pub forced_command: Option<(Member, Command)>,
    pub forced_ever: bool,
    /// Budgets that keep the state space finite.
    pub faults_left: u8,
    pub forces_left: u8,
    /// Scenario tests switch catching up off to hold a pair in `(SM SL)`.
    pub catch_up_allowed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Crash(Member),
    AppCrash(Member),
    Recover(Member),
    Report(Member),
    Agent(Member),
    CatchUp(Member),
    ForceStart(Member),
    Observe,
    Act,
    RestartOperator,
}

impl Action {
    /// Faults and human interventions; everything else is the system making progress.
    pub fn is_fault(self) -> bool {
        matches!(
            self,
            Action::Crash(_)
                | Action::AppCrash(_)
                | Action::ForceStart(_)
                | Action::RestartOperator
        )
    }
}

/// The system making progress, in the fixed fair order `progress` uses.
pub const PROGRESS: [Action; 8] = [
    Action::Recover(Member::A),
    Action::Recover(Member::B),
    Action::Report(Member::A),
    Action::Report(Member::B),
    Action::Agent(Member::A),
    Action::Agent(Member::B),
    Action::CatchUp(Member::A),
    Action::CatchUp(Member::B),
];

/// Faults, humans and the operator's own steps.
pub const OTHERS: [Action; 9] = [
    Action::Crash(Member::A),
    Action::Crash(Member::B),
    Action::AppCrash(Member::A),
    Action::AppCrash(Member::B),
    Action::ForceStart(Member::A),
    Action::ForceStart(Member::B),
    Action::Observe,
    Action::Act,
    Action::RestartOperator,
];

/// Every action, for exhaustive exploration.
pub fn all_actions() -> impl Iterator<Item = Action> {
    PROGRESS.into_iter().chain(OTHERS)
}

impl Node {
    fn fresh(running: bool) -> Self {
        Node {
            disk: None,
            running,
            inc: 0,
            acks: 0,
            applying: None,
            role: MemberState::X,
            acked: MemberState::X,
            app_failed: false,
            caught_up: false,
        }
    }

    /// Ghost: the application processes (accepts writes).
    pub fn processing(&self) -> bool {
        self.running && self.role.is_processing()
    }
}

impl World {
    /// A fresh pair: empty volumes, both pods starting.
    pub fn fresh(faults: u8, forces: u8) -> Self {
        World {
            nodes: PerMember::new(Node::fresh(true), Node::fresh(true)),
            leases: PerMember::default(),
            labels: PerMember::default(),
            initialized: false,
            recorded_terms: PerMember::default(),
            force: None,
            view: None,
            complete: PerMember::new(true, true),
            forced_command: None,
            forced_ever: false,
            faults_left: faults,
            forces_left: forces,
            catch_up_allowed: true,
        }
    }

    pub fn node(&self, m: Member) -> &Node {
        self.nodes.get(m)
    }

    /// The pair state as the members themselves are (ground truth).
    pub fn pair_state(&self) -> (MemberState, MemberState) {
        let s = |m| {
            let n = self.node(m);
            if n.running {
                n.acked
            } else {
                MemberState::X
            }
        };
        (s(Member::A), s(Member::B))
    }

    pub fn priorities(&self) -> (Option<u8>, Option<u8>) {
        let p = |m: Member| self.node(m).disk.map(|s| s.priority.number());
        (p(Member::A), p(Member::B))
    }

    /// Apply `action`; `None` when it is not enabled or changes nothing.
    pub fn step(&self, action: Action, decide: DecideFn) -> Option<World> {
        let mut w = self.clone();
        let changed = match action {
            Action::Crash(m) => w.crash(m),
            Action::AppCrash(m) => w.app_crash(m),
            Action::Recover(m) => w.recover(m),
            Action::Report(m) => w.report(m),
            Action::Agent(m) => w.agent(m),
            Action::CatchUp(m) => w.catch_up(m),
            Action::ForceStart(m) => w.request_force_start(m),
            Action::Observe => w.observe(),
            Action::Act => w.act(decide),
            Action::RestartOperator => w.view.take().is_some(),
        };
        if !changed {
            return None;
        }
        w.async_writes();
        (w != *self).then_some(w)
    }

    fn crash(&mut self, m: Member) -> bool {
        if self.faults_left == 0 || !self.node(m).running {
            return false;
        }
        self.faults_left -= 1;
        let n = self.nodes.get_mut(m);
        let disk = n.disk;
        let inc = n.inc;
        *n = Node::fresh(false);
        n.disk = disk;
        n.inc = inc;
        *self.labels.get_mut(m) = None; // the pod and its labels are gone
        true
    }

    /// The application container dies and the kubelet restarts it: it follows the (old) role file.
    fn app_crash(&mut self, m: Member) -> bool {
        let n = self.nodes.get_mut(m);
        if self.faults_left == 0 || !n.running || n.app_failed || n.role == MemberState::X {
            return false;
        }
        self.faults_left -= 1;
        n.app_failed = true;
        n.caught_up = false;
        true
    }

    fn recover(&mut self, m: Member) -> bool {
        let n = self.nodes.get_mut(m);
        if n.running {
            return false;
        }
        n.running = true;
        n.inc = n.inc.wrapping_add(1);
        true
    }

    /// The agent of a new incarnation reads its volume and reports it.
    fn report(&mut self, m: Member) -> bool {
        let n = self.node(m).clone();
        let lease = self.leases.get_mut(m);
        if !n.running || lease.holder == Some(n.inc) {
            return false;
        }
        lease.holder = Some(n.inc);
        lease.state = Some(MemberState::X);
        lease.standing = n.disk;
        true
    }

    /// One step of the agent: pick the command addressed to this pod, write the priority, write
    /// the role, acknowledge.
    fn agent(&mut self, m: Member) -> bool {
        let n = self.node(m).clone();
        let lease = self.leases.get(m).clone();
        if !n.running || lease.holder != Some(n.inc) {
            return false;
        }
        match n.applying {
            None => self.pick_and_write_priority(m, &n, &lease),
            Some((sent, Stage::PriorityWritten)) => {
                self.write_role(m, sent);
                true
            }
            Some((sent, Stage::RoleWritten)) => {
                self.ack(m, sent);
                true
            }
        }
    }

    /// Pick up the latest command addressed to this pod and write its priority (a crash between
    /// the two is the same as a crash before picking).
    fn pick_and_write_priority(&mut self, m: Member, n: &Node, lease: &Lease) -> bool {
        let Some(sent) = lease.command.filter(|c| c.inc == n.inc && lease.unacked) else {
            return false;
        };
        self.leases.get_mut(m).picked = true;
        if let Some(s) = sent.cmd.standing_written(m) {
            self.nodes.get_mut(m).disk = Some(s);
        }
        if self.forced_command == Some((m, sent.cmd)) {
            // The force-start took effect on the volume: the human chose this member's
            // data as the truth and gave up the peer's unreplicated work.
            self.forced_ever = true;
            self.forced_command = None;
            *self.complete.get_mut(m) = true;
            *self.complete.get_mut(m.peer()) = false;
        }
        self.nodes.get_mut(m).applying = Some((sent, Stage::PriorityWritten));
        true
    }

    fn write_role(&mut self, m: Member, sent: Sent) {
        let cmd = sent.cmd;
        let target = cmd.target_state();
        if cmd != Command::Initialize {
            self.nodes.get_mut(m).role = target;
        }
        if target == MemberState::M {
            // Sync barrier: a standby that follows now holds everything the master holds.
            let peer = self.node(m.peer());
            if peer.running && peer.role == MemberState::SL {
                *self.complete.get_mut(m.peer()) = *self.complete.get(m);
            }
        }
        self.nodes.get_mut(m).applying = Some((sent, Stage::RoleWritten));
    }

    fn ack(&mut self, m: Member, sent: Sent) {
        let cmd = sent.cmd;
        let n = self.nodes.get_mut(m);
        n.applying = None;
        n.acks = n.acks.saturating_add(1);
        n.acked = cmd.target_state();
        n.app_failed = false;
        if n.acked != MemberState::SL {
            n.caught_up = false;
        }
        let disk = n.disk;
        let lease = self.leases.get_mut(m);
        lease.ack = Some(cmd);
        if lease.picked {
            lease.unacked = false; // no newer write since it was picked
        }
        lease.state = Some(cmd.target_state());
        lease.standing = disk;
    }

    /// A standby's application receives all of the processing peer's data.
    fn catch_up(&mut self, m: Member) -> bool {
        if !self.catch_up_allowed {
            return false;
        }
        let peer_processing = self.node(m.peer()).processing();
        let n = self.node(m);
        if !n.running
            || n.role != MemberState::SL
            || n.caught_up
            || n.app_failed
            || !peer_processing
        {
            return false;
        }
        *self.complete.get_mut(m) = *self.complete.get(m.peer());
        self.nodes.get_mut(m).caught_up = true;
        true
    }

    fn request_force_start(&mut self, m: Member) -> bool {
        if self.forces_left == 0 || self.force.is_some() {
            return false;
        }
        self.forces_left -= 1;
        self.force = Some(m);
        true
    }

    /// Ghost: a single master may acknowledge a write at any moment; its peer may lack it.
    fn async_writes(&mut self) {
        for m in Member::BOTH {
            let n = self.node(m);
            if n.processing() && n.role == MemberState::SM && !n.app_failed {
                *self.complete.get_mut(m.peer()) = false;
            }
        }
    }

    /// The operator reads the cluster (pods, Leases, status) and records what it saw in status.
    fn observe(&mut self) -> bool {
        let view = self.snapshot();
        let any_record = Member::BOTH
            .iter()
            .any(|m| view.obs.member(*m).known_standing().is_some());
        self.initialized |= any_record;
        self.recorded_terms = view.obs.processing_terms();
        self.view = Some(view);
        true
    }

    /// What the operator's shell builds from the cluster: the mapping the controller implements.
    pub fn snapshot(&self) -> View {
        let member = |m: Member| {
            let n = self.node(m);
            let l = self.leases.get(m);
            let recovered = n.running && l.holder == Some(n.inc);
            let unacked = l.command.filter(|_| l.unacked).map(|c| c.cmd);
            if recovered {
                let pending = l.command.filter(|c| c.inc == n.inc).and(unacked);
                MemberView::Up {
                    instance: instance(m, n.inc, n.acks),
                    record: l.standing.map_or(RecordView::Missing, RecordView::Valid),
                    state: n.acked,
                    pending,
                    app_failed: n.app_failed,
                    caught_up: n.caught_up,
                }
            } else {
                MemberView::Down {
                    last_acked: l.ack,
                    last_standing: l.standing,
                    in_doubt: unacked,
                }
            }
        };
        View {
            obs: Observation {
                members: PerMember::new(member(Member::A), member(Member::B)),
                roles: self.labels,
                initialized: self.initialized,
                recorded_terms: self.recorded_terms,
                force_start: self.force.map(ForceStartRequest::Member),
                lingering: PerMember::default(),
            },
            incs: PerMember::new(self.node(Member::A).inc, self.node(Member::B).inc),
            leases: self.leases.clone(),
        }
    }

    /// The operator decides on its (possibly stale) view and carries out the first step.
    fn act(&mut self, decide: DecideFn) -> bool {
        let Some(mut view) = self.view.clone() else {
            return false;
        };
        let decision = decide(&view.obs);
        let verdict_done = self.settle_force_start(&decision);
        let Some(step) = decision.steps.first().cloned() else {
            if verdict_done {
                view.obs.force_start = None;
                self.view = Some(view);
            }
            return verdict_done;
        };
        let forced = match (&decision.force_start, &step) {
            (
                Some(ForceStartVerdict::Accepted(m)),
                Step::Command {
                    member, command, ..
                },
            ) if member == m && command.target_state() == MemberState::SM => Some((*m, *command)),
            _ => None,
        };
        if !self.execute(&step, &mut view) {
            self.view = None;
            return true;
        }
        if forced.is_some() {
            self.forced_command = forced;
        }
        if verdict_done {
            view.obs.force_start = None;
        }
        self.view = Some(view);
        true
    }

    /// The shell removes a fulfilled or refused force-start annotation.
    fn settle_force_start(&mut self, decision: &Decision) -> bool {
        match decision.force_start {
            Some(
                ForceStartVerdict::Fulfilled(_)
                | ForceStartVerdict::Refused(_)
                | ForceStartVerdict::Invalid(_),
            ) => self.force.take().is_some(),
            _ => false,
        }
    }

    /// Carry out one step against the world, addressed to the pod UIDs of the view; then update the
    /// view with the operator's own write (it reads its own writes).
    /// `false` when the write was refused (the view is then dropped: the operator observes again).
    fn execute(&mut self, step: &Step, view: &mut View) -> bool {
        match step {
            Step::Label { member, role } => {
                let n = self.node(*member);
                if n.running && n.inc == *view.incs.get(*member) {
                    *self.labels.get_mut(*member) = *role;
                }
                *view.obs.roles.get_mut(*member) = *role;
                true
            }
            Step::Command {
                member, command, ..
            } => {
                if self.leases.get(*member) != view.leases.get(*member) {
                    return false; // 409 Conflict: the Lease changed since it was read
                }
                // The claim is recorded in status on every observation (`processing_terms`)
                // before any decision can overwrite the command.
                let lease = self.leases.get_mut(*member);
                lease.command = Some(Sent {
                    cmd: *command,
                    inc: *view.incs.get(*member),
                });
                lease.unacked = true;
                lease.picked = false;
                *view.leases.get_mut(*member) = lease.clone();
                match view.obs.members.get_mut(*member) {
                    MemberView::Up { pending, .. } => *pending = Some(*command),
                    MemberView::Down { in_doubt, .. } => *in_doubt = Some(*command),
                }
                true
            }
        }
    }

    /// Every invariant of DESIGN.md; `Err` names the first one broken.
    pub fn check(&self) -> Result<(), String> {
        let processing: Vec<Member> = Member::BOTH
            .into_iter()
            .filter(|m| self.node(*m).processing())
            .collect();
        if processing.len() > 1 {
            return Err("two members processing".into());
        }
        for m in &processing {
            let n = self.node(*m);
            if !*self.complete.get(*m) {
                return Err(format!(
                    "{m} processes without holding every acknowledged write"
                ));
            }
            // Between writing the new priority and switching the role (SM<->M) it is 1 or 2.
            if !matches!(
                n.disk.map(|s| s.priority),
                Some(Priority::One | Priority::Two)
            ) {
                return Err(format!(
                    "{m} processes as {} with priority {:?} on its volume",
                    n.role, n.disk
                ));
            }
        }
        let masters: Vec<Member> = Member::BOTH
            .into_iter()
            .filter(|m| *self.labels.get(*m) == Some(Role::Master))
            .collect();
        if masters.len() > 1 {
            return Err("two pods carry the master label".into());
        }
        for m in masters {
            let p = self.node(m).disk.map(|s| s.priority);
            if !matches!(p, Some(Priority::One) | Some(Priority::Two)) {
                return Err(format!("{m} carries the master label with priority {p:?}"));
            }
        }
        if !self.forced_ever {
            self.check_priorities()?;
        }
        Ok(())
    }

    /// P1, P2 and L3 over the volumes: without force-start the records never tie, and the member
    /// the resume rule would pick holds every acknowledged write.
    fn check_priorities(&self) -> Result<(), String> {
        let (a, b) = (self.node(Member::A).disk, self.node(Member::B).disk);
        if let (Some(sa), Some(sb)) = (a, b) {
            if sa.priority == sb.priority {
                return Err(format!(
                    "L3: equal priorities [{sa} {sb}] without force-start"
                ));
            }
            let winner = if hapair::protocol::rank(sa, sb).is_gt() {
                Member::A
            } else {
                Member::B
            };
            if !*self.complete.get(winner) {
                return Err(format!(
                    "P1: {winner} wins [{sa} {sb}] but lacks acknowledged writes"
                ));
            }
        }
        for m in Member::BOTH {
            let one = self
                .node(m)
                .disk
                .is_some_and(|s| s.priority == Priority::One);
            let newest =
                self.node(m).disk.map(|s| s.term) >= self.node(m.peer()).disk.map(|s| s.term);
            if one && newest && !*self.complete.get(m) {
                return Err(format!(
                    "P2: {m} has priority 1 but lacks acknowledged writes"
                ));
            }
        }
        Ok(())
    }

    /// Liveness goal: a member processes, carries the master label, and nothing is in flight.
    pub fn has_master(&self) -> bool {
        Member::BOTH.into_iter().any(|m| {
            self.node(m).processing()
                && *self.labels.get(m) == Some(Role::Master)
                && !self.node(m).app_failed
        })
    }

    pub fn both_up(&self) -> bool {
        Member::BOTH.iter().all(|m| self.node(*m).running)
    }

    /// One step of progress with no faults, in a fixed fair order: pods recover (unless
    /// `recover` is false) and report, agents apply, standbys catch up, and only then the operator
    /// observes afresh and acts. `None` once nothing is left to do.
    pub fn progress(&self, decide: DecideFn, recover: bool) -> Option<World> {
        let skip = if recover { 0 } else { 2 };
        let enabled = |a: &&Action| self.catch_up_allowed || !matches!(a, Action::CatchUp(_));
        if let Some(next) = PROGRESS[skip..]
            .iter()
            .filter(enabled)
            .find_map(|a| self.step(*a, decide))
        {
            return Some(next);
        }
        let observed = self
            .step(Action::Observe, decide)
            .unwrap_or_else(|| self.clone());
        observed.step(Action::Act, decide)
    }

    /// Run `progress` until nothing is left to do (at most `max_steps`).
    pub fn settle_with(&self, decide: DecideFn, recover: bool, max_steps: usize) -> World {
        let mut w = self.clone();
        for _ in 0..max_steps {
            match w.progress(decide, recover) {
                Some(next) => w = next,
                None => break,
            }
        }
        w
    }

    /// Both members recover and the pair settles.
    pub fn settle(&self, decide: DecideFn) -> World {
        self.settle_with(decide, true, 500)
    }

    /// Members that are down stay down; the rest settles.
    pub fn settle_without_recovery(&self, decide: DecideFn) -> World {
        self.settle_with(decide, false, 500)
    }

    /// Test helpers: faults outside the budget.
    pub fn with_crash(&self, m: Member) -> World {
        let mut w = self.clone();
        w.faults_left = w.faults_left.saturating_add(1);
        w.crash(m);
        w
    }

    pub fn with_recovery(&self, m: Member) -> World {
        let mut w = self.clone();
        w.recover(m);
        w
    }

    pub fn with_force_start(&self, m: Member) -> World {
        let mut w = self.clone();
        w.force = Some(m);
        w
    }

    pub fn with_app_crash(&self, m: Member) -> World {
        let mut w = self.clone();
        w.faults_left = w.faults_left.saturating_add(1);
        w.app_crash(m);
        w
    }
}
