//! Fault schedules: what the chaos test does to the pair, drawn from a seed so that a failing run
//! is replayed exactly (`HAPAIR_CHAOS_SEED`). Pure: no cluster here.

use std::fmt;
use std::time::Duration;

/// Which pod a fault hits, by the role it has when the fault comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The pod labelled master.
    Master,
    /// The other member's pod (standby, or down).
    Other,
}

/// One fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Force-delete the pod (grace 0). With `down`, its replacement is held back that long (a
    /// machine that takes a while to come back) while the schedule goes on; without, it comes
    /// back at once.
    KillPod { role: Role, down: Option<Duration> },
    /// Force-delete both pods and hold both back; `first` comes back first, the other `gap`
    /// later, or, when the first cannot start alone (the seed's wait), once the first waits.
    KillBoth { first: Role, gap: Duration },
    /// SIGKILL the operator; a new one starts `down` later (other faults may come meanwhile).
    KillOperator { down: Duration },
    /// SIGKILL the agent container (the kubelet restarts it inside the same pod).
    KillAgent { role: Role },
    /// Freeze the agent container (cgroup freezer) past its lease, then thaw it.
    StallAgent { role: Role },
}

/// The kinds, for the report.
pub const KINDS: [&str; 8] = [
    "kill master pod",
    "kill standby pod",
    "kill both pods",
    "kill operator",
    "kill master agent",
    "kill standby agent",
    "stall master agent",
    "stall standby agent",
];

impl Fault {
    /// Index into [`KINDS`].
    pub fn kind(&self) -> usize {
        let other = |role: &Role| usize::from(*role == Role::Other);
        match self {
            Fault::KillPod { role, .. } => other(role),
            Fault::KillBoth { .. } => 2,
            Fault::KillOperator { .. } => 3,
            Fault::KillAgent { role } => 4 + other(role),
            Fault::StallAgent { role } => 6 + other(role),
        }
    }

    /// True when the fault takes the processing member down (a failover follows).
    pub fn hits_master(&self) -> bool {
        matches!(
            self,
            Fault::KillPod {
                role: Role::Master,
                ..
            } | Fault::KillAgent { role: Role::Master }
                | Fault::StallAgent { role: Role::Master }
        )
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: &Duration| d.as_millis();
        match self {
            Fault::KillPod { down: None, .. } => write!(f, "{}", KINDS[self.kind()]),
            Fault::KillPod { down: Some(d), .. } => {
                write!(f, "{} (down {} ms)", KINDS[self.kind()], ms(d))
            }
            Fault::KillBoth { first, gap } => {
                write!(
                    f,
                    "kill both pods ({first:?} back first, other {} ms later)",
                    ms(gap)
                )
            }
            Fault::KillOperator { down } => write!(f, "kill operator (down {} ms)", ms(down)),
            _ => write!(f, "{}", KINDS[self.kind()]),
        }
    }
}

/// A step: wait `after`, then inject `fault`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub after: Duration,
    pub fault: Fault,
}

/// One schedule: one to three faults in a row, then a quiet period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub number: usize,
    pub steps: Vec<Step>,
}

impl Schedule {
    /// True when both members are down at once: the only case where a naive policy ("whoever
    /// comes back first is master") can act differently from the seed's.
    pub fn has_full_outage(&self) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(s.fault, Fault::KillBoth { .. }))
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}:", self.number)?;
        for step in &self.steps {
            write!(f, " +{}ms {};", step.after.as_millis(), step.fault)?;
        }
        Ok(())
    }
}

/// `count` schedules from `seed`. Every fifth schedule first isolates the master (its standby
/// goes down for a while, so writes are acknowledged by the master alone), then takes both down
/// and brings the stale member back first: the case where resuming on the wrong member loses
/// acknowledged writes.
pub fn schedules(seed: u64, count: usize) -> Vec<Schedule> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (1..=count)
        .map(|number| {
            let steps = if number % 5 == 0 {
                stale_member_first(&mut rng)
            } else {
                (0..rng.usize(1..=3)).map(|_| step(&mut rng)).collect()
            };
            Schedule { number, steps }
        })
        .collect()
}

fn ms(rng: &mut fastrand::Rng, range: std::ops::RangeInclusive<u64>) -> Duration {
    Duration::from_millis(rng.u64(range))
}

fn role(rng: &mut fastrand::Rng) -> Role {
    if rng.bool() {
        Role::Master
    } else {
        Role::Other
    }
}

fn step(rng: &mut fastrand::Rng) -> Step {
    let fault = match rng.u32(0..100) {
        0..=29 => Fault::KillPod {
            role: role(rng),
            down: rng.bool().then(|| ms(rng, 300..=2000)),
        },
        30..=44 => Fault::KillBoth {
            first: role(rng),
            gap: ms(rng, 0..=1500),
        },
        45..=64 => Fault::KillOperator {
            down: ms(rng, 0..=2000),
        },
        65..=79 => Fault::KillAgent { role: role(rng) },
        _ => Fault::StallAgent { role: role(rng) },
    };
    Step {
        after: ms(rng, 0..=1000),
        fault,
    }
}

fn stale_member_first(rng: &mut fastrand::Rng) -> Vec<Step> {
    vec![
        Step {
            after: Duration::ZERO,
            fault: Fault::KillPod {
                role: Role::Other,
                down: Some(ms(rng, 1500..=3000)),
            },
        },
        Step {
            after: ms(rng, 300..=1000),
            fault: Fault::KillBoth {
                first: Role::Other,
                gap: ms(rng, 0..=1000),
            },
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_the_same_schedules_and_another_seed_does_not() {
        assert_eq!(schedules(7, 50), schedules(7, 50));
        assert_ne!(schedules(7, 50), schedules(8, 50));
    }

    #[test]
    fn fifty_schedules_inject_every_kind_of_fault() {
        let all = schedules(1, 50);
        for (kind, name) in KINDS.iter().enumerate() {
            let n = all
                .iter()
                .flat_map(|s| &s.steps)
                .filter(|s| s.fault.kind() == kind)
                .count();
            assert!(n > 0, "no {name} in 50 schedules");
        }
        assert!(all.iter().filter(|s| s.has_full_outage()).count() >= 10);
    }
}
