//! A member's missing pod is created: the first time, or again after it was deleted (that is the
//! member's recovery), paced by the member's [`Backoff`]. A re-creation is a Normal Event
//! (`MemberPodRecreated`); a re-creation held back is a Warning (`MemberPodBackOff`, once per
//! wait) and the `Degraded` condition's reason while it lasts.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use tracing::info;

use crate::crd::HAPair;
use crate::protocol::{Member, MemberState, MemberView, Observation, PerMember};

use super::backoff::{Backoff, Verdict, MAX_DELAY, STABLE};
use super::{outdated, publish, resources, Context, Error};

/// A member whose pod is missing and not recreated yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldBack {
    pub member: Member,
    pub pod: String,
    pub remaining: Duration,
    pub delay: Duration,
    pub recreations: u32,
}

impl HeldBack {
    /// Why, without the remaining time: the condition keeps one text for the whole wait.
    pub fn reason(&self) -> String {
        format!(
            "member {}'s pod {} was recreated {} time(s) without the member staying in the pair \
             for {:?}: it is recreated again {:?} after the last creation (doubling up to {:?})",
            self.member, self.pod, self.recreations, STABLE, self.delay, MAX_DELAY
        )
    }
}

/// Creates each member's pod that `pods` (just read) lacks, if its back-off allows, and puts
/// the created pod in `pods`; returns the members held back.
pub async fn ensure_member_pods(
    pair: &HAPair,
    ctx: &Context,
    api: &Api<Pod>,
    pods: &mut PerMember<Option<Pod>>,
) -> Result<Vec<HeldBack>, Error> {
    let mut held = Vec::new();
    for m in Member::BOTH {
        let pod = pods.get_mut(m);
        if pod.is_none() {
            match ensure_member_pod(pair, ctx, api, m).await? {
                Ok(created) => *pod = created,
                Err(waiting) => held.push(waiting),
            }
        }
    }
    Ok(held)
}

/// The missing pod of `m`, created (`None` only if it vanished again at once), or why not yet.
async fn ensure_member_pod(
    pair: &HAPair,
    ctx: &Context,
    api: &Api<Pod>,
    m: Member,
) -> Result<Result<Option<Pod>, HeldBack>, Error> {
    let name = resources::member_name(&pair.name_any(), m);
    let key = key(pair, m);
    match ctx.backoffs.with(&key, |b| b.missing(Instant::now())) {
        Verdict::Create { recreation } => {
            let pod = create(api, pair, ctx, m).await?;
            ctx.backoffs.with(&key, |b| b.created(Instant::now()));
            if let Some(n) = recreation {
                let note = format!(
                    "member {m}'s pod {name} was gone: recreated (its recovery; re-creation {n} \
                     since the member last stayed in the pair)"
                );
                publish(ctx, pair, EventType::Normal, "MemberPodRecreated", note).await;
            }
            Ok(Ok(pod))
        }
        Verdict::Wait {
            remaining,
            delay,
            recreations,
            first,
        } => {
            let held = HeldBack {
                member: m,
                pod: name,
                remaining,
                delay,
                recreations,
            };
            if first {
                let note = format!(
                    "{}; next attempt in {remaining:.1?}. Find out why it stops: kubectl describe \
                     pod {}, and the namespace's Events",
                    held.reason(),
                    held.pod
                );
                publish(ctx, pair, EventType::Warning, "MemberPodBackOff", note).await;
            }
            Ok(Err(held))
        }
    }
}

async fn create(
    api: &Api<Pod>,
    pair: &HAPair,
    ctx: &Context,
    m: Member,
) -> Result<Option<Pod>, Error> {
    let mut pod = resources::pod(pair, m, &ctx.agent_image);
    outdated::stamp(&mut pod);
    match api.create(&PostParams::default(), &pod).await {
        Ok(p) => {
            info!(pod = %p.name_any(), "created");
            Ok(Some(p))
        }
        // Created meanwhile (another replica during a leader handover): it exists, as wanted.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(api.get_opt(&pod.name_any()).await?),
        Err(e) => Err(e.into()),
    }
}

/// Tells each member's back-off whether its pod exists and its member is in the pair.
pub fn observe(
    pair: &HAPair,
    ctx: &Context,
    obs: &Observation,
    pods: PerMember<bool>,
    now: Instant,
) {
    for m in Member::BOTH {
        if *pods.get(m) {
            let joined = in_pair(obs.member(m));
            ctx.backoffs
                .with(&key(pair, m), |b: &mut Backoff| b.observe(joined, now));
        }
    }
}

/// Acknowledged a state of the pair (`SL`, `M`, `SM`) in its current pod.
fn in_pair(view: &MemberView) -> bool {
    matches!(view, MemberView::Up { state, .. } if *state != MemberState::X)
}

/// By pair UID: a pair deleted and created again under the same name starts afresh.
fn key(pair: &HAPair, m: Member) -> String {
    let id = pair.uid().unwrap_or_else(|| {
        format!(
            "{}/{}",
            pair.namespace().unwrap_or_default(),
            pair.name_any()
        )
    });
    format!("{id}/{m}")
}
