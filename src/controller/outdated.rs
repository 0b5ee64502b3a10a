//! Spec changes on running member pods. A pod's spec cannot change in place, and the operator
//! never deletes a member pod to apply one: deleting a member's pod is a failure of that member
//! (deleting the master's is a failover), which only the user may choose to cause, and in the
//! right order. So each member pod carries a hash of the spec it was created from
//! ([`ANNOTATION_SPEC_HASH`]); when the pod the operator would create now differs, a Normal Event
//! (`MemberPodsOutdated`) names the outdated pods and says what to do: delete the standby's pod
//! first, wait for the pair to be whole again, then the master's (a normal failover to the
//! updated standby).
//!
//! Pods created before the hash existed carry none and are never reported (nothing to compare).

use std::collections::HashSet;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::events::EventType;
use kube::ResourceExt;

use crate::crd::HAPair;
use crate::protocol::{Member, PairState, PerMember};

use super::{publish, resources, Context};

/// The hash of the pod spec a member pod was created from.
pub const ANNOTATION_SPEC_HASH: &str = "hapair.io/pod-spec-hash";

/// A stable hash (CRC-32 of its JSON: the same across operator builds) of a pod's spec.
pub fn spec_hash(pod: &Pod) -> String {
    let json = serde_json::to_vec(&pod.spec).unwrap_or_default();
    format!("{:08x}", crc32fast::hash(&json))
}

/// Records the hash of `pod`'s spec on it, before it is created.
pub fn stamp(pod: &mut Pod) {
    let hash = spec_hash(pod);
    pod.annotations_mut()
        .insert(ANNOTATION_SPEC_HASH.to_string(), hash);
}

/// The members whose pod was created from another spec than the one it would get now.
pub fn outdated(pair: &HAPair, agent_image: &str, pods: PerMember<Option<&Pod>>) -> Vec<Member> {
    Member::BOTH
        .into_iter()
        .filter(|m| {
            let Some(have) = pods
                .get(*m)
                .and_then(|p| p.annotations().get(ANNOTATION_SPEC_HASH))
            else {
                return false;
            };
            *have != spec_hash(&resources::pod(pair, *m, agent_image))
        })
        .collect()
}

/// What to tell the user: which pods, and the order that keeps a master processing.
pub fn advice(pair: &str, outdated: &[Member], state: PairState) -> String {
    let name = |m: Member| resources::member_name(pair, m);
    let master = state.processor();
    let mut order: Vec<Member> = outdated.to_vec();
    order.sort_by_key(|m| Some(*m) == master);
    let pods: Vec<String> = order.iter().map(|m| name(*m)).collect();
    let steps: Vec<String> = order
        .iter()
        .map(|m| {
            let role = if Some(*m) == master {
                "the master's: a failover to the updated standby"
            } else {
                "the standby's first"
            };
            format!("kubectl delete pod {} ({role})", name(*m))
        })
        .collect();
    format!(
        "the spec changed: pod(s) {} still run the previous one; the operator never deletes a \
         member pod itself (that is a failure of the member). To roll it out: {}, each once \
         the pair is whole again (kubectl get hap {pair}: (M SL) or (SL M))",
        pods.join(", "),
        steps.join(", then ")
    )
}

/// Which (pod, spec) pairs were reported: each once per operator run.
#[derive(Debug, Default)]
pub struct Reported {
    seen: Mutex<HashSet<String>>,
}

impl Reported {
    /// Publishes the advice when a pod is newly found outdated.
    pub async fn report(
        &self,
        ctx: &Context,
        pair: &HAPair,
        pods: PerMember<Option<&Pod>>,
        state: PairState,
    ) {
        let outdated = outdated(pair, &ctx.agent_image, pods);
        let key = |m: &Member| {
            let uid = pods.get(*m).and_then(|p| p.uid()).unwrap_or_default();
            let want = spec_hash(&resources::pod(pair, *m, &ctx.agent_image));
            format!("{uid}/{want}")
        };
        let new = {
            // A poisoned lock only means another reconcile panicked; the set stays valid.
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            outdated.iter().filter(|m| seen.insert(key(m))).count()
        };
        if new > 0 {
            let note = advice(&pair.name_any(), &outdated, state);
            tracing::info!("{note}");
            publish(ctx, pair, EventType::Normal, "MemberPodsOutdated", note).await;
        }
    }
}

#[cfg(test)]
mod tests;
