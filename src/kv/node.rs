//! One member of the replicated key/value pair: its log, the state it acts in, and the rules
//! that tie them: who may write, when a write is acknowledged, what the standby has confirmed.
//!
//! Every log access holds the log's lock and re-reads the acting state inside it, so an append
//! never lands after the member left the state that allowed it (a master's write after `X`, a
//! standby's append after it stopped being `SL`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

use super::entry::Position;
use super::epoch;
use super::log::{Log, LogError};
use crate::protocol::{Member, MemberState};

/// How long the master holds a standby's pull open waiting for a new entry.
pub const LONG_POLL: Duration = Duration::from_secs(1);
/// The most bytes of entries one pull returns.
pub const MAX_BATCH_BYTES: u64 = 1 << 20;

/// The state the member acts in. `epoch` is the master epoch its writes carry (`SM`, `M`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acting {
    pub state: MemberState,
    pub epoch: u64,
}

/// Why a write or a pull is not served.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("member {member} is {state}, not a master: it accepts no writes; write through the master Service")]
    NotMaster { member: Member, state: MemberState },
    #[error(
        "member {member} left master epoch {epoch} (now {state}) before index {index} was \
         acknowledged: the write is not acknowledged and may or may not survive; retry through \
         the master Service"
    )]
    LostRole {
        member: Member,
        state: MemberState,
        epoch: u64,
        index: u64,
    },
    #[error("member {member} is {state}, not SL: it no longer follows a master")]
    NotStandby { member: Member, state: MemberState },
    #[error(transparent)]
    Log(#[from] LogError),
}

/// The master's answer to a standby's pull from after `after`.
#[derive(Debug)]
pub enum Pulled {
    /// The standby's log matches up to `after`: the entries that follow (maybe none yet), and
    /// the master's last index when they were read.
    Entries { bytes: Vec<u8>, master_last: u64 },
    /// The master has no entry at `after`: the standby's log has diverged from it. `epoch_end`:
    /// the master's last entry of `after`'s epoch, if it has any.
    Diverged {
        master_last: u64,
        epoch_end: Option<u64>,
    },
}

/// A member: shared by the HTTP handlers, the role follower and the standby's pull loop.
#[derive(Debug)]
pub struct Node {
    pub member: Member,
    log: Mutex<Log>,
    acting: watch::Sender<Acting>,
    /// As master: the index up to which the standby's log matches this one, by its latest pull
    /// (it pulls again only after its appends are on its disk).
    confirmed: watch::Sender<u64>,
    /// The log's last index: wakes the standby's held pull.
    last_index: watch::Sender<u64>,
    /// As `SL`: level with the master at the latest pull.
    level: AtomicBool,
}

impl Node {
    /// Opens the member's log in `data_dir`; the member starts acting as `X`.
    pub fn open(member: Member, data_dir: &std::path::Path) -> Result<Arc<Node>, LogError> {
        let log = Log::open(data_dir)?;
        let last = log.last();
        tracing::info!(%member, last_index = last.index, last_epoch = last.epoch,
            "log opened: acting as X until the role file says otherwise");
        Ok(Arc::new(Node {
            member,
            log: Mutex::new(log),
            acting: watch::Sender::new(Acting {
                state: MemberState::X,
                epoch: 0,
            }),
            confirmed: watch::Sender::new(0),
            last_index: watch::Sender::new(last.index),
            level: AtomicBool::new(false),
        }))
    }

    /// The log; a panic while it was held poisons nothing that matters (appends are cut back
    /// on failure), so the lock is taken over.
    fn log(&self) -> MutexGuard<'_, Log> {
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn acting(&self) -> Acting {
        *self.acting.borrow()
    }

    pub fn last(&self) -> Position {
        self.log().last()
    }

    /// Every key this member holds, one per line.
    pub fn key_list(&self) -> String {
        self.log().keys().fold(String::new(), |mut list, key| {
            list.push_str(key);
            list.push('\n');
            list
        })
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.log().get(key).map(<[u8]>::to_vec)
    }

    /// Acts in `state` with `epoch` from now on.
    pub fn become_state(&self, state: MemberState, epoch: u64) {
        let previous = self.acting.send_replace(Acting { state, epoch });
        self.level.store(false, Ordering::SeqCst);
        if previous.state != state || previous.epoch != epoch {
            tracing::info!(member = %self.member, from = %previous.state, to = %state, epoch,
                "acting in a new state");
        }
    }

    /// Enters `state` (`SM` or `M`): keeps the epoch of a processing member, else opens a new
    /// one durably first (acting as `X` meanwhile) and forgets what an earlier standby confirmed.
    pub async fn become_master(self: &Arc<Self>, state: MemberState) -> Result<u64, LogError> {
        let now = self.acting();
        if now.state.is_processing() {
            self.become_state(state, now.epoch);
            return Ok(now.epoch);
        }
        self.become_state(MemberState::X, 0);
        let node = self.clone();
        let epoch = blocking(move || epoch::open_next(&node.log(), node.member)).await?;
        self.confirmed.send_replace(0);
        self.become_state(state, epoch);
        Ok(epoch)
    }

    /// As `M`: waits until the standby confirmed every entry this member holds now.
    pub async fn standby_confirms_everything(&self) {
        let target = self.last().index;
        let mut confirmed = self.confirmed.subscribe();
        // The sender lives as long as `self`: the wait ends only by confirmation.
        let _ = confirmed.wait_for(|&c| c >= target).await;
    }

    /// Writes `key = value`: on this member's disk, and in `M` also on the standby's, before it
    /// returns `Ok` (the write is acknowledged).
    pub async fn put(
        self: &Arc<Self>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(Acting, Position), Refusal> {
        let node = self.clone();
        let k = key.clone();
        let (acting, at) = blocking(move || node.append_as_master(&k, &value)).await?;
        self.last_index.send_replace(at.index);
        let state = self.acknowledgeable(at).await?;
        tracing::info!(member = %self.member, role = %state, key, index = at.index,
            epoch = at.epoch, "write acknowledged");
        Ok((Acting { state, ..acting }, at))
    }

    fn append_as_master(&self, key: &str, value: &[u8]) -> Result<(Acting, Position), Refusal> {
        let mut log = self.log();
        let acting = self.acting();
        if !acting.state.is_processing() {
            return Err(self.not_master(acting.state));
        }
        Ok((acting, log.append(acting.epoch, key, value)?))
    }

    /// Waits until the entry at `at` may be acknowledged: at once in `SM`, once the standby
    /// confirmed it in `M`; never after this member left the epoch's processing states.
    async fn acknowledgeable(&self, at: Position) -> Result<MemberState, Refusal> {
        let mut acting = self.acting.subscribe();
        let mut confirmed = self.confirmed.subscribe();
        loop {
            let now = *acting.borrow_and_update();
            if !now.state.is_processing() || now.epoch != at.epoch {
                return Err(Refusal::LostRole {
                    member: self.member,
                    state: now.state,
                    epoch: at.epoch,
                    index: at.index,
                });
            }
            if now.state == MemberState::SM || *confirmed.borrow_and_update() >= at.index {
                return Ok(now.state);
            }
            // Both senders live as long as `self`: `changed` cannot fail here.
            tokio::select! {
                _ = acting.changed() => {}
                _ = confirmed.changed() => {}
            }
        }
    }

    /// As master, a standby's pull: its log ends at `after`. A match confirms everything up to
    /// `after`; the entries that follow are returned, or after [`LONG_POLL`] none.
    pub async fn pull(self: &Arc<Self>, after: Position) -> Result<Pulled, Refusal> {
        let node = self.clone();
        let first = blocking(move || node.read_for_standby(after, true)).await?;
        if !matches!(&first, Pulled::Entries { bytes, .. } if bytes.is_empty()) {
            return Ok(first);
        }
        let mut last = self.last_index.subscribe();
        let mut acting = self.acting.subscribe();
        tokio::select! {
            _ = last.wait_for(|&l| l > after.index) => {}
            _ = acting.changed() => {}
            () = tokio::time::sleep(LONG_POLL) => {}
        }
        let node = self.clone();
        blocking(move || node.read_for_standby(after, false)).await
    }

    fn read_for_standby(&self, after: Position, confirm: bool) -> Result<Pulled, Refusal> {
        let log = self.log();
        let acting = self.acting();
        if !acting.state.is_processing() {
            return Err(self.not_master(acting.state));
        }
        let master_last = log.last().index;
        if log.epoch_at(after.index) != Some(after.epoch) {
            let epoch_end = log.epoch_end(after.epoch, after.index);
            return Ok(Pulled::Diverged {
                master_last,
                epoch_end,
            });
        }
        if confirm {
            self.confirmed
                .send_if_modified(|c| std::mem::replace(c, after.index) != after.index);
        }
        let bytes = log.read_after(after.index, MAX_BATCH_BYTES)?;
        Ok(Pulled::Entries { bytes, master_last })
    }

    /// As `SL`, appends the master's entries; returns the new last position.
    pub async fn append_from_master(self: &Arc<Self>, bytes: Vec<u8>) -> Result<Position, Refusal> {
        let node = self.clone();
        blocking(move || {
            let mut log = node.log();
            node.must_follow()?;
            Ok(log.append_replicated(&bytes)?)
        })
        .await
    }

    /// As `SL`, cuts the suffix of this log the master does not have. The entries of `after`'s
    /// epoch match up to the master's `epoch_end` of it; without one, that epoch's whole run
    /// goes (matching entries come back). Each cut is below `after`, so this ends.
    pub async fn cut_diverged(
        self: &Arc<Self>,
        after: Position,
        master_last: u64,
        epoch_end: Option<u64>,
    ) -> Result<(), Refusal> {
        let node = self.clone();
        blocking(move || {
            let mut log = node.log();
            node.must_follow()?;
            let matching = epoch_end.unwrap_or_else(|| log.run_start(after.index) - 1);
            let keep = matching.min(master_last).min(after.index.saturating_sub(1));
            tracing::warn!(member = %node.member, last = after.index, keep, master_last,
                "cutting entries the master does not have");
            Ok(log.truncate_after(keep)?)
        })
        .await
    }

    fn must_follow(&self) -> Result<(), Refusal> {
        match self.acting().state {
            MemberState::SL => Ok(()),
            state => Err(Refusal::NotStandby {
                member: self.member,
                state,
            }),
        }
    }

    /// As `SL`: whether the latest pull found this log level with the master's.
    pub fn set_level(&self, level: bool) {
        self.level.store(level, Ordering::SeqCst);
    }

    /// `Ok` when the member is ready for its state: a master always, a standby once level with
    /// its master; the text says why either way.
    pub fn readiness(&self) -> Result<String, String> {
        let Acting { state, epoch } = self.acting();
        let last = self.last().index;
        match state {
            MemberState::SM | MemberState::M => Ok(format!(
                "{state}: accepting writes (epoch {epoch}, last index {last})"
            )),
            MemberState::SL if self.level.load(Ordering::SeqCst) => {
                Ok(format!("SL: level with the master at index {last}"))
            }
            MemberState::SL => Err(format!("SL: catching up with the master (at index {last})")),
            MemberState::X => Err("X: stopped, serving no role".into()),
        }
    }

    fn not_master(&self, state: MemberState) -> Refusal {
        Refusal::NotMaster {
            member: self.member,
            state,
        }
    }
}

/// Runs blocking file work (fsync) off the async workers; a panic in it is re-raised here.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
