//! Member states and pair states (seed figure 2).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::member::{Member, PerMember};
use super::priority::Priority;
use super::ProtocolError;

/// The state of one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MemberState {
    /// Master: processing, and the peer is an up-to-date standby.
    M,
    /// Single master: processing, no peer able to take over.
    SM,
    /// Slave: receiving handover data from the processing peer.
    SL,
    /// Stopped: failed, or recovered but not yet admitted.
    X,
}

impl MemberState {
    /// Only `M` and `SM` process (and carry the master label).
    pub fn is_processing(self) -> bool {
        matches!(self, MemberState::M | MemberState::SM)
    }

    /// The priority written, and flushed, on entering this state. `X` writes nothing: a failed
    /// server cannot write.
    pub fn priority_written(self) -> Option<Priority> {
        match self {
            MemberState::SM => Some(Priority::One),
            MemberState::M => Some(Priority::Two),
            MemberState::SL => Some(Priority::Three),
            MemberState::X => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::M => "M",
            MemberState::SM => "SM",
            MemberState::SL => "SL",
            MemberState::X => "X",
        }
    }
}

impl fmt::Display for MemberState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MemberState {
    type Err = ProtocolError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "M" => Ok(MemberState::M),
            "SM" => Ok(MemberState::SM),
            "SL" => Ok(MemberState::SL),
            "X" => Ok(MemberState::X),
            other => Err(ProtocolError::InvalidState(other.to_string())),
        }
    }
}

/// The role label on a member's pod: `master` selects it for client traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Master,
    Standby,
}

impl Role {
    /// The label a member in `state` carries once it acknowledged that state.
    pub fn of(state: MemberState) -> Option<Role> {
        match state {
            MemberState::M | MemberState::SM => Some(Role::Master),
            MemberState::SL => Some(Role::Standby),
            MemberState::X => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Standby => "standby",
        }
    }
}

impl FromStr for Role {
    type Err = ProtocolError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "master" => Ok(Role::Master),
            "standby" => Ok(Role::Standby),
            other => Err(ProtocolError::InvalidRole(other.to_string())),
        }
    }
}

/// The pair state `(A B)`: `(SM SL)` and `(SL SM)` differ.
pub type PairState = PerMember<MemberState>;

impl PairState {
    /// The processing member, if exactly one processes.
    pub fn processor(&self) -> Option<Member> {
        let processing: Vec<Member> = Member::BOTH
            .into_iter()
            .filter(|m| self.get(*m).is_processing())
            .collect();
        match processing.as_slice() {
            [only] => Some(*only),
            _ => None,
        }
    }
}

impl fmt::Display for PairState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({} {})", self.a, self.b)
    }
}
