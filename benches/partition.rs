//! Two-site partition benchmark (the topology of `tests/support/sites.rs`: three etcd members
//! split two to one over a veth "WAN link", an agent in each site): how long after the link
//! heals the minority site answers a name written during the partition, and how long after the
//! cut it reports its state stale. Run as root: `cargo bench --bench partition [-- --rounds N]`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::report::{percentile, sorted, Plot, Report};
use support::sites::{time_until, TwoSites};

fn main() {
    let rounds = support::bench::arg("--rounds", 5) as usize;
    let sites = TwoSites::start();
    let _agent_a = sites.agent(&sites.a);
    let agent_b = sites.agent(&sites.b);

    let (mut detect, mut converge) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        sites.cut();
        let cut = Instant::now();
        let name = format!("round{round}");
        sites.put_task(&format!("{name}.1"), &name, "198.18.1.1");
        time_until(Duration::from_secs(60), || sites.stale(&sites.b, &agent_b))
            .expect("site B notices");
        detect.push(cut.elapsed().as_secs_f64());
        sites.heal();
        let qname = format!("{name}.marathon.mesos");
        let t = time_until(Duration::from_secs(60), || {
            !sites.dig(&sites.b, &qname).is_empty()
        })
        .expect("site B converges");
        converge.push(t.as_secs_f64());
        // Settle before the next round.
        time_until(Duration::from_secs(30), || !sites.stale(&sites.b, &agent_b));
    }
    let (detect, converge) = (sorted(&detect), sorted(&converge));
    let mut report = Report::new("partition");
    report.say(format!(
        "partition: {rounds} rounds, 3 etcd members split 2/1, one agent per site"
    ));
    report.table(
        &["measure", "Lodestar", "peer", "ratio (peer / Lodestar)"],
        &[
            vec![
                "heal -> minority site answers the new name, p50 / max".into(),
                format!(
                    "{:.2} s / {:.2} s",
                    percentile(&converge, 0.5),
                    percentile(&converge, 1.0)
                ),
                "Mesos-DNS: next 60 s poll, 30 s mean".into(),
                format!("{:.0}", 30.0 / percentile(&converge, 0.5)),
            ],
            vec![
                "cut -> minority site reports stale, p50 / max".into(),
                format!(
                    "{:.2} s / {:.2} s",
                    percentile(&detect, 0.5),
                    percentile(&detect, 1.0)
                ),
                "Mesos-DNS: never reports it".into(),
                "-".into(),
            ],
        ],
    );
    report.plot(
        "rounds",
        Plot::rounds(
            "WAN partition, per round (Mesos-DNS: 30 s mean to converge)",
            "seconds",
            &[
                ("heal -> minority answers the new name", &converge),
                ("cut -> minority reports stale", &detect),
            ],
        ),
    );
    report.finish();
}
