//! Lease freshness on the operator's own monotonic clock (DESIGN "Failure"): a member Lease is
//! fresh while its renewal (holder and renewTime) changed less than the lease duration ago, as
//! measured by when this operator *saw* it change. No wall-clock times are compared.
//!
//! It also remembers the holder before the current one: a new pod of a member takes its Lease
//! over at once, while the old pod (partitioned, or force-deleted on a live node) may go on
//! processing until its own fence timer stops it, at the latest one lease duration after its
//! last renewal.
//!
//! After an operator start every Lease counts as renewed at first sight, and a Lease that ever
//! changed holder counts as having an earlier holder that may still process: a failed member
//! then looks alive for one more lease duration, which only delays a failover (conservative).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt;

/// What the operator's clock says of one member Lease.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaseClock {
    /// The current holder renewed within the lease duration.
    pub fresh: bool,
    /// A former holder whose last report allowed it to process renewed within the lease
    /// duration: it may still be processing.
    pub former_holder_may_process: bool,
}

/// One holder as last seen.
#[derive(Debug, Clone)]
struct Holder {
    identity: String,
    renewal: String,
    at: Instant,
    may_process: bool,
}

#[derive(Debug)]
struct Seen {
    current: Holder,
    former: Option<Holder>,
}

/// When each Lease (by namespace/name) was last seen renewed, and by whom.
#[derive(Debug, Default)]
pub struct Liveness {
    seen: Mutex<HashMap<String, Seen>>,
}

impl Liveness {
    /// Notes `lease` as seen at `now`; `may_process` says whether its current holder's report
    /// allows it to process.
    pub fn observe(
        &self,
        lease: &Lease,
        may_process: bool,
        duration: Duration,
        now: Instant,
    ) -> LeaseClock {
        let key = format!(
            "{}/{}",
            lease.namespace().unwrap_or_default(),
            lease.name_any()
        );
        let holder = holder(lease, may_process, now);
        // A poisoned lock only means another reconcile panicked; the map itself stays valid.
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let entry = seen
            .entry(key)
            .or_insert_with(|| first_sight(lease, &holder));
        entry.update(holder);
        let recent = |h: &Holder| now.saturating_duration_since(h.at) < duration;
        LeaseClock {
            fresh: recent(&entry.current),
            former_holder_may_process: entry
                .former
                .as_ref()
                .is_some_and(|f| f.may_process && recent(f)),
        }
    }
}

impl Seen {
    fn update(&mut self, holder: Holder) {
        if holder.identity != self.current.identity {
            let previous = std::mem::replace(&mut self.current, holder);
            self.former = worst(self.former.take(), previous);
        } else {
            self.current.may_process = holder.may_process;
            if holder.renewal != self.current.renewal {
                self.current = holder;
            }
        }
    }
}

/// Of two former holders, the one that may process and renewed last.
fn worst(a: Option<Holder>, b: Holder) -> Option<Holder> {
    match a {
        Some(a) if a.may_process && (!b.may_process || a.at > b.at) => Some(a),
        _ => Some(b),
    }
}

/// A Lease seen for the first time counts as renewed now; if it ever changed holder, an unknown
/// former holder counts as renewed now too.
fn first_sight(lease: &Lease, holder: &Holder) -> Seen {
    let transitions = lease.spec.as_ref().and_then(|s| s.lease_transitions);
    Seen {
        current: holder.clone(),
        former: transitions.is_some_and(|t| t > 0).then(|| Holder {
            identity: String::new(),
            renewal: String::new(),
            at: holder.at,
            may_process: true,
        }),
    }
}

fn holder(lease: &Lease, may_process: bool, now: Instant) -> Holder {
    let spec = lease.spec.clone().unwrap_or_default();
    Holder {
        identity: spec.holder_identity.clone().unwrap_or_default(),
        renewal: format!(
            "{:?}/{:?}",
            spec.holder_identity,
            spec.renew_time.as_ref().map(|t| t.0.to_string())
        ),
        at: now,
        may_process,
    }
}

#[cfg(test)]
mod tests;
