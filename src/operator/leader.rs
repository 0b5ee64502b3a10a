//! Leader election: among replicas sharing one Lease, only the holder runs the controller.
//!
//! `kube-lease-manager` acquires and renews the Lease. On top of it this module enforces the one
//! rule that keeps two replicas from acting at once: the leader stops (and the process exits, to
//! restart as a candidate) as soon as it sees another holder, or when it has seen no renewal of
//! its own for the Lease duration minus a margin, i.e. before any candidate may take over.

use std::future::Future;
use std::pin::pin;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::time::Instant;
use tracing::{info, warn};

use super::config::Election;
use crate::health::Health;
use crate::metrics::Metrics;

/// A leader's Lease stays valid this long after each renewal (client-go's default).
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// The leader renews this long before its Lease expires.
const RENEW_BEFORE_EXPIRY: Duration = Duration::from_secs(5);
/// The leader stops acting this long before its last renewal expires: room for clock skew
/// between replicas and for the process to stop.
pub const STOP_BEFORE_EXPIRY: Duration = Duration::from_secs(2);
/// Wait before asking the API server again after a failed election step.
const RETRY: Duration = Duration::from_secs(1);
/// After SIGTERM the controller finishes its running reconciles; one still running after this
/// long is dropped so that the Lease is released (kube-runtime's graceful shutdown can wait for
/// a watch that has not started yet, and the pod would then be killed without a release).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Why leader election ended the process.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error(
        "cannot use the leader-election Lease {lease}: {source}; check that the namespace \
         exists and that the operator may get, create and patch Leases in it"
    )]
    Setup {
        lease: String,
        #[source]
        source: LeaseManagerError,
    },
    #[error("stopped acting as leader: {0}; exiting so that this replica restarts as a candidate")]
    Lost(String),
}

/// Campaigns for the Lease, then runs `work` while holding it. Returns when `work` ends (the
/// Lease is released so that a candidate takes over at once), on SIGTERM/SIGINT before this
/// replica became leader, or with [`LeaderError::Lost`] the moment leadership cannot be proved.
pub async fn lead(
    client: Client,
    election: &Election,
    metrics: &Metrics,
    health: &Health,
    work: impl Future<Output = ()>,
) -> Result<(), LeaderError> {
    let manager = new_manager(client.clone(), election).await?;
    health.set_ready();
    info!(lease = %lease_name(election), identity = %election.identity, "leader election: candidate");
    let leases: Api<Lease> = Api::namespaced(client.clone(), &election.namespace);
    let manager = tokio::select! {
        manager = acquire(manager, &client, election, leases.clone()) => manager,
        () = shutdown_signal() => {
            info!("leader election: stopping as a candidate");
            return Ok(());
        }
    };
    info!(lease = %lease_name(election), identity = %election.identity, "leader election: leader, acting");
    metrics.set_leader(true);
    let outcome = tokio::select! {
        why = hold(&manager, leases, election) => Err(LeaderError::Lost(why)),
        () = work => Ok(()),
        () = async { shutdown_signal().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
            warn!("the controller did not stop within {SHUTDOWN_GRACE:?} of the signal: dropped");
            Ok(())
        }
    };
    metrics.set_leader(false);
    if outcome.is_ok() {
        release(&manager).await;
    }
    outcome
}

fn lease_name(election: &Election) -> String {
    format!("{}/{}", election.namespace, election.lease)
}

async fn new_manager(client: Client, election: &Election) -> Result<LeaseManager, LeaderError> {
    LeaseManagerBuilder::new(client, &election.lease)
        .with_namespace(&election.namespace)
        .with_identity(&election.identity)
        .with_duration(LEASE_DURATION.as_secs())
        .with_grace(RENEW_BEFORE_EXPIRY.as_secs())
        .build()
        .await
        .map_err(|source| LeaderError::Setup {
            lease: lease_name(election),
            source,
        })
}

/// Returns the manager once this replica holds the Lease. A manager trusts its cached view of
/// the Lease until that view expires; a watch notices a release at once and a fresh manager
/// reads it, so that a leader that stops (e.g. in a rolling update) hands over at once.
async fn acquire(
    mut manager: LeaseManager,
    client: &Client,
    election: &Election,
    leases: Api<Lease>,
) -> LeaseManager {
    let mut released = pin!(watcher::watch_object(leases, &election.lease)
        .default_backoff()
        .filter_map(|event| async move {
            let free = event.ok()?.is_none_or(|l| holder(&l).is_empty());
            free.then_some(())
        })
        .fuse());
    loop {
        let was_released = tokio::select! {
            result = manager.changed() => match result {
                Ok(true) => return manager,
                Ok(false) => false,
                Err(e) => {
                    warn!("leader election: {e}; retrying");
                    tokio::time::sleep(RETRY).await;
                    false
                }
            },
            Some(()) = released.next() => true,
        };
        if was_released {
            match new_manager(client.clone(), election).await {
                Ok(fresh) => manager = fresh,
                Err(e) => warn!("leader election: {e}; waiting for the Lease to expire instead"),
            }
        }
    }
}

fn holder(lease: &Lease) -> &str {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .unwrap_or("")
}

/// Keeps renewing; returns why leadership is over.
async fn hold(manager: &LeaseManager, leases: Api<Lease>, election: &Election) -> String {
    tokio::select! {
        why = renew(manager) => why,
        why = watch_renewals(leases, election) => why,
    }
}

/// Drives the manager's renewals. A failed renewal is retried: [`watch_renewals`] decides when
/// leadership can no longer be proved.
async fn renew(manager: &LeaseManager) -> String {
    loop {
        match manager.changed().await {
            Ok(true) => {}
            Ok(false) => return "the Lease was taken over".into(),
            Err(e) => {
                warn!("leader election: cannot renew the Lease: {e}; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Watches the Lease: returns when another replica holds it, or when no renewal of ours has
/// been seen in time.
async fn watch_renewals(leases: Api<Lease>, election: &Election) -> String {
    // Until the first event: the Lease was written just before this replica became leader.
    let mut deadline = Instant::now() + LEASE_DURATION - STOP_BEFORE_EXPIRY;
    let mut events = pin!(watcher::watch_object(leases, &election.lease).default_backoff());
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {
                return "no renewal of the Lease seen in time (API server unreachable or slow?)"
                    .into();
            }
            event = events.next() => match event {
                Some(Ok(Some(lease))) => {
                    match held_until(&lease, &election.identity, SystemTime::now()) {
                        Ok(left) => deadline = Instant::now() + left,
                        Err(why) => return why,
                    }
                }
                Some(Ok(None)) => return "the Lease was deleted".into(),
                Some(Err(e)) => warn!("leader election: watching the Lease: {e}"),
                None => return "the Lease watch ended".into(),
            }
        }
    }
}

/// How much longer `identity` may act on `lease` as of `now`; `Err` says why not at all.
pub fn held_until(lease: &Lease, identity: &str, now: SystemTime) -> Result<Duration, String> {
    let spec = lease.spec.as_ref();
    let holder = holder(lease);
    if holder != identity {
        return Err(format!("the Lease is held by {holder:?}"));
    }
    let renewed = spec
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| SystemTime::from(t.0))
        .ok_or("the Lease has no renewTime")?;
    let valid = spec
        .and_then(|s| s.lease_duration_seconds)
        .and_then(|d| u64::try_from(d).ok())
        .map_or(LEASE_DURATION, Duration::from_secs);
    let stop = renewed + valid.saturating_sub(STOP_BEFORE_EXPIRY);
    Ok(stop.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Hands the Lease over at once instead of letting it expire.
async fn release(manager: &LeaseManager) {
    match manager.release().await {
        Ok(()) => info!("leader election: released the Lease"),
        Err(e) => warn!("leader election: cannot release the Lease ({e}); it expires instead"),
    }
}

/// SIGTERM (Kubernetes stopping the pod) or SIGINT.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn lease(holder: &str, renewed: SystemTime) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                renew_time: Some(MicroTime(Timestamp::try_from(renewed).unwrap())),
                lease_duration_seconds: Some(15),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }
    }

    #[test]
    fn the_holder_acts_until_the_margin_before_expiry() {
        let renewed = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let now = renewed + Duration::from_secs(3);
        let left = held_until(&lease("me", renewed), "me", now).unwrap();
        assert_eq!(left, Duration::from_secs(15 - 2 - 3));
    }

    #[test]
    fn past_the_margin_nothing_is_left() {
        let renewed = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let now = renewed + Duration::from_secs(14);
        assert_eq!(
            held_until(&lease("me", renewed), "me", now),
            Ok(Duration::ZERO)
        );
    }

    #[test]
    fn another_holder_ends_leadership() {
        let now = SystemTime::now();
        let err = held_until(&lease("other", now), "me", now).unwrap_err();
        assert!(err.contains("other"), "{err}");
    }
}
