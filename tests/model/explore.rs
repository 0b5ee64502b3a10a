//! Exhaustive breadth-first exploration of every interleaving of the model's actions.
//!
//! Hand-rolled rather than `stateright`: its `eventually` properties hold only on acyclic paths,
//! and our liveness check ("after faults stop, the pair gets a master") needs a fair schedule from
//! every reachable state, which is simplest to state directly. Like stateright and TLC, visited
//! states are kept as 64-bit fingerprints (memory), and a counterexample is rebuilt by replaying
//! its actions from the initial state.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};

use super::{all_actions, Action, DecideFn, World};

/// What the exploration found.
pub struct Report {
    pub states: usize,
    pub transitions: usize,
    /// The first broken invariant, with the path of actions that leads to it.
    pub violation: Option<(String, Vec<(Action, World)>)>,
}

pub fn fingerprint(w: &World) -> u64 {
    let mut h = DefaultHasher::new();
    w.hash(&mut h);
    h.finish()
}

/// Visit every state reachable from `init`, checking `check` in each.
pub fn explore(
    init: World,
    decide: DecideFn,
    check: impl Fn(&World) -> Result<(), String>,
) -> Report {
    let root = fingerprint(&init);
    let mut parents: HashMap<u64, (u64, Option<Action>)> = HashMap::from([(root, (root, None))]);
    let mut queue = VecDeque::from([init.clone()]);
    let mut transitions = 0;
    while let Some(world) = queue.pop_front() {
        if let Err(why) = check(&world) {
            let path = replay(&init, decide, &parents, fingerprint(&world));
            return Report {
                states: parents.len(),
                transitions,
                violation: Some((why, path)),
            };
        }
        let here = fingerprint(&world);
        if parents.len().is_multiple_of(1_000_000)
            && std::env::var_os("HAPAIR_MODEL_PROGRESS").is_some()
        {
            eprintln!("  {} states, queue {}", parents.len(), queue.len());
        }
        for action in all_actions() {
            let Some(next) = world.step(action, decide) else {
                continue;
            };
            transitions += 1;
            let fp = fingerprint(&next);
            if let std::collections::hash_map::Entry::Vacant(e) = parents.entry(fp) {
                e.insert((here, Some(action)));
                queue.push_back(next);
            }
        }
    }
    Report {
        states: parents.len(),
        transitions,
        violation: None,
    }
}

/// The actions from `init` to the state with fingerprint `target`, with the states they lead to.
fn replay(
    init: &World,
    decide: DecideFn,
    parents: &HashMap<u64, (u64, Option<Action>)>,
    target: u64,
) -> Vec<(Action, World)> {
    let mut actions = Vec::new();
    let mut fp = target;
    while let Some((parent, Some(action))) = parents.get(&fp) {
        actions.push(*action);
        fp = *parent;
    }
    actions.reverse();
    let mut world = init.clone();
    actions
        .into_iter()
        .filter_map(|a| {
            world = world.step(a, decide)?;
            Some((a, world.clone()))
        })
        .collect()
}
