//! The self-fencing timer (DESIGN "Failure, recovery, fencing"): a processing agent that has not
//! renewed its Lease for `lease duration − margin` must stop processing, because the operator
//! promotes the peer once the full lease duration has passed without a renewal.
//!
//! Pure: the caller passes every instant. Instants are monotonic (`std::time::Instant`), never
//! wall-clock time: a wall clock may jump, and comparing two machines' clocks decides nothing.

use std::time::{Duration, Instant};

/// When the agent must fence itself, measured from its last successful renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FenceTimer {
    /// `lease duration − margin`: how long a processing agent may go without a renewal.
    budget: Duration,
    /// When the last successful renewal was *sent*: the API server wrote it at that instant or
    /// later, so counting from the send errs on the safe side.
    last_renewal: Instant,
}

/// What the timer says at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Fence now: processing, and no renewal for at least the budget.
    Fence { silent_for: Duration },
    /// Processing: nothing to do before this instant, unless a renewal moves it later.
    WaitUntil(Instant),
    /// Not processing: nothing to fence, whatever the time.
    Idle,
}

impl FenceTimer {
    /// A timer started at `now` (the agent's start counts as a renewal: it is not processing yet).
    pub fn new(budget: Duration, now: Instant) -> Self {
        FenceTimer {
            budget,
            last_renewal: now,
        }
    }

    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// A renewal sent at `sent` succeeded. Renewals may complete out of order: keep the latest.
    pub fn renewed(&mut self, sent: Instant) {
        self.last_renewal = self.last_renewal.max(sent);
    }

    /// The instant after which a processing agent must be fenced.
    pub fn deadline(&self) -> Instant {
        self.last_renewal + self.budget
    }

    /// Must an agent that is `processing` fence itself at `now`?
    pub fn check(&self, processing: bool, now: Instant) -> Verdict {
        let deadline = self.deadline();
        if !processing {
            return Verdict::Idle;
        }
        if now < deadline {
            return Verdict::WaitUntil(deadline);
        }
        Verdict::Fence {
            silent_for: now.saturating_duration_since(self.last_renewal),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DURATION: Duration = Duration::from_secs(10);
    const MARGIN: Duration = Duration::from_secs(3);

    fn timer(start: Instant) -> FenceTimer {
        FenceTimer::new(DURATION - MARGIN, start)
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn fires_after_duration_minus_margin_without_renewal() {
        let t0 = Instant::now();
        let t = timer(t0);
        assert_eq!(
            t.check(true, t0 + secs(6)),
            Verdict::WaitUntil(t0 + secs(7))
        );
        assert_eq!(
            t.check(true, t0 + secs(7)),
            Verdict::Fence {
                silent_for: secs(7)
            }
        );
        assert!(matches!(
            t.check(true, t0 + secs(60)),
            Verdict::Fence { .. }
        ));
    }

    #[test]
    fn does_not_fire_while_renewing() {
        let t0 = Instant::now();
        let mut t = timer(t0);
        for s in (2..=60).step_by(2) {
            t.renewed(t0 + secs(s));
            assert_eq!(
                t.check(true, t0 + secs(s + 1)),
                Verdict::WaitUntil(t0 + secs(s + 7))
            );
        }
    }

    #[test]
    fn does_not_fire_when_not_processing() {
        let t0 = Instant::now();
        let t = timer(t0);
        assert_eq!(t.check(false, t0 + secs(600)), Verdict::Idle);
    }

    #[test]
    fn a_late_completing_older_renewal_does_not_move_the_deadline_back() {
        let t0 = Instant::now();
        let mut t = timer(t0);
        t.renewed(t0 + secs(5));
        t.renewed(t0 + secs(3));
        assert_eq!(t.deadline(), t0 + secs(12));
    }
}
