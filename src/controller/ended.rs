//! A member pod that ended (phase `Failed` or `Succeeded`: evicted by the kubelet, past its
//! `activeDeadlineSeconds`, every container exited under `restartPolicy: Never`…) never runs
//! again: the kubelet restarts none of its containers. Left alone it would keep its member down
//! for good, since only a missing pod is recreated. So it is deleted, with a Warning Event that
//! says why it ended; the member then comes back as after any pod loss ([`super::recreate`],
//! with back-off). Its volume is kept, like on every failure.
//!
//! Deleting it changes no decision: nothing runs in an ended pod, so the member is already
//! observed down.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Preconditions};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use tracing::info;

use crate::crd::HAPair;
use crate::protocol::{Member, PerMember};

use super::{publish, Context, Error};

/// Deletes each member pod of `pods` that ended and is not being deleted yet.
pub async fn delete_ended_pods(
    pair: &HAPair,
    ctx: &Context,
    api: &Api<Pod>,
    pods: &PerMember<Option<Pod>>,
) -> Result<(), Error> {
    for m in Member::BOTH {
        if let Some(pod) = pods.get(m).as_ref().filter(|p| is_ended(p)) {
            delete(api, pod).await?;
            let note = format!(
                "member {m}'s pod {} ended ({}): no container of it runs again, so it was \
                 deleted and the member is recreated (its recovery; its volume is kept). If it \
                 happens again, see kubectl get events for the node's reason",
                pod.name_any(),
                why_ended(pod)
            );
            publish(ctx, pair, EventType::Warning, "MemberPodEnded", note).await;
        }
    }
    Ok(())
}

/// Ended and not yet being deleted (an ended pod whose deletion is under way is left to finish).
fn is_ended(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Failed" | "Succeeded")) && pod.metadata.deletion_timestamp.is_none()
}

/// The phase, with the kubelet's reason and message when it gave them.
fn why_ended(pod: &Pod) -> String {
    let status = pod.status.clone().unwrap_or_default();
    let phase = status.phase.unwrap_or_default();
    match (status.reason, status.message) {
        (Some(reason), Some(message)) => format!("phase {phase}, {reason}: {message}"),
        (Some(reason), None) => format!("phase {phase}, {reason}"),
        (None, _) => format!("phase {phase}"),
    }
}

/// Deletes this very pod (UID precondition: never a newer pod of the same name).
async fn delete(api: &Api<Pod>, pod: &Pod) -> Result<(), Error> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: pod.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&pod.name_any(), &params).await {
        Ok(_) => {
            info!(pod = %pod.name_any(), "ended pod deleted");
            Ok(())
        }
        // Gone already, or replaced by a newer pod: nothing of this one is left to delete.
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn pod(phase: &str, reason: Option<&str>, message: Option<&str>) -> Pod {
        Pod {
            status: Some(PodStatus {
                phase: Some(phase.into()),
                reason: reason.map(Into::into),
                message: message.map(Into::into),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn failed_and_succeeded_pods_ended_running_and_pending_ones_did_not() {
        assert!(is_ended(&pod("Failed", None, None)));
        assert!(is_ended(&pod("Succeeded", None, None)));
        assert!(!is_ended(&pod("Running", None, None)));
        assert!(!is_ended(&pod("Pending", None, None)));
        assert!(!is_ended(&Pod::default()), "no status yet");
    }

    #[test]
    fn an_ended_pod_being_deleted_is_left_to_finish() {
        let mut deleting = pod("Failed", None, None);
        deleting.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        assert!(!is_ended(&deleting));
    }

    #[test]
    fn the_reason_names_the_phase_and_the_kubelets_words() {
        let evicted = pod(
            "Failed",
            Some("Evicted"),
            Some("The node was low on resource: memory."),
        );
        assert_eq!(
            why_ended(&evicted),
            "phase Failed, Evicted: The node was low on resource: memory."
        );
        assert_eq!(
            why_ended(&pod("Failed", Some("DeadlineExceeded"), None)),
            "phase Failed, DeadlineExceeded"
        );
        assert_eq!(why_ended(&pod("Succeeded", None, None)), "phase Succeeded");
    }
}
