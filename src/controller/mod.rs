//! The operator (`hapair operator`): a kube-runtime `Controller` on `HAPair` that observes each
//! pair, asks [`protocol::decide`](crate::protocol::decide) what to do, records it in the status
//! and carries it out. It holds no state that decides (DESIGN invariant 4): every reconcile starts
//! from what the API server shows; the only memory is when each Lease was last seen renewed
//! ([`liveness`]), which can only delay a failover.
//!
//! Reconcile, in named steps: ensure objects → delete ended member pods ([`ended`]) → observe →
//! decide → write status (+ Events) → act (unless paused) → requeue.

pub mod act;
pub mod backoff;
pub mod ended;
pub mod liveness;
pub mod observe;
pub mod outdated;
pub mod recreate;
pub mod resources;
pub mod status;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role as RbacRole, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;
use tracing::{info, instrument, warn};

use crate::crd::{HAPair, ANNOTATION_FORCE_START, ANNOTATION_PAUSED, LABEL_PAIR};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::protocol::{decide, Decision, ForceStartVerdict, Member, PerMember, Role};

use self::backoff::Backoffs;
use self::liveness::Liveness;
use self::observe::MemberObjects;
use self::recreate::HeldBack;
use self::status::Held;

/// The field manager and Event reporter of the operator.
pub const MANAGER: &str = "hapair-operator";

/// What went wrong in one reconcile, on which object.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("the {0} of member {1} is gone: it is recreated on the next reconcile")]
    Gone(&'static str, Member),
    #[error("HAPair has no namespace (it is a namespaced resource)")]
    NoNamespace,
}

impl Error {
    /// The `error` label of the reconcile error metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Gone(..) => "gone",
            Error::NoNamespace => "no_namespace",
        }
    }
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    /// Who publishes the Events (a fresh [`Recorder`] each time: see [`publish`]).
    pub reporter: Reporter,
    /// The agent image when the spec names none.
    pub agent_image: String,
    pub liveness: Liveness,
    /// The re-creation back-off of each member pod (pacing only: decides nothing).
    pub backoffs: Backoffs,
    /// Which outdated member pods were reported.
    pub outdated: outdated::Reported,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
}

/// Runs the operator until the process is stopped.
pub async fn run(
    client: Client,
    namespace: Option<String>,
    agent_image: String,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) {
    let api = |c: &Client| -> (Api<HAPair>, Api<Pod>, Api<Lease>) {
        match &namespace {
            Some(ns) => (
                Api::namespaced(c.clone(), ns),
                Api::namespaced(c.clone(), ns),
                Api::namespaced(c.clone(), ns),
            ),
            None => (
                Api::all(c.clone()),
                Api::all(c.clone()),
                Api::all(c.clone()),
            ),
        }
    };
    let (pairs, pods, leases) = api(&client);
    let owned = watcher::Config::default().labels(LABEL_PAIR);
    let reporter = Reporter {
        controller: MANAGER.to_string(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let context = Arc::new(Context {
        reporter,
        client,
        agent_image,
        liveness: Liveness::default(),
        backoffs: Backoffs::default(),
        outdated: outdated::Reported::default(),
        metrics,
        health,
    });
    Controller::new(pairs, watcher::Config::default())
        .owns(pods, owned.clone())
        .owns(leases, owned)
        .shutdown_on_signal()
        .run(observed_reconcile, error_policy, context)
        .for_each(|result| async move {
            match result {
                Ok((pair, _)) => tracing::debug!(%pair, "reconciled"),
                Err(e) => warn!("reconcile failed: {e}"),
            }
        })
        .await;
}

/// Retries a failed reconcile soon: every step is idempotent and preconditioned.
fn error_policy(_pair: Arc<HAPair>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!("{error}; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// Requeue interval: lease expiry is judged by time, so every pair is looked at often.
const REQUEUE: Duration = Duration::from_secs(1);

/// Every reconcile is counted, timed, and tracked for `/healthz` while it runs.
async fn observed_reconcile(pair: Arc<HAPair>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_started(&pair);
    let _running = ctx.health.reconciling(&pair);
    let result = reconcile(Arc::clone(&pair), Arc::clone(&ctx)).await;
    if let Err(e) = &result {
        ctx.metrics.reconcile_failed(&pair, e.metric_label());
    }
    result
}

#[instrument(skip_all, fields(pair = %cached.name_any(), namespace = cached.namespace()))]
async fn reconcile(cached: Arc<HAPair>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = cached.namespace().ok_or(Error::NoNamespace)?;
    // Read afresh: the watch cache may still lack the previous reconcile's status write, and the
    // status holds what was recorded before acting (processing terms, restart baselines).
    let pairs: Api<HAPair> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(pair) = pairs.get_opt(&cached.name_any()).await? else {
        return Ok(Action::await_change());
    };
    ensure_objects(&pair, &ctx, &ns).await?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), &ns);
    let name = pair.name_any();
    let mut pod = PerMember::new(
        pods.get_opt(&resources::member_name(&name, Member::A))
            .await?,
        pods.get_opt(&resources::member_name(&name, Member::B))
            .await?,
    );
    ended::delete_ended_pods(&pair, &ctx, &pods, &pod).await?;
    let held_back = recreate::ensure_member_pods(&pair, &ctx, &pods, &mut pod).await?;
    let lease = PerMember::new(
        leases
            .get_opt(&resources::member_name(&name, Member::A))
            .await?,
        leases
            .get_opt(&resources::member_name(&name, Member::B))
            .await?,
    );
    let duration = Duration::from_secs(pair.spec.lease.duration_seconds.into());
    let now = Instant::now();
    let clock = |l: &Lease| {
        let may_process = observe::holder_may_process(l);
        ctx.liveness.observe(l, may_process, duration, now)
    };
    let objects = |m: Member| MemberObjects {
        pod: pod.get(m).as_ref(),
        lease: lease.get(m).as_ref(),
        clock: lease.get(m).as_ref().map(clock).unwrap_or_default(),
    };
    let obs = observe::observe(
        &pair,
        PerMember::new(objects(Member::A), objects(Member::B)),
    );
    let exists = PerMember::new(pod.a.is_some(), pod.b.is_some());
    recreate::observe(&pair, &ctx, &obs, exists, now);
    let decision = decide(&obs);
    let held = Held {
        paused: is_paused(&pair),
        pod_backoff: held_back.first().map(HeldBack::reason),
    };
    let requeue = held_back
        .iter()
        .map(|h| h.remaining)
        .fold(REQUEUE, Duration::min);
    write_status(&pair, &ctx, &obs, &decision, &pod, &held).await?;
    let pod_refs = PerMember::new(pod.a.as_ref(), pod.b.as_ref());
    ctx.outdated
        .report(&ctx, &pair, pod_refs, decision.pair_state)
        .await;
    if held.paused {
        return Ok(Action::requeue(requeue));
    }
    handle_force_start(&pair, &ctx, &decision).await?;
    if !decision.steps.is_empty() {
        info!(steps = ?decision.steps, "acting");
    }
    let targets = act::Targets {
        pods: &pods,
        leases: &leases,
        pod: PerMember::new(pod.a.as_ref(), pod.b.as_ref()),
        lease: PerMember::new(lease.a.as_ref(), lease.b.as_ref()),
    };
    act::act(&decision.steps, &targets).await?;
    Ok(Action::requeue(requeue))
}

fn is_paused(pair: &HAPair) -> bool {
    pair.spec.paused
        || pair
            .annotations()
            .get(ANNOTATION_PAUSED)
            .map(String::as_str)
            == Some("true")
}

/// Creates whatever object of the pair is missing, except the member pods ([`recreate`]: they
/// are recreated with back-off). Existing objects are left as they are.
async fn ensure_objects(pair: &HAPair, ctx: &Context, ns: &str) -> Result<(), Error> {
    let c = &ctx.client;
    for m in Member::BOTH {
        create_missing(c, ns, resources::claim(pair, m)).await?;
        create_missing(c, ns, resources::service_account(pair, m)).await?;
        create_missing(c, ns, resources::role(pair, m)).await?;
        create_missing(c, ns, resources::role_binding(pair, m)).await?;
        create_missing(c, ns, resources::lease(pair, m)).await?;
    }
    create_missing(c, ns, resources::service(pair, Role::Master)).await?;
    create_missing(c, ns, resources::service(pair, Role::Standby)).await?;
    Ok(())
}

async fn create_missing<K>(client: &Client, ns: &str, object: K) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let name = object.meta().name.clone().unwrap_or_default();
    if api.get_opt(&name).await?.is_some() {
        return Ok(());
    }
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => {
            info!(kind = K::kind(&()).as_ref(), %name, "created");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn write_status(
    pair: &HAPair,
    ctx: &Context,
    obs: &crate::protocol::Observation,
    decision: &Decision,
    pod: &PerMember<Option<Pod>>,
    held: &Held,
) -> Result<(), Error> {
    let old = pair.status.clone().unwrap_or_default();
    let (new, entry) = status::next_status(
        &old,
        obs,
        decision,
        PerMember::new(pod.a.as_ref(), pod.b.as_ref()),
        pair.metadata.generation,
        held,
        Time(Timestamp::now()),
    );
    ctx.metrics.observe_status(pair, &new, entry.as_ref());
    if new != old {
        let api: Api<HAPair> =
            Api::namespaced(ctx.client.clone(), &pair.namespace().unwrap_or_default());
        let patch = json!({"status": new});
        api.patch_status(
            &pair.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    }
    if let Some(entry) = entry {
        let seed = entry
            .transition
            .as_ref()
            .map_or(String::new(), |t| format!(" [{t}]"));
        let note = format!("{} -> {}{seed}: {}", entry.from, entry.to, entry.reason);
        info!("{note}");
        publish(ctx, pair, EventType::Normal, "PairStateChanged", note).await;
    }
    Ok(())
}

/// Force-start: a refused request is removed with a Warning saying why; a fulfilled one is
/// removed; an accepted one stays until the member acknowledged.
async fn handle_force_start(
    pair: &HAPair,
    ctx: &Context,
    decision: &Decision,
) -> Result<(), Error> {
    let (event_type, reason, note) = match &decision.force_start {
        None | Some(ForceStartVerdict::Accepted(_)) => return Ok(()),
        Some(ForceStartVerdict::Refused(why)) => {
            (EventType::Warning, "ForceStartRefused", why.clone())
        }
        Some(ForceStartVerdict::Invalid(why)) => {
            (EventType::Warning, "ForceStartInvalid", why.clone())
        }
        Some(ForceStartVerdict::Fulfilled(m)) => (
            EventType::Normal,
            "ForceStartFulfilled",
            format!("member {m} was force-started and processes"),
        ),
    };
    let api: Api<HAPair> =
        Api::namespaced(ctx.client.clone(), &pair.namespace().unwrap_or_default());
    let patch = json!({"metadata": {"annotations": {ANNOTATION_FORCE_START: null}}});
    api.patch(
        &pair.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    publish(ctx, pair, event_type, reason, note).await;
    Ok(())
}

/// Events are for people: failing to publish one is logged, never fails the reconcile.
///
/// Each Event is a happening of its own, published once (a change of the pair state, a
/// re-creation, a verdict): a long-lived kube-runtime `Recorder` would fold every Event of the
/// same reason on the pair into one series for six minutes and keep only the first note, so the
/// second failover would still read as the first. A fresh `Recorder` per Event keeps each note.
async fn publish(ctx: &Context, pair: &HAPair, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: "Reconcile".to_string(),
        secondary: None,
    };
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    if let Err(e) = recorder.publish(&event, &pair.object_ref(&())).await {
        warn!("cannot publish Event {reason}: {e}");
    }
}

// Typed kinds the operator owns: named here so a reader finds the full list in one place.
#[allow(dead_code)]
type Owned = (
    Pod,
    Lease,
    PersistentVolumeClaim,
    Service,
    ServiceAccount,
    RbacRole,
    RoleBinding,
);
