//! What the operator observed of the pair: the only input of the decision.

use std::fmt;
use std::str::FromStr;

use super::command::Command;
use super::member::{Member, PerMember};
use super::priority::{Standing, Term};
use super::state::{MemberState, Role};
use super::ProtocolError;

/// A member's current acknowledged state, as an instance: its pod UID (a UUID) and the sequence
/// number of the command it last acknowledged. It changes when the pod is replaced and whenever
/// the member acknowledges another command, so "the same instance" means "nothing happened since".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Instance {
    pub pod: u128,
    pub ack: u64,
}

impl fmt::Display for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}.{}", self.pod, self.ack)
    }
}

/// Parses `<pod UID>.<ack>`; the UID is 32 hex digits, dashes allowed.
impl FromStr for Instance {
    type Err = ProtocolError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ProtocolError::InvalidInstance(s.to_string());
        let (uid, ack) = s.rsplit_once('.').ok_or_else(bad)?;
        let hex: String = uid.chars().filter(|c| *c != '-').collect();
        if hex.len() != 32 {
            return Err(bad());
        }
        Ok(Instance {
            pod: u128::from_str_radix(&hex, 16).map_err(|_| bad())?,
            ack: ack.parse().map_err(|_| bad())?,
        })
    }
}

/// What a recovered member's agent read from its own volume.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RecordView {
    Valid(Standing),
    /// No record: a fresh volume, or one that lost its data (then it holds no data at all).
    Missing,
    /// The record exists but cannot be trusted (checksum, parse); the reason names the file.
    Corrupt(String),
    /// The volume belongs to another pair or member; never used.
    WrongPair(String),
}

impl RecordView {
    pub fn standing(&self) -> Option<Standing> {
        match self {
            RecordView::Valid(s) => Some(*s),
            _ => None,
        }
    }
}

/// One member as observed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MemberView {
    /// Failed: pod gone or not running, agent not reporting, or lease expired (after the agent
    /// fenced itself). A failed member processes nothing.
    Down {
        /// The last command its agent acknowledged (in any incarnation).
        last_acked: Option<Command>,
        /// The last record it reported.
        last_standing: Option<Standing>,
        /// A command written for it that it never acknowledged: it may have applied it.
        in_doubt: Option<Command>,
    },
    /// Recovered: its agent runs and has reported the record it read for this pod.
    Up {
        /// Which pod, and which of its acknowledgements, this observation is of.
        instance: Instance,
        record: RecordView,
        /// The state this incarnation acknowledged (`X` until its first command).
        state: MemberState,
        /// A command written for this incarnation and not yet acknowledged.
        pending: Option<Command>,
        /// The application stopped or restarted since the member entered `state`: a failure
        /// (DESIGN: "failure = the pod or its application container stops").
        app_failed: bool,
        /// The application reports it holds all the peer's handover data (its readiness).
        caught_up: bool,
    },
}

impl MemberView {
    pub fn is_up(&self) -> bool {
        matches!(self, MemberView::Up { .. })
    }

    /// Processing: recovered, acknowledged `M`/`SM`, and its application has not failed since.
    pub fn is_processing(&self) -> bool {
        match self {
            MemberView::Up { state, .. } => state.is_processing(),
            MemberView::Down { .. } => false,
        }
    }

    /// The state it is in for the pair state: a failed member is `X`.
    pub fn state(&self) -> MemberState {
        match self {
            MemberView::Up { state, .. } => *state,
            MemberView::Down { .. } => MemberState::X,
        }
    }

    /// The command not yet acknowledged (pending for a live member, in doubt for a failed one).
    pub fn unacked(&self) -> Option<Command> {
        match self {
            MemberView::Up { pending, .. } => *pending,
            MemberView::Down { in_doubt, .. } => *in_doubt,
        }
    }

    /// The most recent record known for this member.
    pub fn known_standing(&self) -> Option<Standing> {
        match self {
            MemberView::Up { record, .. } => record.standing(),
            MemberView::Down { last_standing, .. } => *last_standing,
        }
    }
}

/// A request to force-start a member (the `hapair.io/force-start` annotation).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ForceStartRequest {
    Member(Member),
    /// The annotation named something that is not a member.
    Invalid(String),
}

/// Everything the decision may use.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Observation {
    pub members: PerMember<MemberView>,
    /// The role label each member's pod carries right now.
    pub roles: PerMember<Option<Role>>,
    /// False until a record has been written on a member volume of this pair (status cache).
    pub initialized: bool,
    /// For each member, the highest term in which it was told to process or reported processing
    /// (status cache): it may only make a decision more conservative.
    pub recorded_terms: PerMember<Term>,
    pub force_start: Option<ForceStartRequest>,
    /// For each member, whether an instance other than the one in `members` (an earlier pod, or
    /// a failed one whose containers may still run) may still be processing: its lease has not
    /// expired and it has not reported that it stopped. A failed member's view is `Down`, which
    /// promises it processes nothing; this says when that promise is not yet kept.
    pub lingering: PerMember<bool>,
}

impl Observation {
    pub fn member(&self, m: Member) -> &MemberView {
        self.members.get(m)
    }

    /// The highest term known anywhere: records, unacknowledged commands, the status.
    pub fn max_term(&self) -> Term {
        Member::BOTH
            .iter()
            .flat_map(|m| {
                let v = self.member(*m);
                [
                    v.known_standing().map(|s| s.term),
                    v.unacked().and_then(Command::term),
                ]
            })
            .flatten()
            .fold(self.recorded_terms.a.max(self.recorded_terms.b), Term::max)
    }

    /// The status's per-member processing terms updated with this observation: what the operator
    /// records before it acts, so a later decision cannot forget a claim to have processed.
    pub fn processing_terms(&self) -> PerMember<Term> {
        let claim = |m: Member| {
            let v = self.member(m);
            let record = v
                .known_standing()
                .filter(|s| s.priority != super::priority::Priority::Three)
                .map(|s| s.term);
            let command = v
                .unacked()
                .filter(|c| c.may_process())
                .and_then(Command::term);
            [record, command]
                .into_iter()
                .flatten()
                .fold(*self.recorded_terms.get(m), Term::max)
        };
        PerMember::new(claim(Member::A), claim(Member::B))
    }
}
