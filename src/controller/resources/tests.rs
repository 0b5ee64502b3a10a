use super::*;
use crate::crd::HAPairSpec;
use k8s_openapi::api::core::v1::PodTemplateSpec;

pub(crate) fn pair() -> HAPair {
    let spec: HAPairSpec = serde_json::from_value(serde_json::json!({
        "template": {"metadata": {"labels": {"app": "x", "hapair.io/role": "master"}},
                     "spec": {"containers": [{"name": "app", "image": "busybox"}]}},
        "volumeClaimTemplate": {"storageClassName": "local",
                                "resources": {"requests": {"storage": "1Gi"}}},
        "service": {"ports": [{"name": "app", "port": 8080}]},
    }))
    .unwrap();
    let mut pair = HAPair::new("x", spec);
    pair.metadata.namespace = Some("ns".into());
    pair.metadata.uid = Some("11111111-2222-3333-4444-555555555555".into());
    pair
}

fn env_of<'a>(c: &'a Container, name: &str) -> &'a EnvVar {
    c.env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("{name} not set"))
}

#[test]
fn member_pod_has_the_app_with_its_volume_and_role_dir_and_the_agent_sidecar() {
    let pod = pod(&pair(), Member::B, DEFAULT_AGENT_IMAGE);
    assert_eq!(pod.metadata.name.as_deref(), Some("x-b"));
    let labels = pod.metadata.labels.as_ref().unwrap();
    assert_eq!(labels[LABEL_PAIR], "x");
    assert_eq!(labels[LABEL_MEMBER], "b");
    assert_eq!(labels["app"], "x");
    assert!(
        !labels.contains_key(LABEL_ROLE),
        "only the decision sets the role"
    );
    assert_eq!(pod.metadata.owner_references.as_ref().unwrap().len(), 1);
    let spec = pod.spec.unwrap();
    assert_eq!(spec.service_account_name.as_deref(), Some("x-b"));
    let app = &spec.containers[0];
    let paths: Vec<_> = app
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert_eq!(paths, ["/var/lib/hapair/data", "/run/hapair"]);
    let agent = &spec.containers[1];
    assert_eq!(agent.name, AGENT_CONTAINER);
    assert_eq!(agent.image.as_deref(), Some(DEFAULT_AGENT_IMAGE));
    assert_eq!(env_of(agent, "HAPAIR_MEMBER").value.as_deref(), Some("b"));
    assert_eq!(
        env_of(agent, "HAPAIR_ROLE_FILE").value.as_deref(),
        Some("/run/hapair/role")
    );
    assert_eq!(
        env_of(agent, "HAPAIR_PAIR_UID").value.as_deref(),
        Some("11111111-2222-3333-4444-555555555555")
    );
    let uid = env_of(agent, "POD_UID").value_from.as_ref().unwrap();
    assert_eq!(uid.field_ref.as_ref().unwrap().field_path, "metadata.uid");
    let claim = spec.volumes.as_ref().unwrap()[0]
        .persistent_volume_claim
        .as_ref()
        .unwrap();
    assert_eq!(claim.claim_name, "x-b-data");
}

#[test]
fn spec_agent_image_wins_over_the_operators_default() {
    let mut p = pair();
    p.spec.agent_image = Some("my/agent:1".into());
    let pod = pod(&p, Member::A, DEFAULT_AGENT_IMAGE);
    assert_eq!(
        pod.spec.unwrap().containers[1].image.as_deref(),
        Some("my/agent:1")
    );
}

#[test]
fn claim_is_never_owned_so_it_is_never_deleted_with_the_pair() {
    let c = claim(&pair(), Member::A);
    assert_eq!(c.metadata.name.as_deref(), Some("x-a-data"));
    assert!(c.metadata.owner_references.is_none());
    let spec = c.spec.unwrap();
    assert_eq!(spec.storage_class_name.as_deref(), Some("local"));
    assert_eq!(spec.access_modes.unwrap(), ["ReadWriteOnce"]);
}

#[test]
fn services_select_the_master_and_the_standby() {
    let master = service(&pair(), Role::Master);
    assert_eq!(master.metadata.name.as_deref(), Some("x"));
    let sel = master.spec.as_ref().unwrap().selector.clone().unwrap();
    assert_eq!(sel[LABEL_ROLE], "master");
    assert_eq!(sel[LABEL_PAIR], "x");
    let standby = service(&pair(), Role::Standby);
    assert_eq!(standby.metadata.name.as_deref(), Some("x-standby"));
    assert_eq!(
        standby.spec.unwrap().selector.unwrap()[LABEL_ROLE],
        "standby"
    );
}

#[test]
fn agent_role_names_only_its_own_lease() {
    let r = role(&pair(), Member::A);
    let rules = r.rules.unwrap();
    assert_eq!(rules[0].resource_names.as_ref().unwrap(), &["x-a"]);
    assert!(rules[0].verbs.contains(&"patch".to_string()));
    assert_eq!(rules[1].verbs, ["create"]);
    let b = role_binding(&pair(), Member::A);
    assert_eq!(b.role_ref.name, "x-a");
    assert_eq!(b.subjects.unwrap()[0].name, "x-a");
}

#[test]
fn template_without_spec_still_builds_a_pod_with_the_agent() {
    let mut p = pair();
    p.spec.template = PodTemplateSpec::default();
    let pod = pod(&p, Member::A, "img");
    assert_eq!(pod.spec.unwrap().containers.len(), 1);
}
