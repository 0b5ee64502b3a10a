//! What the member in this pod acts as: the state it acknowledged, the role file that tells the
//! application, and the fence timer. Shared by the applier (which acts on commands) and the fence
//! guard (which stops a processing member whose Lease went stale), under one lock, so a fence
//! and a command can never interleave their role-file writes.
//!
//! It never writes the priority record (the applier persists before it calls [`Acting::act`])
//! and never talks to the API server.

use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::fence::{FenceTimer, Verdict};
use crate::mailbox::{Ack, CommandEnvelope};
use crate::protocol::MemberState;

/// Tells the application its role (the role file in production, a fake in tests), and keeps the
/// pod-scoped sequence floor beside it: the agent container may restart inside its pod, and a
/// restarted agent must never apply again a command this pod already applied or fenced over
/// (the peer may have been promoted since).
pub trait RoleIo: Send {
    /// Replaces the role with the one for `state`, atomically.
    fn write_role(&mut self, state: MemberState) -> io::Result<()>;
    /// The floor an earlier agent of this pod left (0 when none did).
    fn read_floor(&self) -> io::Result<u64>;
    /// Replaces the floor, atomically.
    fn write_floor(&mut self, seq: u64) -> io::Result<()>;
    /// The application's reply to the role file (role handshake): the last line it acted on,
    /// `None` when it has not replied.
    fn applied(&self) -> io::Result<Option<String>>;
    /// Removes the reply, so the next one answers a line written after this call.
    fn clear_applied(&mut self) -> io::Result<()>;
}

/// Why a persisted command was not acted on (and so is not acknowledged).
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    #[error(
        "command seq {seq} was seen before this agent fenced itself (floor {floor}): only a newer \
         command can make it act again"
    )]
    Superseded { seq: u64, floor: u64 },
    #[error("refused to enter {state}: {reason}")]
    LeaseStale { state: MemberState, reason: String },
    #[error("cannot write the role file: {0}; the application was not told, so the command is not acknowledged")]
    Role(#[source] io::Error),
}

/// The acting state of this pod's member.
pub struct Acting<F> {
    role: F,
    state: MemberState,
    ack: Option<Ack>,
    /// No command with a sequence number at or below it is applied (again) by this process.
    floor: u64,
    /// The highest sequence number addressed to this pod seen so far.
    seen: u64,
    fenced: Option<String>,
    timer: FenceTimer,
    /// Acknowledge `M` only once the application replied `M` (see [`Acting::with_role_handshake`]).
    handshake: bool,
    /// `M` is on the role file, its acknowledgement held until the application replies.
    awaiting: Option<Ack>,
}

impl<F: RoleIo> Acting<F> {
    /// A member that acknowledged nothing yet. Writes role `X`: a fresh agent never lets the
    /// application keep a role an earlier agent gave it. Commands at or below the floor an
    /// earlier agent of this pod left are never applied again.
    pub fn start(mut role: F, timer: FenceTimer) -> io::Result<Self> {
        let floor = role.read_floor()?;
        role.write_role(MemberState::X)?;
        Ok(Acting {
            role,
            state: MemberState::X,
            ack: None,
            floor,
            seen: floor,
            fenced: None,
            timer,
            handshake: false,
            awaiting: None,
        })
    }

    /// The application replies to each role line in `<role file>.applied`, and replies `M` only
    /// once its standby holds every write it acknowledged (hapair-kv does). The agent then
    /// acknowledges `M` only after that reply: the operator takes an acknowledged `M` to mean
    /// the standby can take over without losing an acknowledged write (the seed's 4-4), which
    /// the role file alone cannot promise while writes acknowledged in `SM` are still in flight.
    pub fn with_role_handshake(mut self, handshake: bool) -> Self {
        self.handshake = handshake;
        self
    }

    pub fn state(&self) -> MemberState {
        self.state
    }

    pub fn ack(&self) -> Option<Ack> {
        self.ack
    }

    pub fn fenced(&self) -> Option<&str> {
        self.fenced.as_deref()
    }

    /// Notes that a command with `seq` is addressed to this pod; true when it may be applied.
    pub fn admit(&mut self, seq: u64) -> bool {
        self.seen = self.seen.max(seq);
        seq > self.floor
    }

    /// Commands at or below this sequence number will never be acknowledged by this pod: the
    /// floor, except an `M` still awaiting the application's reply.
    pub fn dead_floor(&self) -> u64 {
        match self.awaiting {
            Some(awaited) => self.floor.min(awaited.seq - 1),
            None => self.floor,
        }
    }

    /// The command whose acknowledgement waits for the application's reply, if any.
    pub fn awaiting(&self) -> Option<Ack> {
        self.awaiting
    }

    /// Acts on a command whose record is already persisted: writes the role file, then takes the
    /// command's state and acknowledges it, or with the role handshake, for `M`, returns
    /// `Ok(None)` and leaves the acknowledgement to [`Acting::take_reply`]. A processing state
    /// is refused (and the member fenced) when the Lease is already stale: it would be fenced
    /// the next instant anyway.
    pub fn act(
        &mut self,
        envelope: &CommandEnvelope,
        now: Instant,
    ) -> Result<Option<Ack>, ActError> {
        if envelope.seq <= self.floor {
            let (seq, floor) = (envelope.seq, self.floor);
            return Err(ActError::Superseded { seq, floor });
        }
        let state = envelope.command.target_state();
        if let Verdict::Fence { silent_for } = self.timer.check(state.is_processing(), now) {
            let reason = self.stale_reason(silent_for);
            self.fence(reason.clone()).map_err(ActError::Role)?;
            return Err(ActError::LeaseStale { state, reason });
        }
        let await_reply = self.handshake && state == MemberState::M;
        if await_reply {
            self.role.clear_applied().map_err(ActError::Role)?;
        }
        self.role.write_role(state).map_err(ActError::Role)?;
        let ack = Ack {
            seq: envelope.seq,
            command: envelope.command,
        };
        self.fenced = None;
        self.raise_floor(envelope.seq);
        if await_reply {
            // Still acting (and reported) as before, `SM`: processing either way.
            self.awaiting = Some(ack);
            return Ok(None);
        }
        self.awaiting = None;
        self.take(ack);
        Ok(Some(ack))
    }

    fn take(&mut self, ack: Ack) {
        self.state = ack.command.target_state();
        self.ack = Some(ack);
    }

    /// With the role handshake: acknowledges the awaited `M` once the application replied `M`.
    /// `Some` when it did now.
    pub fn take_reply(&mut self) -> io::Result<Option<Ack>> {
        let Some(ack) = self.awaiting else {
            return Ok(None);
        };
        let reply = self.role.applied()?;
        if reply.as_deref().map(str::trim) != Some("M") {
            return Ok(None);
        }
        self.awaiting = None;
        self.take(ack);
        Ok(Some(ack))
    }

    /// Raises the floor and keeps it for a restarted agent. Best effort: the role file beside it
    /// was just written, so a failure here is as unlikely as it is loud.
    fn raise_floor(&mut self, seq: u64) {
        self.floor = self.floor.max(seq);
        if let Err(e) = self.role.write_floor(self.floor) {
            tracing::error!(error = %e, floor = self.floor,
                "cannot keep the command floor: a restarted agent might apply a command again");
        }
    }

    /// A renewal sent at `sent` succeeded.
    pub fn renewed(&mut self, sent: Instant) {
        self.timer.renewed(sent);
    }

    /// What the fence timer says now.
    pub fn check(&self, now: Instant) -> Verdict {
        self.timer.check(self.state.is_processing(), now)
    }

    /// Fences now if the Lease went stale while processing; says what the timer said. On a
    /// role-file error nothing changes (the caller retries).
    pub fn fence_if_stale(&mut self, now: Instant) -> io::Result<Verdict> {
        let verdict = self.check(now);
        if let Verdict::Fence { silent_for } = verdict {
            let reason = self.stale_reason(silent_for);
            self.fence(reason)?;
            tracing::error!(?silent_for, "self-fenced: role X");
        }
        Ok(verdict)
    }

    /// Stops processing on the agent's own authority: role `X` first, then state `X`. Every
    /// command seen so far is never applied afterwards; only a newer one can make it act again.
    /// On a role-file error nothing changes (the caller retries).
    pub fn fence(&mut self, reason: String) -> io::Result<()> {
        if self.state.is_processing() {
            self.role.write_role(MemberState::X)?;
            self.state = MemberState::X;
        }
        self.awaiting = None;
        self.raise_floor(self.seen);
        self.fenced = Some(reason);
        Ok(())
    }

    /// The reason for a fence after `silent_for` without a renewal.
    pub fn stale_reason(&self, silent_for: Duration) -> String {
        format!(
            "no successful Lease renewal for {:.1}s (fence after lease duration - margin = {}s), \
             so the operator may promote the peer: stopped processing",
            silent_for.as_secs_f64(),
            self.timer.budget().as_secs_f64()
        )
    }

    /// Writes role `X` on the way out: with no agent left to fence it, the application must not
    /// keep processing.
    pub fn stop(&mut self) -> io::Result<()> {
        self.role.write_role(MemberState::X)?;
        self.state = MemberState::X;
        self.awaiting = None;
        Ok(())
    }
}

/// [`Acting`] behind a lock, with a condition variable the fence guard waits on.
pub struct Shared<F> {
    acting: Mutex<Acting<F>>,
    changed: Condvar,
}

impl<F: RoleIo> Shared<F> {
    pub fn new(acting: Acting<F>) -> Arc<Self> {
        Arc::new(Shared {
            acting: Mutex::new(acting),
            changed: Condvar::new(),
        })
    }

    /// The acting state. A holder that panicked left it as consistent as any crash would (every
    /// change is a role write followed by plain assignments), so a poisoned lock is still used:
    /// the fence guard must keep working.
    pub fn lock(&self) -> MutexGuard<'_, Acting<F>> {
        self.acting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes the fence guard: the state or the timer changed.
    pub fn notify(&self) {
        self.changed.notify_all();
    }

    /// Waits for [`Shared::notify`], or at most `timeout` (forever when `None`).
    pub fn wait<'a>(
        &self,
        guard: MutexGuard<'a, Acting<F>>,
        timeout: Option<Duration>,
    ) -> MutexGuard<'a, Acting<F>> {
        match timeout {
            Some(t) => match self.changed.wait_timeout(guard, t) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            },
            None => self
                .changed
                .wait(guard)
                .unwrap_or_else(PoisonError::into_inner),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    /// A role file that logs every write into a shared journal, or fails on demand.
    #[derive(Clone, Default)]
    pub struct FakeRole {
        pub journal: Arc<StdMutex<Vec<String>>>,
        pub fail: Arc<StdMutex<bool>>,
        pub floor: Arc<StdMutex<u64>>,
        pub applied: Arc<StdMutex<Option<String>>>,
    }

    impl RoleIo for FakeRole {
        fn write_role(&mut self, state: MemberState) -> io::Result<()> {
            if *self.fail.lock().unwrap() {
                return Err(io::Error::other("role dir gone"));
            }
            self.journal.lock().unwrap().push(format!("role {state}"));
            Ok(())
        }

        fn read_floor(&self) -> io::Result<u64> {
            Ok(*self.floor.lock().unwrap())
        }

        fn write_floor(&mut self, seq: u64) -> io::Result<()> {
            *self.floor.lock().unwrap() = seq;
            Ok(())
        }

        fn applied(&self) -> io::Result<Option<String>> {
            Ok(self.applied.lock().unwrap().clone())
        }

        fn clear_applied(&mut self) -> io::Result<()> {
            self.journal.lock().unwrap().push("clear applied".into());
            *self.applied.lock().unwrap() = None;
            Ok(())
        }
    }

    fn envelope(wire: &str, seq: u64) -> CommandEnvelope {
        CommandEnvelope {
            command: wire.parse().unwrap(),
            seq,
            pod: "me".into(),
        }
    }

    fn acting(budget: Duration, now: Instant) -> (Acting<FakeRole>, FakeRole) {
        let role = FakeRole::default();
        let acting = Acting::start(role.clone(), FenceTimer::new(budget, now)).unwrap();
        (acting, role)
    }

    #[test]
    fn start_writes_role_x() {
        let (a, role) = acting(Duration::from_secs(7), Instant::now());
        assert_eq!(a.state(), MemberState::X);
        assert_eq!(*role.journal.lock().unwrap(), ["role X"]);
    }

    #[test]
    fn fencing_stops_processing_and_only_a_newer_command_acts_again() {
        let t0 = Instant::now();
        let (mut a, role) = acting(Duration::from_secs(7), t0);
        assert!(a.admit(1));
        a.act(&envelope("SM/1", 1), t0).unwrap();
        assert!(a.admit(2)); // seen, then the lease goes stale before it is applied
        a.fence("stale".into()).unwrap();
        assert_eq!(a.state(), MemberState::X);
        assert!(!a.admit(2), "a command seen before the fence must not act");
        assert!(matches!(
            a.act(&envelope("SM/1", 2), t0),
            Err(ActError::Superseded { .. })
        ));
        assert!(a.admit(3));
        a.act(&envelope("SM/2", 3), t0).unwrap();
        assert_eq!(a.fenced(), None);
        assert_eq!(
            *role.journal.lock().unwrap(),
            ["role X", "role SM", "role X", "role SM"]
        );
    }

    #[test]
    fn a_restarted_agent_never_applies_again_what_its_pod_applied_or_fenced_over() {
        let t0 = Instant::now();
        let (mut a, role) = acting(Duration::from_secs(7), t0);
        assert!(a.admit(4));
        a.act(&envelope("SM/1", 4), t0).unwrap();
        assert!(a.admit(5));
        a.fence("stale".into()).unwrap();
        drop(a);
        let restarted = Acting::start(role.clone(), FenceTimer::new(Duration::from_secs(7), t0));
        let mut b = restarted.unwrap();
        assert_eq!(b.state(), MemberState::X);
        assert_eq!(
            b.dead_floor(),
            5,
            "reported: the operator stops waiting for 4 and 5"
        );
        assert!(!b.admit(4), "the applied command must not act again");
        assert!(!b.admit(5), "the command fenced over must not act");
        assert!(b.admit(6));
    }

    #[test]
    fn a_member_resumed_past_its_budget_fences_before_anything_else() {
        let t0 = Instant::now();
        let (mut a, role) = acting(Duration::from_secs(7), t0);
        assert!(a.admit(1));
        a.act(&envelope("SM/1", 1), t0).unwrap();
        let in_time = a.fence_if_stale(t0 + Duration::from_secs(6)).unwrap();
        assert!(matches!(in_time, Verdict::WaitUntil(_)));
        assert_eq!(a.state(), MemberState::SM);
        let late = a.fence_if_stale(t0 + Duration::from_secs(8)).unwrap();
        assert!(matches!(late, Verdict::Fence { .. }));
        assert_eq!(a.state(), MemberState::X);
        assert!(a.fenced().unwrap().contains("no successful Lease renewal"));
        assert_eq!(
            *role.journal.lock().unwrap(),
            ["role X", "role SM", "role X"]
        );
    }

    #[test]
    fn a_processing_command_on_a_stale_lease_fences_instead_of_acting() {
        let t0 = Instant::now();
        let (mut a, role) = acting(Duration::from_secs(7), t0);
        assert!(a.admit(1));
        let err = a
            .act(&envelope("SM/1", 1), t0 + Duration::from_secs(8))
            .unwrap_err();
        assert!(matches!(err, ActError::LeaseStale { .. }), "{err}");
        assert_eq!(a.state(), MemberState::X);
        assert!(a.fenced().is_some());
        assert_eq!(*role.journal.lock().unwrap(), ["role X"]);
    }

    const M_CMD: &str = "M/1/0b7e1c9a-0000-4000-8000-00000000000b.3";

    #[test]
    fn with_the_role_handshake_m_is_acknowledged_only_after_the_application_replies_m() {
        let t0 = Instant::now();
        let (a, role) = acting(Duration::from_secs(7), t0);
        let mut a = a.with_role_handshake(true);
        a.admit(1);
        assert!(a.act(&envelope("SM/1", 1), t0).unwrap().is_some());
        *role.applied.lock().unwrap() = Some("M\n".into()); // a reply to an earlier M
        a.admit(2);
        assert_eq!(a.act(&envelope(M_CMD, 2), t0).unwrap(), None);
        assert_eq!(
            *role.journal.lock().unwrap(),
            ["role X", "role SM", "clear applied", "role M"],
            "the old reply is gone before M is written"
        );
        assert_eq!((a.state(), a.ack().unwrap().seq), (MemberState::SM, 1));
        assert_eq!(a.dead_floor(), 1, "the awaited M may still be acknowledged");
        assert_eq!(a.take_reply().unwrap(), None, "no reply yet");
        *role.applied.lock().unwrap() = Some("SM\n".into());
        assert_eq!(a.take_reply().unwrap(), None, "a reply to another line");
        *role.applied.lock().unwrap() = Some("M\n".into());
        assert_eq!(a.take_reply().unwrap().unwrap().seq, 2);
        assert_eq!((a.state(), a.ack().unwrap().seq), (MemberState::M, 2));
        assert_eq!(a.awaiting(), None);
    }

    #[test]
    fn a_fence_or_a_newer_command_drops_the_awaited_m() {
        let t0 = Instant::now();
        let (a, role) = acting(Duration::from_secs(7), t0);
        let mut a = a.with_role_handshake(true);
        a.admit(1);
        a.act(&envelope("SM/1", 1), t0).unwrap();
        a.admit(2);
        a.act(&envelope(M_CMD, 2), t0).unwrap();
        a.fence("stale".into()).unwrap();
        *role.applied.lock().unwrap() = Some("M\n".into());
        assert_eq!(a.take_reply().unwrap(), None);
        assert_eq!(a.state(), MemberState::X);
        a.admit(3);
        a.act(&envelope("SM/2", 3), t0).unwrap();
        a.admit(4);
        a.act(&envelope(M_CMD, 4), t0).unwrap();
        a.admit(5);
        assert!(a.act(&envelope("SM/2", 5), t0).unwrap().is_some());
        *role.applied.lock().unwrap() = Some("M\n".into());
        assert_eq!(a.take_reply().unwrap(), None, "M was superseded by SM");
        assert_eq!((a.state(), a.ack().unwrap().seq), (MemberState::SM, 5));
    }

    #[test]
    fn without_the_handshake_m_is_acknowledged_at_once() {
        let t0 = Instant::now();
        let (mut a, _role) = acting(Duration::from_secs(7), t0);
        a.admit(1);
        assert_eq!(a.act(&envelope(M_CMD, 1), t0).unwrap().unwrap().seq, 1);
        assert_eq!(a.state(), MemberState::M);
    }

    #[test]
    fn a_failed_fence_changes_nothing() {
        let t0 = Instant::now();
        let (mut a, role) = acting(Duration::from_secs(7), t0);
        a.admit(1);
        a.act(&envelope(M_CMD, 1), t0).unwrap();
        *role.fail.lock().unwrap() = true;
        assert!(a.fence("stale".into()).is_err());
        assert_eq!(a.state(), MemberState::M);
        assert_eq!(a.fenced(), None);
    }
}
