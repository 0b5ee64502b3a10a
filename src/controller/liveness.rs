//! Lease freshness on the operator's own monotonic clock (DESIGN "Failure"): a member Lease is
//! fresh while its renewal (holder and renewTime) changed less than the lease duration ago, as
//! measured by when this operator *saw* it change. No wall-clock times are compared.
//!
//! After an operator start every Lease counts as renewed at first sight: a failed member then
//! looks alive for one more lease duration, which only delays a failover (conservative).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt;

/// When each Lease (by namespace/name) was last seen renewed.
#[derive(Debug, Default)]
pub struct Liveness {
    seen: Mutex<HashMap<String, (String, Instant)>>,
}

impl Liveness {
    /// Whether `lease` was renewed within `duration` before `now`.
    pub fn fresh(&self, lease: &Lease, duration: Duration, now: Instant) -> bool {
        let key = format!(
            "{}/{}",
            lease.namespace().unwrap_or_default(),
            lease.name_any()
        );
        let renewal = lease.spec.as_ref().map_or(String::new(), |s| {
            format!(
                "{:?}/{:?}",
                s.holder_identity,
                s.renew_time.as_ref().map(|t| t.0.to_string())
            )
        });
        // A poisoned lock only means another reconcile panicked; the map itself stays valid.
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let entry = seen.entry(key).or_insert_with(|| (renewal.clone(), now));
        if entry.0 != renewal {
            *entry = (renewal, now);
        }
        now.saturating_duration_since(entry.1) < duration
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn lease(holder: &str) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("x-a".into()),
                namespace: Some("ns".into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn lease_not_renewed_for_the_duration_is_stale_and_a_renewal_refreshes_it() {
        let live = Liveness::default();
        let t0 = Instant::now();
        let d = Duration::from_secs(10);
        assert!(live.fresh(&lease("p1"), d, t0));
        assert!(live.fresh(&lease("p1"), d, t0 + Duration::from_secs(9)));
        assert!(!live.fresh(&lease("p1"), d, t0 + Duration::from_secs(10)));
        assert!(live.fresh(&lease("p2"), d, t0 + Duration::from_secs(11)));
    }
}
