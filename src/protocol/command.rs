//! What the operator tells a member's agent to do. The agent applies it in the seed's order:
//! write and flush the priority, then act (role file), then acknowledge.

use std::fmt;
use std::str::FromStr;

use super::member::Member;
use super::observation::Instance;
use super::priority::{Priority, Standing, Term};
use super::state::MemberState;
use super::ProtocolError;

/// A command for one member: enter a state, in a term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// Write the seed's initial priority (a=2, b=3) on a fresh pair's empty volume. Acts on nothing.
    Initialize,
    /// Enter `state` in `term`: write `state.priority_written()` with `term` (nothing for `X`).
    Enter { state: MemberState, term: Term },
    /// Enter `M` in `term` with this standby instance: only that instance of the peer is known to
    /// hold every write once the master acknowledged (4-4 may promote it, and no other).
    Master { term: Term, standby: Instance },
}

impl Command {
    pub fn enter(state: MemberState, term: Term) -> Self {
        Command::Enter { state, term }
    }

    /// The state the member is in once it acknowledged this command.
    pub fn target_state(self) -> MemberState {
        match self {
            Command::Initialize => MemberState::X,
            Command::Enter { state, .. } => state,
            Command::Master { .. } => MemberState::M,
        }
    }

    /// The record the agent must have flushed before it acknowledges, if any.
    pub fn standing_written(self, member: Member) -> Option<Standing> {
        match self {
            Command::Initialize => Some(Standing::new(member.initial_priority(), Term(0))),
            Command::Enter { state, term } => state
                .priority_written()
                .map(|p: Priority| Standing::new(p, term)),
            Command::Master { term, .. } => Some(Standing::new(Priority::Two, term)),
        }
    }

    /// The term the command carries, if any.
    pub fn term(self) -> Option<Term> {
        match self {
            Command::Initialize => None,
            Command::Enter { term, .. } | Command::Master { term, .. } => Some(term),
        }
    }

    /// True when a member that may have applied this command may be processing.
    pub fn may_process(self) -> bool {
        self.target_state().is_processing()
    }
}

/// Wire form: `INIT/0`, `<STATE>/<term>`, or `M/<term>/<standby instance>`.
impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Initialize => f.write_str("INIT/0"),
            Command::Enter { state, term } => write!(f, "{state}/{term}"),
            Command::Master { term, standby } => write!(f, "M/{term}/{standby}"),
        }
    }
}

impl FromStr for Command {
    type Err = ProtocolError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ProtocolError::InvalidCommand(s.to_string());
        let mut parts = s.split('/');
        let (state, term, standby) = (parts.next(), parts.next(), parts.next());
        if parts.next().is_some() {
            return Err(bad());
        }
        let term = Term(term.ok_or_else(bad)?.parse().map_err(|_| bad())?);
        match (state.ok_or_else(bad)?, standby) {
            ("INIT", None) => Ok(Command::Initialize),
            ("M", Some(uid)) => Ok(Command::Master {
                term,
                standby: uid.parse().map_err(|_| bad())?,
            }),
            (_, Some(_)) => Err(bad()),
            (state, None) => Ok(Command::enter(state.parse().map_err(|_| bad())?, term)),
        }
    }
}
