//! The fence guard: a dedicated OS thread that fences a processing member whose Lease went stale.
//!
//! A thread, not a task: it must fire on time even when the async runtime is stuck (a hung API
//! call, a blocked worker) and even while the volume hangs in an fsync (the applier persists
//! outside the acting lock). It only ever moves the member to `X`; it never acts on a command.

use std::io;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::acting::{RoleIo, Shared};
use super::fence::Verdict;

/// How soon a fence whose role-file write failed is tried again.
const RETRY: Duration = Duration::from_millis(100);

/// Starts the guard. It runs until the process exits.
pub fn spawn<F: RoleIo + 'static>(shared: Arc<Shared<F>>) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("fence-guard".into())
        .spawn(move || guard(&shared))
}

fn guard<F: RoleIo>(shared: &Shared<F>) {
    let mut acting = shared.lock();
    loop {
        let now = Instant::now();
        let timeout = match acting.fence_if_stale(now) {
            Ok(Verdict::Idle | Verdict::Fence { .. }) => None,
            Ok(Verdict::WaitUntil(deadline)) => Some(deadline.saturating_duration_since(now)),
            Err(e) => {
                tracing::error!(error = %e, "cannot write role X to fence; retrying");
                Some(RETRY)
            }
        };
        acting = shared.wait(acting, timeout);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::acting::tests::FakeRole;
    use crate::agent::acting::Acting;
    use crate::agent::fence::FenceTimer;
    use crate::mailbox::CommandEnvelope;
    use crate::protocol::MemberState;

    fn wait_until(what: &str, deadline: Duration, mut done: impl FnMut() -> bool) -> Duration {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < deadline, "{what} not within {deadline:?}");
            thread::sleep(Duration::from_millis(2));
        }
        start.elapsed()
    }

    #[test]
    fn guard_fences_a_processing_member_after_the_budget_and_not_before() {
        let budget = Duration::from_millis(300);
        let role = FakeRole::default();
        let acting = Acting::start(role.clone(), FenceTimer::new(budget, Instant::now())).unwrap();
        let shared = Shared::new(acting);
        spawn(shared.clone()).unwrap();
        let sm = CommandEnvelope {
            command: "SM/1".parse().unwrap(),
            seq: 1,
            pod: "me".into(),
        };
        let start = Instant::now();
        {
            let mut a = shared.lock();
            a.renewed(start);
            a.admit(1);
            a.act(&sm, start).unwrap();
        }
        shared.notify();
        wait_until("fence", Duration::from_secs(5), || {
            shared.lock().state() == MemberState::X
        });
        let elapsed = start.elapsed();
        assert!(
            elapsed >= budget,
            "fenced after {elapsed:?}, before the budget"
        );
        assert!(shared.lock().fenced().is_some());
        assert_eq!(
            *role.journal.lock().unwrap(),
            ["role X", "role SM", "role X"]
        );
    }
}
