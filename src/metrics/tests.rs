use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::*;
use crate::crd::MemberStatus;

fn pair() -> HAPair {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "hapair.io/v1alpha1",
        "kind": "HAPair",
        "metadata": {"name": "x", "namespace": "ns"},
        "spec": {
            "template": {"spec": {"containers": [{"name": "app", "image": "busybox"}]}},
            "volumeClaimTemplate": {"resources": {"requests": {"storage": "1Gi"}}},
        },
    }))
    .unwrap()
}

fn state(text: &str) -> PairState {
    let (a, b) = text.trim_matches(['(', ')']).split_once(' ').unwrap();
    PairState::new(a.parse().unwrap(), b.parse().unwrap())
}

fn status(pair_state: &str) -> HAPairStatus {
    let s = state(pair_state);
    let mut status = HAPairStatus::default();
    status.members.a = MemberStatus {
        state: s.a,
        ..MemberStatus::default()
    };
    status.members.b = MemberStatus {
        state: s.b,
        ..MemberStatus::default()
    };
    status
}

fn entry(from: &str, to: &str, transition: Option<&str>) -> HistoryEntry {
    HistoryEntry {
        time: Time(Timestamp::UNIX_EPOCH),
        from: state(from),
        to: state(to),
        transition: transition.map(String::from),
        reason: String::new(),
    }
}

/// The exposition's sample lines starting with `prefix`, sorted (series order is unspecified).
fn samples(metrics: &Metrics, prefix: &str) -> Vec<String> {
    let mut lines: Vec<String> = metrics
        .encode()
        .unwrap()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(String::from)
        .collect();
    lines.sort();
    lines
}

#[test]
fn exposition_is_openmetrics_text_with_every_family_typed() {
    let metrics = Metrics::default();
    let x = pair();
    metrics.set_leader(true);
    drop(metrics.reconcile_started(&x));
    metrics.reconcile_failed(&x, "kube");
    let failover = entry("(X SL)", "(X SM)", None);
    metrics.observe_status(&x, &status("(X SM)"), Some(&failover));
    let text = metrics.encode().unwrap();
    for family in [
        "# TYPE hapair_reconciles counter",
        "# TYPE hapair_reconcile_errors counter",
        "# TYPE hapair_reconcile_duration_seconds histogram",
        "# UNIT hapair_reconcile_duration_seconds seconds",
        "# TYPE hapair_transitions counter",
        "# TYPE hapair_member_state gauge",
        "# TYPE hapair_failovers counter",
        "# TYPE hapair_leader gauge",
    ] {
        assert!(text.contains(family), "missing {family:?} in\n{text}");
    }
    assert!(text.contains("\nhapair_leader 1\n"), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[test]
fn reconciles_and_errors_are_counted_per_pair() {
    let metrics = Metrics::default();
    let x = pair();
    drop(metrics.reconcile_started(&x));
    drop(metrics.reconcile_started(&x));
    metrics.reconcile_failed(&x, "kube");
    assert_eq!(
        samples(&metrics, "hapair_reconciles_total"),
        [r#"hapair_reconciles_total{namespace="ns",pair="x"} 2"#]
    );
    assert_eq!(
        samples(&metrics, "hapair_reconcile_errors_total"),
        [r#"hapair_reconcile_errors_total{namespace="ns",pair="x",error="kube"} 1"#]
    );
    assert!(metrics
        .encode()
        .unwrap()
        .contains("hapair_reconcile_duration_seconds_count 2\n"));
}

#[test]
fn member_state_is_one_for_the_current_state_only() {
    let metrics = Metrics::default();
    metrics.observe_status(&pair(), &status("(M SL)"), None);
    metrics.observe_status(&pair(), &status("(X SM)"), None);
    let on: Vec<String> = samples(&metrics, "hapair_member_state")
        .into_iter()
        .filter(|l| l.ends_with(" 1"))
        .collect();
    assert_eq!(
        on,
        [
            r#"hapair_member_state{namespace="ns",pair="x",member="a",state="X"} 1"#,
            r#"hapair_member_state{namespace="ns",pair="x",member="b",state="SM"} 1"#,
        ]
    );
    assert_eq!(samples(&metrics, "hapair_member_state").len(), 8);
}

#[test]
fn transitions_are_counted_by_pair_states_and_seed_id() {
    let metrics = Metrics::default();
    let x = pair();
    metrics.observe_status(
        &x,
        &status("(M X)"),
        Some(&entry("(M SL)", "(M X)", Some("4-2"))),
    );
    metrics.observe_status(&x, &status("(SM X)"), Some(&entry("(M X)", "(SM X)", None)));
    assert_eq!(
        samples(&metrics, "hapair_transitions_total"),
        [
            r#"hapair_transitions_total{namespace="ns",pair="x",from="(M SL)",to="(M X)",transition="4-2"} 1"#,
            r#"hapair_transitions_total{namespace="ns",pair="x",from="(M X)",to="(SM X)",transition=""} 1"#,
        ]
    );
    assert!(samples(&metrics, "hapair_failovers_total").is_empty());
}

#[test]
fn a_standby_becoming_the_processor_is_a_failover() {
    let metrics = Metrics::default();
    metrics.observe_status(
        &pair(),
        &status("(X SM)"),
        Some(&entry("(X SL)", "(X SM)", None)),
    );
    assert_eq!(
        samples(&metrics, "hapair_failovers_total"),
        [r#"hapair_failovers_total{namespace="ns",pair="x"} 1"#]
    );
}

#[test]
fn failover_is_sl_to_processing_only() {
    assert!(is_failover(state("(X SL)"), state("(X SM)")));
    assert!(is_failover(state("(SL X)"), state("(SM X)")));
    assert!(!is_failover(state("(SM SL)"), state("(M SL)")));
    assert!(!is_failover(state("(X X)"), state("(SM X)")));
    assert!(!is_failover(state("(M SL)"), state("(M X)")));
}
