//! Proves the integration-test harness against the real local cluster (deploy/local/cluster.sh up):
//! volumes outlive pods, a crashed container is restarted by the kubelet, freezing stops a pod's
//! processes, Services pick their endpoints by label, the dual-master watchdog sees what it must,
//! and no cluster component talks to anything outside the machine.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Endpoints, PersistentVolume, PersistentVolumeClaim, Pod, Service,
};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use support::*;

const T: Duration = Duration::from_secs(90);

fn pod(name: &str, labels: serde_json::Value, command: &str, pvc: Option<&str>) -> Pod {
    let mut spec = json!({
        "terminationGracePeriodSeconds": 5,
        "containers": [{
            "name": "main",
            "image": BUSYBOX_IMAGE,
            "imagePullPolicy": "Never",
            "command": ["sh", "-c", command],
        }],
    });
    if let Some(claim) = pvc {
        spec["containers"][0]["volumeMounts"] = json!([{"name": "data", "mountPath": "/data"}]);
        spec["volumes"] = json!([{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]);
    }
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "spec": spec}))
        .unwrap()
}

async fn create_ready(api: &Api<Pod>, pod: &Pod) -> Pod {
    api.create(&PostParams::default(), pod).await.unwrap();
    wait_for(api, &pod.name_any(), pod_is_ready, T).await
}

/// Host directory of the hostPath PV bound to claim `pvc`.
async fn pv_dir(ns: &TestNamespace, pvc: &str) -> std::path::PathBuf {
    let claim = wait_for(
        &ns.api::<PersistentVolumeClaim>(),
        pvc,
        |c| {
            c.spec
                .as_ref()
                .and_then(|s| s.volume_name.as_ref())
                .is_some()
        },
        T,
    )
    .await;
    let pv_name = claim.spec.unwrap().volume_name.unwrap();
    let pv = Api::<PersistentVolume>::all(ns.client.clone())
        .get(&pv_name)
        .await
        .unwrap();
    pv.spec
        .unwrap()
        .host_path
        .expect("pool PVs are hostPath")
        .path
        .into()
}

fn count_lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[tokio::test]
async fn volume_outlives_pod_and_crashed_container_is_restarted() {
    let ns = TestNamespace::new("smoke-vol").await;
    let pods: Api<Pod> = ns.api();
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": STORAGE_CLASS,
                 "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .unwrap();
    ns.api::<PersistentVolumeClaim>()
        .create(&PostParams::default(), &claim)
        .await
        .unwrap();
    let dir = pv_dir(&ns, "data").await;

    // prints what it finds, writes the file only if it is missing, then ticks 5 times a second
    let cmd = r#"echo "found: $(cat /data/hello 2>/dev/null || echo nothing)"
        [ -f /data/hello ] || echo written-by-first-pod > /data/hello
        trap "exit 0" TERM
        while true; do echo tick >> /data/ticks; sleep 0.2; done"#;
    let spec = pod("writer", json!({"app": "writer"}), cmd, Some("data"));
    create_ready(&pods, &spec).await;
    wait_for(&pods, "writer", |p| container_running(p, "main"), T).await;
    assert!(pod_logs(&pods, "writer", "main")
        .await
        .contains("found: nothing"));

    // delete and recreate: the file is still there
    delete_pod(&pods, "writer").await;
    wait_deleted(&pods, "writer", T).await;
    create_ready(&pods, &spec).await;
    let logs = pod_logs(&pods, "writer", "main").await;
    assert!(
        logs.contains("found: written-by-first-pod"),
        "second pod's log: {logs}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("hello")).unwrap().trim(),
        "written-by-first-pod"
    );

    // crash the main process: the kubelet restarts the container, the pod object stays
    let before = wait_for(&pods, "writer", |p| container_running(p, "main"), T).await;
    let uid = before.uid();
    crash_container(&before, "main");
    let after = wait_for(
        &pods,
        "writer",
        |p| restart_count(p, "main") > restart_count(&before, "main") && pod_is_ready(p),
        T,
    )
    .await;
    assert_eq!(after.uid(), uid, "same pod, restarted container");
    assert_ne!(container_id(&after, "main"), container_id(&before, "main"));
    assert!(pod_logs(&pods, "writer", "main")
        .await
        .contains("found: written-by-first-pod"));

    // freeze: the ticks stop without the process exiting; thaw: they go on
    let frozen = freeze_pod(&after);
    let ticks = dir.join("ticks");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let n = count_lines(&ticks);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(count_lines(&ticks), n, "a frozen pod must not write");
    frozen.thaw();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(count_lines(&ticks) > n, "a thawed pod writes again");
    assert_eq!(
        restart_count(&pods.get("writer").await.unwrap(), "main"),
        restart_count(&after, "main")
    );

    // force delete: the object is gone at once
    force_delete_pod(&pods, "writer").await;
    wait_deleted(&pods, "writer", Duration::from_secs(10)).await;
}

#[tokio::test]
async fn service_routes_to_the_labelled_pod_only() {
    let ns = TestNamespace::new("smoke-svc").await;
    let pods: Api<Pod> = ns.api();
    let httpd = "exec httpd -f -p 8080 -h /www";
    let web = create_ready(
        &pods,
        &pod(
            "web",
            json!({"app": "smoke", "role": "serving"}),
            httpd,
            None,
        ),
    )
    .await;
    create_ready(
        &pods,
        &pod(
            "other",
            json!({"app": "smoke", "role": "idle"}),
            httpd,
            None,
        ),
    )
    .await;
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "smoke"},
        "spec": {"selector": {"app": "smoke", "role": "serving"}, "ports": [{"port": 80, "targetPort": 8080}]}
    }))
    .unwrap();
    let svc = ns
        .api::<Service>()
        .create(&PostParams::default(), &svc)
        .await
        .unwrap();
    let web_ip = web.status.as_ref().unwrap().pod_ip.clone().unwrap();
    let endpoint_ips = |e: &Endpoints| -> Vec<String> {
        e.subsets
            .iter()
            .flatten()
            .flat_map(|s| s.addresses.iter().flatten())
            .map(|a| a.ip.clone())
            .collect()
    };
    let eps = wait_for(
        &ns.api::<Endpoints>(),
        "smoke",
        |e| !endpoint_ips(e).is_empty(),
        T,
    )
    .await;
    assert_eq!(
        endpoint_ips(&eps),
        vec![web_ip.clone()],
        "only the labelled pod is an endpoint"
    );

    // through kube-proxy's rules: the ClusterIP reaches the pod (rules follow the endpoints within ~1s)
    let cluster_ip: IpAddr = svc.spec.unwrap().cluster_ip.unwrap().parse().unwrap();
    let mut body = String::new();
    for _ in 0..100 {
        if let Ok(mut s) =
            TcpStream::connect_timeout(&SocketAddr::new(cluster_ip, 80), Duration::from_secs(1))
        {
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
            body.clear();
            let _ = s.read_to_string(&mut body);
            if body.contains("hello from busybox httpd") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        body.contains("hello from busybox httpd"),
        "ClusterIP {cluster_ip}:80 answered: {body:?}"
    );

    // move the label: the endpoint follows
    let other_ip = pods
        .get("other")
        .await
        .unwrap()
        .status
        .unwrap()
        .pod_ip
        .unwrap();
    let relabel = |role: &str| Patch::Merge(json!({"metadata": {"labels": {"role": role}}}));
    pods.patch("web", &PatchParams::default(), &relabel("idle"))
        .await
        .unwrap();
    pods.patch("other", &PatchParams::default(), &relabel("serving"))
        .await
        .unwrap();
    wait_for(
        &ns.api::<Endpoints>(),
        "smoke",
        |e| endpoint_ips(e) == vec![other_ip.clone()],
        T,
    )
    .await;
}

#[tokio::test]
async fn watchdog_sees_two_masters_of_one_pair() {
    let ns = TestNamespace::new("smoke-dog").await;
    let pods: Api<Pod> = ns.api();
    let watchdog = Watchdog::start(ns.client.clone(), &ns.name).await;
    let sleep = "trap 'exit 0' TERM; while true; do sleep 1; done";
    for (name, pair) in [("x-a", "x"), ("x-b", "x"), ("y-a", "y")] {
        let labels = json!({PAIR_LABEL: pair, ROLE_LABEL: "standby"});
        pods.create(&PostParams::default(), &pod(name, labels, sleep, None))
            .await
            .unwrap();
    }
    let role = |r: &str| Patch::Merge(json!({"metadata": {"labels": {ROLE_LABEL: r}}}));
    let pp = PatchParams::default();
    // one master per pair is fine, in two pairs at once too
    pods.patch("x-a", &pp, &role(ROLE_MASTER)).await.unwrap();
    pods.patch("y-a", &pp, &role(ROLE_MASTER)).await.unwrap();
    // a correct handover: the old master loses the label before the new one gets it
    pods.patch("x-a", &pp, &role("standby")).await.unwrap();
    pods.patch("x-b", &pp, &role(ROLE_MASTER)).await.unwrap();
    wait_for(
        &pods,
        "x-b",
        |p| pod_has_label(p, ROLE_LABEL, ROLE_MASTER),
        T,
    )
    .await;
    let seen = watchdog.events_seen();
    tokio::time::sleep(Duration::from_millis(300)).await; // let the watchdog drain its stream
    assert!(
        watchdog.events_seen() >= seen && seen >= 7,
        "watchdog saw {seen} events"
    );
    watchdog.assert_clean();

    // a wrong one: both carry the label for a moment
    pods.patch("x-a", &pp, &role(ROLE_MASTER)).await.unwrap();
    pods.patch("x-a", &pp, &role("standby")).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while watchdog.violations().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // (pod status updates landing between the two patches may add more records of the same fault)
    let v = watchdog.violations();
    assert!(!v.is_empty(), "the watchdog missed the dual master");
    for record in &v {
        assert!(
            record.contains("pair x: masters [\"x-a\", \"x-b\"]"),
            "{v:?}"
        );
    }
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| watchdog.assert_clean()));
    assert!(caught.is_err(), "assert_clean must panic after a violation");
}

/// Network rule: no component of the cluster may talk to anything but loopback, the node address
/// (on lo), pods (10.88.0.0/16) and Services (10.0.0.0/24).
#[tokio::test]
async fn cluster_components_stay_inside_the_machine() {
    client().await; // fails loudly if the cluster is not running
    const COMPONENTS: [&str; 9] = [
        "etcd",
        "kube-apiserver",
        "kube-controller",
        "kube-scheduler",
        "kubelet",
        "kube-proxy",
        "containerd",
        "containerd-shim",
        "kubectl",
    ];
    let out = std::process::Command::new("ss")
        .args(["-tanp"])
        .output()
        .expect("ss (iproute2)");
    assert!(out.status.success());
    let out = String::from_utf8_lossy(&out.stdout);
    let allowed = |ip: &str| -> bool {
        let ip = ip.trim_start_matches('[').trim_end_matches(']');
        let ip = ip.strip_prefix("::ffff:").unwrap_or(ip);
        match ip.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => {
                let o = v4.octets();
                v4.is_loopback()
                    || v4 == std::net::Ipv4Addr::new(10, 87, 255, 1)
                    || (o[0] == 10 && o[1] == 88)
                    || (o[0] == 10 && o[1] == 0 && o[2] == 0)
            }
            Ok(IpAddr::V6(v6)) => v6.is_loopback(),
            Err(_) => ip == "*",
        }
    };
    let (mut checked, mut bad) = (0, Vec::new());
    for line in out.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[0] == "LISTEN" {
            continue;
        }
        let Some(comm) = f[5].split('"').nth(1) else {
            continue;
        };
        if !COMPONENTS.contains(&comm) {
            continue;
        }
        checked += 1;
        let peer = f[4].rsplit_once(':').map_or(f[4], |(ip, _)| ip);
        if !allowed(peer) {
            bad.push(line.to_string());
        }
    }
    assert!(
        checked >= 4,
        "expected connections among the cluster's components, saw {checked}:\n{out}"
    );
    assert!(
        bad.is_empty(),
        "connections leaving the machine:\n{}",
        bad.join("\n")
    );
    let guard = std::process::Command::new("iptables")
        .args([
            "-t", "mangle", "-C", "FORWARD", "-i", "cni0", "!", "-o", "cni0", "-j", "DROP",
        ])
        .status()
        .expect("iptables");
    assert!(
        guard.success(),
        "the rule that keeps pods inside is missing"
    );
}

#[tokio::test]
async fn local_process_is_killed_on_demand() {
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", "echo \"started with $KUBECONFIG\"; exec sleep 60"]);
    let mut p = LocalProcess::start("sleeper", cmd);
    for _ in 0..100 {
        if p.output().contains("started") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(p
        .output()
        .contains(&format!("started with {}", kubeconfig_path().display())));
    assert!(p.is_running());
    p.kill();
    assert!(!p.is_running());

    let mut cmd = std::process::Command::new(hapair_bin());
    cmd.arg("--version");
    let mut p = LocalProcess::start("hapair-version", cmd);
    assert!(p.wait(Duration::from_secs(10)).await.success());
    assert!(p.output().starts_with("hapair "), "{}", p.output());
}

/// The image built by deploy/local/images.sh runs in the cluster, as a non-root user.
#[tokio::test]
async fn project_image_runs_as_non_root() {
    let ns = TestNamespace::new("smoke-img").await;
    let pods: Api<Pod> = ns.api();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "version"},
        "spec": {
            "restartPolicy": "Never",
            // the kubelet refuses to start the container if the image's user is root
            "securityContext": {"runAsNonRoot": true},
            "containers": [{"name": "hapair", "image": HAPAIR_IMAGE, "imagePullPolicy": "Never", "args": ["--version"]}],
        }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let done = wait_for(
        &pods,
        "version",
        |p| {
            let waiting = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c[0].state.clone())
                .and_then(|s| s.waiting);
            if let Some(reason) = waiting
                .and_then(|w| w.reason)
                .filter(|r| r == "ErrImageNeverPull")
            {
                panic!(
                    "{reason}: {HAPAIR_IMAGE} is not in the cluster: run deploy/local/images.sh"
                );
            }
            matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        },
        T,
    )
    .await;
    let phase = done.status.unwrap().phase.unwrap();
    let logs = pod_logs(&pods, "version", "hapair").await;
    assert_eq!(phase, "Succeeded", "logs: {logs}");
    assert!(logs.starts_with("hapair "), "{logs}");
}
