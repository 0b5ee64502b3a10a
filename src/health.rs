//! What `/healthz` and `/readyz` answer: ready once the operator runs its controller (or its
//! leader-election candidate loop); healthy unless a reconcile has been running for longer than
//! any healthy one could (the controller loop is wedged: a restart is the cure).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kube::ResourceExt;

use crate::crd::HAPair;

/// A reconcile is a handful of API calls (milliseconds); one running this long is stuck.
pub const STALLED_AFTER: Duration = Duration::from_secs(60);

/// Shared by the controller, the leader election and the HTTP server.
#[derive(Default)]
pub struct Health {
    ready: AtomicBool,
    /// Start of each running reconcile, by `namespace/name` (the controller runs at most one
    /// reconcile per pair at a time).
    running: Mutex<HashMap<String, Instant>>,
}

impl Health {
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Marks a reconcile of `pair` as running until the returned guard is dropped.
    pub fn reconciling(self: &Arc<Self>, pair: &HAPair) -> Reconciling {
        let key = format!(
            "{}/{}",
            pair.namespace().unwrap_or_default(),
            pair.name_any()
        );
        self.running().insert(key.clone(), Instant::now());
        Reconciling {
            health: Arc::clone(self),
            key,
        }
    }

    /// `Err` says which reconcile is stuck, and for how long.
    pub fn check_live(&self, now: Instant) -> Result<(), String> {
        let running = self.running();
        let oldest = running
            .iter()
            .map(|(pair, start)| (pair, now.saturating_duration_since(*start)))
            .max_by_key(|(_, age)| *age);
        match oldest {
            Some((pair, age)) if age > STALLED_AFTER => Err(format!(
                "the reconcile of {pair} has been running for {}s (limit {}s): the controller \
                 is wedged",
                age.as_secs(),
                STALLED_AFTER.as_secs()
            )),
            _ => Ok(()),
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        // The map stays consistent even if a holder panicked: each access is one insert/remove.
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Removes its reconcile from the running set when dropped (also when the reconcile fails).
pub struct Reconciling {
    health: Arc<Health>,
    key: String,
}

impl Drop for Reconciling {
    fn drop(&mut self) {
        self.health.running().remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> HAPair {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "hapair.io/v1alpha1",
            "kind": "HAPair",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {
                "template": {"spec": {"containers": [{"name": "app", "image": "busybox"}]}},
                "volumeClaimTemplate": {"resources": {"requests": {"storage": "1Gi"}}},
            },
        }))
        .unwrap()
    }

    #[test]
    fn a_reconcile_running_past_the_limit_makes_the_process_unhealthy() {
        let health = Arc::new(Health::default());
        let start = Instant::now();
        let guard = health.reconciling(&pair("x"));
        assert_eq!(health.check_live(start), Ok(()));
        let late = start + STALLED_AFTER + Duration::from_secs(5);
        let err = health.check_live(late).unwrap_err();
        assert!(err.contains("ns/x"), "{err}");
        drop(guard);
        assert_eq!(health.check_live(late), Ok(()));
    }

    #[test]
    fn ready_only_once_set() {
        let health = Health::default();
        assert!(!health.is_ready());
        health.set_ready();
        assert!(health.is_ready());
    }
}
