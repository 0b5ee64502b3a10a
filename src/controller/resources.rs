//! The objects a `HAPair` named `x` consists of (DESIGN "Objects per HAPair"), built as plain
//! values: member pods `x-a`/`x-b` (the template plus the agent sidecar), their volumes'
//! claims `x-a-data`/`x-b-data`, Leases, Services, and the per-member ServiceAccount, Role and
//! RoleBinding that let an agent touch only its own Lease.
//!
//! This module is pure: it performs no I/O and decides nothing. Claims carry no ownerReference,
//! so deleting the `HAPair` (or any failure) never deletes a member's data (DESIGN invariant 5).

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, ObjectFieldSelector,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, Pod,
    PodSpec, SecurityContext, Service, ServiceAccount, ServicePort as KubeServicePort,
    ServiceSpec as KubeServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role as RbacRole, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::crd::{HAPair, LABEL_MEMBER, LABEL_PAIR, LABEL_ROLE};
use crate::mailbox;
use crate::protocol::{Member, Role};

/// The agent sidecar's container name.
pub const AGENT_CONTAINER: &str = "hapair-agent";
/// The image the agent runs when neither the spec nor the operator names one.
pub const DEFAULT_AGENT_IMAGE: &str = "localhost/hapair:dev";
/// The emptyDir shared by agent and application: the role file lives there.
pub const RUN_VOLUME: &str = "hapair-run";
pub const RUN_DIR: &str = "/run/hapair";
/// The member volume's name inside the pod.
pub const DATA_VOLUME: &str = "hapair-data";

/// A member's pod, Lease, ServiceAccount, Role and RoleBinding all carry this name.
pub fn member_name(pair: &str, member: Member) -> String {
    format!("{pair}-{member}")
}

/// The member volume's claim.
pub fn claim_name(pair: &str, member: Member) -> String {
    format!("{pair}-{member}-data")
}

/// The labels of every object of one member.
pub fn member_labels(pair: &str, member: Member) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_PAIR.to_string(), pair.to_string()),
        (LABEL_MEMBER.to_string(), member.as_str().to_string()),
    ])
}

fn owner(hapair: &HAPair) -> Vec<OwnerReference> {
    hapair.controller_owner_ref(&()).into_iter().collect()
}

fn meta(hapair: &HAPair, name: String, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: hapair.namespace(),
        labels: Some(labels),
        owner_references: Some(owner(hapair)),
        ..ObjectMeta::default()
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn env_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_string(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn mounts(data_path: &str) -> Vec<VolumeMount> {
    vec![
        VolumeMount {
            name: DATA_VOLUME.to_string(),
            mount_path: data_path.to_string(),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: RUN_VOLUME.to_string(),
            mount_path: RUN_DIR.to_string(),
            ..VolumeMount::default()
        },
    ]
}

/// The agent sidecar: configured entirely by environment (src/agent/config.rs).
fn agent_container(hapair: &HAPair, member: Member, image: &str) -> Container {
    let spec = &hapair.spec;
    let lease = &spec.lease;
    Container {
        name: AGENT_CONTAINER.to_string(),
        image: Some(image.to_string()),
        image_pull_policy: Some("IfNotPresent".to_string()),
        command: Some(vec!["/hapair".to_string(), "agent".to_string()]),
        env: Some(vec![
            env_field("POD_NAME", "metadata.name"),
            env_field("POD_UID", "metadata.uid"),
            env_field("POD_NAMESPACE", "metadata.namespace"),
            env("HAPAIR_PAIR", hapair.name_any()),
            env("HAPAIR_PAIR_UID", hapair.uid().unwrap_or_default()),
            env("HAPAIR_MEMBER", member.as_str()),
            env("HAPAIR_VOLUME", spec.data_mount_path.clone()),
            env("HAPAIR_ROLE_FILE", format!("{RUN_DIR}/role")),
            env("HAPAIR_LEASE_DURATION", lease.duration_seconds.to_string()),
            env(
                "HAPAIR_RENEW_INTERVAL",
                lease.renew_interval_seconds.to_string(),
            ),
            env(
                "HAPAIR_FENCE_MARGIN",
                lease.fence_margin_seconds.to_string(),
            ),
            env("HAPAIR_ROLE_HANDSHAKE", spec.role_handshake.to_string()),
        ]),
        volume_mounts: Some(mounts(&spec.data_mount_path)),
        // The member volume's directory belongs to root on hostPath/local volumes, which ignore
        // fsGroup; the agent must write the record there.
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

/// The member's pod: the template's containers with the member volume and the role-file
/// directory mounted, the agent sidecar, the member's ServiceAccount, and the pair labels. The
/// role label is not set here: only the decision sets it, after an acknowledgement.
pub fn pod(hapair: &HAPair, member: Member, agent_image: &str) -> Pod {
    let pair = hapair.name_any();
    let template = &hapair.spec.template;
    let mut labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.remove(LABEL_ROLE);
    labels.extend(member_labels(&pair, member));
    let mut metadata = meta(hapair, member_name(&pair, member), labels);
    metadata.annotations = template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.clone());

    let mut spec: PodSpec = template.spec.clone().unwrap_or_default();
    for c in &mut spec.containers {
        c.volume_mounts
            .get_or_insert_with(Vec::new)
            .extend(mounts(&hapair.spec.data_mount_path));
    }
    let image = hapair.spec.agent_image.as_deref().unwrap_or(agent_image);
    spec.containers.push(agent_container(hapair, member, image));
    spec.volumes.get_or_insert_with(Vec::new).extend([
        Volume {
            name: DATA_VOLUME.to_string(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(&pair, member),
                ..PersistentVolumeClaimVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: RUN_VOLUME.to_string(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ]);
    spec.service_account_name = Some(member_name(&pair, member));
    Pod {
        metadata,
        spec: Some(spec),
        status: None,
    }
}

/// The member volume's claim: no ownerReference, so nothing ever deletes it automatically.
pub fn claim(hapair: &HAPair, member: Member) -> PersistentVolumeClaim {
    let pair = hapair.name_any();
    let template = &hapair.spec.volume_claim_template;
    let mut metadata = meta(
        hapair,
        claim_name(&pair, member),
        member_labels(&pair, member),
    );
    metadata.owner_references = None;
    let access_modes = template
        .access_modes
        .iter()
        .map(|m| format!("{m:?}"))
        .collect();
    PersistentVolumeClaim {
        metadata,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(access_modes),
            storage_class_name: template.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    template.resources.requests.storage.clone(),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

/// The member's mailbox, created empty: the agent takes it over and renews it.
pub fn lease(hapair: &HAPair, member: Member) -> Lease {
    let pair = hapair.name_any();
    Lease {
        metadata: meta(
            hapair,
            mailbox::lease_name(&pair, member),
            member_labels(&pair, member),
        ),
        spec: None,
    }
}

/// `x` selects the master, `x-standby` the standby.
pub fn service(hapair: &HAPair, role: Role) -> Service {
    let pair = hapair.name_any();
    let name = match role {
        Role::Master => pair.clone(),
        Role::Standby => format!("{pair}-standby"),
    };
    let labels = BTreeMap::from([(LABEL_PAIR.to_string(), pair.clone())]);
    let selector = BTreeMap::from([
        (LABEL_PAIR.to_string(), pair.clone()),
        (LABEL_ROLE.to_string(), role.as_str().to_string()),
    ]);
    let ports = hapair
        .spec
        .service
        .ports
        .iter()
        .map(|p| KubeServicePort {
            name: Some(p.name.clone()),
            port: p.port,
            target_port: Some(p.target_port.clone().unwrap_or(IntOrString::Int(p.port))),
            ..KubeServicePort::default()
        })
        .collect::<Vec<_>>();
    // A Service without ports is valid only headless; it still publishes the selected pod.
    let cluster_ip = ports.is_empty().then(|| "None".to_string());
    Service {
        metadata: meta(hapair, name, labels),
        spec: Some(KubeServiceSpec {
            selector: Some(selector),
            ports: Some(ports),
            cluster_ip,
            ..KubeServiceSpec::default()
        }),
        status: None,
    }
}

pub fn service_account(hapair: &HAPair, member: Member) -> ServiceAccount {
    let pair = hapair.name_any();
    ServiceAccount {
        metadata: meta(
            hapair,
            member_name(&pair, member),
            member_labels(&pair, member),
        ),
        ..ServiceAccount::default()
    }
}

/// The agent may read, watch and update its own Lease only (resourceNames), and create it
/// (create cannot be restricted by name: the name is not known to the authorizer then).
pub fn role(hapair: &HAPair, member: Member) -> RbacRole {
    let pair = hapair.name_any();
    let rule = |verbs: &[&str], names: Option<Vec<String>>| PolicyRule {
        api_groups: Some(vec!["coordination.k8s.io".to_string()]),
        resources: Some(vec!["leases".to_string()]),
        resource_names: names,
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..PolicyRule::default()
    };
    RbacRole {
        metadata: meta(
            hapair,
            member_name(&pair, member),
            member_labels(&pair, member),
        ),
        rules: Some(vec![
            rule(
                &["get", "list", "watch", "patch", "update"],
                Some(vec![mailbox::lease_name(&pair, member)]),
            ),
            rule(&["create"], None),
        ]),
    }
}

pub fn role_binding(hapair: &HAPair, member: Member) -> RoleBinding {
    let pair = hapair.name_any();
    let name = member_name(&pair, member);
    RoleBinding {
        metadata: meta(hapair, name.clone(), member_labels(&pair, member)),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_string(),
            kind: "Role".to_string(),
            name: name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_string(),
            name,
            namespace: hapair.namespace(),
            ..Subject::default()
        }]),
    }
}

#[cfg(test)]
pub(crate) mod tests;
