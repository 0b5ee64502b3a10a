use super::*;
use crate::controller::resources::tests::pair;
use crate::protocol::MemberState::{M, SL};

const IMAGE: &str = "localhost/hapair:dev";

fn created(pair: &HAPair, m: Member) -> Pod {
    let mut pod = resources::pod(pair, m, IMAGE);
    stamp(&mut pod);
    pod
}

#[test]
fn pods_created_from_the_current_spec_are_not_outdated() {
    let x = pair();
    let (a, b) = (created(&x, Member::A), created(&x, Member::B));
    assert!(outdated(&x, IMAGE, PerMember::new(Some(&a), Some(&b))).is_empty());
}

#[test]
fn a_changed_template_makes_every_existing_pod_outdated() {
    let x = pair();
    let (a, b) = (created(&x, Member::A), created(&x, Member::B));
    let mut changed = x.clone();
    changed.spec.template.spec.as_mut().unwrap().containers[0].image = Some("busybox:2".into());
    let pods = PerMember::new(Some(&a), Some(&b));
    assert_eq!(outdated(&changed, IMAGE, pods), [Member::A, Member::B]);
    assert_eq!(
        outdated(&x, "another/agent:image", PerMember::new(Some(&a), None)),
        [Member::A],
        "the operator's own agent image is part of the pod"
    );
}

#[test]
fn a_pod_without_a_hash_is_never_reported() {
    let x = pair();
    let old = resources::pod(&x, Member::A, "older/agent:image");
    assert!(outdated(&x, IMAGE, PerMember::new(Some(&old), None)).is_empty());
}

#[test]
fn the_advice_deletes_the_standby_first_then_the_master() {
    let note = advice("x", &[Member::A, Member::B], PerMember::new(M, SL));
    let standby = note.find("kubectl delete pod x-b").expect(&note);
    let master = note.find("kubectl delete pod x-a").expect(&note);
    assert!(standby < master, "{note}");
    assert!(note.contains("x-b, x-a"), "{note}");
}
