//! Cost of one durable record write (temp, fsync, rename, fsync dir) against a bare write+fsync
//! of a file of the same size in the same directory. Goal: at most 2x the bare write.
//!
//! `cargo bench --bench record_write` measures (HAPAIR_BENCH_DIR picks the filesystem, default
//! the system temp dir; HAPAIR_BENCH_ITERS the iterations, default 300). Run without `--bench`
//! (as `cargo test --all-targets` does) it only checks that both paths work, in a few writes.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use hapair::protocol::{Member, Priority, Standing, Term};
use hapair::store::{RecordStore, RECORD_DIR};

const PAIR: &str = "0b8e6a52-5c1e-4d7e-9f3a-2f6c1d0e9a11";

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let iters = if measuring { iterations() } else { 3 };
    let volume = bench_dir();
    let store = RecordStore::new(volume.path().to_path_buf(), PAIR, Member::A);
    store.write(standing(0)).expect("first record write"); // creates .hapair/ outside the timing
    let size = fs::metadata(store.record_path())
        .expect("record written")
        .len() as usize;
    let bare = volume.path().join(RECORD_DIR).join("bare");
    let (durable, plain) = measure(iters, &store, &bare, size);
    if !measuring {
        println!("record_write: smoke run ok ({iters} writes each); cargo bench measures");
        return;
    }
    report(volume.path(), size, &durable, &plain);
}

fn iterations() -> usize {
    std::env::var("HAPAIR_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
        .max(1)
}

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("HAPAIR_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .expect("benchmark directory")
}

fn standing(i: usize) -> Standing {
    let priority = [Priority::One, Priority::Two, Priority::Three][i % 3];
    Standing::new(priority, Term(1_000 + i as u64))
}

/// Alternates the two kinds of write so both see the same disk conditions.
fn measure(
    iters: usize,
    store: &RecordStore,
    bare: &Path,
    size: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    let payload = vec![b'x'; size];
    let (mut durable, mut plain) = (Vec::new(), Vec::new());
    for i in 0..iters {
        let start = Instant::now();
        store.write(standing(i)).expect("durable record write");
        durable.push(start.elapsed());
        let start = Instant::now();
        bare_write(bare, &payload);
        plain.push(start.elapsed());
    }
    (durable, plain)
}

fn bare_write(path: &Path, payload: &[u8]) {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .expect("open bare file");
    file.write_all(payload).expect("write bare file");
    file.sync_all().expect("fsync bare file");
}

struct Stats {
    mean: Duration,
    p50: Duration,
    p99: Duration,
}

fn stats(samples: &[Duration]) -> Stats {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    Stats {
        mean: sorted.iter().sum::<Duration>() / sorted.len() as u32,
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn report(dir: &Path, size: usize, durable: &[Duration], plain: &[Duration]) {
    let (d, p) = (stats(durable), stats(plain));
    println!(
        "record_write: {} writes of {size} bytes in {}",
        durable.len(),
        dir.display()
    );
    let row = |name: &str, s: &Stats| {
        println!(
            "  {name:<30} mean {:>9.1?}  p50 {:>9.1?}  p99 {:>9.1?}",
            s.mean, s.p50, s.p99
        )
    };
    row("durable record write", &d);
    row("bare write+fsync (same size)", &p);
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "  ratio durable/bare: mean {:.2}x  p50 {:.2}x  p99 {:.2}x  (goal <= 2x)",
        ratio(d.mean, p.mean),
        ratio(d.p50, p.p50),
        ratio(d.p99, p.p99)
    );
}
