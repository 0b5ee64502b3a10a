//! The seed's transition ids (figure 2, SPEC.md's table): which seed transition an observed
//! pair-state change belongs to, for the history, the Events and the metrics.
//!
//! The operator sees a seed transition as several changes: `(M SL)` → `(X SM)` (4-4) is first the
//! failure, `(M SL)` → `(X SL)`, then the acknowledgement, `(X SL)` → `(X SM)`. Each change is
//! named from the two pair states, the [`Decision`] taken on the new one (its
//! [`Decision::transition`] says which failure it answers, and whether the peer has recovered),
//! and the id of the change before it (1-2-1 and 3-1-1 both end in `(SM SL)`: only the way there
//! tells them apart). Names only: nothing here decides anything.

use std::fmt;
use std::str::FromStr;

use super::decision::{Decision, ForceStartVerdict};
use super::member::Member;
use super::state::{MemberState, PairState};
use super::ProtocolError;

/// A transition of the seed's figure 2, or a force-start. Named for member `a`'s view where the
/// seed's id depends on the member (1-2-x: a was higher, 1-1-x: b was higher).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transition {
    /// 1-2-1 / 1-1-1: both recovered from `(X X)`; the higher priority becomes `SM`, the other `SL`.
    BothRecovered { higher: Member },
    /// 1-2-2 / 1-1-2: ...and once the `SL` caught up, the `SM` becomes `M`.
    BothRecoveredCaughtUp { higher: Member },
    /// 2-2: only one recovered, its priority is 1: it continues alone as `SM`.
    AloneWithPriorityOne,
    /// 3-1-1: the peer of a single master recovers and becomes its `SL`.
    PeerRecovered,
    /// 3-1-2: ...and once it caught up, the single master becomes `M`.
    PeerCaughtUp,
    /// 4-2: the slave of an `M` fails; the master becomes `SM` (writes 1).
    SlaveFailed,
    /// 4-4: the `M` fails; its slave takes over as `SM` (writes 1).
    MasterFailed,
    /// 5-5: both members of `(M SL)` fail.
    BothFailed,
    /// 5-6: the `SM` of `(SM SL)` fails (or both do); its slave had not caught up and stops.
    SingleMasterFailed,
    /// 5-7: the slave of an `SM` fails.
    SlaveOfSingleMasterFailed,
    /// 5-8: a lone `SM` fails.
    LoneSingleMasterFailed,
    /// A human started a waiting member (`hapair.io/force-start`).
    ForceStart,
}

impl Transition {
    /// The seed's id, as SPEC.md's table writes it.
    pub fn id(self) -> &'static str {
        use Transition::*;
        match self {
            BothRecovered { higher: Member::A } => "1-2-1",
            BothRecovered { higher: Member::B } => "1-1-1",
            BothRecoveredCaughtUp { higher: Member::A } => "1-2-2",
            BothRecoveredCaughtUp { higher: Member::B } => "1-1-2",
            AloneWithPriorityOne => "2-2",
            PeerRecovered => "3-1-1",
            PeerCaughtUp => "3-1-2",
            SlaveFailed => "4-2",
            MasterFailed => "4-4",
            BothFailed => "5-5",
            SingleMasterFailed => "5-6",
            SlaveOfSingleMasterFailed => "5-7",
            LoneSingleMasterFailed => "5-8",
            ForceStart => "force-start",
        }
    }

    const ALL: [Transition; 14] = {
        use Transition::*;
        [
            BothRecovered { higher: Member::A },
            BothRecovered { higher: Member::B },
            BothRecoveredCaughtUp { higher: Member::A },
            BothRecoveredCaughtUp { higher: Member::B },
            AloneWithPriorityOne,
            PeerRecovered,
            PeerCaughtUp,
            SlaveFailed,
            MasterFailed,
            BothFailed,
            SingleMasterFailed,
            SlaveOfSingleMasterFailed,
            LoneSingleMasterFailed,
            ForceStart,
        ]
    };

    /// The seed transition the change `from` → `decision.pair_state` belongs to, if any.
    /// `previous` is the id of the change before it (the last history entry).
    pub fn of_change(
        from: PairState,
        decision: &Decision,
        previous: Option<Transition>,
    ) -> Option<Transition> {
        if let Some(ForceStartVerdict::Fulfilled(_)) = decision.force_start {
            return Some(Transition::ForceStart);
        }
        Member::BOTH.into_iter().find_map(|p| {
            seen_from(
                p,
                (*from.get(p), *from.get(p.peer())),
                (
                    *decision.pair_state.get(p),
                    *decision.pair_state.get(p.peer()),
                ),
                decision.transition,
                previous,
            )
        })
    }
}

/// The change seen with `p` first: `(p's state, its peer's state)` before and after. At most one
/// of the two orders matches an arm. `cause` is what the decision on the new state answers.
fn seen_from(
    p: Member,
    from: (MemberState, MemberState),
    to: (MemberState, MemberState),
    cause: Option<Transition>,
    previous: Option<Transition>,
) -> Option<Transition> {
    use MemberState::{M, SL, SM, X};
    use Transition::*;
    let resumed_with_peer = previous == Some(BothRecovered { higher: p });
    Some(match (from, to) {
        // The processor failed, its slave is still SL: the decision says whether it takes over
        // (4-4) or stops (5-6); a failed application fenced by the operator is neither.
        ((M | SM, SL), (X, SL)) => {
            cause.filter(|c| matches!(c, MasterFailed | SingleMasterFailed))?
        }
        ((M, SL), (X, SM)) | ((X, SL), (X, SM)) => MasterFailed,
        ((M, SL), (M | SM, X)) | ((M, X), (SM, X)) => SlaveFailed,
        ((M, SL) | (M, X), (X, X)) => BothFailed,
        ((X, SL), (X, X)) if previous == Some(SingleMasterFailed) => SingleMasterFailed,
        ((X, SL), (X, X)) => BothFailed,
        ((SM, SL), (X, X)) => SingleMasterFailed,
        ((SM, SL), (SM, X)) => SlaveOfSingleMasterFailed,
        ((SM, X), (X, X)) => LoneSingleMasterFailed,
        // p acknowledged SM after (X X): with both recovered the decision already admits the peer.
        ((X, X), (SM, X)) if cause == Some(PeerRecovered) => BothRecovered { higher: p },
        ((X, X), (SM, X)) => AloneWithPriorityOne,
        ((X, X), (SM, SL)) => BothRecovered { higher: p },
        ((SM, X), (SM, SL)) if resumed_with_peer => BothRecovered { higher: p },
        ((SM, X), (SM, SL)) => PeerRecovered,
        ((SM, SL), (M, SL)) if resumed_with_peer => BothRecoveredCaughtUp { higher: p },
        ((SM, SL), (M, SL)) => PeerCaughtUp,
        _ => return None,
    })
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// Parses an id back (from `status.history`), the inverse of [`Transition::id`].
impl FromStr for Transition {
    type Err = ProtocolError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Transition::ALL
            .into_iter()
            .find(|t| t.id() == s)
            .ok_or_else(|| ProtocolError::InvalidTransition(s.to_string()))
    }
}

#[cfg(test)]
mod tests;
