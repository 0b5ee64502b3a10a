//! An `HAPair` under test: its namespace, the dual-master watchdog, a local `hapair operator`
//! watching only that namespace, and the pair `x` created from a small busybox template. Tests
//! speak in members (`a`, `b`) and pair states (`(M SL)`), not in pods and annotations.

use std::path::PathBuf;
use std::time::Duration;

use hapair::crd::{ConditionStatus, ConditionType, HAPair};
use hapair::protocol::Member;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, PostParams};
use kube::Api;
use serde_json::json;

use super::*;

/// Safety net for every wait of a scenario (the cluster is shared by two test threads).
pub const T: Duration = Duration::from_secs(180);
/// The pair's lease timings: short, so lease expiry scenarios stay quick.
pub const LEASE_SECONDS: u64 = 6;

/// The pair `name`: a busybox "application" that is Ready once the agent wrote its role file.
pub fn busybox_pair(name: &str) -> HAPair {
    serde_json::from_value(json!({
        "apiVersion": "hapair.io/v1alpha1",
        "kind": "HAPair",
        "metadata": {"name": name},
        "spec": {
            "template": {"spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [{
                    "name": "app",
                    "image": BUSYBOX_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"],
                    "readinessProbe": {
                        "exec": {"command": ["test", "-f", "/run/hapair/role"]},
                        "periodSeconds": 1,
                    },
                }],
            }},
            "volumeClaimTemplate": {
                "storageClassName": STORAGE_CLASS,
                "resources": {"requests": {"storage": "1Gi"}},
            },
            "lease": {"durationSeconds": LEASE_SECONDS, "renewIntervalSeconds": 1, "fenceMarginSeconds": 2},
        },
    }))
    .unwrap()
}

pub fn pair_state(p: &HAPair) -> &str {
    p.status.as_ref().map_or("", |s| s.pair_state.as_str())
}

/// `(M SL)` with `m` in `M`: the pair state where `m` is master and its peer its standby.
pub fn master_slave(m: Member) -> &'static str {
    match m {
        Member::A => "(M SL)",
        Member::B => "(SL M)",
    }
}

pub struct PairUnderTest {
    pub ns: TestNamespace,
    pub watchdog: Watchdog,
    pub operator: LocalProcess,
    pub pairs: Api<HAPair>,
    pub pods: Api<Pod>,
    pub leases: Api<Lease>,
}

impl PairUnderTest {
    /// A namespace with the watchdog and the operator, and the pair `x` created.
    pub async fn start(prefix: &str) -> PairUnderTest {
        let ns = TestNamespace::new(prefix).await;
        install_crd(&ns.client).await;
        let watchdog = Watchdog::start(ns.client.clone(), &ns.name).await;
        let operator = start_operator(&ns.name);
        let t = PairUnderTest {
            pairs: ns.api(),
            pods: ns.api(),
            leases: ns.api(),
            ns,
            watchdog,
            operator,
        };
        t.pairs
            .create(&PostParams::default(), &busybox_pair("x"))
            .await
            .unwrap();
        t
    }

    /// Kills the operator (SIGKILL) and starts a new one.
    pub fn restart_operator(&mut self) {
        self.operator.kill();
        self.operator = start_operator(&self.ns.name);
    }

    /// Waits for the fresh pair to settle: `(M SL)`, or `(SL M)` when x-a's first pod could not
    /// be created in time (v1.20 admits a pod only once its ServiceAccount's token exists).
    /// Returns the master, once its pod carries the label.
    pub async fn steady(&self) -> Member {
        let p = self.wait_state(&["(M SL)", "(SL M)"]).await;
        let master = if pair_state(&p) == "(M SL)" {
            Member::A
        } else {
            Member::B
        };
        self.wait_role(master, ROLE_MASTER).await;
        self.wait_role(master.peer(), "standby").await;
        master
    }

    pub async fn wait_state(&self, states: &[&str]) -> HAPair {
        wait_for(&self.pairs, "x", |p| states.contains(&pair_state(p)), T).await
    }

    pub async fn wait_pair(&self, what: impl Fn(&HAPair) -> bool) -> HAPair {
        wait_for(&self.pairs, "x", what, T).await
    }

    pub async fn get(&self) -> HAPair {
        self.pairs.get("x").await.unwrap()
    }

    pub fn pod_name(m: Member) -> String {
        format!("x-{m}")
    }

    pub async fn pod(&self, m: Member) -> Pod {
        self.pods.get(&Self::pod_name(m)).await.unwrap()
    }

    /// Waits until the member's pod carries `hapair.io/role=<role>`.
    pub async fn wait_role(&self, m: Member, role: &str) -> Pod {
        wait_for(
            &self.pods,
            &Self::pod_name(m),
            |p| pod_has_label(p, ROLE_LABEL, role),
            T,
        )
        .await
    }

    /// What the member's agent last reported under `hapair.io/<key>` (empty when absent).
    pub async fn report(&self, m: Member, key: &str) -> String {
        let lease = self.leases.get(&Self::pod_name(m)).await.unwrap();
        lease_annotation(&lease, key)
    }

    /// Waits until the member's agent reports `hapair.io/<key>=<value>`.
    pub async fn wait_report(&self, m: Member, key: &str, value: &str) -> Lease {
        wait_for(
            &self.leases,
            &Self::pod_name(m),
            |l| lease_annotation(l, key) == value,
            T,
        )
        .await
    }

    pub async fn force_delete(&self, m: Member) {
        force_delete_pod(&self.pods, &Self::pod_name(m)).await;
    }

    /// The member's pod's containers frozen (a hung node): thawed on drop.
    pub async fn freeze(&self, m: Member) -> Frozen {
        freeze_pod(&self.pod(m).await)
    }

    /// The priority record on the member's volume, on this machine (hostPath PVs).
    pub async fn record_path(&self, m: Member) -> PathBuf {
        let claims: Api<PersistentVolumeClaim> = self.ns.api();
        let claim = claims.get(&format!("x-{m}-data")).await.unwrap();
        let volume = claim.spec.and_then(|s| s.volume_name).expect("claim bound");
        let pvs: Api<PersistentVolume> = Api::all(self.ns.client.clone());
        let pv = pvs.get(&volume).await.unwrap();
        let dir = pv.spec.and_then(|s| s.host_path).expect("hostPath PV").path;
        PathBuf::from(dir).join(".hapair/record")
    }

    /// Events on the pair with this reason (events.k8s.io/v1, as the operator publishes them).
    pub async fn events(&self, reason: &str) -> Vec<Event> {
        let events: Api<Event> = self.ns.api();
        let all = events.list(&ListParams::default()).await.unwrap();
        all.items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .collect()
    }

    /// Waits for `n` Events on the pair with this reason (polled: an Event is no condition of
    /// an object to watch).
    pub async fn wait_events(&self, reason: &str, n: usize) -> Vec<Event> {
        let what = format!("{n} Events {reason}");
        poll_until(&what, T, || async {
            let events = self.events(reason).await;
            (events.len() >= n).then_some(events)
        })
        .await
    }

    /// Waits for an Event on the pair with this reason.
    pub async fn wait_event(&self, reason: &str) -> Event {
        self.wait_events(reason, 1).await.remove(0)
    }

    /// A condition of the pair's status: (is it true, its message).
    pub fn condition(p: &HAPair, type_: ConditionType) -> (bool, String) {
        let conditions = p.status.as_ref().map(|s| s.conditions.clone());
        conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status == ConditionStatus::True, c.message))
            .unwrap_or_default()
    }

    /// The end of every scenario: no instant with two masters, operator still running.
    pub fn finish(mut self) {
        self.watchdog.assert_clean();
        assert!(
            self.operator.is_running(),
            "the operator exited:\n{}",
            self.operator.output()
        );
    }
}

pub fn lease_annotation(lease: &Lease, key: &str) -> String {
    lease
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(&format!("hapair.io/{key}")))
        .cloned()
        .unwrap_or_default()
}

fn start_operator(namespace: &str) -> LocalProcess {
    LocalProcess::start("operator", operator_command(namespace, &[]))
}
