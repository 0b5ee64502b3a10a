//! Carries out the decision's [`Step`]s, in order, stopping at the first failure (the next
//! reconcile decides again from a fresh observation).
//!
//! Every write has a precondition, so a step decided on a stale view never lands on a newer
//! object: a role label goes only on the pod instance that was observed (`metadata.uid` in the
//! merge patch: immutable, so a mismatch is rejected), and a command is written only on the Lease version that was observed
//! (`metadata.resourceVersion` in a merge patch: the API server answers 409 on mismatch).

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::crd::LABEL_ROLE;
use crate::mailbox::{CommandEnvelope, Report, COMMAND_SEQ};
use crate::protocol::{Command, Member, PerMember, Role, Step};

use super::Error;

/// The objects a step acts on: exactly the versions the decision was made from.
pub struct Targets<'a> {
    pub pods: &'a Api<Pod>,
    pub leases: &'a Api<Lease>,
    pub pod: PerMember<Option<&'a Pod>>,
    pub lease: PerMember<Option<&'a Lease>>,
}

/// Carries out `steps` in order; the first failure stops it.
pub async fn act(steps: &[Step], targets: &Targets<'_>) -> Result<(), Error> {
    for step in steps {
        match step {
            Step::Label { member, role } => label(targets, *member, *role).await?,
            Step::Command {
                member, command, ..
            } => write_command(targets, *member, *command).await?,
        }
    }
    Ok(())
}

/// The merge patch that sets (or removes, `null`) the role label on exactly this pod instance:
/// `metadata.uid` is immutable, so on a replaced pod of the same name the API server rejects the
/// patch (422) instead of labelling an instance the decision never saw.
pub fn label_patch(uid: &str, role: Option<Role>) -> serde_json::Value {
    json!({
        "metadata": {
            "uid": uid,
            "labels": { LABEL_ROLE: role.map(Role::as_str) },
        }
    })
}

async fn label(targets: &Targets<'_>, member: Member, role: Option<Role>) -> Result<(), Error> {
    let pod = targets.pod.get(member).ok_or(Error::Gone("pod", member))?;
    let uid = pod.uid().ok_or(Error::Gone("pod", member))?;
    let patch = label_patch(&uid, role);
    targets
        .pods
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}

/// The merge patch writing `command` as the next command on the observed Lease version. Its
/// sequence number is above both the last command's and the agent's acknowledgement, so a lost
/// or garbled `command-seq` can never make an agent skip the command as already applied.
pub fn command_patch(lease: &Lease, command: Command, pod_uid: &str) -> serde_json::Value {
    let previous = lease
        .annotations()
        .get(COMMAND_SEQ)
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    let acked = Report::parse(lease.annotations())
        .ok()
        .flatten()
        .and_then(|r| r.ack)
        .map_or(0, |a| a.seq);
    let envelope = CommandEnvelope {
        command,
        seq: previous.max(acked) + 1,
        pod: pod_uid.to_string(),
    };
    json!({
        "metadata": {
            "resourceVersion": lease.resource_version(),
            "annotations": envelope.to_annotations(),
        }
    })
}

async fn write_command(
    targets: &Targets<'_>,
    member: Member,
    command: Command,
) -> Result<(), Error> {
    let pod = targets.pod.get(member).ok_or(Error::Gone("pod", member))?;
    let lease = targets
        .lease
        .get(member)
        .ok_or(Error::Gone("lease", member))?;
    let uid = pod.uid().ok_or(Error::Gone("pod", member))?;
    let patch = command_patch(lease, command, &uid);
    targets
        .leases
        .patch(
            &lease.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::Ack;
    use crate::protocol::{MemberState, RecordView};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn lease(annotations: std::collections::BTreeMap<String, String>) -> Lease {
        Lease {
            metadata: ObjectMeta {
                resource_version: Some("7".into()),
                annotations: Some(annotations),
                ..ObjectMeta::default()
            },
            spec: None,
        }
    }

    fn seq_of(patch: &serde_json::Value) -> &str {
        patch["metadata"]["annotations"][COMMAND_SEQ]
            .as_str()
            .unwrap()
    }

    #[test]
    fn the_next_seq_is_above_the_last_command_and_the_acknowledgement() {
        let sm: Command = "SM/1".parse().unwrap();
        let report = Report {
            pod: "p".into(),
            record: RecordView::Missing,
            state: MemberState::SM,
            ack: Some(Ack {
                seq: 9,
                command: sm,
            }),
            fenced: None,
            floor: 0,
            stopping: false,
            error: None,
        };
        let mut annotations = report.to_annotations();
        let patch = command_patch(&lease(annotations.clone()), sm, "p");
        assert_eq!(seq_of(&patch), "10", "command-seq missing: above the ack");
        assert_eq!(patch["metadata"]["resourceVersion"], "7");
        annotations.insert(COMMAND_SEQ.into(), "12".into());
        assert_eq!(seq_of(&command_patch(&lease(annotations), sm, "p")), "13");
    }

    #[test]
    fn a_label_patch_names_the_pod_instance_and_null_removes_the_label() {
        let patch = label_patch("uid-1", None);
        assert_eq!(patch["metadata"]["uid"], "uid-1");
        assert!(patch["metadata"]["labels"][LABEL_ROLE].is_null());
        let master = label_patch("uid-1", Some(Role::Master));
        assert_eq!(master["metadata"]["labels"][LABEL_ROLE], "master");
    }
}
