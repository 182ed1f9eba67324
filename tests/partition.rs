//! Two sites on one machine (`support::sites`): cutting the WAN link, every agent keeps
//! answering from its last snapshot; the minority side says its state is stale; after the link
//! heals every agent converges without a restart. Also: an etcd member dies.

mod support;

use std::time::Duration;

use support::sites::{time_until, TwoSites};

const PATIENCE: Duration = Duration::from_secs(30);

fn eventually(what: &str, f: impl FnMut() -> bool) {
    assert!(
        time_until(PATIENCE, f).is_some(),
        "gave up after {PATIENCE:?} waiting for {what}"
    );
}

#[test]
fn a_wan_partition_keeps_both_sites_answering_and_they_converge_when_it_heals() {
    let mut sites = TwoSites::start();
    sites.put_task("before.1", "before", "198.18.1.1");
    let agent_a = sites.agent(&sites.a);
    let agent_b = sites.agent(&sites.b);
    for ns in [&sites.a, &sites.b] {
        eventually("both sites to answer", || {
            sites.dig(ns, "before.marathon.mesos") == ["198.18.1.1"]
        });
    }
    assert!(!sites.stale(&sites.a, &agent_a) && !sites.stale(&sites.b, &agent_b));

    // Cut the WAN link. Site A keeps the quorum and takes a write; site B cannot see it.
    sites.cut();
    sites.put_task("during.1", "during", "198.18.1.2");
    eventually("site A to see the write", || {
        sites.dig(&sites.a, "during.marathon.mesos") == ["198.18.1.2"]
    });
    eventually("site B to say its state is stale", || {
        sites.stale(&sites.b, &agent_b)
    });
    // Site B still answers from its last snapshot.
    assert_eq!(sites.dig(&sites.b, "before.marathon.mesos"), ["198.18.1.1"]);
    assert!(sites.dig(&sites.b, "during.marathon.mesos").is_empty());
    assert!(
        !sites.stale(&sites.a, &agent_a),
        "the majority side is not stale"
    );
    eventually("site B's log to say so", || {
        agent_b.logs().contains("catalog is stale")
    });

    // Heal: site B converges without a restart.
    sites.heal();
    eventually("site B to converge", || {
        sites.dig(&sites.b, "during.marathon.mesos") == ["198.18.1.2"]
    });
    eventually("site B to be fresh again", || {
        !sites.stale(&sites.b, &agent_b)
    });

    // A member dies: the other two keep the quorum; both sites follow a new write.
    drop(sites.members[1].take());
    sites.put_task("after.1", "after", "198.18.1.3");
    for ns in [&sites.a, &sites.b] {
        eventually("both sites to see the write after a member died", || {
            sites.dig(ns, "after.marathon.mesos") == ["198.18.1.3"]
        });
    }
}
