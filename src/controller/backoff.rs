//! Back-off for re-creating a member's pod (DESIGN: "recreated after deletion (= recovery) with
//! back-off"). A deleted member pod is recreated at once: that is the member's recovery, and a
//! failover or a recovery must not wait. Only a pod that keeps disappearing before its member
//! joined the pair is recreated more and more slowly (1 s, 2 s, 4 s … at most 60 s after the
//! previous creation), so a pod that cannot live (evicted, deleted by something else, its node
//! failing) does not make the operator hammer the API server and the scheduler.
//!
//! The back-off resets once the member has stayed joined (acknowledged `SL`, `M` or `SM` in that
//! pod) for [`STABLE`]: a pod that got that far was scheduled, mounted its volume and ran its
//! agent, so it is not looping, and losing it later is a new failure whose recovery must be as
//! fast as the first one's.
//!
//! Held in the operator's memory only, and that is harmless: the back-off decides nothing about
//! the protocol (DESIGN invariant 4), it only paces object creation. An operator restart forgets
//! it, so at worst one re-creation comes early, and every pod the new operator sees counts as
//! seen: its next loss is a re-creation again.
//!
//! Pure: the caller passes the time (a monotonic [`Instant`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The wait before the second re-creation of a member whose pod did not stay up.
pub const FIRST_DELAY: Duration = Duration::from_secs(1);
/// The longest wait between two creations of a member's pod.
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// How long a member must have stayed joined for its back-off to reset.
pub const STABLE: Duration = Duration::from_secs(2);

/// What to do about a member whose pod is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Create it now. `recreation` counts the re-creations since the member last stayed up
    /// (1 for the first); `None` when no pod of the member was ever seen (a first creation).
    Create { recreation: Option<u32> },
    /// Not yet: `remaining` until the back-off of `delay` after the last creation ends.
    Wait {
        remaining: Duration,
        delay: Duration,
        /// Re-creations since the member last stayed up.
        recreations: u32,
        /// True the first time this wait is reported (tell the user once, not every reconcile).
        first: bool,
    },
}

/// The re-creation back-off of one member.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    /// Re-creations since the member last stayed joined for [`STABLE`].
    recreations: u32,
    /// When its pod was last created, or first seen: `None` if no pod of it was ever seen.
    created: Option<Instant>,
    /// Since when it has been joined, while it is.
    joined_since: Option<Instant>,
    /// The current wait was reported.
    reported: bool,
}

impl Backoff {
    /// The member's pod exists; `joined` says whether its member acknowledged a state of the
    /// pair (`SL`, `M`, `SM`) in it.
    pub fn observe(&mut self, joined: bool, now: Instant) {
        self.created.get_or_insert(now);
        if !joined {
            self.joined_since = None;
            return;
        }
        let since = *self.joined_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= STABLE {
            self.recreations = 0;
        }
    }

    /// The member's pod is missing: may it be created at `now`?
    pub fn missing(&mut self, now: Instant) -> Verdict {
        let Some(created) = self.created else {
            return Verdict::Create { recreation: None };
        };
        let delay = self.delay();
        let remaining = (created + delay).saturating_duration_since(now);
        if remaining.is_zero() {
            return Verdict::Create {
                recreation: Some(self.recreations + 1),
            };
        }
        let first = !self.reported;
        self.reported = true;
        Verdict::Wait {
            remaining,
            delay,
            recreations: self.recreations,
            first,
        }
    }

    /// The member's pod was created at `now`.
    pub fn created(&mut self, now: Instant) {
        if self.created.is_some() {
            self.recreations = self.recreations.saturating_add(1);
        }
        self.created = Some(now);
        self.joined_since = None;
        self.reported = false;
    }

    /// The wait after the last creation: none before the first re-creation, then doubling.
    fn delay(&self) -> Duration {
        match self.recreations {
            0 => Duration::ZERO,
            n => {
                let doublings = (n - 1).min(16);
                FIRST_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY)
            }
        }
    }
}

/// The back-off of every member this operator manages, by pair UID and member.
#[derive(Debug, Default)]
pub struct Backoffs {
    members: Mutex<HashMap<String, Backoff>>,
}

impl Backoffs {
    /// Runs `f` on the back-off of `key` (created empty on first use).
    pub fn with<T>(&self, key: &str, f: impl FnOnce(&mut Backoff) -> T) -> T {
        // A poisoned lock only means another reconcile panicked; the map itself stays valid.
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        f(members.entry(key.to_string()).or_default())
    }
}

#[cfg(test)]
mod tests;
