//! Running `hapair operator` in tests: install the CRD, find a local operator's metrics address,
//! and read its HTTP endpoints.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use axum::http::Method;
use hapair::crd::HAPair;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, CustomResourceExt};

use super::{wait_for, LocalProcess};

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
