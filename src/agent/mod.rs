//! `hapair agent`: the member agent, a sidecar in each member pod and the only writer of that
//! member's priority record.
//!
//! It never decides. It reads its volume and reports what it says; it applies the command the
//! operator addressed to its pod (persist the record, then the role file, then acknowledge); it
//! renews its Lease; and, when it is processing and cannot renew, it fences itself (role `X`)
//! before the operator may promote the peer.
//!
//! - [`config`]: settings (environment, set by the operator) and their validation.
//! - [`apply`]: command → persist → role → ack, behind small I/O traits.
//! - [`acting`]: the acknowledged state and role file, shared with the fence guard.
//! - [`fence`]: the pure, monotonic fencing timer; [`guard`]: the thread that enforces it.
//! - [`role_file`]: the line the application reads; [`lease`]: the Lease (all Kubernetes I/O).

pub mod acting;
pub mod apply;
pub mod config;
pub mod fence;
pub mod guard;
pub mod lease;
pub mod role_file;

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::watcher;
use kube::Client;
use tokio::time::MissedTickBehavior;

use acting::{Acting, Shared};
use apply::Applier;
use fence::FenceTimer;
use lease::{LeaseError, LeaseMailbox};
use role_file::RoleFile;

use crate::store::{RecordStore, StoreError};

pub use config::{AgentArgs, Config, ConfigError};

/// How many times one event is re-evaluated after write conflicts before waiting for the next.
const MAX_CONFLICTS: usize = 5;
/// How often the application's reply is read while an acknowledgement waits for it (the
/// application polls its role file as often: hapair-kv every 50 ms).
const REPLY_POLL: Duration = Duration::from_millis(20);

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot read the member's volume: {0}")]
    Volume(#[source] StoreError),
    #[error("cannot write the role file {}: {source}; check the role directory's mount", .path.display())]
    RoleFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the fence guard thread: {0}")]
    Guard(#[source] io::Error),
    #[error(
        "cannot configure the Kubernetes client: {0}; in a pod check the service account, \
         outside one set KUBECONFIG"
    )]
    Kube(#[source] kube::Error),
}

/// Runs the agent until SIGTERM or SIGINT; then writes role `X` and returns.
pub async fn run(config: Config) -> Result<(), AgentError> {
    let store = RecordStore::new(
        config.volume.clone(),
        config.pair_uid.clone(),
        config.member,
    );
    let record = store.read().map_err(AgentError::Volume)?;
    tracing::info!(pod = %config.pod_name, uid = %config.pod_uid, member = %config.member,
        lease = %config.lease_name(), %record, "agent starting: state X");
    let role = RoleFile::new(config.role_file.clone(), config.peer_address.clone());
    let timer = FenceTimer::new(config.fence_budget(), Instant::now());
    let acting = Acting::start(role, timer)
        .map_err(|source| AgentError::RoleFile {
            path: config.role_file.clone(),
            source,
        })?
        .with_role_handshake(config.role_handshake);
    let shared = Shared::new(acting);
    guard::spawn(shared.clone()).map_err(AgentError::Guard)?;
    let applier = Applier::new(
        config.pod_uid.clone(),
        config.member,
        store,
        record.view(),
        shared.clone(),
    );
    let client = Client::try_default().await.map_err(AgentError::Kube)?;
    let mailbox = LeaseMailbox::new(
        client,
        &config.namespace,
        config.lease_name(),
        config.pod_uid.clone(),
        config.lease_duration,
        request_timeout(&config),
    );
    let agent = Agent {
        applier,
        mailbox,
        holding: false,
        lost: false,
    };
    agent.run(config.renew_interval).await;
    stop(&shared);
    Ok(())
}

/// A request slower than a renewal interval is abandoned; the next tick tries again.
fn request_timeout(config: &Config) -> Duration {
    config.renew_interval.max(Duration::from_secs(1))
}

fn stop(shared: &Shared<RoleFile>) {
    match shared.lock().stop() {
        Ok(()) => tracing::info!("agent stopping: role X"),
        Err(e) => tracing::error!(error = %e, "agent stopping: cannot write role X"),
    }
}

type LeaseWatch = Pin<Box<dyn Stream<Item = Result<Option<Lease>, watcher::Error>> + Send>>;

/// The run loop: each watch event or renewal tick re-evaluates the Lease.
struct Agent {
    applier: Applier<RecordStore, RoleFile>,
    mailbox: LeaseMailbox,
    /// True once this agent created or took over the Lease.
    holding: bool,
    /// Another pod took the Lease over: this agent's pod was replaced. It never takes the Lease
    /// back (two agents would take it from each other); it stays `X` and writes nothing more.
    lost: bool,
}

impl Agent {
    async fn run(mut self, renew_interval: Duration) {
        let mut watch: LeaseWatch = Box::pin(self.mailbox.watch());
        let mut tick = tokio::time::interval(renew_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut shutdown = Box::pin(shutdown_signal());
        loop {
            let awaiting = self.applier.awaiting_reply();
            let renew = tokio::select! {
                _ = tick.tick() => true,
                () = tokio::time::sleep(REPLY_POLL), if awaiting => false,
                event = watch.next() => {
                    if event.is_none() {
                        watch = Box::pin(self.mailbox.watch());
                    }
                    self.observe(event);
                    false
                }
                () = &mut shutdown => {
                    self.terminate().await;
                    return;
                }
            };
            self.turn(renew).await;
        }
    }

    fn observe(&mut self, event: Option<Result<Option<Lease>, watcher::Error>>) {
        match event {
            Some(Ok(lease)) => self.mailbox.observe(lease),
            Some(Err(e)) => tracing::debug!(error = %e, "watch interrupted; it resumes"),
            None => tracing::debug!("watch ended; restarted"),
        }
    }

    /// Evaluates the Lease once, again right away after a conflict (the Lease was re-read).
    async fn turn(&mut self, renew: bool) {
        for _ in 0..MAX_CONFLICTS {
            match self.try_turn(renew).await {
                Ok(()) => return,
                Err(LeaseError::Conflict { .. }) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot update the Lease; retrying on the next tick");
                    return;
                }
            }
        }
        tracing::warn!("the Lease kept changing under every write; retrying on the next tick");
    }

    /// The pod is stopping (SIGTERM): stop processing, then say so on the Lease, so the operator
    /// can promote the peer now instead of after the lease expires.
    async fn terminate(&mut self) {
        self.applier.terminating();
        if !self.holding || self.lost {
            return;
        }
        for _ in 0..MAX_CONFLICTS {
            // A new pod of the member may have taken the Lease over: its report stands, and
            // writing ours would take the Lease back from it.
            if let Some(holder) = self.mailbox.other_holder() {
                tracing::info!(%holder, "another pod holds the Lease: not reporting");
                return;
            }
            match self.applier.step(Ok(None), true, &mut self.mailbox).await {
                Err(LeaseError::Conflict { .. }) => continue,
                Ok(()) => tracing::info!("reported X before stopping"),
                Err(e) => tracing::warn!(error = %e, "cannot report X before stopping"),
            }
            return;
        }
    }

    async fn try_turn(&mut self, renew: bool) -> Result<(), LeaseError> {
        if self.lost {
            return Ok(());
        }
        if !self.holding {
            self.mailbox.take_over(&self.applier.report()).await?;
            self.holding = true;
            tracing::info!(lease = %self.mailbox.name(), "holding the Lease");
        } else if self.mailbox.current().is_none() {
            self.mailbox
                .reload_or_create(&self.applier.report())
                .await?;
        }
        if self.mailbox.other_holder().is_some() {
            self.mailbox.refresh().await?;
        }
        if let Some(holder) = self.mailbox.other_holder() {
            self.applier.lost(&holder);
            self.lost = true;
            return Ok(());
        }
        let command = self.mailbox.command();
        let command = command.as_ref().map(Option::as_ref);
        self.applier.step(command, renew, &mut self.mailbox).await
    }
}

/// SIGTERM (the kubelet stopping the pod) or SIGINT; `hapair-kv` shares it.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
