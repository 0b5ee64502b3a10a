//! The HTTP API: `PUT`/`GET /kv/{key}` and `GET /kv` (the key list) for clients, `GET /ready` for the readiness probe and
//! `GET /log?epoch=E&index=I` for the standby's pulls. Handlers only translate: every rule is in
//! [`super::node`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use super::entry::Position;
use super::node::{Node, Pulled, Refusal};

/// Where the standby pulls the master's log.
pub const LOG_PATH: &str = "/log";
/// The master's last index, on every answer to a pull.
pub const LAST_INDEX_HEADER: &str = "x-kv-last-index";
/// On a diverged pull: the master's last index of the standby's last epoch, if it has one.
pub const EPOCH_END_HEADER: &str = "x-kv-epoch-end";
/// The state of the member that answered (`SM`, `M`, `SL`, `X`).
pub const ROLE_HEADER: &str = "x-kv-role";
/// Where an acknowledged write sits in the log.
pub const INDEX_HEADER: &str = "x-kv-index";

pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/kv", get(list_keys))
        .route("/kv/{key}", get(get_key).put(put_key))
        .route("/ready", get(ready))
        .route(LOG_PATH, get(pull))
        .with_state(node)
}

async fn put_key(State(node): State<Arc<Node>>, Path(key): Path<String>, value: Bytes) -> Response {
    match node.put(key, value.to_vec()).await {
        Ok((acting, at)) => (
            [
                (header(ROLE_HEADER), acting.state.to_string()),
                (header(INDEX_HEADER), at.index.to_string()),
            ],
            format!(
                "acknowledged at index {} (epoch {}, {})\n",
                at.index, at.epoch, acting.state
            ),
        )
            .into_response(),
        Err(refusal) => refused(refusal),
    }
}

async fn get_key(State(node): State<Arc<Node>>, Path(key): Path<String>) -> Response {
    let role = [(header(ROLE_HEADER), node.acting().state.to_string())];
    match node.get(&key) {
        Some(value) => (role, value).into_response(),
        None => (StatusCode::NOT_FOUND, role, format!("no key {key:?}\n")).into_response(),
    }
}

/// Every key, one per line: lets a checker compare thousands of acknowledged keys in one read.
async fn list_keys(State(node): State<Arc<Node>>) -> Response {
    let role = [(header(ROLE_HEADER), node.acting().state.to_string())];
    (role, node.key_list()).into_response()
}

async fn ready(State(node): State<Arc<Node>>) -> Response {
    match node.readiness() {
        Ok(why) => (StatusCode::OK, why + "\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why + "\n").into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct PullQuery {
    epoch: u64,
    index: u64,
}

async fn pull(State(node): State<Arc<Node>>, Query(q): Query<PullQuery>) -> Response {
    let after = Position {
        epoch: q.epoch,
        index: q.index,
    };
    match node.pull(after).await {
        Ok(Pulled::Entries { bytes, master_last }) => (
            [(header(LAST_INDEX_HEADER), master_last.to_string())],
            bytes,
        )
            .into_response(),
        Ok(Pulled::Diverged {
            master_last,
            epoch_end,
        }) => (
            StatusCode::CONFLICT,
            [
                (header(LAST_INDEX_HEADER), master_last.to_string()),
                (
                    header(EPOCH_END_HEADER),
                    epoch_end.map_or(String::new(), |e| e.to_string()),
                ),
            ],
            format!(
                "no entry ({}, {}) here: cut the log back\n",
                after.epoch, after.index
            ),
        )
            .into_response(),
        Err(refusal) => refused(refusal),
    }
}

fn refused(refusal: Refusal) -> Response {
    let status = match refusal {
        Refusal::Log(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, format!("{refusal}\n")).into_response()
}

fn header(name: &'static str) -> HeaderName {
    HeaderName::from_static(name)
}
