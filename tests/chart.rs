//! The Helm chart (charts/hapair) and the plain manifests (deploy/) against the real local
//! cluster, with the real helm and kubectl as child processes:
//!
//! - `helm lint`, and the rendered chart accepted by the API server (`kubectl apply --dry-run=server`);
//! - deploy/rbac.yaml and deploy/operator.yaml are exactly the chart's rendering (deploy/generate.sh);
//! - `helm install --wait` (operator in the cluster, ready by /readyz, watching only its test
//!   namespace) runs the example HAPair to `(M SL)`; RBAC: the operator's ServiceAccount holds
//!   exactly the rights it uses and a member's ServiceAccount can touch only its own Lease; one
//!   replica holds the leader-election Lease and says so in /metrics; `helm upgrade` to two
//!   replicas keeps that leader and the pair, and no operator restarts (/healthz); `helm
//!   uninstall`, and then deleting the HAPair, leave the member PVCs in place (NOTES.txt says so);
//! - `kubectl apply -f` of deploy/'s manifests (rendered for a test namespace) does the same, and
//!   deploy/examples/force-start.yaml on a running pair is refused and removed.
//!
//! helm is the pinned one deploy/local/tools.sh installs; `.ci/run` exports its path as HAPAIR_HELM.
//! The operator image is localhost/hapair:dev (deploy/local/images.sh).

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hapair::crd::{HAPair, ANNOTATION_FORCE_START};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use support::*;

const T: Duration = Duration::from_secs(180);
/// The release name of every install in these tests.
const RELEASE: &str = "hapair";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    root().join("charts/hapair")
}

fn local_values() -> PathBuf {
    root().join("deploy/local/values.yaml")
}

fn helm() -> PathBuf {
    let path = std::env::var_os("HAPAIR_HELM").map(PathBuf::from).unwrap_or_else(|| {
        panic!("HAPAIR_HELM is not set: run `eval \"$(deploy/local/tools.sh env)\"` first (.ci/run does)")
    });
    assert!(
        path.is_file(),
        "HAPAIR_HELM={} does not exist: run deploy/local/tools.sh",
        path.display()
    );
    path
}

/// Runs `program args`, feeding `stdin`; returns stdout, or panics with its output on failure.
fn run(program: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let what = format!("{} {args:?}", program.display());
    success(try_run(program, args, stdin), &what)
}

fn try_run(program: &Path, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = Command::new(program)
        .args(args)
        .env("KUBECONFIG", kubeconfig_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
    let input = stdin.unwrap_or_default().to_string();
    let mut pipe = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || pipe.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    out
}

fn kubectl(args: &[&str], stdin: Option<&str>) -> String {
    run(Path::new("kubectl"), args, stdin)
}

/// `helm SUBCOMMAND hapair charts/hapair EXTRA...` (template, install).
fn helm_chart(subcommand: &str, extra: &[&str]) -> std::process::Output {
    let chart = chart();
    let mut args = vec![subcommand, RELEASE, chart.to_str().unwrap()];
    args.extend(extra);
    try_run(&helm(), &args, None)
}

/// stdout of a successful run, else a panic showing its output.
fn success(out: std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

#[test]
fn chart_passes_helm_lint_with_every_optional_part() {
    let chart = chart();
    let chart = chart.to_str().unwrap();
    run(&helm(), &["lint", "--strict", chart], None);
    run(
        &helm(),
        &[
            "lint",
            "--strict",
            chart,
            "--set",
            "metrics.serviceMonitor.enabled=true,metrics.podMonitor.enabled=true,replicas=2",
        ],
        None,
    );
}

/// values.schema.json and the templates refuse bad values with a message naming the value.
#[test]
fn chart_refuses_bad_values() {
    let cases = [
        ("logFormat=xml", "logFormat must be one of"),
        (
            "watchNamespace=Bad_NS",
            "watchNamespace: Does not match pattern",
        ),
        (
            "image.pullPolicy=Sometimes",
            "image.pullPolicy must be one of",
        ),
        (
            "replicass=2",
            "Additional property replicass is not allowed",
        ),
        (
            "replicas=2,leaderElection.enabled=false",
            "replicas > 1 needs leaderElection.enabled=true",
        ),
    ];
    for (set, message) in cases {
        let out = helm_chart("template", &["--kube-version", "1.20.2", "--set", set]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "rendered with {set}");
        assert!(
            stderr.contains(message),
            "{set}: expected {message:?} in:\n{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_chart_is_accepted_by_the_api_server_in_both_scopes() {
    let ns = TestNamespace::new("chart-dry").await;
    let watch_one = format!("watchNamespace={}", ns.name);
    // --validate: rendered for the cluster's version and checked against its OpenAPI schema.
    for extra in [&["--set", &watch_one][..], &[][..]] {
        let args = [&["-n", &ns.name, "--validate"][..], extra].concat();
        let manifests = success(helm_chart("template", &args), "helm template");
        kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&manifests));
    }
}

#[test]
fn deploy_manifests_are_the_rendered_chart() {
    let out = tempfile::tempdir().unwrap();
    let generate = root().join("deploy/generate.sh");
    run(&generate, &[out.path().to_str().unwrap()], None);
    for file in ["rbac.yaml", "operator.yaml"] {
        let fresh = std::fs::read_to_string(out.path().join(file)).unwrap();
        let committed = std::fs::read_to_string(root().join("deploy").join(file)).unwrap();
        assert!(
            fresh == committed,
            "deploy/{file} differs from the chart's rendering: run deploy/generate.sh and commit it"
        );
    }
}

/// The operator in its own namespace, the pair in another: each Role is checked on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_runs_the_example_pair_and_uninstall_keeps_its_volumes() {
    let started = Instant::now();
    let operator_ns = TestNamespace::new("chart-operator").await;
    let ns = TestNamespace::new("chart-helm").await;
    let values = local_values();
    let install = Instant::now();
    let args = [
        "-n",
        &operator_ns.name,
        "-f",
        values.to_str().unwrap(),
        "--set",
        &format!("watchNamespace={}", ns.name),
        // The operator's Deployment must become available: its readiness probe (/readyz) passes.
        "--wait",
        "--timeout",
        "120s",
    ];
    let notes = success(helm_chart("install", &args), "helm install");
    assert!(
        notes.contains("PersistentVolumeClaims") && notes.contains("no ownerReference"),
        "NOTES.txt must say that uninstall keeps the member volumes:\n{notes}"
    );
    let ready = install.elapsed().as_secs_f64();
    let pair = example_pair_reaches_master_and_standby(&ns).await;
    eprintln!(
        "helm install --wait (operator ready): {ready:.1}s; -> pair {pair}: {:.1}s",
        install.elapsed().as_secs_f64()
    );

    let operator = service_account(&operator_ns.name, RELEASE);
    operator_holds_exactly(&operator, &ns.name, OPERATOR_RIGHTS);
    operator_holds_exactly(&operator, &operator_ns.name, LEADER_ELECTION_RIGHTS);
    operator_may_not_do_more(&operator, &ns.name);
    member_can_touch_only_its_own_lease(&ns.name);
    let leader = one_leader_and_metrics(&operator_ns).await;

    // A second replica: one leader acts, the other waits; the pair is not disturbed.
    let upgrade = [
        "-n",
        &operator_ns.name,
        "--reuse-values",
        "--set",
        "replicas=2",
        "--wait",
        "--timeout",
        "120s",
    ];
    success(helm_chart("upgrade", &upgrade), "helm upgrade");
    assert_eq!(one_leader_and_metrics(&operator_ns).await, leader);
    let now = pair_state_now(&ns).await;
    assert_eq!(now, pair, "the upgrade disturbed the pair");
    operators_never_restarted(&operator_ns).await;

    run(
        &helm(),
        &["uninstall", RELEASE, "-n", &operator_ns.name],
        None,
    );
    delete_pair_keeps_volumes(&ns).await;
    eprintln!(
        "chart install test wall time: {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_of_the_deploy_manifests_runs_the_example_pair() {
    let ns = TestNamespace::new("chart-apply").await;
    let dir = tempfile::tempdir().unwrap();
    let generate = root().join("deploy/generate.sh");
    let values = local_values();
    run(
        &generate,
        &[
            dir.path().to_str().unwrap(),
            &ns.name,
            "-f",
            values.to_str().unwrap(),
            "--set",
            &format!("watchNamespace={}", ns.name),
        ],
        None,
    );
    let apply = Instant::now();
    kubectl(&["apply", "-f", dir.path().to_str().unwrap()], None);
    let pair = example_pair_reaches_master_and_standby(&ns).await;
    eprintln!(
        "kubectl apply -f deploy/ -> pair {pair}: {:.1}s",
        apply.elapsed().as_secs_f64()
    );
    force_start_is_refused_while_the_pair_runs(&ns, &pair).await;
    delete_pair_keeps_volumes(&ns).await;
}

/// The leader-election Lease is held by one operator pod, whose /metrics says it leads and
/// counts reconciles; every other replica says it does not lead; the metrics Service answers.
/// Returns the leader's name. (Through the API server's proxy, to the chart's default metrics port 8080.)
async fn one_leader_and_metrics(operator_ns: &TestNamespace) -> String {
    let leases: Api<Lease> = operator_ns.api();
    let holder = |l: &Lease| l.spec.as_ref().and_then(|s| s.holder_identity.clone());
    let lease = wait_for(&leases, "hapair-operator", |l| holder(l).is_some(), T).await;
    let leader = holder(&lease).unwrap();
    let ns = &operator_ns.name;
    let pods: Api<Pod> = operator_ns.api();
    let selector = format!("app.kubernetes.io/instance={RELEASE}");
    let replicas = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap();
    assert!(
        replicas.iter().any(|p| p.name_any() == leader),
        "the leader {leader} is not an operator pod"
    );
    for pod in replicas {
        let name = pod.name_any();
        let path = format!("/api/v1/namespaces/{ns}/pods/{name}:8080/proxy/metrics");
        let metrics = kubectl(&["get", "--raw", &path], None);
        let expected: &[&str] = if name == leader {
            &["hapair_leader 1", "hapair_reconciles_total{"]
        } else {
            &["hapair_leader 0"]
        };
        for line in expected {
            assert!(
                metrics.contains(line),
                "{name}: no {line:?} in /metrics:\n{metrics}"
            );
        }
    }
    let path = format!("/api/v1/namespaces/{ns}/services/{RELEASE}-metrics:metrics/proxy/metrics");
    let metrics = kubectl(&["get", "--raw", &path], None);
    assert!(
        metrics.contains("# TYPE hapair_leader gauge"),
        "metrics Service:\n{metrics}"
    );
    leader
}

async fn pair_state_now(ns: &TestNamespace) -> String {
    let pairs: Api<HAPair> = ns.api();
    let pair = pairs.get("example").await.unwrap();
    pair.status.map(|s| s.pair_state).unwrap_or_default()
}

/// No operator container was restarted: the liveness probe (/healthz) always passed.
async fn operators_never_restarted(operator_ns: &TestNamespace) {
    let pods: Api<Pod> = operator_ns.api();
    let selector = format!("app.kubernetes.io/instance={RELEASE}");
    for pod in pods
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
    {
        assert_eq!(
            restart_count(&pod, "operator"),
            0,
            "{} restarted",
            pod.name_any()
        );
    }
}

/// Creates deploy/examples/hapair.yaml in the namespace and waits until the operator brought it
/// to a master and a standby; returns the pair state.
async fn example_pair_reaches_master_and_standby(ns: &TestNamespace) -> String {
    let text = std::fs::read_to_string(root().join("deploy/examples/hapair.yaml")).unwrap();
    let example: HAPair = serde_saphyr::from_str(&text).expect("deploy/examples/hapair.yaml");
    let pairs: Api<HAPair> = ns.api();
    pairs
        .create(&PostParams::default(), &example)
        .await
        .unwrap();
    // A fresh pair normally starts (M SL); if a's pod could not be created at first (v1.20: its
    // ServiceAccount's token not there yet), b alone starts and the pair settles (SL M).
    let up = |p: &HAPair| {
        p.status
            .as_ref()
            .is_some_and(|s| matches!(s.pair_state.as_str(), "(M SL)" | "(SL M)"))
    };
    let pair = wait_for(&pairs, "example", up, T).await;
    pair.status.unwrap().pair_state
}

/// deploy/examples/force-start.yaml on a pair that runs by itself: the operator removes the
/// request (a stale one must never fire later) and the pair stays as it was.
async fn force_start_is_refused_while_the_pair_runs(ns: &TestNamespace, state: &str) {
    let patch = root().join("deploy/examples/force-start.yaml");
    let patch = patch.to_str().unwrap();
    let args = [
        "patch",
        "hap",
        "example",
        "-n",
        &ns.name,
        "--type",
        "merge",
        "--patch-file",
        patch,
    ];
    kubectl(&args, None);
    let pairs: Api<HAPair> = ns.api();
    let removed = |p: &HAPair| !p.annotations().contains_key(ANNOTATION_FORCE_START);
    let pair = wait_for(&pairs, "example", removed, T).await;
    assert_eq!(
        pair.status.unwrap().pair_state,
        state,
        "a refused force-start changed the pair"
    );
}

/// Deletes the example HAPair; once its member pods are gone, both member PVCs must remain.
async fn delete_pair_keeps_volumes(ns: &TestNamespace) {
    let pairs: Api<HAPair> = ns.api();
    pairs
        .delete("example", &DeleteParams::foreground())
        .await
        .unwrap();
    wait_deleted(&pairs, "example", T).await;
    let pods: Api<Pod> = ns.api();
    for member in ["example-a", "example-b"] {
        wait_deleted(&pods, member, T).await;
    }
    let claims: Api<PersistentVolumeClaim> = ns.api();
    let names: BTreeSet<String> = claims
        .list(&ListParams::default().labels("hapair.io/pair=example"))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["example-a-data".to_string(), "example-b-data".to_string()]),
        "the member volumes must outlive the operator and the HAPair"
    );
}

/// `kubectl auth can-i VERB RESOURCE -n NS` as `user`.
fn can_i(user: &str, ns: &str, verb: &str, resource: &str) -> bool {
    let out = try_run(
        Path::new("kubectl"),
        &["auth", "can-i", verb, resource, "-n", ns, "--as", user],
        None,
    );
    match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" => true,
        "no" => false,
        other => panic!(
            "kubectl auth can-i {verb} {resource} -n {ns} as {user}: {other} {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Asks the authorizer: `user` may do each of `allowed` in `ns` and none of `denied`.
fn assert_rights(user: &str, ns: &str, allowed: &[(&str, &str)], denied: &[(&str, &str)]) {
    for (verb, resource) in allowed {
        assert!(
            can_i(user, ns, verb, resource),
            "{user} cannot {verb} {resource} in {ns}"
        );
    }
    for (verb, resource) in denied {
        assert!(
            !can_i(user, ns, verb, resource),
            "{user} may {verb} {resource} in {ns}"
        );
    }
}

fn service_account(ns: &str, name: &str) -> String {
    format!("system:serviceaccount:{ns}:{name}")
}

/// Every (resource, verb) the operator uses (src/controller/): the rights it holds in its watch
/// namespace must be exactly these, and the operator brought a pair up with them.
const OPERATOR_RIGHTS: &[(&str, &[&str])] = &[
    ("hapairs.hapair.io", &["get", "list", "watch", "patch"]),
    ("hapairs.hapair.io/status", &["patch"]),
    (
        "pods",
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    (
        "leases.coordination.k8s.io",
        &["get", "list", "watch", "create", "patch", "update"],
    ),
    ("persistentvolumeclaims", &["get", "create"]),
    ("services", &["get", "create"]),
    ("serviceaccounts", &["get", "create"]),
    ("roles.rbac.authorization.k8s.io", &["get", "create"]),
    ("rolebindings.rbac.authorization.k8s.io", &["get", "create"]),
    ("events.events.k8s.io", &["create", "patch"]),
];

/// The operator's rights in its own namespace: its leader-election Lease.
const LEADER_ELECTION_RIGHTS: &[(&str, &[&str])] = &[
    ("leases.coordination.k8s.io", &["create"]),
    (
        "leases.coordination.k8s.io/hapair-operator",
        &["get", "list", "watch", "update", "patch"],
    ),
];

/// Granted to every authenticated user by the cluster's defaults (system:basic-user).
const EVERYONE: &[&str] = &[
    "selfsubjectaccessreviews.authorization.k8s.io",
    "selfsubjectrulesreviews.authorization.k8s.io",
];

/// `user`'s rights in `ns` (`kubectl auth can-i --list`) are exactly `rights`.
fn operator_holds_exactly(user: &str, ns: &str, rights: &[(&str, &[&str])]) {
    let listed = kubectl(&["auth", "can-i", "--list", "-n", ns, "--as", user], None);
    let expected: BTreeSet<(String, String)> = rights
        .iter()
        .flat_map(|(r, verbs)| verbs.iter().map(move |v| (r.to_string(), v.to_string())))
        .collect();
    assert_eq!(
        resource_rights(&listed),
        expected,
        "the operator's rights in {ns} differ from what it uses:\n{listed}"
    );
}

/// Spot checks through the authorizer itself, also outside the watch namespace.
fn operator_may_not_do_more(user: &str, ns: &str) {
    // It deletes a member pod that ended (so it is recreated), never a volume.
    let allowed = [
        ("create", "pods"),
        ("delete", "pods"),
        ("patch", "leases/example-a"),
    ];
    let denied = [
        ("delete", "persistentvolumeclaims"),
        ("update", "pods"),
        ("get", "secrets"),
        ("escalate", "roles"),
        ("bind", "roles"),
    ];
    assert_rights(user, ns, &allowed, &denied);
    assert_rights(
        user,
        "default",
        &[],
        &[("list", "hapairs"), ("create", "pods")],
    );
}

/// The (resource, verb) pairs of `kubectl auth can-i --list`, a right limited to named objects
/// as `resource/name`, without non-resource URLs and the rights every user has.
fn resource_rights(listed: &str) -> BTreeSet<(String, String)> {
    let mut rights = BTreeSet::new();
    // Columns: Resources, Non-Resource URLs, Resource Names, Verbs; the last three are `[...]`.
    for line in listed.lines().skip(1) {
        let resource = line.split('[').next().unwrap_or_default().trim();
        let lists: Vec<&str> = line
            .split('[')
            .skip(1)
            .filter_map(|s| s.split(']').next())
            .collect();
        let [_, names, verbs] = lists[..] else {
            panic!("unexpected `kubectl auth can-i --list` line: {line}")
        };
        if resource.is_empty() || EVERYONE.contains(&resource) {
            continue;
        }
        let objects: Vec<String> = match names.split_whitespace().collect::<Vec<_>>()[..] {
            [] => vec![resource.to_string()],
            ref named => named.iter().map(|n| format!("{resource}/{n}")).collect(),
        };
        for object in &objects {
            for verb in verbs.split_whitespace() {
                rights.insert((object.clone(), verb.to_string()));
            }
        }
    }
    rights
}

fn member_can_touch_only_its_own_lease(ns: &str) {
    let denied = [
        ("patch", "pods"),
        ("patch", "pods/example-b"),
        ("patch", "leases/example-b"),
        ("update", "leases/example-b"),
        ("delete", "leases/example-a"),
        ("patch", "hapairs"),
    ];
    let own = [
        ("patch", "leases/example-a"),
        ("update", "leases/example-a"),
    ];
    assert_rights(&service_account(ns, "example-a"), ns, &own, &denied);
}
