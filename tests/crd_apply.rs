//! The generated CRD against the REAL local cluster (Kubernetes v1.20, deploy/local/cluster.sh up):
//! the API server accepts deploy/crd.yaml as a structural schema, serves `HAPair`s, keeps status
//! behind the status subresource, prints the columns, and rejects bad input naming the field.
//!
//! The CRD is cluster-wide and shared with every other test: it is applied (server-side, forced,
//! idempotent) and never deleted here.

mod support;

use std::path::Path;
use std::time::Duration;

use hapair::crd::{
    ConditionStatus, ConditionType, HAPair, HAPairStatus, HistoryEntry, MemberStatus, NewCondition,
    RecordStatus,
};
use hapair::protocol::{MemberState, PerMember, Priority, RecordView, Standing, Term};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client, CustomResourceExt, ResourceExt};
use serde_json::{json, Value};
use support::*;

const T: Duration = Duration::from_secs(60);
const MANAGER: &str = "hapair-test";

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn is_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

/// Applies deploy/crd.yaml (server-side) and waits, by watch, until it is Established.
async fn install_crd(client: &Client) -> CustomResourceDefinition {
    let crd: CustomResourceDefinition =
        serde_saphyr::from_str(&read("deploy/crd.yaml")).expect("deploy/crd.yaml is a CRD");
    let name = HAPair::crd_name();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    // Tests running in parallel apply the same CRD while the API server updates its status: a
    // write can lose the race (409 Conflict) and is simply repeated.
    for attempt in 1.. {
        let params = PatchParams::apply(MANAGER).force();
        match api.patch(name, &params, &Patch::Apply(&crd)).await {
            Ok(_) => break,
            Err(kube::Error::Api(e)) if e.code == 409 && attempt < 10 => {
                eprintln!(
                    "applying the CRD conflicted (attempt {attempt}): {}",
                    e.message
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the API server rejected deploy/crd.yaml: {e}"),
        }
    }
    let crd = wait_for(&api, name, is_established, T).await;
    let conditions = crd.status.as_ref().and_then(|s| s.conditions.clone());
    assert!(
        !conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "NonStructuralSchema" && c.status == "True"),
        "the API server found the schema not structural: {:?}",
        crd.status
    );
    crd
}

fn example() -> HAPair {
    serde_saphyr::from_str(&read("deploy/examples/hapair.yaml"))
        .expect("deploy/examples/hapair.yaml is an HAPair")
}

fn at(seconds: i64) -> Time {
    Time(Timestamp::from_second(1_700_000_000 + seconds).unwrap())
}

/// A status as the operator would write it for `(M SL)` after seed transition 1-2-2.
fn running_status(generation: i64) -> HAPairStatus {
    let mut status = HAPairStatus::default();
    let standing = Standing::new(Priority::Two, Term(1));
    status.members.a = MemberStatus {
        state: MemberState::M,
        priority: Some(Priority::Two),
        term: Some(Term(1)),
        pod: Some("example-a".into()),
        pod_uid: Some("6f1d7a2e-3c59-4a8e-9b6e-0d7a3c1b2e4f".into()),
        ready: true,
        last_transition_time: Some(at(10)),
        record: Some(RecordStatus::from(&RecordView::Valid(standing))),
        app_restarts: Some(0),
    };
    status.members.b = MemberStatus {
        state: MemberState::SL,
        priority: Some(Priority::Three),
        term: Some(Term(0)),
        ready: true,
        record: Some(RecordStatus::from(&RecordView::Missing)),
        ..MemberStatus::default()
    };
    status.summarize();
    status.set_condition(
        NewCondition {
            type_: ConditionType::Available,
            status: ConditionStatus::True,
            reason: "MasterServing",
            message: "member a processes (M); member b is an up-to-date standby",
            observed_generation: Some(generation),
        },
        at(10),
    );
    status.push_history(HistoryEntry {
        time: at(10),
        from: PerMember::new(MemberState::SM, MemberState::SL),
        to: PerMember::new(MemberState::M, MemberState::SL),
        transition: Some("1-2-2".into()),
        reason: "member b caught up".into(),
    });
    status.observed_generation = Some(generation);
    status.initialized = true;
    status.recorded_terms = PerMember::new(Term(1), Term(0)).into();
    status
}

fn kubectl(args: &[&str]) -> String {
    let out = std::process::Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig_path())
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("kubectl {args:?}: {e} (eval \"$(deploy/local/cluster.sh env)\")")
        });
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn example_hapair_is_served_and_its_status_lives_in_the_status_subresource() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new("crd").await;
    let api: Api<HAPair> = ns.api();

    // The commented example is admitted as it is, and reads back typed with every field.
    let example = example();
    let created = api
        .create(&PostParams::default(), &example)
        .await
        .unwrap_or_else(|e| panic!("the API server rejected deploy/examples/hapair.yaml: {e}"));
    let read_back = api.get(&created.name_any()).await.unwrap();
    assert_eq!(read_back.spec, example.spec);
    assert_eq!(read_back.status, None);
    let generation = read_back.metadata.generation.unwrap();

    // The status is written through the status subresource (server-side apply) and reads back
    // exactly; it does not bump the generation.
    let status = running_status(generation);
    let patch = json!({"apiVersion": "hapair.io/v1alpha1", "kind": "HAPair", "status": status});
    api.patch_status(
        "example",
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .unwrap_or_else(|e| panic!("status patch rejected: {e}"));
    let read_back = api.get("example").await.unwrap();
    assert_eq!(read_back.status.as_ref(), Some(&status));
    assert_eq!(read_back.spec, example.spec);
    assert_eq!(read_back.metadata.generation, Some(generation));

    // A status sent to the main resource is ignored: only the status subresource writes it.
    let sneaky = json!({"status": {"pairState": "(SM X)", "master": "a"}});
    api.patch("example", &PatchParams::default(), &Patch::Merge(&sneaky))
        .await
        .unwrap();
    let read_back = api.get("example").await.unwrap();
    assert_eq!(read_back.status.as_ref(), Some(&status));

    // The printer columns, by plural, singular and short name.
    let table = kubectl(&["get", "hap", "-n", &ns.name]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "PAIR-STATE", "MASTER", "PRIORITIES", "AGE"],
        "{table}"
    );
    let row = lines.next().unwrap_or_default();
    assert!(
        row.starts_with("example") && row.contains("(M SL)") && row.contains("[2 3]"),
        "{table}"
    );
    let row: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(row[1..5], ["(M", "SL)", "a", "[2"], "{table}");
    for name in ["hapair", "hapairs", "hapairs.hapair.io"] {
        let names = kubectl(&["get", name, "-n", &ns.name, "-o", "name"]);
        assert_eq!(
            names.trim(),
            "hapair.hapair.io/example",
            "kubectl get {name}"
        );
    }
}

/// Creates `spec` (untyped: it may not even fit the Rust types) and returns the API server's
/// refusal message. Panics if it was admitted.
async fn refused(api: &Api<DynamicObject>, name: &str, spec: Value) -> String {
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "hapair.io/v1alpha1", "kind": "HAPair",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap();
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => panic!("the API server admitted the invalid HAPair {name}"),
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{name}: {status:?}");
            eprintln!("{name}: {}", status.message);
            status.message
        }
        Err(e) => panic!("{name}: {e}"),
    }
}

fn valid_spec() -> Value {
    serde_json::to_value(example().spec).unwrap()
}

fn with(mut spec: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let parent = spec.pointer_mut(parent).unwrap().as_object_mut().unwrap();
    match value {
        Value::Null => parent.remove(key),
        value => parent.insert(key.to_string(), value),
    };
    spec
}

#[tokio::test]
async fn invalid_hapairs_are_rejected_by_the_api_server_naming_the_field() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new("crd-invalid").await;
    let resource = ApiResource::erase::<HAPair>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns.name, &resource);

    let cases = [
        (
            "short-lease",
            "/lease/durationSeconds",
            json!(1),
            ["spec.lease.durationSeconds", "greater than or equal to 3"],
        ),
        (
            "long-lease",
            "/lease/durationSeconds",
            json!(301),
            ["spec.lease.durationSeconds", "less than or equal to 300"],
        ),
        (
            "zero-renew",
            "/lease/renewIntervalSeconds",
            json!(0),
            [
                "spec.lease.renewIntervalSeconds",
                "greater than or equal to 1",
            ],
        ),
        (
            "paused-yes",
            "/paused",
            json!("yes"),
            ["spec.paused", "must be of type boolean"],
        ),
        (
            "integer-cpu",
            "/template/spec/containers/0/resources/requests/cpu",
            json!(1),
            ["resources.requests.cpu", "must be of type string"],
        ),
        (
            "bad-size",
            "/volumeClaimTemplate/resources/requests/storage",
            json!("lots"),
            [
                "spec.volumeClaimTemplate.resources.requests.storage",
                "should match",
            ],
        ),
        (
            "no-volume",
            "/volumeClaimTemplate",
            Value::Null,
            ["spec.volumeClaimTemplate", "Required value"],
        ),
        (
            "no-containers",
            "/template/spec/containers",
            json!([]),
            ["spec.template.spec.containers", "at least 1 items"],
        ),
        (
            "no-pod-spec",
            "/template/spec",
            Value::Null,
            ["spec.template.spec", "Required value"],
        ),
        (
            "pod-access",
            "/volumeClaimTemplate/accessModes",
            json!(["ReadWriteOncePod"]),
            ["spec.volumeClaimTemplate.accessModes", "Unsupported value"],
        ),
        (
            "relative-mount",
            "/dataMountPath",
            json!("data"),
            ["spec.dataMountPath", "should match"],
        ),
        (
            "port-zero",
            "/service/ports/0/port",
            json!(0),
            ["spec.service.ports.port", "greater than or equal to 1"],
        ),
    ];
    for (name, pointer, value, expected) in cases {
        let message = refused(&api, name, with(valid_spec(), pointer, value)).await;
        for part in expected {
            assert!(message.contains(part), "{name}: '{part}' not in: {message}");
        }
    }
}

#[tokio::test]
async fn invalid_status_is_rejected_so_every_stored_hapair_deserializes() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new("crd-status").await;
    let api: Api<HAPair> = ns.api();
    api.create(&PostParams::default(), &example())
        .await
        .unwrap();
    let valid = serde_json::to_value(running_status(1)).unwrap();

    let cases = [
        ("/members/a/priority", json!(4), "status.members.a.priority"),
        (
            "/members/b/state",
            json!("MASTER"),
            "status.members.b.state",
        ),
        (
            "/members/a/lastTransitionTime",
            json!("yesterday"),
            "status.members.a.lastTransitionTime",
        ),
        ("/pairState", json!("(M M M)"), "status.pairState"),
        ("/master", json!("c"), "status.master"),
        ("/history/0/to", json!("(SM)"), "status.history.to"),
        (
            "/conditions/0/type",
            json!("Happy"),
            "status.conditions.type",
        ),
        (
            "/conditions/0/reason",
            json!("not camel case"),
            "status.conditions.reason",
        ),
        (
            "/members/a/record/state",
            json!("fine"),
            "status.members.a.record.state",
        ),
        ("/recordedTerms/b", json!(-1), "status.recordedTerms.b"),
    ];
    for (pointer, value, field) in cases {
        let status = with(valid.clone(), pointer, value);
        let patch = json!({"status": status});
        match api
            .patch_status("example", &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => panic!("the API server admitted status {pointer}"),
            Err(kube::Error::Api(e)) => {
                eprintln!("{pointer}: {}", e.message);
                assert_eq!(e.code, 422, "{pointer}: {e:?}");
                assert!(e.message.contains(field), "{pointer}: {}", e.message);
            }
            Err(e) => panic!("{pointer}: {e}"),
        }
    }
    // Nothing above was stored: the typed list still reads every HAPair.
    let all = api.list(&Default::default()).await.unwrap();
    assert_eq!(all.items.len(), 1);
    assert_eq!(all.items[0].status, None);
}
