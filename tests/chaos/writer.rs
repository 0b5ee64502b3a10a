//! The client: writes unique keys one after another through the master Service, as an
//! application would, and records every write the pair acknowledged (HTTP 200). A write that
//! failed or timed out is not acknowledged: it may or may not survive, and nothing is claimed
//! about it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use tokio::time::Instant;

/// A write the pair acknowledged.
#[derive(Debug, Clone)]
pub struct Acked {
    pub key: String,
    /// The master epoch it was acknowledged in (from the reply): even for member a, odd for b.
    pub epoch: u64,
    pub at: Instant,
}

/// Give up on a write after this long (it is then not acknowledged).
const TIMEOUT: Duration = Duration::from_secs(3);
/// Pause between writes: about 50 writes a second, a load the 2-core machine carries beside the
/// cluster.
const PACE: Duration = Duration::from_millis(20);

/// The writer task and what it recorded.
pub struct Writer {
    acked: Arc<Mutex<Vec<Acked>>>,
    attempts: Arc<Mutex<u64>>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    /// Writes `<prefix>-1`, `<prefix>-2`, … (value = key) to `http://<service>/kv/<key>`.
    pub fn start(service: String, prefix: &str) -> Writer {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let attempts = Arc::new(Mutex::new(0));
        let (log, tries, prefix) = (acked.clone(), attempts.clone(), prefix.to_string());
        let task = tokio::spawn(async move {
            for n in 1.. {
                let key = format!("{prefix}-{n}");
                *tries.lock().unwrap() += 1;
                if let Some(epoch) = put(&service, &key).await {
                    let at = Instant::now();
                    log.lock().unwrap().push(Acked { key, epoch, at });
                }
                tokio::time::sleep(PACE).await;
            }
        });
        Writer {
            acked,
            attempts,
            task,
        }
    }

    /// Every acknowledged write so far, in acknowledgement order.
    pub fn acked(&self) -> Vec<Acked> {
        self.acked.lock().unwrap().clone()
    }

    pub fn attempts(&self) -> u64 {
        *self.attempts.lock().unwrap()
    }

    /// The first write acknowledged at or after `since`.
    pub fn first_ack_since(&self, since: Instant) -> Option<Acked> {
        let acked = self.acked.lock().unwrap();
        let from = acked.partition_point(|a| a.at < since);
        acked.get(from).cloned()
    }

    /// The first write acknowledged after `since` in an epoch newer than the last one
    /// acknowledged before it.
    pub fn first_ack_of_a_newer_epoch(&self, since: Instant) -> Option<Acked> {
        let acked = self.acked.lock().unwrap();
        let from = acked.partition_point(|a| a.at < since);
        let before = from.checked_sub(1).map_or(0, |i| acked[i].epoch);
        acked[from..].iter().find(|a| a.epoch > before).cloned()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One PUT; the epoch of its acknowledgement, or `None` when it was not acknowledged.
async fn put(service: &str, key: &str) -> Option<u64> {
    let url = format!("http://{service}/kv/{key}");
    let reply = tokio::time::timeout(TIMEOUT, crate::support::http(Method::PUT, &url, key)).await;
    match reply {
        Ok(Ok((StatusCode::OK, body))) => Some(epoch_of(&body)),
        _ => None,
    }
}

/// The epoch in `acknowledged at index 7 (epoch 4, M)`.
fn epoch_of(body: &str) -> u64 {
    body.split("(epoch ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("an acknowledgement without an epoch: {body:?}"))
}

/// Acknowledgements whose epoch is older than an earlier acknowledgement's: an old master still
/// acknowledged after a newer one had: two members accepted writes at once.
pub fn out_of_epoch_order(acked: &[Acked]) -> Vec<String> {
    let mut newest: Option<&Acked> = None;
    let mut found = Vec::new();
    for a in acked {
        match newest {
            Some(n) if a.epoch < n.epoch => found.push(format!(
                "{} acknowledged in epoch {} after {} in epoch {}",
                a.key, a.epoch, n.key, n.epoch
            )),
            Some(n) if a.epoch == n.epoch => {}
            _ => newest = Some(a),
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(key: &str, epoch: u64) -> Acked {
        Acked {
            key: key.into(),
            epoch,
            at: Instant::now(),
        }
    }

    #[test]
    fn the_epoch_is_read_from_the_reply() {
        assert_eq!(epoch_of("acknowledged at index 7 (epoch 12, M)\n"), 12);
    }

    #[test]
    fn an_older_epoch_after_a_newer_one_is_reported() {
        let fine = [ack("k1", 2), ack("k2", 2), ack("k3", 5), ack("k4", 6)];
        assert!(out_of_epoch_order(&fine).is_empty());
        let bad = [ack("k1", 2), ack("k2", 5), ack("k3", 2)];
        assert_eq!(
            out_of_epoch_order(&bad),
            ["k3 acknowledged in epoch 2 after k2 in epoch 5"]
        );
    }
}
