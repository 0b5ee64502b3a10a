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
        floor: 0,
        stopping: false,
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
        clock: LeaseClock {
            fresh,
            former_holder_may_process: false,
        },
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

/// An agent container restarted in its pod never applies again what the pod applied: the
/// command at its floor is no longer awaited (it was, before: the operator waited forever).
#[test]
fn a_command_at_or_below_the_agents_floor_is_not_pending() {
    let p = pod(true, true);
    let mut restarted = report(UID, MemberState::X, None);
    restarted.floor = 7;
    let at_floor = lease(Some(restarted.clone()), Some(("SL/4", 7, UID)));
    let MemberView::Up { pending, .. } = view(Some(&p), Some(&at_floor), true) else {
        panic!("expected Up");
    };
    assert_eq!(pending, None);
    let newer = lease(Some(restarted), Some(("SL/4", 8, UID)));
    let MemberView::Up { pending, .. } = view(Some(&p), Some(&newer), true) else {
        panic!("expected Up");
    };
    assert_eq!(pending, Some("SL/4".parse::<Command>().unwrap()));
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

/// Evicted, past its deadline: the kubelet stops the agent while the pod still shows as running.
#[test]
fn a_stopping_agent_is_down_with_its_last_acknowledgement_although_its_pod_runs() {
    let mut stopping = report(UID, MemberState::X, Some((2, "M/1")));
    stopping.fenced = Some("SIGTERM".into());
    stopping.stopping = true;
    let l = lease(Some(stopping), None);
    match view(Some(&pod(true, true)), Some(&l), true) {
        MemberView::Down {
            last_acked,
            in_doubt,
            ..
        } => {
            assert_eq!(last_acked, Some("M/1".parse().unwrap()), "4-4 needs its M");
            assert_eq!(in_doubt, None);
        }
        v => panic!("expected Down, got {v:?}"),
    }
}

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
        clock: LeaseClock::default(),
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

fn lingering_of(pod: Option<&Pod>, lease: Option<&Lease>, clock: LeaseClock) -> bool {
    let objects = MemberObjects { pod, lease, clock };
    observe(&pair(), PerMember::new(objects, objects))
        .lingering
        .a
}

const FRESH: LeaseClock = LeaseClock {
    fresh: true,
    former_holder_may_process: false,
};

#[test]
fn a_failed_processor_lingers_until_it_reports_it_stopped_or_its_lease_expires() {
    let master = lease(Some(report(UID, MemberState::M, Some((2, "M/1")))), None);
    assert!(lingering_of(None, Some(&master), FRESH), "force-deleted");
    let mut terminating = pod(true, true);
    terminating.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
    assert!(lingering_of(Some(&terminating), Some(&master), FRESH));
    assert!(
        !lingering_of(None, Some(&master), LeaseClock::default()),
        "expired"
    );
    let mut fenced = report(UID, MemberState::X, Some((2, "M/1")));
    fenced.fenced = Some("SIGTERM".into());
    let stopped = lease(Some(fenced), Some(("SM/2", 3, UID)));
    assert!(
        !lingering_of(None, Some(&stopped), FRESH),
        "reported X, fenced"
    );
}

#[test]
fn a_failed_standby_lingers_only_with_a_command_to_process_it_did_not_fence_over() {
    let standby = lease(Some(report(UID, MemberState::SL, Some((2, "SL/1")))), None);
    assert!(!lingering_of(None, Some(&standby), FRESH));
    let told_to_process = lease(
        Some(report(UID, MemberState::SL, Some((2, "SL/1")))),
        Some(("SM/2", 3, UID)),
    );
    assert!(lingering_of(None, Some(&told_to_process), FRESH));
}

#[test]
fn a_running_member_lingers_only_through_a_former_holder() {
    let l = lease(Some(report(UID, MemberState::M, Some((2, "M/1")))), None);
    assert!(!lingering_of(Some(&pod(true, true)), Some(&l), FRESH));
    let former = LeaseClock {
        fresh: true,
        former_holder_may_process: true,
    };
    assert!(lingering_of(Some(&pod(true, true)), Some(&l), former));
}

#[test]
fn an_application_restart_since_the_member_was_x_is_a_failure() {
    let mut restarted = pod(true, true);
    restarted
        .status
        .as_mut()
        .unwrap()
        .container_statuses
        .as_mut()
        .unwrap()[0]
        .restart_count = 1;
    let l = lease(Some(report(UID, MemberState::M, Some((2, "M/1")))), None);
    let objects = MemberObjects {
        pod: Some(&restarted),
        lease: Some(&l),
        clock: FRESH,
    };
    let failed = |baseline: Option<i32>, pod_uid: &str| {
        let mut hap = pair();
        let mut status = crate::crd::HAPairStatus::default();
        status.members.a.pod_uid = Some(pod_uid.into());
        status.members.a.app_restarts = baseline;
        hap.status = Some(status);
        let obs = observe(&hap, PerMember::new(objects, objects));
        matches!(
            obs.members.a,
            MemberView::Up {
                app_failed: true,
                ..
            }
        )
    };
    assert!(failed(Some(0), UID), "restarted since it was X");
    assert!(!failed(Some(1), UID), "no restart since");
    assert!(!failed(Some(0), "another-pod"), "a baseline of another pod");
    assert!(!failed(None, UID), "no baseline known");
}

#[test]
fn a_failed_member_replaced_by_a_pod_that_acknowledged_nothing_keeps_its_last_acknowledgement() {
    let mut l = lease(Some(report("new-pod", MemberState::X, None)), None);
    l.metadata.annotations.as_mut().unwrap().insert(
        crate::mailbox::MEMBER_ACKED.into(),
        "M/1/0b7e1c9a-0000-4000-8000-00000000000b.3".into(),
    );
    let MemberView::Down { last_acked, .. } = view(None, Some(&l), true) else {
        panic!("expected Down");
    };
    assert!(
        matches!(last_acked, Some(Command::Master { .. })),
        "{last_acked:?}"
    );
}
