//! The pair under chaos: deploy/examples/kv.yaml in its own namespace with a local operator, a
//! client writing through the master Service, and the faults of a schedule carried out against
//! the real cluster.
//!
//! Holding a member down: the operator recreates a deleted member pod at once. To model a
//! machine that stays down, the test adds an init container to the pair's template that waits
//! while a hold file for its member exists in a host directory; the recreated pod then stays in
//! Init (no agent, no application) until the test removes the file. The operator is not touched.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hapair::controller::resources::AGENT_CONTAINER;
use hapair::crd::{ConditionType, HAPair, ANNOTATION_FORCE_START, LABEL_MEMBER};
use hapair::protocol::Member;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::applog::AppLogs;
use crate::schedule::{Fault, Role, Schedule, KINDS};
use crate::support::pair::{pair_state, PairUnderTest};
use crate::support::*;
use crate::writer::Writer;

pub const PAIR: &str = "kv";
const APP_CONTAINER: &str = "kv";
/// Short leases keep stalls and lingering instances quick (agent fences after 3 s silent).
const LEASE: (u64, u64, u64) = (5, 1, 2);
/// Safety net for one schedule's quiet period.
const SETTLE: Duration = Duration::from_secs(180);

/// How a full outage is resolved when the member that came back first cannot prove it was last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// The seed's: wait, and bring the other member back (never a force-start).
    Seed,
    /// "Whoever comes back first is master" (what several operators do): force-start it.
    Naive,
}

/// What one policy's run came to.
#[derive(Debug, Default)]
pub struct Tally {
    pub schedules: usize,
    pub faults: [u32; KINDS.len()],
    pub skipped: Vec<String>,
    pub attempts: u64,
    pub acked: usize,
    /// Acknowledgements seen in the applications' logs.
    pub logged: usize,
    /// Acknowledged keys missing from the master after a quiet period.
    pub lost: Vec<String>,
    /// Per kind of fault that took the master down: fault → the first write acknowledged in a
    /// newer master epoch.
    pub failovers: [Vec<Duration>; KINDS.len()],
    /// Full outages where the first member back waited for the other.
    pub waits: u32,
    /// Naive policy: full outages resolved by force-starting the first member back.
    pub forced: u32,
    pub dual_label: Vec<String>,
    pub dual_epoch: Vec<String>,
    pub dual_log: Vec<String>,
}

impl Tally {
    /// The tallies of two pairs run side by side, as one.
    pub fn merge(mut self, other: Tally) -> Tally {
        self.schedules += other.schedules;
        for (mine, theirs) in self.faults.iter_mut().zip(other.faults) {
            *mine += theirs;
        }
        for (mine, theirs) in self.failovers.iter_mut().zip(other.failovers) {
            mine.extend(theirs);
        }
        self.skipped.extend(other.skipped);
        self.attempts += other.attempts;
        self.acked += other.acked;
        self.logged += other.logged;
        self.lost.extend(other.lost);
        self.waits += other.waits;
        self.forced += other.forced;
        self.dual_label.extend(other.dual_label);
        self.dual_epoch.extend(other.dual_epoch);
        self.dual_log.extend(other.dual_log);
        self
    }
}

pub struct ChaosPair {
    policy: Policy,
    pairs: Api<HAPair>,
    pods: Api<Pod>,
    gates: Gates,
    operator: Option<LocalProcess>,
    operator_due: Option<Instant>,
    /// When a held member comes back (index: a, b).
    releases: [Option<Instant>; 2],
    /// Starts once the fresh pair settled.
    writer: Option<Writer>,
    logs: AppLogs,
    watchdog: Watchdog,
    /// Keys already counted as lost (the naive policy): counted once.
    lost: HashSet<String>,
    /// Faults that took the master down in the current schedule.
    master_faults: Vec<(usize, Instant)>,
    pub tally: Tally,
    ns: TestNamespace,
}

impl ChaosPair {
    /// The kv pair, settled, with the client writing.
    pub async fn start(policy: Policy) -> ChaosPair {
        let prefix = match policy {
            Policy::Seed => "chaos",
            Policy::Naive => "chaos-naive",
        };
        let ns = TestNamespace::new(prefix).await;
        install_crd(&ns.client).await;
        let gates = Gates::new(&ns.name);
        let (service, pair) = kv_example(&gates.dir);
        let services: Api<Service> = ns.api();
        let pp = PostParams::default();
        services.create(&pp, &service).await.unwrap();
        let watchdog = Watchdog::start(ns.client.clone(), &ns.name).await;
        let pods: Api<Pod> = ns.api();
        let logs = AppLogs::start(pods.clone(), PAIR, APP_CONTAINER);
        let pairs: Api<HAPair> = ns.api();
        pairs.create(&pp, &pair).await.unwrap();
        let mut chaos = ChaosPair {
            policy,
            pairs,
            pods,
            gates,
            operator: Some(start_operator(&ns.name)),
            operator_due: None,
            releases: [None, None],
            writer: None,
            logs,
            watchdog,
            lost: HashSet::new(),
            master_faults: Vec::new(),
            tally: Tally::default(),
            ns,
        };
        chaos.settle().await;
        let service = cluster_ip(&services, PAIR).await;
        chaos.writer = Some(Writer::start(format!("{service}:8080"), prefix));
        chaos
    }

    /// Runs the schedule's faults, then waits for the quiet pair and checks every
    /// acknowledged write.
    pub async fn run(&mut self, schedule: &Schedule) {
        let started = Instant::now();
        self.master_faults.clear();
        for step in &schedule.steps {
            self.idle(step.after).await;
            self.inject(&step.fault).await;
        }
        let settled = self.settle().await;
        self.count_failovers();
        self.verify(schedule).await;
        self.tally.schedules += 1;
        println!(
            "chaos[{:?} {}] {schedule} settled {settled} in {:.1}s",
            self.policy,
            self.ns.name,
            started.elapsed().as_secs_f64()
        );
    }

    /// The end of the run: what the watch, the client and the applications' logs saw.
    pub fn finish(mut self) -> Tally {
        let acked = self.writer().acked();
        self.tally.acked = acked.len();
        self.tally.attempts = self.writer().attempts();
        self.tally.dual_label = self.watchdog.violations();
        self.tally.dual_epoch = crate::writer::out_of_epoch_order(&acked);
        let logged = self.logs.acks();
        self.tally.logged = logged.len();
        self.tally.dual_log = crate::applog::overlapping_epochs(&logged);
        if let Some(op) = self.operator.as_mut() {
            assert!(op.is_running(), "the operator exited:\n{}", op.output());
        }
        std::mem::take(&mut self.tally)
    }

    fn writer(&self) -> &Writer {
        self.writer
            .as_ref()
            .expect("the writer runs once the pair settled")
    }

    async fn get(&self) -> HAPair {
        self.pairs.get(PAIR).await.unwrap()
    }

    // --- time: the schedule's pauses, during which held members come back on time ---

    /// Waits `pause`, carrying out whatever falls due meanwhile.
    async fn idle(&mut self, pause: Duration) {
        let end = Instant::now() + pause;
        loop {
            self.carry_out_due();
            let next = self.next_due().map_or(end, |due| due.min(end));
            if Instant::now() >= end {
                return;
            }
            tokio::time::sleep_until(next).await;
        }
    }

    fn next_due(&self) -> Option<Instant> {
        let mut due = self.releases.iter().flatten().copied().collect::<Vec<_>>();
        due.extend(self.operator_due);
        due.into_iter().min()
    }

    /// Brings back the held members and the operator whose time came.
    fn carry_out_due(&mut self) {
        let now = Instant::now();
        for m in [Member::A, Member::B] {
            if self.releases[index(m)].is_some_and(|due| due <= now) {
                self.release(m);
            }
        }
        if self.operator_due.is_some_and(|due| due <= now) {
            self.operator_due = None;
            self.operator = Some(start_operator(&self.ns.name));
        }
    }

    fn hold(&mut self, m: Member) {
        self.releases[index(m)] = None;
        self.gates.hold(m);
    }

    fn release(&mut self, m: Member) {
        self.releases[index(m)] = None;
        self.gates.release(m);
    }

    // --- faults ---

    async fn inject(&mut self, fault: &Fault) {
        let hit = match fault {
            Fault::KillPod { role, down } => self.kill_pod(*role, *down).await,
            Fault::KillBoth { first, gap } => self.kill_both(*first, *gap).await,
            Fault::KillOperator { down } => self.kill_operator(*down),
            Fault::KillAgent { role } => self.kill_agent(*role).await,
            Fault::StallAgent { role } => self.stall_agent(*role).await,
        };
        match hit {
            Ok(at) => {
                self.tally.faults[fault.kind()] += 1;
                if fault.hits_master() {
                    self.master_faults.push((fault.kind(), at));
                }
            }
            Err(why) => self.tally.skipped.push(format!("{fault}: {why}")),
        }
    }

    async fn kill_pod(&mut self, role: Role, down: Option<Duration>) -> Result<Instant, String> {
        let m = self.member(role).await;
        if let Some(down) = down {
            self.hold(m);
            self.releases[index(m)] = Some(Instant::now() + down);
        }
        let at = Instant::now();
        self.force_delete(m).await;
        Ok(at)
    }

    /// Both down; `first` back first. If it cannot start alone, the seed's policy brings the
    /// other back, the naive one force-starts it.
    async fn kill_both(&mut self, first: Role, gap: Duration) -> Result<Instant, String> {
        let first = self.member(first).await;
        self.hold(Member::A);
        self.hold(Member::B);
        let at = Instant::now();
        tokio::join!(self.force_delete(Member::A), self.force_delete(Member::B));
        self.idle(Duration::from_millis(200)).await;
        self.release(first);
        let started = self.until_started_or_waiting(first).await;
        if !started {
            self.tally.waits += 1;
            if self.policy == Policy::Naive {
                self.tally.forced += 1;
                self.force_start(first).await;
            } else {
                self.release(first.peer());
                return Ok(at);
            }
        }
        self.idle(gap).await;
        self.release(first.peer());
        Ok(at)
    }

    fn kill_operator(&mut self, down: Duration) -> Result<Instant, String> {
        let Some(mut operator) = self.operator.take() else {
            return Err("the operator is already down".into());
        };
        operator.kill();
        self.operator_due = Some(Instant::now() + down);
        Ok(Instant::now())
    }

    /// Crashes the agent, and returns once the kubelet has seen it (so that the quiet period
    /// cannot begin before the crash shows).
    async fn kill_agent(&mut self, role: Role) -> Result<Instant, String> {
        let pod = self.running_agent(role).await?;
        let restarts = restart_count(&pod, AGENT_CONTAINER);
        crash_container(&pod, AGENT_CONTAINER);
        let at = Instant::now();
        let name = pod.name_any();
        let seen = |p: &Pod| p.uid() != pod.uid() || restart_count(p, AGENT_CONTAINER) > restarts;
        let what = format!("the kubelet to see {name}'s agent crash");
        self.until(&what, |_, pods| {
            let pod = pods.iter().find(|p| p.name_any() == name);
            pod.is_none_or(seen).then_some(())
        })
        .await;
        Ok(at)
    }

    /// Freezes the agent past the lease's expiry: the operator must not promote the peer before
    /// the lease expired, and the frozen member's application must stop acknowledging.
    async fn stall_agent(&mut self, role: Role) -> Result<Instant, String> {
        let pod = self.running_agent(role).await?;
        let frozen = freeze_container(&pod, AGENT_CONTAINER);
        let at = Instant::now();
        self.idle(Duration::from_secs(LEASE.0 + 1)).await;
        frozen.thaw();
        Ok(at)
    }

    async fn running_agent(&self, role: Role) -> Result<Pod, String> {
        let m = self.member(role).await;
        let pod = self.pods.get_opt(&pod_name(m)).await.unwrap();
        pod.filter(|p| container_running(p, AGENT_CONTAINER))
            .ok_or_else(|| format!("no running agent in {}", pod_name(m)))
    }

    async fn force_delete(&self, m: Member) {
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        };
        match self.pods.delete(&pod_name(m), &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => panic!("force delete {}: {e}", pod_name(m)),
        }
    }

    async fn force_start(&mut self, m: Member) {
        let patch = json!({"metadata": {"annotations": {ANNOTATION_FORCE_START: m.as_str()}}});
        let params = PatchParams::default();
        self.pairs
            .patch(PAIR, &params, &Patch::Merge(&patch))
            .await
            .unwrap();
        let what = format!("force-started {m} to be master");
        self.until(&what, |_, pods| is_master(pods, m).then_some(()))
            .await;
    }

    /// The member that has `role` now: the pod labelled master, or the other one. With no master
    /// labelled (a failover under way), member a stands for the master.
    async fn member(&self, role: Role) -> Member {
        let pods = self.pod_list().await;
        let master = [Member::A, Member::B]
            .into_iter()
            .find(|m| is_master(&pods, *m))
            .unwrap_or(Member::A);
        match role {
            Role::Master => master,
            Role::Other => master.peer(),
        }
    }

    // --- the quiet period ---

    /// True once `first` is master; false when it waits for its peer.
    async fn until_started_or_waiting(&mut self, first: Member) -> bool {
        let what = format!("{first} to start or to wait for its peer");
        self.until(&what, |pair, pods| {
            if is_master(pods, first) {
                Some(true)
            } else {
                waiting(pair).then_some(false)
            }
        })
        .await
    }

    /// Polls the pair and its pods (carrying out what falls due) until `probe` says `Some`.
    async fn until<T>(&mut self, what: &str, probe: impl Fn(&HAPair, &[Pod]) -> Option<T>) -> T {
        let deadline = Instant::now() + SETTLE;
        loop {
            self.carry_out_due();
            if let Some(op) = self.operator.as_mut() {
                assert!(op.is_running(), "the operator exited:\n{}", op.output());
            }
            let pair = self.get().await;
            let pods = self.pod_list().await;
            if let Some(value) = probe(&pair, &pods) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "chaos: no {what} within {SETTLE:?}; pair {:?}\npods: {:?}",
                pair.status,
                pods.iter().map(describe).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn pod_list(&self) -> Vec<Pod> {
        self.pods.list(&Default::default()).await.unwrap().items
    }

    /// Everything back (held members, the operator), the pair `(M SL)` or `(SL M)` with both
    /// pods labelled, the standby level, and a new write acknowledged through the Service.
    /// Returns the settled pair state and priorities, e.g. `(M SL) [2 3]`.
    async fn settle(&mut self) -> String {
        while self.next_due().is_some() {
            let due = self.next_due().unwrap();
            self.idle(due.saturating_duration_since(Instant::now()))
                .await;
        }
        let settled = self
            .until(
                "(M SL) or (SL M) with both pods labelled and ready",
                |pair, pods| {
                    let master = match pair_state(pair) {
                        "(M SL)" => Member::A,
                        "(SL M)" => Member::B,
                        _ => return None,
                    };
                    let ready = |m: Member| find(pods, m).is_some_and(pod_is_ready);
                    let standby = find(pods, master.peer())
                        .is_some_and(|p| pod_has_label(p, ROLE_LABEL, "standby"));
                    let status = pair.status.as_ref()?;
                    (is_master(pods, master) && standby && ready(master) && ready(master.peer()))
                        .then(|| format!("{} {}", status.pair_state, status.priorities))
                },
            )
            .await;
        let since = Instant::now();
        if let Some(writer) = &self.writer {
            poll_until(
                "a write acknowledged after the pair settled",
                SETTLE,
                || async { writer.first_ack_since(since) },
            )
            .await;
        }
        settled
    }

    /// For each fault that took the master down: the time to the first write acknowledged in a
    /// newer master epoch (a write the old master still acknowledged before it noticed does not
    /// count).
    fn count_failovers(&mut self) {
        for (kind, at) in std::mem::take(&mut self.master_faults) {
            if let Some(ack) = self.writer().first_ack_of_a_newer_epoch(at) {
                self.tally.failovers[kind].push(ack.at - at);
            }
        }
    }

    /// Every acknowledged write is on the master; the newest ones read back with their value.
    async fn verify(&mut self, schedule: &Schedule) {
        let acked = self.writer().acked();
        let pods = self.pod_list().await;
        let master = [Member::A, Member::B]
            .into_iter()
            .find(|m| is_master(&pods, *m))
            .expect("settled: a master");
        let ip = find(&pods, master)
            .and_then(|p| p.status.as_ref()?.pod_ip.clone())
            .expect("the master's pod IP");
        let base = format!("http://{ip}:8080/kv");
        let list = get_text(&base).await;
        let held: HashSet<&str> = list.lines().collect();
        let missing: Vec<String> = acked
            .iter()
            .filter(|a| !held.contains(a.key.as_str()) && !self.lost.contains(&a.key))
            .map(|a| a.key.clone())
            .collect();
        if !missing.is_empty() {
            println!(
                "chaos[{:?}] {schedule}: {} acknowledged write(s) missing from {}: {:?}",
                self.policy,
                missing.len(),
                pod_name(master),
                &missing[..missing.len().min(10)]
            );
            assert_eq!(
                self.policy,
                Policy::Naive,
                "acknowledged writes lost (seed {}): {missing:?}",
                crate::seed()
            );
            self.lost.extend(missing.iter().cloned());
            self.tally.lost.extend(missing);
        }
        for a in acked
            .iter()
            .rev()
            .filter(|a| !self.lost.contains(&a.key))
            .take(5)
        {
            let value = get_text(&format!("{base}/{}", a.key)).await;
            assert_eq!(
                value,
                a.key,
                "the value of {} on {}",
                a.key,
                pod_name(master)
            );
        }
    }
}

/// The hold files, in a host directory the member pods mount.
struct Gates {
    dir: PathBuf,
}

impl Gates {
    fn new(namespace: &str) -> Gates {
        let dir = PathBuf::from("/var/lib/hapair-local/chaos").join(namespace);
        std::fs::create_dir_all(&dir).unwrap();
        Gates { dir }
    }

    fn file(&self, m: Member) -> PathBuf {
        self.dir.join(format!("hold-{m}"))
    }

    fn hold(&self, m: Member) {
        std::fs::write(self.file(m), b"").unwrap();
    }

    fn release(&self, m: Member) {
        let _ = std::fs::remove_file(self.file(m));
    }
}

impl Drop for Gates {
    /// Removing the directory releases every hold: no held pod outlives the test.
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// deploy/examples/kv.yaml (the replication Service, the HAPair) with the test's image, short
/// leases, and the gate init container.
fn kv_example(gate_dir: &Path) -> (Service, HAPair) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/kv.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let docs: Vec<Value> = text
        .split("\n---\n")
        .map(|doc| serde_saphyr::from_str(doc).unwrap())
        .collect();
    let [service, mut pair] = <[Value; 2]>::try_from(docs).expect("kv.yaml: a Service, an HAPair");
    let spec = &mut pair["spec"];
    spec["lease"] = json!({
        "durationSeconds": LEASE.0, "renewIntervalSeconds": LEASE.1, "fenceMarginSeconds": LEASE.2,
    });
    let pod = &mut spec["template"]["spec"];
    pod["containers"][0]["image"] = json!(test_image());
    pod["initContainers"] = json!([{
        "name": "chaos-gate",
        "image": BUSYBOX_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", "while [ -e /gate/hold-$MEMBER ]; do sleep 0.1; done"],
        "env": [{"name": "MEMBER", "valueFrom": {"fieldRef": {
            "fieldPath": format!("metadata.labels['{LABEL_MEMBER}']"),
        }}}],
        "volumeMounts": [{"name": "chaos-gate", "mountPath": "/gate"}],
    }]);
    pod["volumes"] = json!([{
        "name": "chaos-gate",
        "hostPath": {"path": gate_dir, "type": "Directory"},
    }]);
    (
        serde_json::from_value(service).unwrap(),
        serde_json::from_value(pair).unwrap(),
    )
}

pub fn test_image() -> String {
    std::env::var("HAPAIR_TEST_IMAGE").unwrap_or_else(|_| HAPAIR_IMAGE.to_string())
}

fn start_operator(namespace: &str) -> LocalProcess {
    let mut cmd = std::process::Command::new(hapair_bin());
    cmd.args(["operator", "--namespace", namespace])
        .args(["--agent-image", &test_image()]);
    LocalProcess::start("chaos-operator", cmd)
}

async fn cluster_ip(services: &Api<Service>, name: &str) -> String {
    let service = services.get(name).await.unwrap();
    service
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("a ClusterIP")
}

async fn get_text(url: &str) -> String {
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        http(axum::http::Method::GET, url, ""),
    )
    .await;
    match reply {
        Ok(Ok((axum::http::StatusCode::OK, body))) => body,
        other => panic!("GET {url}: {other:?}"),
    }
}

fn pod_name(m: Member) -> String {
    format!("{PAIR}-{m}")
}

fn index(m: Member) -> usize {
    usize::from(m == Member::B)
}

fn find(pods: &[Pod], m: Member) -> Option<&Pod> {
    pods.iter().find(|p| p.name_any() == pod_name(m))
}

fn is_master(pods: &[Pod], m: Member) -> bool {
    find(pods, m).is_some_and(|p| pod_has_label(p, ROLE_LABEL, ROLE_MASTER))
}

fn waiting(pair: &HAPair) -> bool {
    let (waits, _) = PairUnderTest::condition(pair, ConditionType::WaitingForPeer);
    let (needs, _) = PairUnderTest::condition(pair, ConditionType::NeedsForceStart);
    waits || needs
}

fn describe(pod: &Pod) -> String {
    let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
    format!(
        "{} {:?} labels={:?} ready={}",
        pod.name_any(),
        phase,
        pod.labels(),
        pod_is_ready(pod)
    )
}
