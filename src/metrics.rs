//! The operator's Prometheus metrics (OpenMetrics text on `/metrics`).
//!
//! Labels are bounded: a pair is named by namespace and name (pairs are few and long-lived),
//! members by `a`/`b`, states and transitions by the seed's finite vocabulary. No pod UIDs, no
//! free text. Series of a deleted pair stay until the operator restarts.

use std::time::Instant;

use kube::ResourceExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::crd::{HAPair, HAPairStatus, HistoryEntry};
use crate::protocol::{Member, MemberState, PairState};

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const MEMBER_STATES: [MemberState; 4] = [
    MemberState::M,
    MemberState::SM,
    MemberState::SL,
    MemberState::X,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PairLabels {
    namespace: String,
    pair: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    namespace: String,
    pair: String,
    error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    namespace: String,
    pair: String,
    from: String,
    to: String,
    /// The seed's transition id when the history entry names one, else empty.
    transition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MemberStateLabels {
    namespace: String,
    pair: String,
    member: String,
    state: String,
}

/// Every metric the operator exports, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<PairLabels, Counter>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    reconcile_duration: Histogram,
    transitions: Family<TransitionLabels, Counter>,
    member_state: Family<MemberStateLabels, Gauge>,
    failovers: Family<PairLabels, Counter>,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hapair");
        let reconciles = Family::<PairLabels, Counter>::default();
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        // 5 ms .. 10 s: a reconcile is a handful of API calls.
        let reconcile_duration = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        let transitions = Family::<TransitionLabels, Counter>::default();
        let member_state = Family::<MemberStateLabels, Gauge>::default();
        let failovers = Family::<PairLabels, Counter>::default();
        let leader = Gauge::default();
        registry.register(
            "reconciles",
            "Reconciles started, per pair",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles that failed (retried), per pair and kind of error",
            reconcile_errors.clone(),
        );
        registry.register_with_unit(
            "reconcile_duration",
            "Time one reconcile took",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        registry.register(
            "transitions",
            "Pair-state transitions recorded in status.history, per pair",
            transitions.clone(),
        );
        registry.register(
            "member_state",
            "1 for each member's current state (M, SM, SL, X), 0 for the others",
            member_state.clone(),
        );
        registry.register(
            "failovers",
            "Times a standby (SL) became the processing member, per pair",
            failovers.clone(),
        );
        registry.register(
            "leader",
            "1 while this operator replica acts (holds the leader-election Lease, or runs without \
             leader election), else 0",
            leader.clone(),
        );
        Metrics {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            transitions,
            member_state,
            failovers,
            leader,
        }
    }
}

impl Metrics {
    /// Counts a reconcile of `pair`; its duration is observed when the timer is dropped.
    pub fn reconcile_started(&self, pair: &HAPair) -> ReconcileTimer<'_> {
        self.reconciles.get_or_create(&pair_labels(pair)).inc();
        ReconcileTimer {
            histogram: &self.reconcile_duration,
            start: Instant::now(),
        }
    }

    /// Counts a failed reconcile; `error` is a fixed word for the kind of failure.
    pub fn reconcile_failed(&self, pair: &HAPair, error: &str) {
        let PairLabels { namespace, pair } = pair_labels(pair);
        let labels = ErrorLabels {
            namespace,
            pair,
            error: error.to_string(),
        };
        self.reconcile_errors.get_or_create(&labels).inc();
    }

    /// Records the status just computed for `pair`, and the transition that led to it, if any.
    pub fn observe_status(
        &self,
        pair: &HAPair,
        status: &HAPairStatus,
        entry: Option<&HistoryEntry>,
    ) {
        let labels = pair_labels(pair);
        self.set_member_states(&labels, status.pair_state());
        let Some(entry) = entry else { return };
        let transition = TransitionLabels {
            namespace: labels.namespace.clone(),
            pair: labels.pair.clone(),
            from: entry.from.to_string(),
            to: entry.to.to_string(),
            transition: entry.transition.clone().unwrap_or_default(),
        };
        self.transitions.get_or_create(&transition).inc();
        if is_failover(entry.from, entry.to) {
            self.failovers.get_or_create(&labels).inc();
        }
    }

    /// Whether this replica acts (leader election).
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }

    fn set_member_states(&self, pair: &PairLabels, states: PairState) {
        for member in Member::BOTH {
            for state in MEMBER_STATES {
                let labels = MemberStateLabels {
                    namespace: pair.namespace.clone(),
                    pair: pair.pair.clone(),
                    member: member.as_str().to_string(),
                    state: state.as_str().to_string(),
                };
                let current = *states.get(member) == state;
                self.member_state
                    .get_or_create(&labels)
                    .set(i64::from(current));
            }
        }
    }
}

/// Observes a reconcile's duration when dropped (also when the reconcile fails).
pub struct ReconcileTimer<'a> {
    histogram: &'a Histogram,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

/// A failover: a member that was the up-to-date standby (`SL`) now processes.
pub fn is_failover(from: PairState, to: PairState) -> bool {
    Member::BOTH
        .into_iter()
        .any(|m| *from.get(m) == MemberState::SL && to.get(m).is_processing())
}

fn pair_labels(pair: &HAPair) -> PairLabels {
    PairLabels {
        namespace: pair.namespace().unwrap_or_default(),
        pair: pair.name_any(),
    }
}

#[cfg(test)]
mod tests;
