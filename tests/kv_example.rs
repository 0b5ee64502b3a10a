//! deploy/examples/kv.yaml in the real local cluster, with `hapair operator` running locally:
//! the pair of hapair-kv members comes up `(M SL)`, a write acknowledged by the master is on
//! the standby at that moment (synchronous replication), and after the master's pod is deleted
//! the former standby serves every acknowledged key and the recreated member rejoins.
//!
//! The members run `localhost/hapair:dev` (`.ci/run` builds it); `HAPAIR_TEST_IMAGE` overrides it.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use hapair::crd::HAPair;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use support::*;

const T: Duration = Duration::from_secs(180);
const PAIR: &str = "kv";

fn image() -> String {
    std::env::var("HAPAIR_TEST_IMAGE").unwrap_or_else(|_| HAPAIR_IMAGE.to_string())
}

/// `kubectl ARGS` with `stdin`; panics with its output on failure.
fn kubectl(args: &[&str], stdin: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig_path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl on PATH (eval \"$(deploy/local/cluster.sh env)\")");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn apply_crd() {
    let crd =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/crd.yaml"))
            .unwrap();
    kubectl(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager",
            "hapair-test",
            "-f",
            "-",
        ],
        &crd,
    );
    kubectl(
        &[
            "wait",
            "--for",
            "condition=established",
            "--timeout",
            "60s",
            "crd/hapairs.hapair.io",
        ],
        "",
    );
}

fn pair_state(p: &HAPair) -> &str {
    p.status.as_ref().map_or("", |s| s.pair_state.as_str())
}

fn pod_ip(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default()
}

/// Polls `url` until its answer satisfies `ok`; panics after [`T`] with the last answer.
async fn poll_http(url: &str, ok: impl Fn(StatusCode, &str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let answer = http(Method::GET, url, "").await;
        if let Ok((status, body)) = &answer {
            if ok(*status, body) {
                return body.clone();
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "{url}: {answer:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kv_example_replicates_synchronously_and_survives_losing_its_master() {
    let ns = TestNamespace::new("kv-example").await;
    apply_crd();
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/kv.yaml"),
    )
    .unwrap()
    .replace(HAPAIR_IMAGE, &image());
    kubectl(&["apply", "-n", &ns.name, "-f", "-"], &example);
    let watchdog = Watchdog::start(ns.client.clone(), &ns.name).await;
    let mut cmd = Command::new(hapair_bin());
    cmd.args([
        "operator",
        "--namespace",
        &ns.name,
        "--agent-image",
        &image(),
    ]);
    let _operator = LocalProcess::start("operator", cmd);

    let pairs: Api<HAPair> = ns.api();
    let pods: Api<Pod> = ns.api();
    let p = wait_for(
        &pairs,
        PAIR,
        |p| matches!(pair_state(p), "(M SL)" | "(SL M)"),
        T,
    )
    .await;
    let (master, standby) = match pair_state(&p) {
        "(M SL)" => ("kv-a", "kv-b"),
        _ => ("kv-b", "kv-a"),
    };
    let master_ip = pod_ip(
        &wait_for(
            &pods,
            master,
            |p| pod_has_label(p, ROLE_LABEL, ROLE_MASTER),
            T,
        )
        .await,
    );
    let standby_ip = pod_ip(&pods.get(standby).await.unwrap());
    poll_http(&format!("http://{master_ip}:8080/ready"), |s, b| {
        s == StatusCode::OK && b.starts_with("M:")
    })
    .await;

    // Through the master Service, as a client would.
    let services: Api<Service> = ns.api();
    let cluster_ip = services
        .get(PAIR)
        .await
        .unwrap()
        .spec
        .unwrap()
        .cluster_ip
        .unwrap();
    let mut acked = Vec::new();
    for i in 0..20 {
        let key = format!("key{i}");
        let (status, body) = http(
            Method::PUT,
            &format!("http://{cluster_ip}:8080/kv/{key}"),
            &format!("v{i}"),
        )
        .await
        .unwrap_or_else(|e| panic!("PUT {key} through Service {PAIR}: {e}"));
        assert_eq!(status, StatusCode::OK, "PUT {key}: {body}");
        assert!(body.contains(", M)"), "acknowledged in M: {body}");
        // Synchronous: acknowledged means already on the standby's disk, no waiting.
        let on_standby = http(
            Method::GET,
            &format!("http://{standby_ip}:8080/kv/{key}"),
            "",
        )
        .await;
        assert_eq!(
            on_standby,
            Ok((StatusCode::OK, format!("v{i}"))),
            "{key} on the standby"
        );
        acked.push((key, format!("v{i}")));
    }
    let (status, body) = http(
        Method::PUT,
        &format!("http://{standby_ip}:8080/kv/nope"),
        "v",
    )
    .await
    .unwrap();
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "the standby refuses writes: {body}"
    );

    // The master's pod goes away: the standby takes over with every acknowledged key, and the
    // recreated member rejoins as its standby.
    delete_pod(&pods, master).await;
    let rejoined = if master == "kv-a" { "(SL M)" } else { "(M SL)" };
    wait_for(&pairs, PAIR, |p| pair_state(p) == rejoined, T).await;
    for (key, value) in &acked {
        let got = poll_http(&format!("http://{cluster_ip}:8080/kv/{key}"), |s, _| {
            s == StatusCode::OK
        })
        .await;
        assert_eq!(&got, value, "{key} after the failover");
    }
    let new_standby_ip = pod_ip(&pods.get(master).await.unwrap());
    poll_http(&format!("http://{new_standby_ip}:8080/ready"), |s, _| {
        s == StatusCode::OK
    })
    .await;
    watchdog.assert_clean();
}
