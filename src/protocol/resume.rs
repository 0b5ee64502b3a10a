//! Who continues after `(X X)`: seed figures 4 (both recovered) and 5 (one recovered), with the
//! term extension that orders two priority-1 records.

use std::cmp::Ordering;

use super::member::Member;
use super::observation::{MemberView, Observation, RecordView};
use super::priority::{Priority, Standing};

/// The answer for a pair where nobody processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// This member provably processed last: it becomes `SM`.
    Start {
        member: Member,
        why: String,
    },
    Wait(Wait),
}

/// Why the pair cannot resume on its own.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Wait {
    /// A recovered member cannot prove it processed last; the peer's recovery will decide.
    WaitingForPeer(String),
    /// No automatic decision is possible: only a force-start can resume the pair.
    NeedsForceStart(String),
    /// No member has recovered yet.
    NoMemberRecovered,
    /// An earlier or failed instance of this member may still be processing: nobody is
    /// promoted until it reports that it stopped or its lease expires.
    Lingering(super::member::Member),
}

impl Wait {
    pub fn reason(&self) -> String {
        match self {
            Wait::WaitingForPeer(r) | Wait::NeedsForceStart(r) => r.clone(),
            Wait::NoMemberRecovered => "no member has recovered yet".to_string(),
            Wait::Lingering(m) => format!(
                "member {m}'s previous instance may still be processing: no member is promoted \
                 until it reports that it stopped or its lease expires"
            ),
        }
    }
}

/// A recovered member's claim to have processed last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// A valid record.
    Record(Standing),
    /// An empty volume: it holds no data, so it ranks below every record.
    Empty,
}

fn claim(view: &MemberView) -> Option<Claim> {
    match view {
        MemberView::Up {
            record: RecordView::Valid(s),
            app_failed: false,
            ..
        } => Some(Claim::Record(*s)),
        MemberView::Up {
            record: RecordView::Missing,
            app_failed: false,
            ..
        } => Some(Claim::Empty),
        _ => None,
    }
}

/// Decide who resumes. Precondition: nobody processes.
pub fn resume(obs: &Observation) -> Resume {
    let claims = (claim(obs.member(Member::A)), claim(obs.member(Member::B)));
    match claims {
        (Some(a), Some(b)) => compare(a, b),
        (Some(_), None) => alone(obs, Member::A),
        (None, Some(_)) => alone(obs, Member::B),
        (None, None) => nobody(obs),
    }
}

/// Figure 4: both recovered; the higher priority processed last (P1). Two priority-1 records are
/// ordered by term; equal terms are the seed's `[1 1]`: only a force-start decides.
fn compare(a: Claim, b: Claim) -> Resume {
    let (sa, sb) = match (a, b) {
        (Claim::Record(sa), Claim::Record(sb)) => (sa, sb),
        (Claim::Record(s), Claim::Empty) => {
            return start(
                Member::A,
                format!("b's volume holds no record, a has priority {}", s.priority),
            )
        }
        (Claim::Empty, Claim::Record(s)) => {
            return start(
                Member::B,
                format!("a's volume holds no record, b has priority {}", s.priority),
            )
        }
        (Claim::Empty, Claim::Empty) => {
            return Resume::Wait(Wait::NeedsForceStart(
                "both volumes hold no record although the pair was initialized".to_string(),
            ))
        }
    };
    match rank(sa, sb) {
        Ordering::Greater => start(
            Member::A,
            format!("both recovered, priorities [{} {}]", sa, sb),
        ),
        Ordering::Less => start(
            Member::B,
            format!("both recovered, priorities [{} {}]", sa, sb),
        ),
        Ordering::Equal => Resume::Wait(Wait::NeedsForceStart(format!(
            "both recovered with equal priorities [{sa} {sb}]: no automatic decision is possible"
        ))),
    }
}

/// Orders two records: the higher priority wins; among priority 1, the higher term.
pub fn rank(a: Standing, b: Standing) -> Ordering {
    if a.priority != b.priority {
        return if a.priority.outranks(b.priority) {
            Ordering::Greater
        } else {
            Ordering::Less
        };
    }
    if a.priority == Priority::One {
        return a.term.cmp(&b.term);
    }
    Ordering::Equal
}

/// Figure 5: one recovered. It continues only if its priority is 1 (P2) and no newer term is
/// known anywhere (the status or the peer's last report may only make this more conservative).
fn alone(obs: &Observation, m: Member) -> Resume {
    let peer = obs.member(m.peer());
    let peer_state = if peer.is_up() {
        "unusable record"
    } else {
        "not recovered"
    };
    let own = match claim(obs.member(m)) {
        Some(Claim::Record(s)) => s,
        _ => {
            return waiting(
                obs,
                m,
                format!("{m}'s volume holds no record; {} is {peer_state}", m.peer()),
            )
        }
    };
    if own.priority != Priority::One {
        return waiting(
            obs,
            m,
            format!(
                "{m} has priority {}: alone it cannot prove it processed last; {} is {peer_state}",
                own.priority,
                m.peer()
            ),
        );
    }
    if let Some(newer) = newer_claim(obs, m, own) {
        return waiting(
            obs,
            m,
            format!("{m} has priority 1 in term {}, but {newer}", own.term),
        );
    }
    start(
        m,
        format!("{m} recovered alone with priority 1 in term {}", own.term),
    )
}

/// Something known that may have processed after `own` (term `own.term`) did.
fn newer_claim(obs: &Observation, m: Member, own: Standing) -> Option<String> {
    let peer = obs.member(m.peer());
    if let Some(s) = peer.known_standing() {
        let peer_processed = matches!(s.priority, Priority::One | Priority::Two);
        if s.term > own.term || (s.term == own.term && peer_processed) {
            return Some(format!(
                "{} last reported priority {} in term {}",
                m.peer(),
                s.priority,
                s.term
            ));
        }
    }
    if let Some(c) = peer.unacked().filter(|c| c.may_process()) {
        return Some(format!("{} may have applied command {c}", m.peer()));
    }
    let peer_term = *obs.recorded_terms.get(m.peer());
    if peer_term >= own.term {
        return Some(format!(
            "the status records that {} was told to process in term {peer_term}",
            m.peer()
        ));
    }
    None
}

/// Nobody usable: either nobody recovered, or those who did have unusable records.
fn nobody(obs: &Observation) -> Resume {
    let unusable: Vec<String> = Member::BOTH
        .iter()
        .filter_map(|m| match obs.member(*m) {
            MemberView::Up {
                record: RecordView::Corrupt(r) | RecordView::WrongPair(r),
                ..
            } => Some(format!("{m}: {r}")),
            _ => None,
        })
        .collect();
    if unusable.is_empty() {
        return Resume::Wait(Wait::NoMemberRecovered);
    }
    Resume::Wait(Wait::NeedsForceStart(format!(
        "no recovered member has a usable record ({})",
        unusable.join("; ")
    )))
}

/// A lone member that cannot prove it was last waits for its peer, unless the peer is up with an
/// unusable record: then waiting cannot help. (A peer whose application failed may still recover.)
fn waiting(obs: &Observation, m: Member, reason: String) -> Resume {
    let peer_unusable = matches!(
        obs.member(m.peer()),
        MemberView::Up {
            record: RecordView::Corrupt(_) | RecordView::WrongPair(_),
            ..
        }
    );
    if peer_unusable {
        Resume::Wait(Wait::NeedsForceStart(reason))
    } else {
        Resume::Wait(Wait::WaitingForPeer(reason))
    }
}

fn start(member: Member, why: String) -> Resume {
    Resume::Start { member, why }
}
