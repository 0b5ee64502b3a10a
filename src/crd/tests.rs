use super::*;

use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

use crate::protocol::Standing;

fn time(seconds: i64) -> Time {
    Time(Timestamp::from_second(1_700_000_000 + seconds).unwrap())
}

fn schema() -> Value {
    let crd = definition();
    let version = &crd.spec.versions[0];
    let schema = version.schema.as_ref().unwrap();
    serde_json::to_value(schema.open_api_v3_schema.as_ref().unwrap()).unwrap()
}

fn at<'a>(schema: &'a Value, path: &str) -> &'a Value {
    schema
        .pointer(path)
        .unwrap_or_else(|| panic!("no {path} in the schema"))
}

/// Calls `f(path, node)` for every schema node (not for property maps themselves).
fn walk(path: &str, node: &Value, f: &mut dyn FnMut(&str, &serde_json::Map<String, Value>)) {
    let Some(object) = node.as_object() else {
        return;
    };
    f(path, object);
    if let Some(Value::Object(properties)) = object.get("properties") {
        for (name, sub) in properties {
            walk(&format!("{path}.{name}"), sub, f);
        }
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(sub) = object.get(key) {
            walk(&format!("{path}[{key}]"), sub, f);
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(list)) = object.get(key) {
            for (i, sub) in list.iter().enumerate() {
                walk(&format!("{path}[{key}.{i}]"), sub, f);
            }
        }
    }
}

// ---------------------------------------------------------------------------- the generated CRD

#[test]
fn crd_names_scope_and_status_subresource() {
    let crd = definition();
    assert_eq!(crd.metadata.name.as_deref(), Some("hapairs.hapair.io"));
    assert_eq!(crd.spec.group, "hapair.io");
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.kind, "HAPair");
    assert_eq!(crd.spec.names.plural, "hapairs");
    assert_eq!(crd.spec.names.short_names, Some(vec!["hap".to_string()]));
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(version.served && version.storage);
    let subresources = version.subresources.as_ref().unwrap();
    assert!(subresources.status.is_some());
    assert!(subresources.scale.is_none());
}

#[test]
fn printer_columns_show_pair_state_master_priorities_age() {
    let crd = definition();
    let columns = crd.spec.versions[0]
        .additional_printer_columns
        .clone()
        .unwrap();
    let shown: Vec<(String, String)> = columns
        .into_iter()
        .map(|c| (c.name.to_uppercase(), c.json_path))
        .collect();
    let expected = [
        ("PAIR-STATE", ".status.pairState"),
        ("MASTER", ".status.master"),
        ("PRIORITIES", ".status.priorities"),
        ("AGE", ".metadata.creationTimestamp"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(n, p)| (n.to_string(), p.to_string()))
        .collect();
    assert_eq!(shown, expected);
}

/// Kubernetes v1.20 accepts only structural schemas without `$ref`; it reads a default of "" as
/// null (and rejects it); it knows the integer formats int32 and int64.
#[test]
fn schema_is_structural_for_a_v1_20_api_server() {
    let mut problems = Vec::new();
    walk("", &schema(), &mut |path, node| {
        for key in [
            "$ref",
            "definitions",
            "$defs",
            "$schema",
            "oneOf",
            "allOf",
            "not",
        ] {
            if node.contains_key(key) {
                problems.push(format!("{path}: {key}"));
            }
        }
        if node.contains_key("anyOf") {
            problems.push(format!("{path}: anyOf"));
        }
        let typed = node.contains_key("type")
            || node.contains_key("x-kubernetes-int-or-string")
            || node.contains_key("x-kubernetes-preserve-unknown-fields");
        if !typed {
            problems.push(format!("{path}: no type"));
        }
        if let Some(format) = node.get("format").and_then(Value::as_str) {
            if node.get("type") == Some(&json!("integer")) && !["int32", "int64"].contains(&format)
            {
                problems.push(format!("{path}: integer format {format}"));
            }
        }
        if node.get("default") == Some(&json!("")) {
            problems.push(format!("{path}: default \"\""));
        }
        if let Some(Value::Bool(_)) = node.get("additionalProperties") {
            problems.push(format!("{path}: boolean additionalProperties"));
        }
    });
    assert!(
        problems.is_empty(),
        "not for v1.20:\n{}",
        problems.join("\n")
    );
}

/// k8s-openapi's Quantity deserializes from strings only: the schema must not admit `cpu: 1`.
#[test]
fn quantities_must_be_strings_everywhere() {
    let schema = schema();
    let limits = at(
        &schema,
        "/properties/spec/properties/template/properties/spec/properties/containers/items/properties/resources/properties/limits/additionalProperties",
    );
    assert_eq!(limits["type"], "string");
    assert_eq!(limits["pattern"], QUANTITY_PATTERN);
    let storage = at(
        &schema,
        "/properties/spec/properties/volumeClaimTemplate/properties/resources/properties/requests/properties/storage",
    );
    assert_eq!(storage["type"], "string");
    // What remains int-or-string is IntOrString, which deserializes from both.
    walk("", &schema, &mut |path, node| {
        if node.contains_key("x-kubernetes-int-or-string") {
            assert!(
                path.ends_with(".port") || path.ends_with(".targetPort"),
                "{path} is int-or-string: is it a Quantity?"
            );
        }
    });
}

#[test]
fn template_requires_a_container_and_keeps_kubernetes_field_types() {
    let schema = schema();
    let template = at(&schema, "/properties/spec/properties/template");
    assert_eq!(template["required"], json!(["spec"]));
    let containers = at(template, "/properties/spec/properties/containers");
    assert_eq!(containers["minItems"], 1);
    assert_eq!(containers["items"]["required"], json!(["name"]));
    let probe_port = at(
        containers,
        "/items/properties/readinessProbe/properties/httpGet/properties/port",
    );
    assert_eq!(probe_port["x-kubernetes-int-or-string"], true);
    let required = at(&schema, "/properties/spec/required");
    assert_eq!(required, &json!(["template", "volumeClaimTemplate"]));
}

#[test]
fn lease_bounds_and_defaults_are_in_the_schema() {
    let schema = schema();
    let lease = at(&schema, "/properties/spec/properties/lease/properties");
    let bounds = |field: &str| {
        let f = &lease[field];
        (
            f["default"].as_u64(),
            f["minimum"].as_f64(),
            f["maximum"].as_f64(),
        )
    };
    assert_eq!(
        bounds("durationSeconds"),
        (Some(10), Some(3.0), Some(300.0))
    );
    assert_eq!(
        bounds("renewIntervalSeconds"),
        (Some(2), Some(1.0), Some(299.0))
    );
    assert_eq!(
        bounds("fenceMarginSeconds"),
        (Some(3), Some(1.0), Some(299.0))
    );
    let paused = at(&schema, "/properties/spec/properties/paused");
    assert_eq!(paused["type"], "boolean");
    assert_eq!(paused["default"], false);
    let mount = at(&schema, "/properties/spec/properties/dataMountPath");
    assert_eq!(mount["default"], DEFAULT_DATA_MOUNT_PATH);
}

#[test]
fn status_values_are_bounded_as_the_rust_types() {
    let schema = schema();
    let member = at(
        &schema,
        "/properties/status/properties/members/properties/a/properties",
    );
    assert_eq!(member["state"]["enum"], json!(["M", "SM", "SL", "X"]));
    assert_eq!(
        (
            member["priority"]["minimum"].as_f64(),
            member["priority"]["maximum"].as_f64()
        ),
        (Some(1.0), Some(3.0))
    );
    assert_eq!(
        member["record"]["properties"]["state"]["enum"],
        json!(["valid", "missing", "corrupt", "wrong-pair"])
    );
    let conditions = at(&schema, "/properties/status/properties/conditions");
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
    assert_eq!(
        conditions["items"]["properties"]["type"]["enum"],
        json!([
            "Available",
            "Degraded",
            "WaitingForPeer",
            "NeedsForceStart",
            "Paused"
        ])
    );
    let history = at(&schema, "/properties/status/properties/history");
    assert_eq!(history["maxItems"], json!(HISTORY_LIMIT));
    assert_eq!(
        history["items"]["properties"]["from"]["pattern"],
        PAIR_STATE_PATTERN
    );
}

#[test]
fn crd_yaml_reads_back_as_the_same_definition() {
    let yaml = definition_yaml().unwrap();
    let back: CustomResourceDefinition = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(back, definition());
}

// ------------------------------------------------------------------------------------------ spec

fn minimal_spec() -> Value {
    json!({
        "template": {"spec": {"containers": [{"name": "app", "image": "busybox"}]}},
        "volumeClaimTemplate": {"resources": {"requests": {"storage": "1Gi"}}},
    })
}

#[test]
fn minimal_spec_gets_the_documented_defaults() {
    let spec: HAPairSpec = serde_json::from_value(minimal_spec()).unwrap();
    assert_eq!(spec.data_mount_path, "/var/lib/hapair/data");
    assert_eq!(spec.lease, LeaseTimings::default());
    assert_eq!(
        (
            spec.lease.duration_seconds,
            spec.lease.renew_interval_seconds,
            spec.lease.fence_margin_seconds
        ),
        (10, 2, 3)
    );
    assert!(!spec.paused);
    assert_eq!(spec.agent_image, None);
    assert!(spec.service.ports.is_empty());
    assert_eq!(
        spec.volume_claim_template.access_modes,
        vec![AccessMode::ReadWriteOnce]
    );
    assert_eq!(spec.validate(), Ok(()));
}

#[test]
fn spec_serializes_in_camel_case() {
    let mut spec: HAPairSpec = serde_json::from_value(minimal_spec()).unwrap();
    spec.service.ports.push(ServicePort {
        name: "db".into(),
        port: 5432,
        target_port: Some(IntOrString::String("db".into())),
    });
    let v = serde_json::to_value(&spec).unwrap();
    assert_eq!(v["dataMountPath"], DEFAULT_DATA_MOUNT_PATH);
    assert_eq!(v["lease"]["durationSeconds"], 10);
    assert_eq!(v["service"]["ports"][0]["targetPort"], "db");
    assert_eq!(
        v["volumeClaimTemplate"]["accessModes"],
        json!(["ReadWriteOnce"])
    );
    assert!(v.get("agentImage").is_none());
}

#[test]
fn fence_margin_not_below_lease_duration_is_rejected() {
    let lease = LeaseTimings {
        duration_seconds: 5,
        renew_interval_seconds: 1,
        fence_margin_seconds: 5,
    };
    let err = lease.validate().unwrap_err();
    assert_eq!(
        err,
        SpecError::FenceMarginTooLarge {
            margin: 5,
            duration: 5
        }
    );
    assert!(err.to_string().contains("spec.lease.fenceMarginSeconds"));
}

#[test]
fn renew_interval_that_cannot_renew_before_fencing_is_rejected() {
    let lease = LeaseTimings {
        duration_seconds: 10,
        renew_interval_seconds: 7,
        fence_margin_seconds: 3,
    };
    assert_eq!(
        lease.validate(),
        Err(SpecError::RenewTooSlow {
            renew: 7,
            window: 7
        })
    );
    let ok = LeaseTimings {
        renew_interval_seconds: 6,
        ..lease
    };
    assert_eq!(ok.validate(), Ok(()));
}

#[test]
fn spec_without_containers_or_with_duplicate_ports_is_rejected() {
    let mut spec: HAPairSpec = serde_json::from_value(minimal_spec()).unwrap();
    spec.template.spec = None;
    assert_eq!(spec.validate(), Err(SpecError::NoContainers));

    let mut spec: HAPairSpec = serde_json::from_value(minimal_spec()).unwrap();
    let port = ServicePort {
        name: "db".into(),
        port: 5432,
        target_port: None,
    };
    spec.service.ports = vec![port.clone(), ServicePort { port: 5433, ..port }];
    assert_eq!(
        spec.validate(),
        Err(SpecError::DuplicatePortName("db".into()))
    );
}

// ---------------------------------------------------------------------------------------- status

fn member(state: MemberState, priority: Option<Priority>) -> MemberStatus {
    MemberStatus {
        state,
        priority,
        ..MemberStatus::default()
    }
}

#[test]
fn priorities_string_shows_each_member_and_dash_when_unknown() {
    let mut status = HAPairStatus::default();
    assert_eq!(status.priorities_string(), "[- -]");
    status.members.a = member(MemberState::M, Some(Priority::Two));
    status.members.b = member(MemberState::SL, Some(Priority::Three));
    assert_eq!(status.priorities_string(), "[2 3]");
    status.members.b.priority = None;
    assert_eq!(status.priorities_string(), "[2 -]");
}

#[test]
fn summarize_derives_pair_state_master_and_priorities_from_members() {
    let mut status = HAPairStatus::default();
    status.members.a = member(MemberState::SL, Some(Priority::Three));
    status.members.b = member(MemberState::SM, Some(Priority::One));
    status.summarize();
    assert_eq!(status.pair_state, "(SL SM)");
    assert_eq!(status.master, "b");
    assert_eq!(status.priorities, "[3 1]");

    status.members.b.state = MemberState::X;
    status.summarize();
    assert_eq!(status.pair_state, "(SL X)");
    assert_eq!(status.master, "");
}

#[test]
fn fresh_status_serializes_without_summary_fields() {
    let v = serde_json::to_value(HAPairStatus::default()).unwrap();
    assert_eq!(
        v,
        json!({
            "members": {"a": {"state": "X", "ready": false}, "b": {"state": "X", "ready": false}},
            "conditions": [],
            "history": [],
            "initialized": false,
            "recordedTerms": {"a": 0, "b": 0},
        })
    );
}

#[test]
fn member_status_round_trips_with_kubernetes_field_names() {
    let status = MemberStatus {
        state: MemberState::SM,
        priority: Some(Priority::One),
        term: Some(Term(4)),
        pod: Some("x-a".into()),
        pod_uid: Some("0b7c5c4e-6f54-4a5e-8a8b-1d6d2f3e4a5b".into()),
        ready: true,
        last_transition_time: Some(time(0)),
        record: Some(RecordStatus::from(&RecordView::Valid(Standing::new(
            Priority::One,
            Term(4),
        )))),
        app_restarts: Some(2),
    };
    let v = serde_json::to_value(&status).unwrap();
    assert_eq!(v["appRestarts"], 2);
    assert_eq!(v["state"], "SM");
    assert_eq!(v["priority"], 1);
    assert_eq!(v["term"], 4);
    assert_eq!(v["podUID"], "0b7c5c4e-6f54-4a5e-8a8b-1d6d2f3e4a5b");
    assert_eq!(v["lastTransitionTime"], "2023-11-14T22:13:20Z");
    assert_eq!(v["record"], json!({"state": "valid"}));
    let back: MemberStatus = serde_json::from_value(v).unwrap();
    assert_eq!(back, status);
}

#[test]
fn out_of_range_priority_in_status_does_not_deserialize() {
    let err = serde_json::from_value::<MemberStatus>(json!({"state": "M", "priority": 4}));
    assert!(err.is_err());
}

#[test]
fn record_status_names_each_record_view() {
    let cases = [
        (RecordView::Missing, "missing", None),
        (
            RecordView::Corrupt("/data/.hapair/record: checksum mismatch".into()),
            "corrupt",
            Some("/data/.hapair/record: checksum mismatch"),
        ),
        (
            RecordView::WrongPair("record of pair 1234".into()),
            "wrong-pair",
            Some("record of pair 1234"),
        ),
    ];
    for (view, state, reason) in cases {
        let status = RecordStatus::from(&view);
        let v = serde_json::to_value(&status).unwrap();
        assert_eq!(v["state"], state);
        assert_eq!(v.get("reason").and_then(Value::as_str), reason);
    }
}

fn entry(n: i64) -> HistoryEntry {
    HistoryEntry {
        time: time(n),
        from: PerMember::new(MemberState::M, MemberState::SL),
        to: PerMember::new(MemberState::SM, MemberState::X),
        transition: Some("4-2".into()),
        reason: format!("transition {n}"),
    }
}

#[test]
fn history_keeps_the_last_twenty_most_recent_last() {
    let mut status = HAPairStatus::default();
    for n in 0..25 {
        status.push_history(entry(n));
    }
    assert_eq!(status.history.len(), HISTORY_LIMIT);
    assert_eq!(status.history[0].reason, "transition 5");
    assert_eq!(status.history[HISTORY_LIMIT - 1].reason, "transition 24");
}

#[test]
fn history_entry_writes_pair_states_as_text() {
    let v = serde_json::to_value(entry(0)).unwrap();
    assert_eq!(v["from"], "(M SL)");
    assert_eq!(v["to"], "(SM X)");
    assert_eq!(v["transition"], "4-2");
    let back: HistoryEntry = serde_json::from_value(v).unwrap();
    assert_eq!(back, entry(0));
}

#[test]
fn pair_state_text_parses_only_a_b_pairs_of_known_states() {
    assert_eq!(
        parse_pair_state("(SL SM)"),
        Some(PerMember::new(MemberState::SL, MemberState::SM))
    );
    for bad in [
        "", "(M)", "(M  SL)", "M SL", "(M SL", "(m sl)", "(M Q)", "(M SL X)",
    ] {
        assert_eq!(parse_pair_state(bad), None, "{bad:?}");
    }
    let mut v = serde_json::to_value(entry(0)).unwrap();
    v["to"] = json!("(SM)");
    let err = serde_json::from_value::<HistoryEntry>(v).unwrap_err();
    assert!(
        err.to_string().contains("'(SM)' is not a pair state"),
        "{err}"
    );
}

fn waiting(status: ConditionStatus, reason: &str) -> NewCondition<'_> {
    NewCondition {
        type_: ConditionType::WaitingForPeer,
        status,
        reason,
        message: "member a recovered with priority 2: waiting for member b",
        observed_generation: Some(1),
    }
}

#[test]
fn set_condition_moves_transition_time_only_when_status_changes() {
    let mut status = HAPairStatus::default();
    status.set_condition(waiting(ConditionStatus::True, "PeerDown"), time(0));
    status.set_condition(waiting(ConditionStatus::True, "StillDown"), time(10));
    let c = status.condition(ConditionType::WaitingForPeer).unwrap();
    assert_eq!(c.last_transition_time, time(0));
    assert_eq!(c.reason, "StillDown");

    status.set_condition(waiting(ConditionStatus::False, "PeerRecovered"), time(20));
    let c = status.condition(ConditionType::WaitingForPeer).unwrap();
    assert_eq!(c.last_transition_time, time(20));
    assert_eq!(c.status, ConditionStatus::False);
    assert_eq!(status.conditions.len(), 1);
}

#[test]
fn set_condition_adds_each_type_once() {
    let mut status = HAPairStatus::default();
    status.set_condition(waiting(ConditionStatus::True, "PeerDown"), time(0));
    status.set_condition(
        NewCondition {
            type_: ConditionType::Available,
            status: ConditionStatus::False,
            reason: "NoMaster",
            message: "",
            observed_generation: None,
        },
        time(1),
    );
    let types: Vec<ConditionType> = status.conditions.iter().map(|c| c.type_).collect();
    assert_eq!(
        types,
        vec![ConditionType::WaitingForPeer, ConditionType::Available]
    );
    let v = serde_json::to_value(&status.conditions[1]).unwrap();
    assert_eq!(
        v,
        json!({"type": "Available", "status": "False", "reason": "NoMaster",
               "lastTransitionTime": "2023-11-14T22:13:21Z"})
    );
}
