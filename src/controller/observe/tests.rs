use super::*;
use crate::controller::resources::tests::pair;
use crate::mailbox::{Ack, CommandEnvelope};
use crate::protocol::{Command, Priority, RecordView, Standing, Term};
use k8s_openapi::api::core::v1::{ContainerState, ContainerStateRunning, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

const UID: &str = "0000000a-0000-0000-0000-000000000001";

fn status(name: &str, running: bool, ready: bool) -> ContainerStatus {
    ContainerStatus {
        name: name.into(),
        ready,
        state: Some(ContainerState {
            running: running.then(ContainerStateRunning::default),
            ..ContainerState::default()
        }),
        ..ContainerStatus::default()
    }
}

fn pod(app_running: bool, app_ready: bool) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("x-a".into()),
            uid: Some(UID.into()),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(PodStatus {
            phase: Some("Running".into()),
            container_statuses: Some(vec![
                status("app", app_running, app_ready),
                status(AGENT_CONTAINER, true, true),
            ]),
            ..PodStatus::default()
        }),
    }
}

fn report(pod: &str, state: MemberState, ack: Option<(u64, &str)>) -> Report {
    Report {
        pod: pod.into(),
        record: RecordView::Valid(Standing::new(Priority::Two, Term(0))),
        state,
        ack: ack.map(|(seq, c)| Ack {
            seq,
            command: c.parse().unwrap(),
        }),
        fenced: None,
        error: None,
    }
}

fn lease(report: Option<Report>, command: Option<(&str, u64, &str)>) -> Lease {
    let mut annotations = report.map(|r| r.to_annotations()).unwrap_or_default();
    if let Some((c, seq, pod)) = command {
        annotations.extend(
            CommandEnvelope {
                command: c.parse().unwrap(),
                seq,
                pod: pod.into(),
            }
            .to_annotations(),
        );
    }
    Lease {
        metadata: ObjectMeta {
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: None,
    }
}

fn view(pod: Option<&Pod>, lease: Option<&Lease>, fresh: bool) -> MemberView {
    let objects = MemberObjects {
        pod,
        lease,
        lease_fresh: fresh,
    };
    observe(&pair(), PerMember::new(objects, objects)).members.a
}

#[test]
fn running_pod_with_its_own_fresh_report_is_up_with_the_pending_command() {
    let p = pod(true, true);
    let l = lease(
        Some(report(UID, MemberState::SL, Some((3, "SL/1")))),
        Some(("SM/2", 4, UID)),
    );
    match view(Some(&p), Some(&l), true) {
        MemberView::Up {
            instance,
            state,
            pending,
            app_failed,
            caught_up,
            ..
        } => {
            assert_eq!(instance.ack, 3);
            assert_eq!(instance.pod, 0x0000000a000000000000000000000001);
            assert_eq!(state, MemberState::SL);
            assert_eq!(pending, Some("SM/2".parse::<Command>().unwrap()));
            assert!(!app_failed);
            assert!(caught_up);
        }
        v => panic!("expected Up, got {v:?}"),
    }
}

#[test]
fn acknowledged_or_foreign_command_is_not_pending() {
    let p = pod(true, true);
    let acked = lease(
        Some(report(UID, MemberState::SM, Some((4, "SM/2")))),
        Some(("SM/2", 4, UID)),
    );
    let foreign = lease(
        Some(report(UID, MemberState::X, None)),
        Some(("SM/2", 4, "old")),
    );
    for l in [acked, foreign] {
        let MemberView::Up { pending, .. } = view(Some(&p), Some(&l), true) else {
            panic!("expected Up");
        };
        assert_eq!(pending, None);
    }
}

#[test]
fn report_of_another_pod_stale_lease_or_no_agent_is_down() {
    let p = pod(true, true);
    let other = lease(Some(report("old-pod", MemberState::M, None)), None);
    assert!(!view(Some(&p), Some(&other), true).is_up());
    let ours = lease(Some(report(UID, MemberState::M, None)), None);
    assert!(!view(Some(&p), Some(&ours), false).is_up(), "stale lease");
    assert!(!view(None, Some(&ours), true).is_up(), "no pod");
    let mut no_agent = pod(true, true);
    no_agent.status.as_mut().unwrap().container_statuses = Some(vec![status("app", true, true)]);
    assert!(!view(Some(&no_agent), Some(&ours), true).is_up());
    let mut terminating = pod(true, true);
    terminating.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
    assert!(!view(Some(&terminating), Some(&ours), true).is_up());
}

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

#[test]
fn down_member_keeps_its_last_record_and_an_unacknowledged_command_is_in_doubt() {
    let l = lease(
        Some(report(UID, MemberState::M, Some((2, "M/1")))),
        Some(("X/1", 3, UID)),
    );
    match view(None, Some(&l), true) {
        MemberView::Down {
            last_acked,
            last_standing,
            in_doubt,
        } => {
            assert_eq!(last_acked, Some("M/1".parse().unwrap()));
            assert_eq!(last_standing.unwrap().priority, Priority::Two);
            assert_eq!(in_doubt, Some("X/1".parse().unwrap()));
        }
        v => panic!("expected Down, got {v:?}"),
    }
}

#[test]
fn app_not_running_is_a_failure_and_not_ready_is_not_caught_up() {
    let l = lease(Some(report(UID, MemberState::SL, None)), None);
    let MemberView::Up {
        app_failed,
        caught_up,
        ..
    } = view(Some(&pod(false, false)), Some(&l), true)
    else {
        panic!("expected Up");
    };
    assert!(app_failed);
    assert!(!caught_up);
    let MemberView::Up {
        app_failed,
        caught_up,
        ..
    } = view(Some(&pod(true, false)), Some(&l), true)
    else {
        panic!("expected Up");
    };
    assert!(!app_failed);
    assert!(!caught_up);
}

#[test]
fn roles_and_force_start_come_from_labels_and_the_annotation() {
    let mut p = pod(true, true);
    p.metadata.labels = Some([(LABEL_ROLE.to_string(), "bogus".to_string())].into());
    let mut hap = pair();
    hap.metadata.annotations = Some([(ANNOTATION_FORCE_START.to_string(), "c".to_string())].into());
    let objects = MemberObjects {
        pod: Some(&p),
        lease: None,
        lease_fresh: false,
    };
    let obs = observe(&hap, PerMember::new(objects, objects));
    assert_eq!(
        obs.roles.a,
        Some(Role::Master),
        "an unknown role counts as master"
    );
    assert_eq!(
        obs.force_start,
        Some(ForceStartRequest::Invalid("c".into()))
    );
}
