//! Applying the operator's command, in the seed's order (DESIGN "Command / report cycle"):
//! persist the priority record durably, then tell the application (role file), then report the
//! acknowledgement. A command whose record could not be persisted is never acknowledged: the
//! report carries the error instead and the command is retried on the next event or tick.
//!
//! The agent never decides: it applies the command addressed to its pod, once, and refuses only
//! writes that would destroy what a volume says and that no command may overwrite (a corrupt or
//! foreign record except on `SM`, a force-start; initial priorities over an existing record).
//! The I/O is behind [`RecordIo`], [`RoleIo`](super::acting::RoleIo) and [`Reporter`].

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use super::acting::{ActError, RoleIo, Shared};
use crate::mailbox::{Ack, CommandEnvelope, MailboxError, Report};
use crate::protocol::{Command, Member, MemberState, RecordView, Standing};
use crate::store::{ReadOutcome, RecordStore, StoreError};

/// The member's priority record (the store in production, a fake in tests).
pub trait RecordIo {
    fn read(&self) -> Result<ReadOutcome, StoreError>;
    /// Replaces the record durably: `Ok` only once it survives a power loss.
    fn write(&self, standing: Standing) -> Result<(), StoreError>;
}

impl RecordIo for RecordStore {
    fn read(&self) -> Result<ReadOutcome, StoreError> {
        RecordStore::read(self)
    }

    fn write(&self, standing: Standing) -> Result<(), StoreError> {
        RecordStore::write(self, standing).map(drop)
    }
}

/// Where the report goes (the member's Lease in production). A successful report renews the
/// Lease.
pub trait Reporter {
    type Error;
    fn report(&mut self, report: &Report) -> impl Future<Output = Result<(), Self::Error>>;
}

/// Why a command addressed to this pod is not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("cannot read the record before writing it: {0}")]
    Read(#[source] StoreError),
    #[error("refused {command}: {reason}")]
    Refused { command: Command, reason: String },
    #[error("cannot persist {command}: {source}")]
    Persist {
        command: Command,
        #[source]
        source: StoreError,
    },
    #[error("{0}")]
    Act(#[from] ActError),
}

/// What applying the command on the Lease came to.
#[derive(Debug)]
pub enum Outcome {
    /// Nothing to do: no command, another pod's, or one already applied (or fenced over).
    Ignored,
    Applied(Ack),
    /// `M` is on the role file; its acknowledgement waits for the application's reply (role
    /// handshake).
    AwaitingReply(Ack),
    NotApplied(ApplyError),
}

/// Applies commands for one member in one pod and reports.
pub struct Applier<R, F> {
    pod_uid: String,
    member: Member,
    store: R,
    /// What the volume said when last read or written.
    record: RecordView,
    /// Why the command on the Lease is not acknowledged, if it is not.
    error: Option<String>,
    shared: Arc<Shared<F>>,
    /// The last report the Lease accepted: an unchanged report is sent only to renew.
    last_sent: Option<Report>,
    /// SIGTERM came: reported, so the member counts as down while the pod still runs.
    stopping: bool,
}

impl<R: RecordIo, F: RoleIo> Applier<R, F> {
    /// `record` is what the agent read from its volume at start; it writes nothing at start.
    pub fn new(
        pod_uid: String,
        member: Member,
        store: R,
        record: RecordView,
        shared: Arc<Shared<F>>,
    ) -> Self {
        Applier {
            pod_uid,
            member,
            store,
            record,
            error: None,
            shared,
            last_sent: None,
            stopping: false,
        }
    }

    /// Applies `command` (if it is for this pod and new), then reports if the report changed or
    /// `renew` asks for a renewal. `Ok` once the report was accepted (or none was needed).
    pub async fn step<P: Reporter>(
        &mut self,
        command: Result<Option<&CommandEnvelope>, &MailboxError>,
        renew: bool,
        reporter: &mut P,
    ) -> Result<(), P::Error> {
        // A process that was frozen past its budget (a hung node, resumed) fences before anything
        // else: its next report must not claim a state the operator already gave up on.
        if let Err(e) = self.shared.lock().fence_if_stale(Instant::now()) {
            tracing::error!(error = %e, "cannot write role X to fence; retrying");
        }
        self.take_reply();
        match command {
            Ok(command) => {
                self.apply(command);
            }
            Err(e) => self.error = Some(format!("cannot read the command: {e}")),
        }
        self.send(renew, reporter).await
    }

    /// Applies the command addressed to this pod, if it is new: persist, act, acknowledge.
    pub fn apply(&mut self, command: Option<&CommandEnvelope>) -> Outcome {
        let outcome = self.try_apply(command);
        self.error = match &outcome {
            Outcome::NotApplied(e) => {
                tracing::warn!(error = %e, "command not acknowledged; retrying on the next event");
                Some(e.to_string())
            }
            Outcome::Applied(ack) => {
                tracing::info!(seq = ack.seq, command = %ack.command, "command acknowledged");
                None
            }
            Outcome::AwaitingReply(ack) => {
                tracing::info!(seq = ack.seq, command = %ack.command,
                    "role written; acknowledging once the application replies (role handshake)");
                None
            }
            Outcome::Ignored => None,
        };
        outcome
    }

    fn try_apply(&mut self, command: Option<&CommandEnvelope>) -> Outcome {
        let Some(envelope) = command.filter(|c| c.pod == self.pod_uid) else {
            return Outcome::Ignored;
        };
        if !self.shared.lock().admit(envelope.seq) {
            return Outcome::Ignored;
        }
        let result = self
            .persist(envelope.command)
            .and_then(|()| Ok(self.shared.lock().act(envelope, Instant::now())?));
        self.shared.notify();
        match result {
            Ok(Some(ack)) => Outcome::Applied(ack),
            Ok(None) => Outcome::AwaitingReply(Ack {
                seq: envelope.seq,
                command: envelope.command,
            }),
            Err(e) => Outcome::NotApplied(e),
        }
    }

    /// True while an acknowledgement waits for the application's reply.
    pub fn awaiting_reply(&self) -> bool {
        self.shared.lock().awaiting().is_some()
    }

    /// Acknowledges the awaited command if the application replied; a reply that cannot be
    /// read is retried on the next step.
    fn take_reply(&mut self) {
        match self.shared.lock().take_reply() {
            Ok(Some(ack)) => {
                tracing::info!(seq = ack.seq, command = %ack.command,
                    "the application replied: command acknowledged");
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the application's reply; retrying"),
        }
    }

    /// Writes the record the command requires, if any, durably. Runs outside the acting lock:
    /// a hung volume must never stop the fence guard.
    fn persist(&mut self, command: Command) -> Result<(), ApplyError> {
        let Some(standing) = command.standing_written(self.member) else {
            return Ok(());
        };
        let current = self.store.read().map_err(ApplyError::Read)?;
        self.record = current.view();
        if let Some(reason) = refusal(command, &current, self.member) {
            return Err(ApplyError::Refused { command, reason });
        }
        if let Err(source) = self.store.write(standing) {
            self.reread();
            return Err(ApplyError::Persist { command, source });
        }
        self.record = RecordView::Valid(standing);
        Ok(())
    }

    /// After a failed write the record may be the old one or (rarely) the new one: say which.
    fn reread(&mut self) {
        if let Ok(outcome) = self.store.read() {
            self.record = outcome.view();
        }
    }

    /// The report as of now.
    pub fn report(&self) -> Report {
        let acting = self.shared.lock();
        Report {
            pod: self.pod_uid.clone(),
            record: self.record.clone(),
            state: acting.state(),
            ack: acting.ack(),
            fenced: acting.fenced().map(String::from),
            error: self.error.clone(),
            floor: acting.dead_floor(),
            stopping: self.stopping,
        }
    }

    /// Sends the report if it changed or a renewal is due; a success renews the fence timer
    /// from the instant the report was sent.
    async fn send<P: Reporter>(&mut self, renew: bool, reporter: &mut P) -> Result<(), P::Error> {
        let report = self.report();
        if !renew && self.last_sent.as_ref() == Some(&report) {
            return Ok(());
        }
        let sent = Instant::now();
        reporter.report(&report).await?;
        self.shared.lock().renewed(sent);
        self.shared.notify();
        self.last_sent = Some(report);
        Ok(())
    }

    /// The pod is stopping: stop processing, and apply nothing seen so far.
    pub fn terminating(&mut self) {
        self.stopping = true;
        let reason = "the pod is terminating (SIGTERM): stopped processing".to_string();
        tracing::info!("{reason}");
        if let Err(e) = self.shared.lock().fence(reason) {
            tracing::error!(error = %e, "cannot write role X while terminating");
        }
        self.shared.notify();
    }

    /// The Lease is held by another pod (this pod was replaced): stop processing, and apply
    /// nothing seen so far.
    pub fn lost(&mut self, holder: &str) {
        tracing::error!(%holder, "another pod holds the Lease: fencing, and writing nothing more");
        let reason = format!("the Lease is held by pod {holder}, not by this pod");
        if let Err(e) = self.shared.lock().fence(reason) {
            tracing::error!(error = %e, "cannot write role X after losing the Lease");
        }
        self.shared.notify();
    }
}

/// Why `command` must not replace `current`, if it must not.
fn refusal(command: Command, current: &ReadOutcome, member: Member) -> Option<String> {
    let force_start = matches!(
        command,
        Command::Enter {
            state: MemberState::SM,
            ..
        }
    );
    match current {
        ReadOutcome::Corrupt { .. } | ReadOutcome::WrongPair { .. } if !force_start => Some(
            format!("{current}; only SM (a force-start) may write over it, so nothing was written"),
        ),
        ReadOutcome::Valid(record) if command == Command::Initialize => {
            let initial = Command::Initialize.standing_written(member);
            (Some(record.standing) != initial).then(|| {
                format!(
                    "the volume already holds a record (priority {}, term {}): initial \
                     priorities are written only on a fresh volume, so nothing was written",
                    record.standing.priority, record.standing.term
                )
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
