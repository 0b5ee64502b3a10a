//! The member's Lease, as the agent reads and writes it: the only Kubernetes I/O of the agent.
//!
//! Every write is a JSON merge patch that carries the `resourceVersion` it was computed from, so
//! the API server rejects it (409) when the Lease changed meanwhile — the agent then re-reads
//! and re-evaluates, never overwriting blindly. A patch names only the agent's own keys
//! ([`AGENT_KEYS`](crate::mailbox::AGENT_KEYS) and the holder/renewal fields): the operator's command annotations
//! are never part of it.

use std::time::Duration;

use futures::Stream;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};

use super::apply::Reporter;
use crate::mailbox::{CommandEnvelope, MailboxError, Report};

/// What went wrong talking to the API server about the Lease.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("Lease {lease} changed since it was read (409 conflict): re-read, re-evaluating")]
    Conflict { lease: String },
    #[error("Lease {lease} does not exist (deleted?): it is created again")]
    Gone { lease: String },
    #[error("Lease {lease}: the API server did not answer within {timeout:?}")]
    Timeout { lease: String, timeout: Duration },
    #[error("Lease {lease}: {source}")]
    Api {
        lease: String,
        #[source]
        source: kube::Error,
    },
}

/// The member's Lease: the last version seen, and how to write it.
pub struct LeaseMailbox {
    api: Api<Lease>,
    name: String,
    pod_uid: String,
    duration_seconds: i32,
    timeout: Duration,
    current: Option<Lease>,
}

impl LeaseMailbox {
    /// `timeout` bounds every request: a hung API server must not stall the agent's loop.
    pub fn new(
        client: Client,
        namespace: &str,
        name: String,
        pod_uid: String,
        duration: Duration,
        timeout: Duration,
    ) -> Self {
        LeaseMailbox {
            api: Api::namespaced(client, namespace),
            name,
            pod_uid,
            duration_seconds: i32::try_from(duration.as_secs()).unwrap_or(i32::MAX),
            timeout,
            current: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The last version of the Lease seen (read, written or watched), if it exists.
    pub fn current(&self) -> Option<&Lease> {
        self.current.as_ref()
    }

    /// A version (or the absence) of the Lease, from the watch: possibly older than the last
    /// one read. Its commands are safe to act on (sequence numbers only grow); a stale
    /// `resourceVersion` only costs a conflict and a re-read.
    pub fn observe(&mut self, lease: Option<Lease>) {
        self.current = lease;
    }

    /// The command on the Lease, if any.
    pub fn command(&self) -> Result<Option<CommandEnvelope>, MailboxError> {
        match &self.current {
            Some(lease) => CommandEnvelope::parse(lease.annotations()),
            None => Ok(None),
        }
    }

    /// Reads the Lease again: a watch event may be older than this agent's own last write (an
    /// initial list taken before its take-over), so it never decides alone who holds the Lease.
    pub async fn refresh(&mut self) -> Result<(), LeaseError> {
        let lease = self.call(self.api.get_opt(&self.name)).await?;
        self.observe(lease);
        Ok(())
    }

    /// Another pod holding the Lease: this agent lost it (its pod was replaced).
    pub fn other_holder(&self) -> Option<String> {
        let holder = self
            .current
            .as_ref()?
            .spec
            .as_ref()?
            .holder_identity
            .as_ref()?;
        (!holder.is_empty() && *holder != self.pod_uid).then(|| holder.clone())
    }

    /// Watches the Lease (by name), retrying with back-off when the API server is unreachable.
    /// `None` items mean the Lease does not exist.
    pub fn watch(&self) -> impl Stream<Item = Result<Option<Lease>, watcher::Error>> + Send {
        watcher::watch_object(self.api.clone(), &self.name).default_backoff()
    }

    /// At start only: creates the Lease, or takes it over from whichever pod held it (a new pod
    /// of the member replaces the old one), and reports.
    pub async fn take_over(&mut self, report: &Report) -> Result<(), LeaseError> {
        let existing = self.call(self.api.get_opt(&self.name)).await?;
        match existing {
            None => self.create(report).await,
            Some(lease) => {
                self.observe(Some(lease));
                self.patch(report).await
            }
        }
    }

    /// Later, when the Lease seems gone: re-reads it and creates it only if it is really absent.
    /// An existing Lease is never taken over again (its holder decides whether this agent lost).
    pub async fn reload_or_create(&mut self, report: &Report) -> Result<(), LeaseError> {
        match self.call(self.api.get_opt(&self.name)).await? {
            None => self.create(report).await,
            lease => {
                self.observe(lease);
                Ok(())
            }
        }
    }

    async fn create(&mut self, report: &Report) -> Result<(), LeaseError> {
        let now = now();
        let lease: Lease = serde_json::from_value(json!({
            "metadata": {"name": self.name, "annotations": report.to_annotations()},
            "spec": {
                "holderIdentity": self.pod_uid,
                "leaseDurationSeconds": self.duration_seconds,
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        }))
        .map_err(|e| self.api_error(kube::Error::SerdeError(e)))?;
        let params = PostParams::default();
        match self.call(self.api.create(&params, &lease)).await {
            Ok(lease) => {
                self.observe(Some(lease));
                Ok(())
            }
            Err(LeaseError::Api { source, .. }) if is_status(&source, 409) => self.conflict().await,
            Err(e) => Err(e),
        }
    }

    /// Writes the report (and renews) with the `resourceVersion` of the last version seen.
    async fn patch(&mut self, report: &Report) -> Result<(), LeaseError> {
        let Some(lease) = &self.current else {
            return Err(LeaseError::Gone {
                lease: self.name.clone(),
            });
        };
        let body = self.patch_body(lease, report);
        let (params, patch) = (PatchParams::default(), Patch::Merge(&body));
        match self.call(self.api.patch(&self.name, &params, &patch)).await {
            Ok(lease) => {
                self.observe(Some(lease));
                Ok(())
            }
            Err(LeaseError::Api { source, .. }) if is_status(&source, 409) => self.conflict().await,
            Err(LeaseError::Api { source, .. }) if is_status(&source, 404) => {
                self.observe(None);
                Err(LeaseError::Gone {
                    lease: self.name.clone(),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// The merge patch: the agent's annotations (absent ones removed) and the holder fields,
    /// conditional on `resourceVersion`. A change of holder records the take-over.
    fn patch_body(&self, lease: &Lease, report: &Report) -> Value {
        let now = now();
        let spec = lease.spec.clone().unwrap_or_default();
        let mut patch_spec = json!({
            "holderIdentity": self.pod_uid,
            "leaseDurationSeconds": self.duration_seconds,
            "renewTime": now,
        });
        if spec.holder_identity.as_deref() != Some(self.pod_uid.as_str()) {
            patch_spec["acquireTime"] = json!(now);
            patch_spec["leaseTransitions"] = json!(spec.lease_transitions.unwrap_or(0) + 1);
        }
        json!({
            "metadata": {
                "resourceVersion": lease.resource_version(),
                "annotations": report.to_patch(),
            },
            "spec": patch_spec,
        })
    }

    /// After a 409: re-reads the Lease so the caller re-evaluates against what is there now.
    async fn conflict(&mut self) -> Result<(), LeaseError> {
        let lease = self.call(self.api.get_opt(&self.name)).await?;
        self.observe(lease);
        Err(LeaseError::Conflict {
            lease: self.name.clone(),
        })
    }

    async fn call<T>(
        &self,
        request: impl std::future::Future<Output = kube::Result<T>>,
    ) -> Result<T, LeaseError> {
        match tokio::time::timeout(self.timeout, request).await {
            Ok(result) => result.map_err(|e| self.api_error(e)),
            Err(_) => Err(LeaseError::Timeout {
                lease: self.name.clone(),
                timeout: self.timeout,
            }),
        }
    }

    fn api_error(&self, source: kube::Error) -> LeaseError {
        LeaseError::Api {
            lease: self.name.clone(),
            source,
        }
    }
}

impl Reporter for LeaseMailbox {
    type Error = LeaseError;

    async fn report(&mut self, report: &Report) -> Result<(), LeaseError> {
        self.patch(report).await
    }
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox;
    use crate::protocol::{MemberState, RecordView};

    #[tokio::test]
    async fn the_patch_names_only_the_agents_keys_and_is_conditional() {
        let lease: Lease = serde_json::from_value(json!({
            "metadata": {"name": "web-a", "resourceVersion": "42", "annotations": {
                "hapair.io/command": "SM/1", "hapair.io/command-seq": "3",
                "hapair.io/command-pod": "me"}},
            "spec": {"holderIdentity": "old-pod", "leaseTransitions": 2},
        }))
        .unwrap();
        let report = Report {
            pod: "me".into(),
            record: RecordView::Missing,
            state: MemberState::X,
            ack: None,
            fenced: None,
            floor: 0,
            stopping: false,
            error: None,
        };
        let body = patch_body_for(&lease, &report);
        assert_eq!(body["metadata"]["resourceVersion"], "42");
        let annotations = body["metadata"]["annotations"].as_object().unwrap();
        for key in mailbox::OPERATOR_KEYS {
            assert!(!annotations.contains_key(key), "{key} in the agent's patch");
        }
        assert_eq!(annotations["hapair.io/ack"], Value::Null);
        assert_eq!(body["spec"]["holderIdentity"], "me");
        assert_eq!(body["spec"]["leaseTransitions"], 3);
        assert!(body["spec"]["renewTime"].as_str().unwrap().ends_with('Z'));
    }

    fn patch_body_for(lease: &Lease, report: &Report) -> Value {
        // The body does not depend on the client; build one that is never used to connect.
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = Client::try_from(config).unwrap();
        let mailbox = LeaseMailbox::new(
            client,
            "ns",
            "web-a".into(),
            "me".into(),
            Duration::from_secs(10),
            Duration::from_secs(1),
        );
        mailbox.patch_body(lease, report)
    }
}
