//! The applications' own word: every `hapair-kv` container's log is followed from the moment it
//! runs, and each `write acknowledged` line (time, epoch) is kept. Two members accepted writes
//! at once when the time spans of two epochs' acknowledgements overlap.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::LogParams;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, ResourceExt};

/// One acknowledgement in an application's log.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedAck {
    pub pod: String,
    pub epoch: u64,
    /// Seconds since the Unix epoch, from the log line's own timestamp (one clock: one node).
    pub at: f64,
}

/// Follows the application container `container` of every pod of the pair.
pub struct AppLogs {
    acks: Arc<Mutex<Vec<LoggedAck>>>,
    task: tokio::task::JoinHandle<()>,
}

impl AppLogs {
    pub fn start(pods: Api<Pod>, pair: &str, container: &'static str) -> AppLogs {
        let acks = Arc::new(Mutex::new(Vec::new()));
        let sink = acks.clone();
        let selector = format!("hapair.io/pair={pair}");
        let task = tokio::spawn(async move {
            let mut followed = HashSet::new();
            let mut events = watcher(pods.clone(), watcher::Config::default().labels(&selector))
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(event) = events.next().await {
                let Ok(pod) = event else { continue };
                let Some(id) = running_container(&pod, container) else {
                    continue;
                };
                if followed.insert(id) {
                    tokio::spawn(follow(
                        pods.clone(),
                        pod.name_any(),
                        container,
                        sink.clone(),
                    ));
                }
            }
        });
        AppLogs { acks, task }
    }

    pub fn acks(&self) -> Vec<LoggedAck> {
        self.acks.lock().unwrap().clone()
    }
}

impl Drop for AppLogs {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The id of `container` when it is running in `pod`.
fn running_container(pod: &Pod, container: &str) -> Option<String> {
    let status = pod
        .status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == container)?;
    status.state.as_ref()?.running.as_ref()?;
    status.container_id.clone()
}

/// Follows one container's log until it ends (the container stopped).
async fn follow(pods: Api<Pod>, pod: String, container: &str, sink: Arc<Mutex<Vec<LoggedAck>>>) {
    let params = LogParams {
        container: Some(container.to_string()),
        follow: true,
        ..LogParams::default()
    };
    let Ok(stream) = pods.log_stream(&pod, &params).await else {
        return;
    };
    let mut lines = stream.lines();
    while let Ok(Some(line)) = lines.try_next().await {
        if let Some((at, epoch)) = parse_ack(&line) {
            let pod = pod.clone();
            sink.lock().unwrap().push(LoggedAck { pod, epoch, at });
        }
    }
}

/// `(time, epoch)` of a `write acknowledged` line of hapair-kv's text log.
pub fn parse_ack(line: &str) -> Option<(f64, u64)> {
    if !line.contains("write acknowledged") {
        return None;
    }
    let at = unix_seconds(line.split_whitespace().next()?)?;
    let epoch = line.split("epoch=").nth(1)?.split_whitespace().next()?;
    Some((at, epoch.parse().ok()?))
}

/// `2026-11-27T02:55:10.123456Z` as seconds since the Unix epoch.
fn unix_seconds(stamp: &str) -> Option<f64> {
    let (date, time) = stamp.strip_suffix('Z')?.split_once('T')?;
    let mut ymd = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (ymd.next()??, ymd.next()??, ymd.next()??);
    let mut hms = time.split(':');
    let (h, min): (i64, i64) = (hms.next()?.parse().ok()?, hms.next()?.parse().ok()?);
    let s: f64 = hms.next()?.parse().ok()?;
    let days = days_from_civil(y, m, d);
    Some((days * 86_400 + h * 3600 + min * 60) as f64 + s)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Pairs of epochs whose acknowledgements' time spans overlap: two members acknowledged writes
/// at once.
pub fn overlapping_epochs(acks: &[LoggedAck]) -> Vec<String> {
    let mut spans: BTreeMap<u64, (f64, f64, &str)> = BTreeMap::new();
    for a in acks {
        let span = spans.entry(a.epoch).or_insert((a.at, a.at, &a.pod));
        span.0 = span.0.min(a.at);
        span.1 = span.1.max(a.at);
    }
    let mut by_start: Vec<_> = spans.into_iter().collect();
    by_start.sort_by(|x, y| x.1 .0.total_cmp(&y.1 .0));
    by_start
        .windows(2)
        .filter(|w| w[1].1 .0 <= w[0].1 .1)
        .map(|w| {
            let ((e1, (_, end1, pod1)), (e2, (start2, _, pod2))) = (w[0], w[1]);
            format!(
                "epoch {e2} ({pod2}) acknowledged from {start2:.6} while epoch {e1} ({pod1}) \
                 still did until {end1:.6}"
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_acknowledgement_line_gives_its_time_and_epoch() {
        let line = "2026-11-27T02:55:10.250000Z  INFO hapair::kv::node: write acknowledged \
                    member=a role=M key=k-1 index=3 epoch=4";
        let (at, epoch) = parse_ack(line).unwrap();
        assert_eq!(epoch, 4);
        assert!((at - 1_795_748_110.25).abs() < 1e-3, "{at}");
        assert_eq!(parse_ack("2026-11-27T02:55:10Z INFO serving"), None);
    }

    fn ack(epoch: u64, at: f64) -> LoggedAck {
        LoggedAck {
            pod: format!("kv-{}", if epoch.is_multiple_of(2) { 'a' } else { 'b' }),
            epoch,
            at,
        }
    }

    #[test]
    fn only_overlapping_epochs_are_reported() {
        let fine = [ack(2, 1.0), ack(2, 2.0), ack(3, 2.5), ack(4, 3.0)];
        assert!(overlapping_epochs(&fine).is_empty());
        let bad = [ack(2, 1.0), ack(3, 2.0), ack(2, 2.5)];
        assert_eq!(overlapping_epochs(&bad).len(), 1);
    }
}
