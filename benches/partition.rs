//! Two-site partition benchmark (the topology of `tests/support/sites.rs`: three etcd members
//! split two to one over a veth "WAN link", an agent in each site): how long after the link
//! heals the minority site answers a name written during the partition, and how long after the
//! cut it reports its state stale. Run as root: `cargo bench --bench partition [-- --rounds N]`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::sites::{time_until, TwoSites};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

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
    detect.sort_by(|x, y| x.partial_cmp(y).unwrap());
    converge.sort_by(|x, y| x.partial_cmp(y).unwrap());
    println!("partition: {rounds} rounds, 3 etcd members split 2/1, one agent per site");
    println!();
    println!("| measure | Lodestar | peer | ratio (peer / Lodestar) |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| heal -> minority site answers the new name, p50 / max | {:.2} s / {:.2} s | Mesos-DNS: next 60 s poll, 30 s mean | {:.0} |",
        percentile(&converge, 0.5),
        converge[converge.len() - 1],
        30.0 / percentile(&converge, 0.5)
    );
    println!(
        "| cut -> minority site reports stale, p50 / max | {:.2} s / {:.2} s | Mesos-DNS: never reports it | - |",
        percentile(&detect, 0.5),
        detect[detect.len() - 1]
    );
}
