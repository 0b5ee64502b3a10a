//! Running `hapair operator` in tests and benches: install the CRD, start local operators (with
//! leader election), find their metrics address, read their HTTP endpoints.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use axum::http::Method;
use hapair::crd::HAPair;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, CustomResourceExt};

use super::{hapair_bin, wait_for, LocalProcess, HAPAIR_IMAGE};

/// Server-side applies `deploy/crd.yaml` and waits until the API server serves it.
pub async fn install_crd(client: &Client) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/crd.yaml");
    let crd: CustomResourceDefinition =
        serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    // Parallel tests apply the same CRD while the API server updates its status: retry 409s.
    for attempt in 1.. {
        let params = PatchParams::apply("hapair-test").force();
        match api
            .patch(HAPair::crd_name(), &params, &Patch::Apply(&crd))
            .await
        {
            Ok(_) => break,
            Err(kube::Error::Api(e)) if e.code == 409 && attempt < 10 => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("apply deploy/crd.yaml: {e}"),
        }
    }
    let established = |c: &CustomResourceDefinition| {
        c.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            })
    };
    wait_for(
        &api,
        HAPair::crd_name(),
        established,
        Duration::from_secs(60),
    )
    .await;
}

/// Polls `probe` every 50 ms until it returns `Some`; panics after `timeout` naming `what`.
/// For state only reachable by polling (an HTTP endpoint, a log file); use watches for objects.
pub async fn poll_until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timeout after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl LocalProcess {
    /// The address a local `hapair operator` serves /metrics on, from its log line.
    pub async fn metrics_addr(&mut self) -> SocketAddr {
        let what = format!("{} to log its metrics address", self.name);
        poll_until(&what, Duration::from_secs(30), || {
            let running = self.is_running();
            let output = self.output();
            async move {
                assert!(running, "the process exited:\n{output}");
                let line = output.lines().find(|l| l.contains("serving /metrics"))?;
                line.split("addr=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            }
        })
        .await
    }
}

/// GET `path` from `addr`: the status code and body, or `None` when nothing answers.
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let url = format!("http://{addr}{path}");
    let (status, body) = super::http(Method::GET, &url, "").await.ok()?;
    Some((status.as_u16(), body))
}

/// The value of the sample `series` (exact name and labels) in an OpenMetrics text.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// `hapair operator` limited to namespace `ns`, with `extra` flags.
pub fn operator_command(ns: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(hapair_bin());
    cmd.args(["operator", "--namespace", ns, "--agent-image", HAPAIR_IMAGE])
        .args(extra);
    cmd
}

/// A replica in namespace `ns` competing as `identity` for the leader-election Lease `lease`
/// (in `ns` too).
pub fn candidate(ns: &str, identity: &str, lease: &str) -> LocalProcess {
    let flags = ["--leader-elect", "--leader-election-namespace", ns];
    let mut cmd = operator_command(ns, &flags);
    cmd.args(["--leader-election-lease", lease])
        .env("POD_NAME", identity);
    LocalProcess::start(identity, cmd)
}

/// The Lease's holder, `""` when it is free.
pub fn lease_holder(lease: &Lease) -> &str {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .unwrap_or("")
}

/// An operator's /metrics text, when it answers 200.
pub async fn metrics_text(addr: SocketAddr) -> Option<String> {
    match http_get(addr, "/metrics").await? {
        (200, body) => Some(body),
        _ => None,
    }
}

/// An operator's `hapair_leader` gauge.
pub async fn leader_gauge(addr: SocketAddr) -> Option<f64> {
    sample(&metrics_text(addr).await?, "hapair_leader")
}

/// Waits until an operator's /readyz answers 200.
pub async fn wait_ready(addr: SocketAddr, timeout: Duration) {
    poll_until("/readyz to answer 200", timeout, || async move {
        (http_get(addr, "/readyz").await?.0 == 200).then_some(())
    })
    .await;
}
