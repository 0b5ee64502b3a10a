//! The `HAPair` custom resource (`hapair.io/v1alpha1`): its spec, its status, the label and
//! annotation keys, and the pure helpers over them.
//!
//! This module owns the *shape* of the resource. It performs no I/O and decides nothing: the
//! status is a cache of what the members reported and a history for people (DESIGN invariant 4).
//! The CRD is generated from these types (`hapair crd`); `deploy/crd.yaml` and the chart's copy are
//! that output, never edited by hand.
//!
//! The target API server is Kubernetes v1.20: no CEL rules. Everything the API server can check is
//! an OpenAPI bound in the schema (minimum, maximum, enum, pattern, required); what it cannot (one
//! field against another) is [`HAPairSpec::validate`], which the controller reports as a condition.
//! The schema must be at least as strict as the Rust types: an object the API server admits but
//! serde rejects would break every watch of `HAPair`s.

use std::borrow::Cow;
use std::fmt;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, CustomResourceExt};
use schemars::generate::SchemaSettings;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::protocol::{Member, MemberState, PairState, PerMember, Priority, RecordView, Term};

// ------------------------------------------------------------------------------- keys and limits

/// Annotation naming the member to force-start (`a` or `b`); see DESIGN "Force-start".
pub const ANNOTATION_FORCE_START: &str = "hapair.io/force-start";
/// Annotation naming the member that should become master by a controlled switchover.
pub const ANNOTATION_SWITCHOVER: &str = "hapair.io/switchover";
/// Annotation that pauses the operator for this pair (as `spec.paused`), value `true`.
pub const ANNOTATION_PAUSED: &str = "hapair.io/paused";

/// Label on every object of a pair: the `HAPair`'s name.
pub const LABEL_PAIR: &str = "hapair.io/pair";
/// Label on a member's objects: `a` or `b`.
pub const LABEL_MEMBER: &str = "hapair.io/member";
/// Label on a member's pod: `master` (M, SM) or `standby` (SL), absent otherwise.
pub const LABEL_ROLE: &str = "hapair.io/role";

/// Where the member volume is mounted in the application containers unless the spec says otherwise.
pub const DEFAULT_DATA_MOUNT_PATH: &str = "/var/lib/hapair/data";
/// How many transitions `status.history` keeps (the most recent last).
pub const HISTORY_LIMIT: usize = 20;

/// The pattern of a pair state in status and history: `(A B)`.
const PAIR_STATE_PATTERN: &str = r"^\((M|SM|SL|X) (M|SM|SL|X)\)$";
/// Kubernetes' resource.Quantity syntax (as the API server parses it).
const QUANTITY_PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";
/// A condition reason (metav1.Condition's rule): CamelCase, machine readable.
const REASON_PATTERN: &str = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$";
/// An RFC 1123 DNS label (Service port names).
const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

// ------------------------------------------------------------------------------------------ spec

/// What the pair runs: the members' pod template and volumes, its Services, its lease timings.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
// Each printcolumn(...) repeats `type_ = "string"`, which clippy takes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[kube(
    group = "hapair.io",
    version = "v1alpha1",
    kind = "HAPair",
    plural = "hapairs",
    singular = "hapair",
    shortname = "hap",
    namespaced,
    status = "HAPairStatus",
    derive = "PartialEq",
    doc = "A two-member high-availability pair: two pods, each with its own volume that remembers \
           its server priority; at most one member processes (carries the master label).",
    printcolumn(
        name = "Pair-State",
        type_ = "string",
        json_path = ".status.pairState",
        description = "(a b): each member's state, M, SM, SL or X"
    ),
    printcolumn(
        name = "Master",
        type_ = "string",
        json_path = ".status.master",
        description = "The processing member, if any"
    ),
    printcolumn(
        name = "Priorities",
        type_ = "string",
        json_path = ".status.priorities",
        description = "[a b]: each member's recorded priority (1 highest), - if unknown"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct HAPairSpec {
    /// Pod template of the application container(s), used for both members. The operator adds the
    /// agent sidecar, the member volume (mounted at dataMountPath) and the hapair.io labels.
    #[schemars(schema_with = "pod_template_schema")]
    pub template: PodTemplateSpec,

    /// The PersistentVolumeClaim each member gets as its own volume (data and priority record).
    pub volume_claim_template: VolumeClaimTemplate,

    /// Where the member volume is mounted in every application container.
    #[serde(default = "default_data_mount_path")]
    #[schemars(regex(pattern = r"^/.*"), length(min = 2, max = 4096))]
    pub data_mount_path: String,

    /// Ports of the Services: `<name>` selects the master, `<name>-standby` the standby.
    #[serde(default)]
    pub service: ServiceSpec,

    /// Member lease timings: liveness, self-fencing and failover speed.
    #[serde(default)]
    pub lease: LeaseTimings,

    /// Image of the agent sidecar; the operator's own image when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub agent_image: Option<String>,

    /// When true the operator reports but changes nothing (as the hapair.io/paused annotation).
    #[serde(default)]
    pub paused: bool,

    /// Set it when the application replies to each role line by writing it to
    /// `<role file>.applied`, and replies `M` only once its standby holds every write it
    /// acknowledged (hapair-kv does). The agent then acknowledges `M` only after that reply, so a
    /// failover right after `SM` → `M` loses no write acknowledged in `SM`. An application that
    /// never replies stays `SM` for good with it set.
    #[serde(default)]
    pub role_handshake: bool,
}

fn default_data_mount_path() -> String {
    DEFAULT_DATA_MOUNT_PATH.to_string()
}

/// The claim each member's volume is made from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeClaimTemplate {
    /// StorageClass of the claims; the cluster's default class when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,

    /// Access modes of the claims.
    #[serde(default = "default_access_modes")]
    #[schemars(length(min = 1))]
    pub access_modes: Vec<AccessMode>,

    /// The size of each member's volume.
    pub resources: VolumeResources,
}

fn default_access_modes() -> Vec<AccessMode> {
    vec![AccessMode::ReadWriteOnce]
}

/// A PersistentVolumeClaim access mode (those Kubernetes v1.20 knows).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AccessMode {
    ReadWriteOnce,
    ReadOnlyMany,
    ReadWriteMany,
}

/// Resources of a member's claim.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct VolumeResources {
    pub requests: StorageRequest,
}

/// The storage a member's claim requests.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct StorageRequest {
    /// Size of each member's volume, e.g. 1Gi (a string: quote plain numbers).
    #[schemars(schema_with = "quantity_schema")]
    pub storage: Quantity,
}

/// The Services' ports.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ServiceSpec {
    /// Ports of both Services (master and standby).
    #[serde(default)]
    pub ports: Vec<ServicePort>,
}

/// One port of the Services.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// Name of the port (a DNS label).
    #[schemars(regex(pattern = DNS_LABEL_PATTERN), length(min = 1, max = 63))]
    pub name: String,
    /// The port the Services expose.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// The container port (number or name) traffic goes to; `port` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<IntOrString>,
}

/// Member lease timings, in seconds. A member whose lease is not renewed for `durationSeconds`
/// counts as failed; a processing agent that could not renew for `durationSeconds −
/// fenceMarginSeconds` stops processing first, so the peer is never promoted while it still
/// processes. (The schema says `int32`: Kubernetes knows no `uint32` format.)
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeaseTimings {
    /// How long a member's lease lasts without renewal before the member counts as failed.
    #[serde(default = "LeaseTimings::default_duration")]
    #[schemars(range(min = 3, max = 300), extend("format" = "int32"))]
    pub duration_seconds: u32,
    /// How often the agent renews its lease.
    #[serde(default = "LeaseTimings::default_renew_interval")]
    #[schemars(range(min = 1, max = 299), extend("format" = "int32"))]
    pub renew_interval_seconds: u32,
    /// How long before the lease expires a processing agent that could not renew stops processing.
    #[serde(default = "LeaseTimings::default_fence_margin")]
    #[schemars(range(min = 1, max = 299), extend("format" = "int32"))]
    pub fence_margin_seconds: u32,
}

impl LeaseTimings {
    fn default_duration() -> u32 {
        10
    }
    fn default_renew_interval() -> u32 {
        2
    }
    fn default_fence_margin() -> u32 {
        3
    }
}

impl Default for LeaseTimings {
    fn default() -> Self {
        LeaseTimings {
            duration_seconds: Self::default_duration(),
            renew_interval_seconds: Self::default_renew_interval(),
            fence_margin_seconds: Self::default_fence_margin(),
        }
    }
}

/// A spec the API server admitted but that cannot work (rules between fields, which v1.20's
/// OpenAPI validation cannot express). The controller reports it and changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error(
        "spec.lease.fenceMarginSeconds ({margin}) must be less than spec.lease.durationSeconds \
         ({duration}): a processing member must stop before its lease expires"
    )]
    FenceMarginTooLarge { margin: u32, duration: u32 },
    #[error(
        "spec.lease.renewIntervalSeconds ({renew}) must be less than durationSeconds − \
         fenceMarginSeconds ({window}): a member must renew at least once before it fences itself"
    )]
    RenewTooSlow { renew: u32, window: u32 },
    #[error("spec.template.spec.containers is empty: give at least one application container")]
    NoContainers,
    #[error("spec.service.ports has two ports named '{0}': port names must be unique")]
    DuplicatePortName(String),
}

impl HAPairSpec {
    /// Checks the rules between fields that the schema cannot express.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.lease.validate()?;
        let containers = self.template.spec.as_ref().map(|s| s.containers.len());
        if containers.unwrap_or(0) == 0 {
            return Err(SpecError::NoContainers);
        }
        let mut names: Vec<&str> = self.service.ports.iter().map(|p| p.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(SpecError::DuplicatePortName(w[0].to_string()));
        }
        Ok(())
    }
}

impl LeaseTimings {
    /// The margin must leave time to renew, and the agent must fence before the lease expires.
    pub fn validate(&self) -> Result<(), SpecError> {
        let duration = self.duration_seconds;
        let margin = self.fence_margin_seconds;
        if margin >= duration {
            return Err(SpecError::FenceMarginTooLarge { margin, duration });
        }
        let window = duration - margin;
        if self.renew_interval_seconds >= window {
            return Err(SpecError::RenewTooSlow {
                renew: self.renew_interval_seconds,
                window,
            });
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------- status

/// What the operator last observed of the pair: a cache and a history, never a decision input
/// that could make a decision less conservative (DESIGN invariant 4).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HAPairStatus {
    /// The pair state `(a b)`, e.g. `(M SL)`; derived from members by [`HAPairStatus::summarize`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(regex(pattern = PAIR_STATE_PATTERN))]
    pub pair_state: String,

    /// The processing member (`a` or `b`), empty if none.
    // No schema default "": v1.20 reads a default of "" as null and rejects the CRD.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(schema_with = "master_schema")]
    pub master: String,

    /// Each member's recorded priority `[a b]`, e.g. `[2 3]`; `-` where unknown.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub priorities: String,

    /// Each member as last observed.
    #[serde(default)]
    pub members: MemberStatuses,

    /// Available, Degraded, WaitingForPeer, NeedsForceStart, Paused.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The last pair-state transitions, the most recent last (at most 20).
    #[serde(default)]
    #[schemars(length(max = 20))]
    pub history: Vec<HistoryEntry>,

    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// A priority record has been written on this pair's volumes: the pair is no longer fresh.
    #[serde(default)]
    pub initialized: bool,

    /// Per member, the highest term in which it was told to process or reported processing,
    /// stored before the operator acts: a decision may only become more conservative from it.
    #[serde(default)]
    pub recorded_terms: RecordedTerms,
}

/// Each member's recorded processing term.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct RecordedTerms {
    #[serde(default)]
    #[schemars(schema_with = "term_schema")]
    pub a: Term,
    #[serde(default)]
    #[schemars(schema_with = "term_schema")]
    pub b: Term,
}

impl From<RecordedTerms> for PerMember<Term> {
    fn from(t: RecordedTerms) -> Self {
        PerMember::new(t.a, t.b)
    }
}

impl From<PerMember<Term>> for RecordedTerms {
    fn from(t: PerMember<Term>) -> Self {
        RecordedTerms { a: t.a, b: t.b }
    }
}

/// Both members' status.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct MemberStatuses {
    #[serde(default)]
    pub a: MemberStatus,
    #[serde(default)]
    pub b: MemberStatus,
}

impl MemberStatuses {
    pub fn get(&self, member: Member) -> &MemberStatus {
        match member {
            Member::A => &self.a,
            Member::B => &self.b,
        }
    }

    pub fn get_mut(&mut self, member: Member) -> &mut MemberStatus {
        match member {
            Member::A => &mut self.a,
            Member::B => &mut self.b,
        }
    }
}

/// One member as last observed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// M, SM, SL or X (failed, or recovered and not yet admitted).
    #[serde(default = "stopped")]
    #[schemars(schema_with = "member_state_schema")]
    pub state: MemberState,

    /// The priority on the member's volume (1 highest), as its agent last reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "priority_schema")]
    pub priority: Option<Priority>,

    /// The term stored with that priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "term_schema")]
    pub term: Option<Term>,

    /// The member's pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,

    /// UID of that pod: a new UID is a new incarnation (a recovery).
    #[serde(rename = "podUID", default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,

    /// The application container is Ready (for a standby: it has caught up).
    #[serde(default)]
    pub ready: bool,

    /// When `state` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,

    /// What the agent found on the volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<RecordStatus>,

    /// Restarts of the pod's application containers when the member last was `X`: a restart
    /// beyond it is an application failure (the kubelet restarts a crashed container in the
    /// same pod, on the role file it had).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub app_restarts: Option<i32>,
}

fn stopped() -> MemberState {
    MemberState::X
}

impl Default for MemberStatus {
    fn default() -> Self {
        MemberStatus {
            state: MemberState::X,
            priority: None,
            term: None,
            pod: None,
            pod_uid: None,
            ready: false,
            last_transition_time: None,
            record: None,
            app_restarts: None,
        }
    }
}

/// What the agent found on the member's volume.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct RecordStatus {
    /// valid, missing (a fresh or emptied volume), corrupt, or wrong-pair (another pair's volume).
    pub state: RecordState,
    /// Why the record is not valid (which file, what is wrong).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The kinds of [`RecordView`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RecordState {
    Valid,
    Missing,
    Corrupt,
    WrongPair,
}

impl From<&RecordView> for RecordStatus {
    fn from(view: &RecordView) -> Self {
        let (state, reason) = match view {
            RecordView::Valid(_) => (RecordState::Valid, None),
            RecordView::Missing => (RecordState::Missing, None),
            RecordView::Corrupt(why) => (RecordState::Corrupt, Some(why.clone())),
            RecordView::WrongPair(why) => (RecordState::WrongPair, Some(why.clone())),
        };
        RecordStatus { state, reason }
    }
}

/// A condition of the pair (the metav1.Condition shape, with our types).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: ConditionType,
    pub status: ConditionStatus,
    /// Machine-readable CamelCase reason of the last change.
    #[schemars(regex(pattern = REASON_PATTERN), length(min = 1, max = 1024))]
    pub reason: String,
    /// What happened and what the user can do.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 32768))]
    pub message: String,
    /// When `status` last changed.
    pub last_transition_time: Time,
    /// The spec generation the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The conditions an `HAPair` reports.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum ConditionType {
    /// A member processes: clients are served.
    Available,
    /// The pair runs without an up-to-date standby (or a member is failed or refused).
    Degraded,
    /// No member can be proven to have processed last: the pair waits for the other member.
    WaitingForPeer,
    /// The pair cannot proceed automatically; only a force-start can start it.
    NeedsForceStart,
    /// The operator reports but changes nothing.
    Paused,
}

/// A condition's status.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// One pair-state transition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub time: Time,
    #[serde(with = "pair_state_text")]
    #[schemars(schema_with = "pair_state_schema")]
    pub from: PairState,
    #[serde(with = "pair_state_text")]
    #[schemars(schema_with = "pair_state_schema")]
    pub to: PairState,
    /// The seed's transition id (e.g. 4-2), or `force-start`, `switchover`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transition: Option<String>,
    /// Why, in words.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

impl HAPairStatus {
    /// The pair state `(a b)` of the members' states.
    pub fn pair_state(&self) -> PairState {
        PerMember::new(self.members.a.state, self.members.b.state)
    }

    /// `[a b]`: each member's priority, `-` where unknown (e.g. `[2 3]`, `[1 -]`).
    pub fn priorities_string(&self) -> String {
        let show = |m: &MemberStatus| m.priority.map_or("-".to_string(), |p| p.to_string());
        format!("[{} {}]", show(&self.members.a), show(&self.members.b))
    }

    /// Refreshes the summary fields the printer columns show (pairState, master, priorities)
    /// from `members`, the one place they are derived.
    pub fn summarize(&mut self) {
        let pair = self.pair_state();
        self.pair_state = pair.to_string();
        self.master = pair
            .processor()
            .map_or(String::new(), |m| m.as_str().to_string());
        self.priorities = self.priorities_string();
    }

    /// Appends a transition, keeping only the last [`HISTORY_LIMIT`] entries.
    pub fn push_history(&mut self, entry: HistoryEntry) {
        self.history.push(entry);
        let excess = self.history.len().saturating_sub(HISTORY_LIMIT);
        self.history.drain(..excess);
    }

    /// The condition of this type, if set.
    pub fn condition(&self, type_: ConditionType) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// Sets a condition. `lastTransitionTime` moves to `now` only when the status changes (or
    /// the condition is new): it says since when the condition has held, not when it was checked.
    pub fn set_condition(&mut self, new: NewCondition<'_>, now: Time) {
        let NewCondition {
            type_,
            status,
            reason,
            message,
            observed_generation,
        } = new;
        match self.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = now;
                }
                c.status = status;
                c.reason = reason.to_string();
                c.message = message.to_string();
                c.observed_generation = observed_generation;
            }
            None => self.conditions.push(Condition {
                type_,
                status,
                reason: reason.to_string(),
                message: message.to_string(),
                last_transition_time: now,
                observed_generation,
            }),
        }
    }
}

/// The arguments of [`HAPairStatus::set_condition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewCondition<'a> {
    pub type_: ConditionType,
    pub status: ConditionStatus,
    pub reason: &'a str,
    pub message: &'a str,
    pub observed_generation: Option<i64>,
}

impl fmt::Display for ConditionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

// --------------------------------------------------------------------------------- the CRD itself

/// The `CustomResourceDefinition` of `HAPair`, generated from the types above.
pub fn definition() -> CustomResourceDefinition {
    HAPair::crd()
}

/// The CRD as YAML, exactly as `hapair crd` prints it and `deploy/crd.yaml` holds it.
pub fn definition_yaml() -> Result<String, serde_saphyr::SerializeError> {
    serde_saphyr::to_string(&definition())
}

// ------------------------------------------------------------------------ serde and schema glue

/// A [`PairState`] as the text `(A B)`.
mod pair_state_text {
    use super::*;

    pub fn serialize<S: Serializer>(pair: &PairState, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(pair)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PairState, D::Error> {
        let text = Cow::<str>::deserialize(d)?;
        parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "'{text}' is not a pair state: expected (A B) with A and B each M, SM, SL or X"
            ))
        })
    }

    pub fn parse(text: &str) -> Option<PairState> {
        let inner = text.strip_prefix('(')?.strip_suffix(')')?;
        let (a, b) = inner.split_once(' ')?;
        Some(PerMember::new(a.parse().ok()?, b.parse().ok()?))
    }
}

/// Parses a pair state written `(A B)`, e.g. `(M SL)`.
pub fn parse_pair_state(text: &str) -> Option<PairState> {
    pair_state_text::parse(text)
}

fn pair_state_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "pattern": PAIR_STATE_PATTERN})
}

fn member_state_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "enum": ["M", "SM", "SL", "X"]})
}

fn master_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "enum": ["", "a", "b"]})
}

fn priority_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "integer", "minimum": 1, "maximum": 3})
}

/// A term is a u64 in Rust; JSON integers in Kubernetes are int64, and no term gets near 2^63.
fn term_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "integer", "format": "int64", "minimum": 0})
}

/// The schema of a pod template: Kubernetes' own (from k8s-openapi), inlined, with one fix.
/// k8s-openapi's `Quantity` deserializes from a string only, while its schema (like the API
/// server's) admits integers too: an HAPair with `cpu: 1` would be stored and then fail to
/// deserialize, breaking every watch of HAPairs. So quantities in the template must be strings.
fn pod_template_schema(_: &mut SchemaGenerator) -> Schema {
    let mut generator = SchemaSettings::openapi3()
        .with(|s| s.meta_schema = None)
        .into_generator();
    let root = generator.subschema_for::<PodTemplateSpec>();
    let definitions = generator.take_definitions(false);
    let prefix = format!("#{}/", generator.settings().definitions_path);
    let mut inliner = Inliner {
        prefix: &prefix,
        definitions: &definitions,
        stack: Vec::new(),
    };
    let mut value = root.to_value();
    inliner.inline(&mut value);
    // A member without a container runs nothing: reject it at `kubectl apply`, not later.
    if let Some(template) = value.as_object_mut() {
        template.insert("required".into(), serde_json::json!(["spec"]));
    }
    if let Some(containers) = value.pointer_mut("/properties/spec/properties/containers") {
        if let Some(containers) = containers.as_object_mut() {
            containers.insert("minItems".into(), 1.into());
        }
    }
    Schema::try_from(value).unwrap_or_else(|_| preserve_unknown_object())
}

fn preserve_unknown_object() -> Schema {
    json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

/// Replaces `$ref`s by the definitions they name, recursively (the API server accepts no `$ref`).
struct Inliner<'a> {
    prefix: &'a str,
    definitions: &'a serde_json::Map<String, serde_json::Value>,
    /// Definitions being inlined, outermost first: a type that contains itself is cut there.
    stack: Vec<String>,
}

impl Inliner<'_> {
    fn inline(&mut self, schema: &mut serde_json::Value) {
        let Some(object) = schema.as_object_mut() else {
            return;
        };
        if let Some(serde_json::Value::String(reference)) = object.remove("$ref") {
            let name = reference.strip_prefix(self.prefix).unwrap_or(&reference);
            let mut target = self.resolve(name);
            if let Some(target) = target.as_object_mut() {
                // The referring field's own keywords win (all but its description).
                object.remove("description");
                target.extend(std::mem::take(object));
            }
            *schema = target;
            return;
        }
        // Kubernetes' own field documentation would make the CRD ~500 KiB, over the limit of
        // client-side `kubectl apply`; it is a `kubectl explain pod.spec` away.
        object.remove("description");
        for key in ["items", "additionalProperties", "not"] {
            if let Some(sub) = object.get_mut(key) {
                self.inline(sub);
            }
        }
        for key in ["properties", "allOf", "anyOf", "oneOf"] {
            match object.get_mut(key) {
                Some(serde_json::Value::Object(map)) => {
                    map.values_mut().for_each(|s| self.inline(s))
                }
                Some(serde_json::Value::Array(list)) => {
                    list.iter_mut().for_each(|s| self.inline(s))
                }
                _ => {}
            }
        }
    }

    fn resolve(&mut self, name: &str) -> serde_json::Value {
        if name == Quantity::schema_name() {
            return quantity_schema(&mut SchemaGenerator::default()).to_value();
        }
        let definition = match self.definitions.get(name) {
            Some(d) if !self.stack.iter().any(|n| n == name) => d,
            _ => return preserve_unknown_object().to_value(),
        };
        let mut inlined = definition.clone();
        self.stack.push(name.to_string());
        self.inline(&mut inlined);
        self.stack.pop();
        inlined
    }
}

/// A quantity written as a string (`1Gi`): see [`pod_template_schema`] for why not a number.
fn quantity_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "pattern": QUANTITY_PATTERN})
}

#[cfg(test)]
mod tests;
