//! `hapair agent` against the REAL local cluster (deploy/local/cluster.sh up): the agent runs as a
//! local child process with a temp dir as its volume and a Lease in a test namespace; the test
//! plays the operator by writing command annotations on the Lease and watches the reports.
//!
//! What it proves: the agent reports its record at start and never writes it then; it takes the
//! Lease over without touching the operator's keys; a command is persisted on disk before its ack
//! is visible, then the role file; a command it cannot persist is never acknowledged and is
//! retried; a processing agent cut off from the API server fences itself (role X) within the
//! lease duration, reports it when it is back, and acts again only on a newer command.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Patch, PatchParams, PostParams};
use kube::config::Kubeconfig;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;

use hapair::mailbox::{self, CommandEnvelope, Report};
use hapair::protocol::{Member, MemberState, Priority, RecordView, Standing, Term};
use hapair::store::{ReadOutcome, RecordStore};
use support::*;

/// Safety net for waits on the API; never a synchronisation means.
const T: Duration = Duration::from_secs(30);
const PAIR: &str = "web";
const PAIR_UID: &str = "6f1c2d3e-0000-4a4a-8b8b-123456789abc";
const PEER: &str = "10.88.0.9:7000";

/// A fresh pod UID (UUID-shaped, as Kubernetes makes them).
fn pod_uid() -> String {
    let n = unique_name("u").replace('-', "");
    let hex: String = n.bytes().map(|b| format!("{:02x}", b)).collect();
    let hex = format!("{hex:0>32}");
    let h = &hex[hex.len() - 32..];
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

// ------------------------------------------------------------------------------ agent process

/// Lease timing handed to the agent: (duration, renew interval, fence margin) in seconds.
type Timing = (u32, u32, u32);

/// `hapair agent` as a local child process; killed on drop.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn output(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- agent log {}:\n{}", self.log.display(), self.output());
        }
    }
}

/// One member `a` with its volume, role directory and Lease, in its own namespace.
struct Member_ {
    ns: TestNamespace,
    api: Api<Lease>,
    lease: String,
    uid: String,
    volume: tempfile::TempDir,
    run: tempfile::TempDir,
    seq: u64,
}

impl Member_ {
    async fn new(prefix: &str) -> Member_ {
        let ns = TestNamespace::new(prefix).await;
        Member_ {
            api: ns.api(),
            lease: mailbox::lease_name(PAIR, Member::A),
            uid: pod_uid(),
            volume: tempfile::tempdir().unwrap(),
            run: tempfile::tempdir().unwrap(),
            seq: 0,
            ns,
        }
    }

    fn role_file(&self) -> PathBuf {
        self.run.path().join("role")
    }

    fn role(&self) -> String {
        fs::read_to_string(self.role_file()).unwrap_or_else(|e| format!("<{e}>"))
    }

    fn record(&self) -> ReadOutcome {
        RecordStore::new(self.volume.path().to_path_buf(), PAIR_UID, Member::A)
            .read()
            .unwrap()
    }

    fn standing(&self) -> Option<Standing> {
        match self.record() {
            ReadOutcome::Valid(r) => Some(r.standing),
            other => panic!("expected a valid record, found {other}"),
        }
    }

    fn start(&self, kubeconfig: &Path, (duration, renew, margin): Timing) -> Agent {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("agent-logs");
        fs::create_dir_all(&dir).unwrap();
        let log = dir.join(format!("{}.log", self.ns.name));
        let file = fs::File::create(&log).unwrap();
        let child = Command::new(hapair_bin())
            .arg("agent")
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,hapair=debug")
            .env("POD_NAME", format!("{PAIR}-a"))
            .env("POD_UID", &self.uid)
            .env("POD_NAMESPACE", &self.ns.name)
            .env("HAPAIR_PAIR", PAIR)
            .env("HAPAIR_PAIR_UID", PAIR_UID)
            .env("HAPAIR_MEMBER", "a")
            .env("HAPAIR_VOLUME", self.volume.path())
            .env("HAPAIR_ROLE_FILE", self.role_file())
            .env("HAPAIR_PEER_ADDRESS", PEER)
            .env("HAPAIR_LEASE_DURATION", duration.to_string())
            .env("HAPAIR_RENEW_INTERVAL", renew.to_string())
            .env("HAPAIR_FENCE_MARGIN", margin.to_string())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Agent { child, log }
    }

    /// Plays the operator: writes the next command for this member's pod. Returns its seq.
    async fn command(&mut self, wire: &str) -> u64 {
        self.seq += 1;
        let envelope = CommandEnvelope {
            command: wire.parse().unwrap(),
            seq: self.seq,
            pod: self.uid.clone(),
        };
        let patch = json!({"metadata": {"annotations": envelope.to_annotations()}});
        self.api
            .patch(&self.lease, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        self.seq
    }

    /// Waits (watch) until this pod's agent reports something satisfying `predicate`.
    async fn report(&self, predicate: impl Fn(&Report) -> bool) -> (Lease, Report) {
        let lease = wait_for(
            &self.api,
            &self.lease,
            |l: &Lease| report_of(l).is_some_and(|r| r.pod == self.uid && predicate(&r)),
            T,
        )
        .await;
        let report = report_of(&lease).unwrap();
        (lease, report)
    }
}

fn report_of(lease: &Lease) -> Option<Report> {
    Report::parse(lease.annotations()).unwrap()
}

fn acked(report: &Report) -> u64 {
    report.ack.map_or(0, |a| a.seq)
}

fn valid(priority: Priority, term: u64) -> Option<Standing> {
    Some(Standing::new(priority, Term(term)))
}

/// Polls a file (a file has no watch) until `done`, at most `deadline`; returns the time taken.
async fn poll_file(what: &str, deadline: Duration, done: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < deadline,
            "{what}: not within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

// ------------------------------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_reports_its_record_then_persists_each_command_before_acknowledging_it() {
    let mut m = Member_::new("agent-cmd").await;
    // The Lease of a replaced pod: its holder, its report, and a command addressed to it.
    let old: Lease = serde_json::from_value(json!({
        "metadata": {"name": m.lease, "annotations": {
            "hapair.io/command": "SM/9", "hapair.io/command-seq": "7",
            "hapair.io/command-pod": "old-pod", "hapair.io/pod": "old-pod",
            "hapair.io/state": "SM", "hapair.io/ack": "7", "hapair.io/acked-command": "SM/9",
            "hapair.io/record": "valid", "hapair.io/priority": "1", "hapair.io/term": "9"}},
        "spec": {"holderIdentity": "old-pod", "leaseDurationSeconds": 10, "leaseTransitions": 4},
    }))
    .unwrap();
    m.api.create(&PostParams::default(), &old).await.unwrap();
    m.seq = 7;
    let _agent = m.start(&kubeconfig_path(), (10, 2, 3));

    let (lease, report) = m.report(|_| true).await;
    assert_eq!(report.record, RecordView::Missing);
    assert_eq!(
        (report.state, report.ack, report.fenced),
        (MemberState::X, None, None)
    );
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some(m.uid.as_str()));
    assert_eq!(spec.lease_transitions, Some(5));
    assert!(spec.renew_time.is_some());
    let annotations = lease.metadata.annotations.unwrap();
    assert_eq!(
        annotations["hapair.io/command-pod"], "old-pod",
        "operator keys untouched"
    );
    assert_eq!(annotations["hapair.io/command-seq"], "7");
    assert_eq!(m.role(), "X\n");
    assert_eq!(m.record(), ReadOutcome::Missing, "nothing written at start");

    let seq = m.command("INIT/0").await;
    let (_, report) = m.report(|r| acked(r) == seq).await;
    assert_eq!(
        report.record,
        RecordView::Valid(Standing::new(Priority::Two, Term(0)))
    );
    assert_eq!(report.state, MemberState::X);
    assert_eq!(report.ack.unwrap().command.to_string(), "INIT/0");
    assert_eq!(m.standing(), valid(Priority::Two, 0));
    assert_eq!(m.role(), "X\n", "INIT acts on nothing");

    // The moment the ack is first visible, the record is already on disk and the role written.
    let seq = m.command("SM/1").await;
    let seen_at_ack = Mutex::new(None);
    m.report(|r| {
        let done = acked(r) == seq;
        if done {
            *seen_at_ack.lock().unwrap() = Some((m.record(), m.role()));
        }
        done
    })
    .await;
    let (record, role) = seen_at_ack.into_inner().unwrap().unwrap();
    let ReadOutcome::Valid(record) = record else {
        panic!("record at ack time: {record}")
    };
    assert_eq!(record.standing, Standing::new(Priority::One, Term(1)));
    assert_eq!(role, "SM\n");
}

/// Read-only bind mount of a directory over itself; made writable again on drop.
struct ReadOnly(PathBuf);

fn mount(args: &[&str]) {
    let status = Command::new("mount").args(args).status().unwrap();
    assert!(status.success(), "mount {args:?}");
}

impl ReadOnly {
    fn new(dir: &Path) -> ReadOnly {
        let d = dir.to_str().unwrap();
        mount(&["--bind", d, d]);
        let ro = ReadOnly(dir.to_path_buf());
        mount(&["-o", "remount,bind,ro", d]);
        ro
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_on_a_read_only_volume_is_never_acknowledged_and_is_retried() {
    let mut m = Member_::new("agent-ro").await;
    let _agent = m.start(&kubeconfig_path(), (10, 1, 3));
    m.report(|_| true).await;
    let seq = m.command("INIT/0").await;
    m.report(|r| acked(r) == seq).await;

    let read_only = ReadOnly::new(m.volume.path());
    let seq = m.command("SL/1").await;
    let (_, report) = m.report(|r| r.error.is_some()).await;
    let error = report.error.clone().unwrap();
    assert!(
        error.contains("SL/1") && error.contains("read-only"),
        "{error}"
    );
    assert_eq!(acked(&report), seq - 1, "not acknowledged");
    assert_eq!(report.state, MemberState::X);
    assert_eq!(m.standing(), valid(Priority::Two, 0), "record unchanged");
    assert_eq!(m.role(), "X\n", "role unchanged");

    drop(read_only);
    let (_, report) = m.report(|r| acked(r) == seq).await;
    assert_eq!(report.error, None);
    assert_eq!(report.state, MemberState::SL);
    assert_eq!(m.standing(), valid(Priority::Three, 1));
    assert_eq!(m.role(), format!("SL {PEER}\n"));
}

// ------------------------------------------------------------------------------- TCP proxy

/// A TCP proxy to the API server that the test can cut: stopping it closes the listener and
/// shuts every connection through it down, so the agent behind it cannot reach the API server.
/// Plain threads: it must keep forwarding whatever the test's runtime is doing.
struct Proxy {
    port: u16,
    stop: Arc<AtomicBool>,
    sockets: Arc<Mutex<Vec<std::net::TcpStream>>>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

fn api_server_address() -> (String, String) {
    let kubeconfig = Kubeconfig::read_from(kubeconfig_path()).unwrap();
    let server = kubeconfig.clusters[0]
        .cluster
        .as_ref()
        .and_then(|c| c.server.clone())
        .unwrap();
    let address = server.trim_start_matches("https://").to_string();
    (server, address)
}

impl Proxy {
    fn start(port: u16) -> Proxy {
        let (_, upstream) = api_server_address();
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let sockets = Arc::new(Mutex::new(Vec::new()));
        let (s, socks) = (stop.clone(), sockets.clone());
        let acceptor = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => forward(client, &upstream, &socks),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Proxy {
            port,
            stop,
            sockets,
            acceptor: Some(acceptor),
        }
    }

    /// Cuts every connection and refuses new ones (the listener is closed).
    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            acceptor.join().unwrap();
        }
        for socket in self.sockets.lock().unwrap().drain(..) {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }

    /// A kubeconfig like the harness's, with the API server reached through this proxy.
    fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let (server, _) = api_server_address();
        let text = fs::read_to_string(kubeconfig_path()).unwrap();
        assert!(text.contains(&server));
        let path = dir.join("kubeconfig");
        let through = format!("https://127.0.0.1:{}", self.port);
        fs::write(&path, text.replace(&server, &through)).unwrap();
        path
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for socket in self.sockets.lock().unwrap().drain(..) {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Copies both ways between `client` and a new connection to `upstream`, one thread each way.
fn forward(
    client: std::net::TcpStream,
    upstream: &str,
    sockets: &Arc<Mutex<Vec<std::net::TcpStream>>>,
) {
    client.set_nonblocking(false).unwrap();
    let Ok(server) = std::net::TcpStream::connect(upstream) else {
        return;
    };
    let mut all = sockets.lock().unwrap();
    all.push(client.try_clone().unwrap());
    all.push(server.try_clone().unwrap());
    for (mut from, mut to) in [
        (client.try_clone().unwrap(), server.try_clone().unwrap()),
        (server, client),
    ] {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Write);
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processing_agent_cut_off_from_the_api_fences_itself_within_the_lease_duration() {
    let mut m = Member_::new("agent-fence").await;
    let proxy = Proxy::start(0);
    let kubeconfig = proxy.kubeconfig(m.run.path());
    let (duration, renew, margin) = (4, 1, 1);
    let agent = m.start(&kubeconfig, (duration, renew, margin));
    m.report(|_| true).await;
    let seq = m.command("SM/1").await;
    m.report(|r| acked(r) == seq && r.state == MemberState::SM)
        .await;
    assert_eq!(m.role(), "SM\n");

    let port = proxy.port;
    let cut = Instant::now();
    proxy.stop();
    let lease_duration = Duration::from_secs(duration.into());
    let fenced_after = poll_file("role X after the API was cut", lease_duration, || {
        m.role() == "X\n"
    })
    .await;
    eprintln!("fenced {fenced_after:?} after the API was cut (lease duration {lease_duration:?})");
    assert!(cut.elapsed() < lease_duration);
    let budget = Duration::from_secs((duration - margin - renew).into());
    assert!(
        fenced_after >= budget,
        "fenced after {fenced_after:?}: before lease duration - margin - one renewal"
    );
    assert_eq!(
        m.standing(),
        valid(Priority::One, 1),
        "fencing writes no record"
    );

    let _proxy = Proxy::start(port);
    let (_, report) = m.report(|r| r.fenced.is_some()).await;
    assert_eq!(report.state, MemberState::X);
    assert_eq!(acked(&report), seq, "the ack of SM stays; the state says X");
    let reason = report.fenced.unwrap();
    assert!(reason.contains("no successful Lease renewal"), "{reason}");
    assert!(agent.output().contains("self-fenced"));

    // The command it fenced over is still on the Lease: it must not act on it again.
    tokio::time::sleep(Duration::from_secs((2 * renew).into())).await;
    assert_eq!(
        m.role(),
        "X\n",
        "still X: only a newer command may make it act"
    );

    let seq = m.command("SM/2").await;
    let (_, report) = m.report(|r| acked(r) == seq).await;
    assert_eq!((report.state, report.fenced), (MemberState::SM, None));
    assert_eq!(m.role(), "SM\n");
    assert_eq!(m.standing(), valid(Priority::One, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_latency_from_command_written_to_ack_visible() {
    let mut m = Member_::new("agent-latency").await;
    let _agent = m.start(&kubeconfig_path(), (10, 2, 3));
    m.report(|_| true).await;
    let config = watcher::Config::default().fields(&format!("metadata.name={}", m.lease));
    let mut events = watcher(m.api.clone(), config).boxed();
    let mut latencies = Vec::new();
    for term in 1..=20u64 {
        let wire = if term % 2 == 0 { "SL" } else { "SM" };
        let start = Instant::now();
        let seq = m.command(&format!("{wire}/{term}")).await;
        loop {
            let event = tokio::time::timeout(T, events.next()).await.unwrap();
            let lease = match event.unwrap().unwrap() {
                watcher::Event::Apply(l) | watcher::Event::InitApply(l) => l,
                _ => continue,
            };
            if report_of(&lease).is_some_and(|r| acked(&r) == seq) {
                break;
            }
        }
        latencies.push(start.elapsed());
    }
    latencies.sort();
    let (p50, p90, max) = (latencies[9], latencies[17], latencies[19]);
    eprintln!(
        "command written -> ack visible over 20 commands: p50 {p50:?}, p90 {p90:?}, max {max:?}"
    );
    assert!(
        p50 < Duration::from_secs(2),
        "p50 {p50:?}: commands wait for a tick?"
    );
    let annotations: BTreeMap<String, String> =
        m.api.get(&m.lease).await.unwrap().annotations().clone();
    assert_eq!(annotations["hapair.io/priority"], "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_whose_lease_is_taken_over_by_a_new_pod_fences_and_writes_nothing_more() {
    let mut m = Member_::new("agent-lost").await;
    let agent = m.start(&kubeconfig_path(), (10, 1, 3));
    m.report(|_| true).await;
    let seq = m.command("SM/1").await;
    m.report(|r| acked(r) == seq).await;
    assert_eq!(m.role(), "SM\n");

    // A new pod of the member takes the Lease over (as its agent would at start).
    let new_pod = pod_uid();
    let patch = json!({"spec": {"holderIdentity": new_pod},
        "metadata": {"annotations": {"hapair.io/pod": new_pod, "hapair.io/state": "X"}}});
    let taken = m
        .api
        .patch(&m.lease, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    poll_file("role X after losing the Lease", T, || m.role() == "X\n").await;
    assert!(agent.output().contains("another pod holds the Lease"));

    // Two renewal intervals later the old agent has written nothing: the new pod's report stands.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let now = m.api.get(&m.lease).await.unwrap();
    assert_eq!(now.resource_version(), taken.resource_version());
    assert_eq!(m.standing(), valid(Priority::One, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_agent_fences_and_reports_x_before_it_exits() {
    let mut m = Member_::new("agent-term").await;
    let mut agent = m.start(&kubeconfig_path(), (10, 1, 3));
    m.report(|_| true).await;
    let seq = m.command("SM/1").await;
    m.report(|r| acked(r) == seq).await;
    assert_eq!(m.role(), "SM\n");

    let pid = agent.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let (lease, report) = m.report(|r| r.state == MemberState::X).await;
    assert!(
        report
            .fenced
            .as_deref()
            .is_some_and(|f| f.contains("SIGTERM")),
        "{report:?}"
    );
    assert!(
        report.stopping,
        "the member is down while its pod still runs"
    );
    assert_eq!(m.role(), "X\n");
    let status = agent.child.wait().unwrap();
    assert!(status.success(), "agent exit: {status}");
    assert_eq!(
        lease
            .annotations()
            .get("hapair.io/member-acked")
            .map(String::as_str),
        Some("SM/1"),
        "the member's last acknowledged command stays on the Lease"
    );
}
