//! The standby's side of replication (`SL`): pull the master's log, entry batch after batch.
//!
//! Each pull says where this log ends, `(epoch, index)`. The master answers with the entries
//! that follow (holding the pull up to a second when there are none), or says it has no such
//! entry: then this log has diverged (its own unreplicated history from an earlier epoch) and
//! its suffix is cut until it matches. A pull is sent only after the previous batch is on disk,
//! so a matching pull is what confirms those entries to the master. When the member leaves `SL`
//! this loop is dropped, and with it every confirmation.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::entry::Position;
use super::http::{EPOCH_END_HEADER, LAST_INDEX_HEADER, LOG_PATH};
use super::node::{Node, Refusal};
use axum::http::{HeaderMap, StatusCode};

/// A pull that takes longer than this (a held pull lasts [`super::node::LONG_POLL`]) has failed.
const PULL_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed pull (master down, refusing, unreachable).
const RETRY: Duration = Duration::from_millis(100);

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
enum PullError {
    #[error("cannot reach the master at {peer}: {reason}")]
    Unreachable { peer: String, reason: String },
    #[error("the master at {peer} answered {status}: {body}")]
    Refused {
        peer: String,
        status: StatusCode,
        body: String,
    },
    #[error(transparent)]
    Local(#[from] Refusal),
}

/// Follows the master at `peer` (host:port) until dropped.
pub async fn run(node: std::sync::Arc<Node>, peer: String) {
    let mut client = new_client();
    let mut last_problem = None;
    loop {
        match pull_once(&node, &client, &peer).await {
            Ok(()) => last_problem = None,
            Err(e) => {
                // A kept-alive connection goes where `peer` led when it was opened: through a
                // Service address, maybe to the former master, which now refuses every pull.
                // A new connection goes where `peer` leads now.
                client = new_client();
                node.set_level(false);
                let problem = e.to_string();
                if last_problem.as_ref() != Some(&problem) {
                    tracing::warn!(member = %node.member, %problem, "pull from the master failed; retrying");
                    last_problem = Some(problem);
                }
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

fn new_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn pull_once(
    node: &std::sync::Arc<Node>,
    client: &HttpClient,
    peer: &str,
) -> Result<(), PullError> {
    let after = node.last();
    let answer = get(client, peer, after).await?;
    let master_last = answer.number(LAST_INDEX_HEADER).unwrap_or(0);
    match answer.status {
        StatusCode::OK => {
            let now = node.append_from_master(answer.body.to_vec()).await?;
            node.set_level(now.index == master_last);
        }
        StatusCode::CONFLICT => {
            node.set_level(false);
            let epoch_end = answer.number(EPOCH_END_HEADER);
            node.cut_diverged(after, master_last, epoch_end).await?;
        }
        status => {
            return Err(PullError::Refused {
                peer: peer.to_string(),
                status,
                body: String::from_utf8_lossy(&answer.body).trim().to_string(),
            })
        }
    }
    Ok(())
}

/// The master's answer to one pull.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn number(&self, header: &str) -> Option<u64> {
        self.headers.get(header)?.to_str().ok()?.parse().ok()
    }
}

async fn get(client: &HttpClient, peer: &str, after: Position) -> Result<Answer, PullError> {
    let unreachable = |reason: String| PullError::Unreachable {
        peer: peer.to_string(),
        reason,
    };
    let uri = format!(
        "http://{peer}{LOG_PATH}?epoch={}&index={}",
        after.epoch, after.index
    )
    .parse()
    .map_err(|e| unreachable(format!("not a host:port address ({e})")))?;
    let exchange = async {
        let response = client
            .get(uri)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body: body.to_bytes(),
        })
    };
    tokio::time::timeout(PULL_TIMEOUT, exchange)
        .await
        .map_err(|_| unreachable(format!("no answer within {PULL_TIMEOUT:?}")))?
}
