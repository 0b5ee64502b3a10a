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
use crate::mailbox::{CommandEnvelope, COMMAND_SEQ};
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

/// The merge patch writing `command` as the next command on the observed Lease version.
pub fn command_patch(lease: &Lease, command: Command, pod_uid: &str) -> serde_json::Value {
    let previous = lease
        .annotations()
        .get(COMMAND_SEQ)
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    let envelope = CommandEnvelope {
        command,
        seq: previous + 1,
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
