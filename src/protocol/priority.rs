//! The server priority each member keeps on its own volume, and the term (our extension).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::ProtocolError;

/// The seed's 3-valued server priority. `One` is the highest: smaller number, higher priority.
/// The type cannot hold anything but 1, 2 or 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum Priority {
    /// Written on entering `SM`: processing with no peer able to take over.
    One,
    /// Written on entering `M`: processing with an up-to-date standby.
    Two,
    /// Written on entering `SL`: receiving handover data.
    Three,
}

impl Priority {
    pub fn number(self) -> u8 {
        match self {
            Priority::One => 1,
            Priority::Two => 2,
            Priority::Three => 3,
        }
    }

    /// True when `self` ranks above `other` (seed: the smaller number is the higher priority).
    pub fn outranks(self, other: Priority) -> bool {
        self.number() < other.number()
    }
}

impl TryFrom<u8> for Priority {
    type Error = ProtocolError;

    fn try_from(n: u8) -> Result<Self, Self::Error> {
        match n {
            1 => Ok(Priority::One),
            2 => Ok(Priority::Two),
            3 => Ok(Priority::Three),
            other => Err(ProtocolError::InvalidPriority(other.to_string())),
        }
    }
}

impl From<Priority> for u8 {
    fn from(p: Priority) -> u8 {
        p.number()
    }
}

impl FromStr for Priority {
    type Err = ProtocolError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let n: u8 = s
            .parse()
            .map_err(|_| ProtocolError::InvalidPriority(s.to_string()))?;
        Priority::try_from(n)
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.number())
    }
}

/// Beyond the seed: every entry into `SM` takes a term one above every term seen, and stores it
/// with priority 1. It orders two priority-1 records: the higher term processed last.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Term(pub u64);

impl Term {
    pub fn next(self) -> Term {
        Term(self.0.saturating_add(1))
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a member's volume says: the priority and the term it was written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Standing {
    pub priority: Priority,
    pub term: Term,
}

impl Standing {
    pub fn new(priority: Priority, term: Term) -> Self {
        Standing { priority, term }
    }
}

impl fmt::Display for Standing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.priority, self.term)
    }
}
