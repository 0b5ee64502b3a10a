//! The two members of a pair: the seed's servers 100a and 100b.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::priority::Priority;
use super::ProtocolError;

/// One of the two servers of the pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Member {
    A,
    B,
}

impl Member {
    pub const BOTH: [Member; 2] = [Member::A, Member::B];

    /// The other member of the pair.
    pub fn peer(self) -> Member {
        match self {
            Member::A => Member::B,
            Member::B => Member::A,
        }
    }

    /// Priority written once on a fresh pair, before automatic operation begins (seed: a=2, b=3).
    pub fn initial_priority(self) -> Priority {
        match self {
            Member::A => Priority::Two,
            Member::B => Priority::Three,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Member::A => "a",
            Member::B => "b",
        }
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Member {
    type Err = ProtocolError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "a" => Ok(Member::A),
            "b" => Ok(Member::B),
            other => Err(ProtocolError::UnknownMember(other.to_string())),
        }
    }
}

/// A value for each member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PerMember<T> {
    pub a: T,
    pub b: T,
}

impl<T> PerMember<T> {
    pub fn new(a: T, b: T) -> Self {
        PerMember { a, b }
    }

    pub fn get(&self, m: Member) -> &T {
        match m {
            Member::A => &self.a,
            Member::B => &self.b,
        }
    }

    pub fn get_mut(&mut self, m: Member) -> &mut T {
        match m {
            Member::A => &mut self.a,
            Member::B => &mut self.b,
        }
    }
}
