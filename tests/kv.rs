//! `hapair-kv`: two real processes on loopback, each with its own data directory and a role file
//! this test writes as the agent would. Waits poll a condition (timeouts are safety nets).

mod support;

use std::future::Future;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use axum::http::{Method, StatusCode};

use hapair::agent::role_file::RoleFile;
use support::LocalProcess;

const WAIT: Duration = Duration::from_secs(20);

/// One member: its directory (data, role file) and, while it runs, its process.
struct Member {
    name: &'static str,
    dir: tempfile::TempDir,
    port: u16,
    process: Option<LocalProcess>,
}

impl Member {
    fn new(name: &'static str) -> Member {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let member = Member {
            name,
            dir: tempfile::tempdir().unwrap(),
            port,
            process: None,
        };
        member.set_role("X");
        member
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn role_file(&self) -> PathBuf {
        self.dir.path().join("role")
    }

    /// Replaces the role file, atomically, as the agent does.
    fn set_role(&self, line: &str) {
        RoleFile::new(self.role_file(), None)
            .write_line(&format!("{line}\n"))
            .unwrap();
    }

    async fn start(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hapair-kv"));
        cmd.args(["--member", self.name, "--listen", &self.addr()])
            .arg("--role-file")
            .arg(self.role_file())
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .env("RUST_LOG", "info");
        self.process = Some(LocalProcess::start(&format!("kv-{}", self.name), cmd));
        let addr = self.addr();
        eventually(&format!("{} serving", self.name), || async {
            request(Method::GET, &addr, "/ready", "").await.is_ok()
        })
        .await;
    }

    /// Crash it (SIGKILL).
    fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Sets the role and waits for the application's `.applied` reply.
    async fn act(&self, line: &str) {
        self.set_role(line);
        let applied = self.dir.path().join("role.applied");
        let want = format!("{line}\n");
        eventually(&format!("{} applied {line}", self.name), || async {
            std::fs::read_to_string(&applied).is_ok_and(|a| a == want)
        })
        .await;
    }

    async fn put(&self, key: &str, value: &str) -> (StatusCode, String) {
        request(Method::PUT, &self.addr(), &format!("/kv/{key}"), value)
            .await
            .unwrap_or_else(|e| panic!("PUT {key} on {}: {e}", self.name))
    }

    async fn get(&self, key: &str) -> (StatusCode, String) {
        request(Method::GET, &self.addr(), &format!("/kv/{key}"), "")
            .await
            .unwrap_or_else(|e| panic!("GET {key} on {}: {e}", self.name))
    }

    async fn ready(&self) -> StatusCode {
        request(Method::GET, &self.addr(), "/ready", "")
            .await
            .map_or(StatusCode::BAD_GATEWAY, |(s, _)| s)
    }

    async fn wait_ready(&self) {
        eventually(&format!("{} ready", self.name), || async {
            self.ready().await == StatusCode::OK
        })
        .await;
    }

    /// The `write acknowledged` lines it logged.
    fn acknowledged(&self) -> usize {
        self.process
            .as_ref()
            .map_or(0, |p| p.output().matches("write acknowledged").count())
    }
}

async fn request(
    method: Method,
    addr: &str,
    path: &str,
    body: &str,
) -> Result<(StatusCode, String), String> {
    support::http(method, &format!("http://{addr}{path}"), body).await
}

/// Polls `condition` until it holds; panics after [`WAIT`].
async fn eventually<F, Fut>(what: &str, condition: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {WAIT:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A write that must stay unanswered (not acknowledged) while it is pending: started in the
/// background, checked for half a second (a negative can only be observed for a while).
async fn put_unanswered(member: &Member, key: &str, why: &str) -> Pending {
    let (addr, path) = (member.addr(), format!("/kv/{key}"));
    let mut pending = tokio::spawn(async move { request(Method::PUT, &addr, &path, "v").await });
    let early = tokio::time::timeout(Duration::from_millis(500), &mut pending).await;
    assert!(early.is_err(), "{why}: {early:?}");
    pending
}

type Pending = tokio::task::JoinHandle<Result<(StatusCode, String), String>>;

/// The pending write's answer, once there is one.
async fn answer(pending: Pending) -> (StatusCode, String) {
    tokio::time::timeout(WAIT, pending)
        .await
        .expect("the pending write is answered")
        .unwrap()
        .unwrap()
}

async fn put_all(member: &Member, keys: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut acked = Vec::new();
    for key in keys {
        let (status, body) = member.put(&key, &format!("value of {key}")).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "PUT {key} on {}: {body}",
            member.name
        );
        acked.push(key);
    }
    acked
}

async fn assert_holds(member: &Member, keys: &[String]) {
    for key in keys {
        let (status, body) = member.get(key).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, format!("value of {key}").as_str()),
            "{key} on {}",
            member.name
        );
    }
}

fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// Two members started, a `SM` and b `SL` following a, b level with a.
async fn pair_sm_sl() -> (Member, Member) {
    let (mut a, mut b) = (Member::new("a"), Member::new("b"));
    a.start().await;
    b.start().await;
    a.act("SM").await;
    b.act(&format!("SL {}", a.addr())).await;
    b.wait_ready().await;
    (a, b)
}

#[tokio::test]
async fn single_master_acknowledges_standby_refuses_then_catches_up() {
    let (a, b) = pair_sm_sl().await;
    let acked = put_all(&a, keys("k", 20)).await;

    let (status, body) = b.put("k-on-standby", "v").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("member b is SL, not a master"), "{body}");

    b.wait_ready().await;
    let (status, list) = request(Method::GET, &a.addr(), "/kv", "").await.unwrap();
    let mut expected: Vec<String> = acked.iter().map(|k| format!("{k}\n")).collect();
    expected.sort();
    assert_eq!(
        (status, list),
        (StatusCode::OK, expected.concat()),
        "the key list"
    );
    let level = a.get("k19").await;
    assert_eq!(level.0, StatusCode::OK);
    eventually("b holds every key", || async {
        b.get("k19").await.0 == StatusCode::OK
    })
    .await;
    assert_holds(&b, &acked).await;

    a.act("X").await;
    let (status, body) = a.put("k-after-x", "v").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("member a is X"), "{body}");
    assert_ne!(a.ready().await, StatusCode::OK, "X is never ready");
    assert_eq!(a.acknowledged(), 20);
    assert_eq!(b.acknowledged(), 0);
}

#[tokio::test]
async fn a_standby_starting_empty_is_not_ready_until_level() {
    let (mut a, mut b) = (Member::new("a"), Member::new("b"));
    a.start().await;
    a.act("SM").await;
    put_all(&a, keys("k", 50)).await;
    b.start().await;
    assert_ne!(b.ready().await, StatusCode::OK, "X before any role");
    b.act(&format!("SL {}", a.addr())).await;
    b.wait_ready().await;
    let (status, _) = b.get("k49").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "ready means level: the last key is there"
    );
}

#[tokio::test]
async fn master_acknowledges_only_what_the_standby_confirmed() {
    let (a, mut b) = pair_sm_sl().await;
    put_all(&a, keys("sm", 5)).await;
    a.act("M").await;
    put_all(&a, keys("m", 5)).await;
    assert_holds(&b, &keys("m", 5)).await;

    b.kill();
    let pending = put_unanswered(
        &a,
        "unconfirmed",
        "a write in M answered while the standby was down",
    )
    .await;

    b.start().await;
    b.act(&format!("SL {}", a.addr())).await;
    let (status, body) = answer(pending).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "acknowledged once the standby is back: {body}"
    );
    assert_eq!(b.get("unconfirmed").await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_master_whose_standby_was_promoted_acknowledges_nothing() {
    let (a, b) = pair_sm_sl().await;
    a.act("M").await;
    put_all(&a, keys("m", 3)).await;

    // As if a were cut off from the operator: b is promoted while a still reads M.
    b.act("SM").await;
    let why = "a stale master acknowledged a write its former standby never confirmed";
    let pending = put_unanswered(&a, "stale", why).await;
    a.act("X").await; // a fences itself
    let (status, body) = answer(pending).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("not acknowledged"), "{body}");
    assert_eq!(b.get("stale").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn failover_keeps_every_acknowledged_write_and_cuts_the_old_masters_divergent_suffix() {
    let (mut a, mut b) = pair_sm_sl().await;
    let mut acked = put_all(&a, keys("sm", 10)).await;
    a.act("M").await;
    acked.extend(put_all(&a, keys("m", 10)).await);

    // The standby fails; the master writes an entry nobody confirms, then fails too.
    b.kill();
    let pending = put_unanswered(
        &a,
        "unacknowledged",
        "a write in M answered without a standby",
    )
    .await;
    a.act("X").await;
    assert_eq!(answer(pending).await.0, StatusCode::SERVICE_UNAVAILABLE);
    a.kill();

    // The old standby takes over (4-4) and writes at the indexes a used.
    b.set_role("SM");
    b.start().await;
    b.act("SM").await;
    assert_holds(&b, &acked).await;
    acked.extend(put_all(&b, keys("after", 10)).await);

    // The old master comes back as SL: its unacknowledged entry is cut, it converges on b.
    a.set_role("X");
    a.start().await;
    a.act(&format!("SL {}", b.addr())).await;
    a.wait_ready().await;
    assert_holds(&a, &acked).await;
    assert_eq!(
        a.get("unacknowledged").await.0,
        StatusCode::NOT_FOUND,
        "divergent suffix cut"
    );
    assert_eq!(b.get("unacknowledged").await.0, StatusCode::NOT_FOUND);
    let cut = a.process.as_ref().unwrap().output();
    assert!(
        cut.contains("cutting entries the master does not have"),
        "{cut}"
    );

    // And b in M again waits for a: the pair is whole.
    b.act("M").await;
    acked.extend(put_all(&b, keys("whole", 3)).await);
    assert_holds(&a, &keys("whole", 3)).await;
}

/// The stall of a master's agent, as the chaos test found it: the master (a) is demoted while its
/// application keeps running, its standby (b) promoted, and a becomes b's standby through the
/// replication Service address, which still leads to a itself for a moment. a's first pull is
/// refused (a is no master); once the address leads to b, a must follow b. A kept-alive
/// connection would keep leading to a (conntrack) and a would never catch up.
#[tokio::test]
async fn a_standby_refused_through_a_service_address_reconnects_and_follows_the_new_master() {
    let (mut a, mut b) = (Member::new("a"), Member::new("b"));
    a.start().await;
    b.start().await;
    let service = ServiceAddress::start(&a.addr()).await;
    a.act("SM").await;
    b.act(&format!("SL {}", service.addr)).await;
    b.wait_ready().await;
    a.act("M").await;
    let mut acked = put_all(&a, keys("m", 5)).await;

    // 4-4: b is promoted and writes; a, still running, becomes SL through the Service address.
    a.act("X").await;
    b.act("SM").await;
    acked.extend(put_all(&b, keys("sm", 5)).await);
    let opened = service.connections();
    a.act(&format!("SL {}", service.addr)).await;
    eventually("a's pull reached the Service address", || async {
        service.connections() > opened
    })
    .await;
    assert_ne!(a.ready().await, StatusCode::OK, "a pulled from itself");
    service.lead_to(&b.addr());
    a.wait_ready().await;
    assert_holds(&a, &acked).await;
}

/// A Service address as kube-proxy makes it: each new connection goes where the address leads
/// at that moment, an open one keeps going where it went.
struct ServiceAddress {
    addr: String,
    target: std::sync::Arc<std::sync::Mutex<String>>,
    opened: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl ServiceAddress {
    async fn start(target: &str) -> ServiceAddress {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let service = ServiceAddress {
            addr: listener.local_addr().unwrap().to_string(),
            target: std::sync::Arc::new(std::sync::Mutex::new(target.to_string())),
            opened: Default::default(),
        };
        let (target, opened) = (service.target.clone(), service.opened.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                opened.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let to = target.lock().unwrap().clone();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        service
    }

    fn lead_to(&self, addr: &str) {
        *self.target.lock().unwrap() = addr.to_string();
    }

    fn connections(&self) -> usize {
        self.opened.load(std::sync::atomic::Ordering::SeqCst)
    }
}
