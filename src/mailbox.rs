//! The member's mailbox: the contract between the operator and a member's agent, carried as
//! annotations on the member's `coordination.k8s.io/v1` Lease `<pair>-<member>`.
//!
//! The operator writes a [`CommandEnvelope`] (command, sequence number, addressed pod); the agent
//! writes a [`Report`] (what its volume says, what it acknowledged, whether it fenced itself) and
//! renews the Lease (`spec.holderIdentity` = its pod UID, `spec.renewTime`). Each side writes only
//! its own keys ([`OPERATOR_KEYS`], [`AGENT_KEYS`]), so neither ever overwrites the other.
//!
//! This module is pure: it parses and formats annotation maps and performs no I/O. It never
//! decides anything; a malformed value is an error naming the key, never a guess.

use std::collections::BTreeMap;

use crate::protocol::{Command, MemberState, Priority, RecordView, Standing, Term};

/// Operator → agent: the command's wire form ([`Command`]'s `Display`), e.g. `SM/4`.
pub const COMMAND: &str = "hapair.io/command";
/// Operator → agent: the command's sequence number; strictly increasing per Lease, from 1.
pub const COMMAND_SEQ: &str = "hapair.io/command-seq";
/// Operator → agent: the UID of the pod the command is addressed to. Any other pod ignores it.
pub const COMMAND_POD: &str = "hapair.io/command-pod";

/// Agent → operator: the UID of the pod whose agent wrote this report.
pub const POD: &str = "hapair.io/pod";
/// Agent → operator: `valid`, `missing`, `corrupt` or `wrong-pair` (what the volume says).
pub const RECORD: &str = "hapair.io/record";
/// Agent → operator: for `corrupt` and `wrong-pair`, which file and why.
pub const RECORD_REASON: &str = "hapair.io/record-reason";
/// Agent → operator: the record's priority (only with `record: valid`).
pub const PRIORITY: &str = "hapair.io/priority";
/// Agent → operator: the record's term (only with `record: valid`).
pub const TERM: &str = "hapair.io/term";
/// Agent → operator: the state the agent last acknowledged in this pod (`X` at start and after
/// self-fencing).
pub const STATE: &str = "hapair.io/state";
/// Agent → operator: the sequence number of the last command acknowledged (absent at start).
pub const ACK: &str = "hapair.io/ack";
/// Agent → operator: the wire form of the command acknowledged with [`ACK`].
pub const ACKED_COMMAND: &str = "hapair.io/acked-command";
/// Agent → operator: `true` when the agent fenced itself (stopped processing on its own).
pub const FENCED: &str = "hapair.io/fenced";
/// Agent → operator: why the agent fenced itself.
pub const FENCED_REASON: &str = "hapair.io/fenced-reason";
/// Agent → operator: why the pending command is not acknowledged (refused, or failed to persist).
pub const ERROR: &str = "hapair.io/error";
/// Agent → operator: commands addressed to this pod with a sequence number at or below it will
/// never be acknowledged (applied by an earlier agent of the pod, or fenced over): the operator
/// stops waiting for them. Absent when 0.
pub const FLOOR: &str = "hapair.io/floor";
/// Agent → operator: `true` once the agent is stopping (SIGTERM: the kubelet is ending its
/// container or pod). It stopped processing and applies nothing more: the member is down, even
/// while its pod still shows as running.
pub const STOPPING: &str = "hapair.io/stopping";

/// Agent → operator: the last command acknowledged by any pod of the member. Unlike
/// [`ACKED_COMMAND`] it is not removed when a new pod's agent takes the Lease over before it
/// acknowledged anything, so a member that failed keeps its last acknowledgement "in any
/// incarnation" (the seed's 4-4 needs the failed master's `M`).
pub const MEMBER_ACKED: &str = "hapair.io/member-acked";

/// Every key the operator writes; the agent never writes these.
pub const OPERATOR_KEYS: [&str; 3] = [COMMAND, COMMAND_SEQ, COMMAND_POD];
/// Every key the agent writes; the operator never writes these.
pub const AGENT_KEYS: [&str; 14] = [
    POD,
    RECORD,
    RECORD_REASON,
    PRIORITY,
    TERM,
    STATE,
    ACK,
    ACKED_COMMAND,
    FENCED,
    FENCED_REASON,
    ERROR,
    FLOOR,
    STOPPING,
    MEMBER_ACKED,
];

/// The Lease (the member's mailbox) of `member` in pair `pair`.
pub fn lease_name(pair: &str, member: crate::protocol::Member) -> String {
    format!("{pair}-{member}")
}

/// A malformed mailbox: which key, what it held, and why that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailboxError {
    #[error("annotation {key} is missing: {why}")]
    Missing {
        key: &'static str,
        why: &'static str,
    },
    #[error("annotation {key}={value:?} is invalid: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: String,
    },
}

/// A command addressed to one pod of the member, with its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandEnvelope {
    pub command: Command,
    /// Strictly increasing per Lease, starting at 1; an agent applies a sequence number once.
    pub seq: u64,
    /// The UID of the pod the command is for.
    pub pod: String,
}

impl CommandEnvelope {
    /// The operator's annotations: [`COMMAND`], [`COMMAND_SEQ`], [`COMMAND_POD`].
    pub fn to_annotations(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (COMMAND.to_string(), self.command.to_string()),
            (COMMAND_SEQ.to_string(), self.seq.to_string()),
            (COMMAND_POD.to_string(), self.pod.clone()),
        ])
    }

    /// The command on a Lease: `None` when no command was ever written; an error when the
    /// command keys are incomplete or malformed.
    pub fn parse(annotations: &BTreeMap<String, String>) -> Result<Option<Self>, MailboxError> {
        let Some(wire) = annotations.get(COMMAND) else {
            return Ok(None);
        };
        let command = parse_value(COMMAND, wire)?;
        let why = "the operator writes it with every command";
        let seq = required(annotations, COMMAND_SEQ, why)?;
        let seq: u64 = parse_value(COMMAND_SEQ, seq)?;
        if seq == 0 {
            return Err(invalid(COMMAND_SEQ, "0", "sequence numbers start at 1"));
        }
        let pod = required(annotations, COMMAND_POD, why)?;
        if pod.is_empty() {
            return Err(invalid(COMMAND_POD, pod, "the addressed pod UID is empty"));
        }
        Ok(Some(CommandEnvelope {
            command,
            seq,
            pod: pod.clone(),
        }))
    }
}

/// A command the agent acknowledged: it persisted the record, then wrote the role file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub seq: u64,
    pub command: Command,
}

/// What a member's agent reports on its Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The pod whose agent wrote this report.
    pub pod: String,
    /// What the agent last read from (or wrote to) its volume.
    pub record: RecordView,
    /// The state acknowledged in this pod: `X` at start and after self-fencing.
    pub state: MemberState,
    /// The last command this agent acknowledged, if any.
    pub ack: Option<Ack>,
    /// Why the agent fenced itself, if it did (until a newer command is applied).
    pub fenced: Option<String>,
    /// Why the pending command is not acknowledged, if it is not.
    pub error: Option<String>,
    /// Commands to this pod at or below this sequence number will never be acknowledged.
    pub floor: u64,
    /// The agent is stopping: it applies nothing more ([`STOPPING`]).
    pub stopping: bool,
}

impl Report {
    /// The agent's annotations for a JSON merge patch: every key in [`AGENT_KEYS`], `None` for a
    /// key to remove, so a stale value from an earlier report (or pod) never survives.
    pub fn to_patch(&self) -> BTreeMap<&'static str, Option<String>> {
        let mut keys: BTreeMap<&'static str, Option<String>> = AGENT_KEYS
            .iter()
            .filter(|k| **k != MEMBER_ACKED)
            .map(|k| (*k, None))
            .collect();
        let mut set = |key: &'static str, value: String| {
            keys.insert(key, Some(value));
        };
        set(POD, self.pod.clone());
        set(STATE, self.state.to_string());
        set(RECORD, record_status(&self.record).to_string());
        match &self.record {
            RecordView::Valid(standing) => {
                set(PRIORITY, standing.priority.to_string());
                set(TERM, standing.term.to_string());
            }
            RecordView::Missing => {}
            RecordView::Corrupt(reason) | RecordView::WrongPair(reason) => {
                set(RECORD_REASON, reason.clone());
            }
        }
        if let Some(ack) = self.ack {
            set(ACK, ack.seq.to_string());
            set(ACKED_COMMAND, ack.command.to_string());
            set(MEMBER_ACKED, ack.command.to_string());
        }
        if let Some(reason) = &self.fenced {
            set(FENCED, "true".to_string());
            set(FENCED_REASON, reason.clone());
        }
        if let Some(error) = &self.error {
            set(ERROR, error.clone());
        }
        if self.floor > 0 {
            set(FLOOR, self.floor.to_string());
        }
        if self.stopping {
            set(STOPPING, "true".to_string());
        }
        keys
    }

    /// The same report as a plain annotation map (the keys [`Report::to_patch`] sets).
    pub fn to_annotations(&self) -> BTreeMap<String, String> {
        self.to_patch()
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_string(), v?)))
            .collect()
    }

    /// The agent's report on a Lease: `None` when no agent has reported yet.
    pub fn parse(annotations: &BTreeMap<String, String>) -> Result<Option<Self>, MailboxError> {
        let Some(pod) = annotations.get(POD) else {
            return Ok(None);
        };
        let why = "the agent writes it with every report";
        let state = parse_value(STATE, required(annotations, STATE, why)?)?;
        Ok(Some(Report {
            pod: pod.clone(),
            record: parse_record(annotations)?,
            state,
            ack: parse_ack(annotations)?,
            fenced: parse_fenced(annotations)?,
            error: annotations.get(ERROR).cloned(),
            floor: annotations
                .get(FLOOR)
                .map_or(Ok(0), |f| parse_value(FLOOR, f))?,
            stopping: annotations.get(STOPPING).is_some_and(|s| s == "true"),
        }))
    }
}

/// The member's last acknowledged command, by any of its pods ([`MEMBER_ACKED`]); `None` when
/// absent or unreadable.
pub fn member_acked(annotations: &BTreeMap<String, String>) -> Option<Command> {
    annotations.get(MEMBER_ACKED)?.parse().ok()
}

/// The wire word for what the volume says.
pub fn record_status(record: &RecordView) -> &'static str {
    match record {
        RecordView::Valid(_) => "valid",
        RecordView::Missing => "missing",
        RecordView::Corrupt(_) => "corrupt",
        RecordView::WrongPair(_) => "wrong-pair",
    }
}

fn parse_record(annotations: &BTreeMap<String, String>) -> Result<RecordView, MailboxError> {
    let status = required(annotations, RECORD, "the agent writes it with every report")?;
    let reason = || {
        required(
            annotations,
            RECORD_REASON,
            "a corrupt or foreign record has a reason",
        )
        .cloned()
    };
    match status.as_str() {
        "valid" => {
            let why = "a valid record has a priority and a term";
            let priority: Priority = parse_value(PRIORITY, required(annotations, PRIORITY, why)?)?;
            let term: u64 = parse_value(TERM, required(annotations, TERM, why)?)?;
            Ok(RecordView::Valid(Standing::new(priority, Term(term))))
        }
        "missing" => Ok(RecordView::Missing),
        "corrupt" => Ok(RecordView::Corrupt(reason()?)),
        "wrong-pair" => Ok(RecordView::WrongPair(reason()?)),
        other => Err(invalid(
            RECORD,
            other,
            "expected valid, missing, corrupt or wrong-pair",
        )),
    }
}

fn parse_ack(annotations: &BTreeMap<String, String>) -> Result<Option<Ack>, MailboxError> {
    let (Some(seq), Some(command)) = (annotations.get(ACK), annotations.get(ACKED_COMMAND)) else {
        if annotations.contains_key(ACK) != annotations.contains_key(ACKED_COMMAND) {
            let why = "the agent writes the ack and the acknowledged command together";
            let key = if annotations.contains_key(ACK) {
                ACKED_COMMAND
            } else {
                ACK
            };
            return Err(MailboxError::Missing { key, why });
        }
        return Ok(None);
    };
    Ok(Some(Ack {
        seq: parse_value(ACK, seq)?,
        command: parse_value(ACKED_COMMAND, command)?,
    }))
}

fn parse_fenced(annotations: &BTreeMap<String, String>) -> Result<Option<String>, MailboxError> {
    match annotations.get(FENCED).map(String::as_str) {
        None => Ok(None),
        Some("true") => Ok(Some(
            annotations.get(FENCED_REASON).cloned().unwrap_or_default(),
        )),
        Some(other) => Err(invalid(FENCED, other, "expected true, or no annotation")),
    }
}

fn required<'a>(
    annotations: &'a BTreeMap<String, String>,
    key: &'static str,
    why: &'static str,
) -> Result<&'a String, MailboxError> {
    annotations
        .get(key)
        .ok_or(MailboxError::Missing { key, why })
}

fn parse_value<T>(key: &'static str, value: &str) -> Result<T, MailboxError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e: T::Err| invalid(key, value, e))
}

fn invalid(key: &'static str, value: &str, reason: impl ToString) -> MailboxError {
    MailboxError::Invalid {
        key,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(wire: &str) -> CommandEnvelope {
        CommandEnvelope {
            command: wire.parse().unwrap(),
            seq: 7,
            pod: "0b7e1c9a-0000-4000-8000-00000000000a".into(),
        }
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_command_round_trips_through_the_annotations() {
        let standby = "0b7e1c9a-0000-4000-8000-00000000000b.3";
        for wire in [
            "INIT/0",
            "SM/4",
            "SL/4",
            "X/4",
            &format!("M/4/{standby}") as &str,
        ] {
            let sent = envelope(wire);
            let annotations = sent.to_annotations();
            assert_eq!(annotations[COMMAND], sent.command.to_string());
            assert_eq!(CommandEnvelope::parse(&annotations), Ok(Some(sent)));
        }
    }

    #[test]
    fn a_lease_without_a_command_has_none() {
        assert_eq!(CommandEnvelope::parse(&map(&[("other", "x")])), Ok(None));
    }

    #[test]
    fn malformed_commands_name_the_key() {
        let cases = [
            (
                map(&[(COMMAND, "SM/x"), (COMMAND_SEQ, "1"), (COMMAND_POD, "p")]),
                COMMAND,
            ),
            (map(&[(COMMAND, "SM/1"), (COMMAND_POD, "p")]), COMMAND_SEQ),
            (
                map(&[(COMMAND, "SM/1"), (COMMAND_SEQ, "-1"), (COMMAND_POD, "p")]),
                COMMAND_SEQ,
            ),
            (
                map(&[(COMMAND, "SM/1"), (COMMAND_SEQ, "0"), (COMMAND_POD, "p")]),
                COMMAND_SEQ,
            ),
            (map(&[(COMMAND, "SM/1"), (COMMAND_SEQ, "1")]), COMMAND_POD),
            (
                map(&[(COMMAND, "SM/1"), (COMMAND_SEQ, "1"), (COMMAND_POD, "")]),
                COMMAND_POD,
            ),
        ];
        for (annotations, key) in cases {
            let err = CommandEnvelope::parse(&annotations).unwrap_err();
            assert!(err.to_string().contains(key), "{annotations:?}: {err}");
        }
    }

    fn report(record: RecordView) -> Report {
        Report {
            pod: "pod-uid".into(),
            record,
            state: MemberState::SM,
            ack: Some(Ack {
                seq: 9,
                command: "SM/4".parse().unwrap(),
            }),
            fenced: None,
            floor: 0,
            stopping: false,
            error: None,
        }
    }

    #[test]
    fn every_report_round_trips_through_the_annotations() {
        let valid = RecordView::Valid(Standing::new(Priority::One, Term(4)));
        let mut fenced = report(valid.clone());
        fenced.state = MemberState::X;
        fenced.fenced = Some("no renewal for 7s".into());
        fenced.floor = 11;
        fenced.stopping = true;
        let mut failed = report(RecordView::Missing);
        failed.ack = None;
        failed.error = Some("read-only volume".into());
        for sent in [
            report(valid),
            report(RecordView::Corrupt("checksum mismatch".into())),
            report(RecordView::WrongPair("another pair".into())),
            fenced,
            failed,
        ] {
            let annotations = sent.to_annotations();
            assert_eq!(Report::parse(&annotations), Ok(Some(sent)));
        }
    }

    #[test]
    fn a_report_patch_removes_every_agent_key_it_does_not_set() {
        let mut r = report(RecordView::Missing);
        r.ack = None;
        let patch = r.to_patch();
        assert_eq!(patch.len(), AGENT_KEYS.len() - 1);
        assert!(
            !patch.contains_key(MEMBER_ACKED),
            "a pod that acknowledged nothing keeps the member's last acknowledgement"
        );
        for key in [
            PRIORITY,
            TERM,
            RECORD_REASON,
            ACK,
            ACKED_COMMAND,
            FENCED,
            ERROR,
        ] {
            assert_eq!(patch[key], None, "{key}");
        }
        assert_eq!(patch[RECORD].as_deref(), Some("missing"));
        assert_eq!(patch[STATE].as_deref(), Some("SM"));
    }

    #[test]
    fn the_agent_never_writes_an_operator_key() {
        for key in OPERATOR_KEYS {
            assert!(!AGENT_KEYS.contains(&key), "{key}");
        }
    }

    #[test]
    fn malformed_reports_name_the_key() {
        let base = report(RecordView::Valid(Standing::new(Priority::Two, Term(0))));
        let cases: [(&str, Option<&str>, &str); 6] = [
            (STATE, Some("Q"), STATE),
            (RECORD, Some("maybe"), RECORD),
            (PRIORITY, None, PRIORITY),
            (PRIORITY, Some("4"), PRIORITY),
            (ACKED_COMMAND, None, ACKED_COMMAND),
            (FENCED, Some("yes"), FENCED),
        ];
        for (key, value, named) in cases {
            let mut annotations = base.to_annotations();
            match value {
                Some(v) => annotations.insert(key.to_string(), v.to_string()),
                None => annotations.remove(key),
            };
            let err = Report::parse(&annotations).unwrap_err();
            assert!(err.to_string().contains(named), "{key}={value:?}: {err}");
        }
    }

    #[test]
    fn no_report_before_the_agent_wrote_one() {
        assert_eq!(Report::parse(&map(&[(COMMAND, "SM/1")])), Ok(None));
    }
}
