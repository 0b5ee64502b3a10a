//! `hapair-kv`: the replicated key/value demo application, the app container of an example
//! `HAPair` (deploy/examples/kv.yaml). It shows what "handover data" means: a write a master
//! acknowledged survives any failover the protocol allows.
//!
//! # Contract with the agent
//! - It acts on the role file the agent writes (`SM`, `M`, `SL <peer>`, `SL`, `X`; missing or
//!   garbled reads as `X`), polled every 50 ms ([`role::POLL`]).
//! - After acting on a line it replaces `<role file>.applied` (atomically) with that line:
//!   for `X` and `SL` once it stopped accepting writes, for `SM` once its new master epoch is on
//!   disk, and for `M` only once the standby confirmed every entry this member holds (so every
//!   write acknowledged so far). The agent waits for it before acknowledging `M` when the
//!   HAPair sets `roleHandshake: true` (deploy/examples/kv.yaml does).
//! - `SL` without an address uses `--peer` (`HAPAIR_KV_PEER`); with neither it only waits.
//!
//! # Semantics
//! - `PUT /kv/{key}` (body = value) is acknowledged (200) only after the entry is fsynced in the
//!   member's log (`<data dir>/kv.log`), and in `M` also confirmed by the standby (synchronous
//!   replication); in `SM` the local fsync suffices. In `SL`/`X`, or when the member leaves its
//!   master epoch before acknowledging, 503 with the reason. `GET /kv/{key}` reads any state
//!   (header `x-kv-role` says which); `GET /kv` lists every key, one per line.
//! - `SL` pulls the master's log ([`follower`]), cuts any suffix the master does not have
//!   (log matching on `(epoch, index)`, [`epoch`]) and answers `GET /ready` with 200 only when
//!   level with the master. `SM`/`M` are always ready, `X` never.
//! - A member that is no longer `SL` stops pulling, hence stops confirming: a stale master in
//!   `M` can no longer acknowledge anything.
//! - Every acknowledged write is logged (`write acknowledged`, with member, role, key, index,
//!   epoch), so a test can check that two members never acknowledged writes at once.

pub mod entry;
pub mod epoch;
pub mod follower;
pub mod http;
pub mod log;
pub mod node;
pub mod role;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use tokio::sync::watch;

use crate::protocol::{Member, MemberState};
use node::Node;
use role::RoleLine;

/// `hapair-kv`'s settings, from the environment or flags.
#[derive(Debug, Clone, Args)]
pub struct KvArgs {
    /// Which member this is (a or b): member a opens even master epochs, b odd ones. In a pod,
    /// from the label hapair.io/member through the downward API.
    #[arg(long, env = "HAPAIR_MEMBER", value_name = "a|b")]
    pub member: Member,
    /// The role file the agent writes.
    #[arg(
        long,
        env = "HAPAIR_ROLE_FILE",
        value_name = "PATH",
        default_value = "/run/hapair/role"
    )]
    pub role_file: PathBuf,
    /// Where the log lives: a directory on the member volume.
    #[arg(
        long,
        env = "HAPAIR_KV_DATA_DIR",
        value_name = "DIR",
        default_value = "/var/lib/hapair/data/kv"
    )]
    pub data_dir: PathBuf,
    /// Address to serve HTTP on.
    #[arg(
        long,
        env = "HAPAIR_KV_LISTEN",
        value_name = "ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub listen: SocketAddr,
    /// The master's host:port when the role line is a bare `SL`.
    #[arg(long, env = "HAPAIR_KV_PEER", value_name = "HOST:PORT")]
    pub peer: Option<String>,
}

/// Why `hapair-kv` stopped.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error(transparent)]
    Log(#[from] log::LogError),
    #[error("cannot listen on {addr}: {source}; pick a free address with --listen")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Serves until SIGTERM or SIGINT.
pub async fn run(args: KvArgs) -> Result<(), KvError> {
    let node = Node::open(args.member, &args.data_dir)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| KvError::Listen {
            addr: args.listen,
            source,
        })?;
    tracing::info!(member = %args.member, listen = %args.listen, data_dir = %args.data_dir.display(),
        role_file = %args.role_file.display(), "serving");
    let roles = role::watch(args.role_file.clone());
    tokio::spawn(follow_roles(node.clone(), roles, args));
    axum::serve(listener, http::router(node))
        .with_graceful_shutdown(crate::agent::shutdown_signal())
        .await
        .map_err(KvError::Serve)
}

/// Acts on each role line until the next one replaces it.
async fn follow_roles(node: Arc<Node>, mut roles: watch::Receiver<RoleLine>, args: KvArgs) {
    loop {
        let line = roles.borrow_and_update().clone();
        tokio::select! {
            () = act(&node, &line, &args) => {}
            changed = roles.changed() => if changed.is_err() { return },
        }
    }
}

/// Acts in `line`'s state, replies with `.applied`, then keeps acting (as `SL`: following the
/// master) until dropped for the next line.
async fn act(node: &Arc<Node>, line: &RoleLine, args: &KvArgs) {
    let peer = line.peer.clone().or_else(|| args.peer.clone());
    match line.state {
        MemberState::X | MemberState::SL => node.become_state(line.state, 0),
        state => {
            if let Err(e) = node.become_master(state).await {
                tracing::error!(member = %node.member, error = %e, "cannot open a master epoch: acting as X");
                return std::future::pending().await;
            }
            if state == MemberState::M {
                node.standby_confirms_everything().await;
            }
        }
    }
    if let Err(e) = role::write_applied(&args.role_file, line) {
        tracing::error!(error = %e, "cannot write the .applied reply next to the role file");
    }
    match (line.state, peer) {
        (MemberState::SL, Some(peer)) => follower::run(node.clone(), peer).await,
        (MemberState::SL, None) => {
            tracing::error!(member = %node.member, "SL without a master address: set HAPAIR_KV_PEER or have the agent write `SL <host:port>`");
        }
        _ => {}
    }
    std::future::pending().await
}
