//! PUT latency of `hapair-kv` as a single master (`SM`: acknowledged after the local fsync) and
//! as a master with a synchronous standby (`M`: also after the standby's fsync and its next
//! pull), two real processes on loopback, sequential writes.
//!
//! `cargo bench --bench kv_put` measures (HAPAIR_BENCH_DIR picks the filesystem, default the
//! system temp dir; HAPAIR_BENCH_ITERS the writes per state, default 500). Run without `--bench`
//! (as `cargo test --all-targets` does) it only checks both paths, in a few writes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::{Method, Request, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A running `hapair-kv`, killed on drop.
struct Kv {
    dir: PathBuf,
    addr: String,
    child: Child,
}

impl Kv {
    fn start(member: &str, root: &Path) -> Kv {
        let dir = root.join(member);
        std::fs::create_dir_all(&dir).expect("member directory");
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .to_string();
        let child = Command::new(env!("CARGO_BIN_EXE_hapair-kv"))
            .args(["--member", member, "--listen", &addr])
            .arg("--role-file")
            .arg(dir.join("role"))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("start hapair-kv");
        Kv { dir, addr, child }
    }

    /// Writes the role line and waits for the `.applied` reply.
    async fn act(&self, line: &str) {
        let tmp = self.dir.join(".role.tmp");
        std::fs::write(&tmp, format!("{line}\n")).expect("role file");
        std::fs::rename(&tmp, self.dir.join("role")).expect("role file");
        let applied = self.dir.join("role.applied");
        until(|| async { std::fs::read_to_string(&applied).is_ok_and(|a| a.trim() == line) }).await;
    }
}

impl Drop for Kv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn until<F: std::future::Future<Output = bool>>(condition: impl Fn() -> F) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "hapair-kv did not get there in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn call(
    client: &HttpClient,
    method: Method,
    url: String,
    body: &'static str,
) -> Option<StatusCode> {
    let request = Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .ok()?;
    let response = client.request(request).await.ok()?;
    let status = response.status();
    response.into_body().collect().await.ok()?;
    Some(status)
}

async fn puts(client: &HttpClient, kv: &Kv, prefix: &str, n: usize) -> Vec<Duration> {
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        let status = call(
            client,
            Method::PUT,
            format!("http://{}/kv/{prefix}{i}", kv.addr),
            "value",
        )
        .await;
        times.push(start.elapsed());
        assert_eq!(status, Some(StatusCode::OK), "PUT {prefix}{i}");
    }
    times
}

fn report(state: &str, times: &mut [Duration]) {
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    println!(
        "kv_put {state:>2}: {} writes  p50 {:>8.3} ms  p99 {:>8.3} ms  mean {:>8.3} ms",
        times.len(),
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        mean.as_secs_f64() * 1e3
    );
}

#[tokio::main]
async fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let iters = match measuring {
        true => std::env::var("HAPAIR_BENCH_ITERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(500)
            .max(1),
        false => 3,
    };
    let root = match std::env::var_os("HAPAIR_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .expect("benchmark directory");
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let (a, b) = (Kv::start("a", root.path()), Kv::start("b", root.path()));
    a.act("SM").await;
    b.act(&format!("SL {}", a.addr)).await;
    let ready = format!("http://{}/ready", b.addr);
    until(|| async { call(&client, Method::GET, ready.clone(), "").await == Some(StatusCode::OK) })
        .await;

    let mut sm = puts(&client, &a, "sm", iters).await;
    a.act("M").await;
    let mut m = puts(&client, &a, "m", iters).await;
    if !measuring {
        println!("kv_put: smoke run ok ({iters} writes in SM and in M); cargo bench measures");
        return;
    }
    println!(
        "kv_put: {} (sequential PUTs, 5-byte values, loopback)",
        root.path().display()
    );
    report("SM", &mut sm);
    report("M", &mut m);
}
