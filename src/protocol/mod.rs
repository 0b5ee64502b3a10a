//! The HAPair protocol (patent JP2001175626, digest in SPEC.md): members, priorities, pair states,
//! transitions and the decision of who processes.
//!
//! This module is pure: it performs no I/O, knows no Kubernetes and no clock. The operator
//! observes the cluster into an [`Observation`], calls [`decide`], and carries out the
//! [`Step`]s in order; the agent applies a [`Command`] by writing
//! [`Command::standing_written`] before it acts.

mod command;
mod decision;
mod member;
mod observation;
mod priority;
mod resume;
mod state;
mod transition;

pub use command::Command;
pub use decision::{decide, Decision, ForceStartVerdict, Step};
pub use member::{Member, PerMember};
pub use observation::{ForceStartRequest, Instance, MemberView, Observation, RecordView};
pub use priority::{Priority, Standing, Term};
pub use resume::{rank, resume, Resume, Wait};
pub use state::{MemberState, PairState, Role};
pub use transition::Transition;

/// Malformed protocol values coming from outside (annotations, files, the command line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("'{0}' is not a member: use 'a' or 'b'")]
    UnknownMember(String),
    #[error("'{0}' is not a priority: a priority is 1, 2 or 3")]
    InvalidPriority(String),
    #[error("'{0}' is not a member state: use M, SM, SL or X")]
    InvalidState(String),
    #[error("'{0}' is not a role: use master or standby")]
    InvalidRole(String),
    #[error("'{0}' is not a member instance: expected <pod UID>.<ack sequence number>")]
    InvalidInstance(String),
    #[error("'{0}' is not a seed transition id: expected e.g. 4-4, 1-2-1 or force-start")]
    InvalidTransition(String),
    #[error("'{0}' is not a command: expected <STATE>/<term> (e.g. SM/4), M/<term>/<standby instance> or INIT/0")]
    InvalidCommand(String),
}

/// The seed's transition table (figure 2), as the decision carries it out.
pub const SUMMARY: &str = "\
from     event                                   to                      seed id
(X X)    both recover, a higher priority         (SM SL) -> (M SL)       1-2-1, 1-2-2
(X X)    both recover, b higher priority         (SL SM) -> (SL M)       1-1-1, 1-1-2
(X X)    only a recovers, a's priority is 1      (SM X)                  2-2
(X X)    only a recovers, priority 2 or 3        wait (or force-start)   -
(X SM)   a recovers                              (SL SM) -> (SL M)       3-1-1, 3-1-2
(M SL)   b fails                                 (SM X), a writes 1      4-2
(M SL)   a fails                                 (X SM), b writes 1      4-4
(M SL)   both fail                               (X X)                   5-5
(SM SL)  a fails, or both fail                   (X X)                   5-6
(SM SL)  b fails                                 (SM X)                  5-7
(SM X)   a fails                                 (X X)                   5-8
priorities written: SM=1 M=2 SL=3 X=nothing; initial a=2 b=3; [1 1] is ordered by term";
