//! Shared harness for integration tests against the REAL local cluster (`deploy/local/cluster.sh up`).
//!
//! Use it from a test crate with `mod support;`. There is no mock and no skipping: when the cluster is
//! not reachable, [`client`] panics and the test fails.
//!
//! - [`client`]: a kube client from `$KUBECONFIG`, else `/var/lib/hapair-local/run/kubeconfig`.
//! - [`TestNamespace`]: a fresh namespace per test, deleted on drop (also when the test panics).
//! - [`wait_for`] / [`wait_deleted`]: watch-based waits; the timeout is only a safety net.
//! - pod faults: [`delete_pod`], [`force_delete_pod`], [`crash_container`], [`freeze_pod`],
//!   [`freeze_container`].
//! - [`Watchdog`]: records every instant two pods of one pair both carry `hapair.io/role=master`.
//! - [`LocalProcess`]: a local child process (e.g. `hapair operator`) that is killed on drop.
//! - [`install_crd`], [`poll_until`], [`http_get`], [`LocalProcess::metrics_addr`]: running the
//!   operator (module `operator`).
#![allow(dead_code)] // each test crate uses a different part of this module

mod operator;
#[allow(unused_imports)] // as above: not every test crate runs the operator
pub use operator::*;
pub mod pair;

use std::collections::{BTreeMap, HashMap};
use std::fmt::{Debug, Display};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::await_condition;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Config, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Kubeconfig written by `deploy/local/cluster.sh up`.
pub const DEFAULT_KUBECONFIG: &str = "/var/lib/hapair-local/run/kubeconfig";
/// The busybox image imported by `cluster.sh up` (use with `imagePullPolicy: Never`).
pub const BUSYBOX_IMAGE: &str = "localhost/busybox:local";
/// The project's image built by `deploy/local/images.sh`.
pub const HAPAIR_IMAGE: &str = "localhost/hapair:dev";
/// StorageClass of the cluster's pool of static hostPath PVs (1Gi each, ReadWriteOnce).
pub const STORAGE_CLASS: &str = "local";
pub const PAIR_LABEL: &str = "hapair.io/pair";
pub const ROLE_LABEL: &str = "hapair.io/role";
pub const ROLE_MASTER: &str = "master";

fn not_running(why: impl Display) -> ! {
    panic!("local cluster not running: run deploy/local/cluster.sh up ({why})")
}

/// Path of the kubeconfig the harness uses: `$KUBECONFIG`, else [`DEFAULT_KUBECONFIG`].
pub fn kubeconfig_path() -> PathBuf {
    std::env::var_os("KUBECONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_KUBECONFIG))
}

/// A client for the local cluster. Panics (the test fails) if the cluster cannot be reached.
pub async fn client() -> Client {
    let path = kubeconfig_path();
    let kubeconfig = Kubeconfig::read_from(&path)
        .unwrap_or_else(|e| not_running(format!("cannot read {}: {e}", path.display())));
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| not_running(format!("bad kubeconfig {}: {e}", path.display())));
    let client = Client::try_from(config).unwrap_or_else(|e| not_running(e));
    match tokio::time::timeout(Duration::from_secs(10), client.apiserver_version()).await {
        Ok(Ok(_)) => client,
        Ok(Err(e)) => not_running(e),
        Err(_) => not_running("the API server did not answer within 10s"),
    }
}

/// A unique name: `prefix-<pid>-<n>-<time>` (lowercase, DNS-1123, at most 63 chars for short prefixes).
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 100_000_000;
    format!(
        "{prefix}-{}-{}-{t}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A fresh namespace for one test. Deleted on drop, also when the test panics, unless
/// `HAPAIR_KEEP_NAMESPACES=1` is set (to look at a failure).
pub struct TestNamespace {
    pub client: Client,
    pub name: String,
}

impl TestNamespace {
    /// Creates `<prefix>-<unique suffix>` and waits until pods can be created in it: on v1.20 the
    /// ServiceAccount admission rejects pods until the default ServiceAccount has its token secret.
    pub async fn new(prefix: &str) -> TestNamespace {
        let client = client().await;
        let name = unique_name(prefix);
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"hapair.io/test": "true"}}
        }))
        .unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
        let has_token = |sa: &ServiceAccount| sa.secrets.as_ref().is_some_and(|s| !s.is_empty());
        wait_for(&sas, "default", has_token, Duration::from_secs(60)).await;
        TestNamespace { client, name }
    }

    /// An [`Api`] for a namespaced resource kind in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::env::var_os("HAPAIR_KEEP_NAMESPACES").is_some_and(|v| v == "1") {
            eprintln!("keeping namespace {}", self.name);
            return;
        }
        // Drop cannot await, and the test's runtime may be unwinding: use a fresh client on a
        // fresh runtime in its own thread. Deletion is asynchronous (pods terminate in the
        // background; their PVs are reclaimed by the cluster's pv-reclaimer).
        let name = self.name.clone();
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let api = Api::<Namespace>::all(client().await);
                api.delete(&name, &DeleteParams::background()).await
            })
        })
        .join();
        if !matches!(done, Ok(Ok(_))) {
            eprintln!("warning: could not delete namespace {}", self.name);
        }
    }
}

/// Waits (watch-based) until object `name` exists and satisfies `predicate`; returns it.
/// Panics after `timeout` (a safety net, not a synchronisation means) and shows the object.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    predicate: impl Fn(&K) -> bool,
    timeout: Duration,
) -> K
where
    K: Resource + Clone + Debug + DeserializeOwned + Serialize + Send + 'static,
{
    let cond = |o: Option<&K>| o.is_some_and(&predicate);
    let found = watch_until(api, name, cond, timeout, "").await;
    found.expect("the condition requires the object")
}

/// Waits (watch-based) until object `name` is gone from the API (or replaced by a new UID).
pub async fn wait_deleted<K>(api: &Api<K>, name: &str, timeout: Duration)
where
    K: Resource + Clone + Debug + DeserializeOwned + Serialize + Send + 'static,
{
    let Some(uid) = api.get_opt(name).await.unwrap().and_then(|o| o.uid()) else {
        return;
    };
    let cond = kube::runtime::wait::conditions::is_deleted::<K>(&uid);
    watch_until(api, name, cond, timeout, " to be deleted").await;
}

/// Watches `name` until `cond` holds; panics after `timeout`, showing the object. Under load the
/// API server expires a watch's resourceVersion (410 Gone: its watch cache is short); then a
/// fresh watch lists again, as any reflector does.
async fn watch_until<K>(
    api: &Api<K>,
    name: &str,
    cond: impl kube::runtime::wait::Condition<K>,
    timeout: Duration,
    what: &str,
) -> Option<K>
where
    K: Resource + Clone + Debug + DeserializeOwned + Serialize + Send + 'static,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let wait = await_condition(api.clone(), name, |o: Option<&K>| cond.matches_object(o));
        match tokio::time::timeout_at(deadline, wait).await {
            Ok(Ok(found)) => return found,
            Ok(Err(e)) => eprintln!("watching {name}: {e}; watching again"),
            Err(_) => panic!(
                "timeout after {timeout:?} waiting for {name}{what}; now: {}",
                describe(api, name).await
            ),
        }
    }
}

async fn describe<K: Resource + Clone + Debug + DeserializeOwned + Serialize>(
    api: &Api<K>,
    name: &str,
) -> String {
    match api.get_opt(name).await {
        Ok(Some(obj)) => {
            let mut v = serde_json::to_value(&obj).unwrap_or_default();
            if let Some(m) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
                m.remove("managedFields");
            }
            let s = v.to_string();
            s.chars().take(3000).collect()
        }
        Ok(None) => "absent".into(),
        Err(e) => format!("unknown ({e})"),
    }
}

// ------------------------------------------------------------------------------------------ pods

/// Does the pod carry label `key=value`?
pub fn pod_has_label(pod: &Pod, key: &str, value: &str) -> bool {
    pod.labels().get(key).is_some_and(|v| v == value)
}

/// Is the pod's `Ready` condition `True`?
pub fn pod_is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn container_status<'a>(
    pod: &'a Pod,
    container: &str,
) -> Option<&'a k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == container)
}

/// The container's restart count (0 if the container has no status yet).
pub fn restart_count(pod: &Pod, container: &str) -> i32 {
    container_status(pod, container).map_or(0, |c| c.restart_count)
}

/// Is the container running now (state `running`)?
pub fn container_running(pod: &Pod, container: &str) -> bool {
    container_status(pod, container)
        .is_some_and(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
}

/// containerd's id of the container (from `status.containerStatuses[].containerID`, without `containerd://`).
pub fn container_id(pod: &Pod, container: &str) -> String {
    container_status(pod, container)
        .and_then(|c| c.container_id.as_deref())
        .and_then(|id| id.strip_prefix("containerd://"))
        .unwrap_or_else(|| {
            panic!(
                "pod {} has no running container {container}",
                pod.name_any()
            )
        })
        .to_string()
}

/// Graceful delete (the pod's own grace period); returns once the API accepted it.
pub async fn delete_pod(api: &Api<Pod>, name: &str) {
    api.delete(name, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("delete pod {name}: {e}"));
}

/// Forced delete: grace period 0 (`kubectl delete --grace-period=0 --force`): the object goes away
/// at once and the kubelet kills the containers afterwards.
pub async fn force_delete_pod(api: &Api<Pod>, name: &str) {
    api.delete(
        name,
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("force delete pod {name}: {e}"));
}

fn ctr(args: &[&str]) -> String {
    let out = Command::new("ctr")
        .args(["-n", "k8s.io"])
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("ctr {args:?}: {e} (is containerd installed? run deploy/local/cluster.sh up)")
        });
    assert!(
        out.status.success(),
        "ctr {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Crash (not delete) a container: SIGKILL its main process through containerd. The pod stays;
/// the kubelet sees the container exit (137) and restarts it per the pod's restartPolicy.
pub fn crash_container(pod: &Pod, container: &str) {
    ctr(&[
        "tasks",
        "kill",
        "--signal",
        "SIGKILL",
        &container_id(pod, container),
    ]);
}

/// Host PID of the container's main process.
pub fn container_pid(pod: &Pod, container: &str) -> u32 {
    let id = container_id(pod, container);
    let tasks = ctr(&["tasks", "ls"]);
    tasks
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some(id.as_str()))
                .then(|| f.next()?.parse().ok())
                .flatten()
        })
        .unwrap_or_else(|| panic!("no containerd task for {container} ({id})"))
}

/// Freezes every running container of the pod (cgroup freezer via `ctr tasks pause`): the
/// processes stop without exiting, as in a hang. Thawed by [`Frozen::thaw`] or on drop.
pub fn freeze_pod(pod: &Pod) -> Frozen {
    let ids: Vec<String> = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
        .filter_map(|c| {
            c.container_id
                .as_deref()?
                .strip_prefix("containerd://")
                .map(String::from)
        })
        .collect();
    assert!(
        !ids.is_empty(),
        "pod {} has no running container to freeze",
        pod.name_any()
    );
    for id in &ids {
        ctr(&["tasks", "pause", id]);
    }
    Frozen { ids }
}

/// Freezes one container of the pod (e.g. only the agent: its lease goes stale while the
/// application keeps running). Thawed by [`Frozen::thaw`] or on drop.
pub fn freeze_container(pod: &Pod, container: &str) -> Frozen {
    let id = container_id(pod, container);
    ctr(&["tasks", "pause", &id]);
    Frozen { ids: vec![id] }
}

/// Containers frozen by [`freeze_pod`]; thawed when dropped (a frozen process cannot even be killed).
pub struct Frozen {
    ids: Vec<String>,
}

impl Frozen {
    pub fn thaw(mut self) {
        for id in std::mem::take(&mut self.ids) {
            ctr(&["tasks", "resume", &id]);
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for id in &self.ids {
            let _ = Command::new("ctr")
                .args(["-n", "k8s.io", "tasks", "resume", id])
                .status();
        }
    }
}

/// The container's log (`kubectl logs`), through the API server and the kubelet.
pub async fn pod_logs(api: &Api<Pod>, name: &str, container: &str) -> String {
    let params = kube::api::LogParams {
        container: Some(container.into()),
        ..Default::default()
    };
    api.logs(name, &params)
        .await
        .unwrap_or_else(|e| panic!("logs of {name}/{container}: {e}"))
}

// ------------------------------------------------------------------------------------ watchdog

/// Dual-master watchdog: watches the pods labelled `hapair.io/pair` in a namespace and records a
/// violation whenever, after applying a watch event to its cache, two pods of the same pair both
/// carry `hapair.io/role=master`. Start it before the pair exists; check with [`Watchdog::assert_clean`].
pub struct Watchdog {
    violations: Arc<Mutex<Vec<String>>>,
    events: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

impl Watchdog {
    /// Starts watching and returns once the initial list has been taken (no event is missed after).
    pub async fn start(client: Client, namespace: &str) -> Watchdog {
        let api: Api<Pod> = Api::namespaced(client, namespace);
        let violations = Arc::new(Mutex::new(Vec::new()));
        let events = Arc::new(AtomicU32::new(0));
        let (ready_tx, ready_rx) = futures::channel::oneshot::channel();
        let (v, n) = (violations.clone(), events.clone());
        let task = tokio::spawn(async move {
            let mut stream = watcher(api, watcher::Config::default().labels(PAIR_LABEL))
                .default_backoff()
                .boxed();
            let mut ready = Some(ready_tx);
            let mut cache: HashMap<String, Pod> = HashMap::new();
            let mut init: HashMap<String, Pod> = HashMap::new();
            while let Some(ev) = stream.next().await {
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(e) => {
                        eprintln!("watchdog: watch error (retrying): {e}");
                        continue;
                    }
                };
                let what = match ev {
                    watcher::Event::Init => {
                        init.clear();
                        continue;
                    }
                    watcher::Event::InitApply(p) => {
                        init.insert(p.name_any(), p);
                        continue;
                    }
                    watcher::Event::InitDone => {
                        cache = std::mem::take(&mut init);
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                        "initial list".to_string()
                    }
                    watcher::Event::Apply(p) => {
                        let what = format!(
                            "apply {} rv={}",
                            p.name_any(),
                            p.resource_version().unwrap_or_default()
                        );
                        cache.insert(p.name_any(), p);
                        what
                    }
                    watcher::Event::Delete(p) => {
                        cache.remove(&p.name_any());
                        format!("delete {}", p.name_any())
                    }
                };
                n.fetch_add(1, Ordering::Relaxed);
                if let Some(msg) = dual_masters(&cache) {
                    eprintln!("watchdog: VIOLATION after {what}: {msg}");
                    v.lock().unwrap().push(format!("after {what}: {msg}"));
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(30), ready_rx)
            .await
            .expect("watchdog: initial list not received within 30s")
            .expect("watchdog task ended");
        Watchdog {
            violations,
            events,
            task,
        }
    }

    /// Violations recorded so far.
    pub fn violations(&self) -> Vec<String> {
        self.violations.lock().unwrap().clone()
    }

    /// Number of watch events (after the initial list) the watchdog has checked.
    pub fn events_seen(&self) -> u32 {
        self.events.load(Ordering::Relaxed)
    }

    /// Panics if two pods of one pair were ever both labelled master.
    pub fn assert_clean(&self) {
        let v = self.violations();
        assert!(
            v.is_empty(),
            "dual master observed {} time(s):\n{}",
            v.len(),
            v.join("\n")
        );
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `Some(description)` if some pair has two or more pods labelled master in `pods`.
pub fn dual_masters(pods: &HashMap<String, Pod>) -> Option<String> {
    let mut masters: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for pod in pods.values() {
        if let Some(pair) = pod.labels().get(PAIR_LABEL) {
            if pod_has_label(pod, ROLE_LABEL, ROLE_MASTER) {
                masters
                    .entry(pair)
                    .or_default()
                    .push(pod.metadata.name.as_deref().unwrap_or("?"));
            }
        }
    }
    let bad: Vec<String> = masters
        .into_iter()
        .filter(|(_, names)| names.len() > 1)
        .map(|(pair, mut names)| {
            names.sort();
            format!("pair {pair}: masters {names:?}")
        })
        .collect();
    (!bad.is_empty()).then(|| bad.join("; "))
}

// ------------------------------------------------------------------------------ local processes

/// Path of the `hapair` binary cargo built for this test run, or `HAPAIR_BIN` when set: two
/// worktrees sharing one target dir also share `target/debug/hapair`, which the other's build
/// may replace while a test runs; a copy named by `HAPAIR_BIN` stays put.
pub fn hapair_bin() -> &'static Path {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var_os("HAPAIR_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_hapair")))
    })
}

/// A local child process (e.g. `hapair operator` running against the cluster), with stdout and
/// stderr in a log file under the target dir. Killed (SIGKILL) on drop.
pub struct LocalProcess {
    pub name: String,
    pub log: PathBuf,
    child: Child,
}

impl LocalProcess {
    /// Starts `cmd` with `KUBECONFIG` set to the harness's kubeconfig. An operator serves its
    /// metrics on a free loopback port (parallel tests cannot share the default 0.0.0.0:8080);
    /// [`LocalProcess::metrics_addr`] finds it.
    pub fn start(name: &str, mut cmd: Command) -> LocalProcess {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("local-processes");
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join(format!("{}.log", unique_name(name)));
        let file = std::fs::File::create(&log).unwrap();
        let child = cmd
            .env("KUBECONFIG", kubeconfig_path())
            .env("HAPAIR_METRICS_ADDR", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        LocalProcess {
            name: name.into(),
            log,
            child,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Is the process still running?
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Crash it: SIGKILL, then reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit on its own; panics after `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} still running after {timeout:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stop it gracefully: SIGTERM, then SIGKILL after `grace`.
    pub async fn terminate(&mut self, grace: Duration) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = tokio::time::Instant::now() + grace;
        while self.is_running() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.kill();
    }

    /// The process's output so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for LocalProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One HTTP/1 request (e.g. to `hapair-kv`): status and body as text, or why it failed.
pub async fn http(
    method: axum::http::Method,
    url: &str,
    body: &str,
) -> Result<(axum::http::StatusCode, String), String> {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let request = axum::http::Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(bytes::Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let response = client.request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok((
        status,
        String::from_utf8_lossy(&body.to_bytes()).into_owned(),
    ))
}
