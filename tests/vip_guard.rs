//! VIP labels that try to take over addresses the node and its agent need, and the agent's own
//! connections to a VIP address: the real agent on a catalog file, the real BPF programs on a
//! cgroup the test creates (the test process and the agent are in it), backends in network
//! namespaces. Needs root (cgroups, namespaces, BPF); fails saying so otherwise.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::l4lb::{
    agent_on_files, backend_status, connect, in_ns, vip_status, within, Lab, VIP4,
};
use support::{http_get, metric};

/// A task at `ip:port` whose port carries `vips` (label values), as a catalog TOML fragment.
fn task(id: &str, ip: &str, port: u16, vips: &[&str]) -> String {
    let labels: Vec<String> = vips
        .iter()
        .enumerate()
        .map(|(i, v)| format!("VIP_{i} = \"{v}\""))
        .collect();
    format!(
        "[[tasks]]\nid = \"{id}\"\nname = \"{id}\"\nframework = \"marathon\"\nagent = \"a1\"\n\
         ips = [{{ ip = \"{ip}\", source = \"netinfo\" }}]\n[tasks.discovery]\nname = \"{id}\"\n\
         [[tasks.discovery.ports]]\nnumber = {port}\nprotocol = \"tcp\"\nlabels = {{ {} }}\n",
        labels.join(", ")
    )
}

#[test]
fn vip_labels_cannot_take_over_the_agents_addresses_and_its_own_sockets_are_never_steered() {
    let lab = Lab::new("guard", 2);
    // Connections nobody steers to 198.19.0.0/16 fail here (the client namespace has no route
    // out anyway).
    lab.client
        .exec_ok(&["ip", "route", "add", "blackhole", "198.19.0.0/16"]);
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog.toml");
    std::fs::write(&catalog, lab.catalog_toml()).unwrap();
    let config = dir.path().join("agent.toml");
    // The agent forwards DNS to b1's address (no query is sent), and checks every TCP backend.
    std::fs::write(
        &config,
        "[catalog]\nfile_poll_ms = 100\n[dns]\nupstreams = [\"198.18.1.2:53\"]\n\
         [l4lb.passive]\nfail_threshold = 0\n\
         [l4lb.active]\nenabled = true\ninterval_ms = 200\ntimeout_ms = 200\nrise = 2\nfall = 2\n",
    )
    .unwrap();
    let agent = agent_on_files(&lab, &catalog, &config);
    let client = lab.client.name.clone();

    // Hostile labels, each on a real backend's port: the agent's own HTTP API (loopback), this
    // node's address towards b1 (198.18.1.1), its DNS upstream, a master's address, and an
    // address outside l4lb.vip_ranges (no traffic is sent to it). And a VIP whose one backend
    // is the lab's VIP 198.19.0.1:80: the agent's active check connects to that address.
    let http = agent.http.to_string();
    let mut doc = lab.catalog_toml();
    doc.push_str(&task(
        "hostile",
        "198.18.1.2",
        8080,
        &[
            &http,
            "198.18.1.1:8080",
            "198.18.1.2:53",
            "198.18.2.2:5050",
            "192.0.2.80:80",
        ],
    ));
    doc.push_str(&task("probe", "198.19.0.1", 80, &["198.19.0.9:80"]));
    doc.push_str("[[masters]]\nid = \"m1\"\naddress = \"198.18.2.2\"\nport = 5050\n");
    std::fs::write(&catalog, doc).unwrap();
    let vips = || -> serde_json::Value {
        serde_json::from_str(&in_ns(&client, || http_get(agent.http, "/v1/vips"))).unwrap()
    };
    within(
        Duration::from_secs(10),
        "the hostile catalog is loaded",
        || {
            vips()
                .as_array()
                .is_some_and(|a| a.iter().any(|v| v["address"] == "198.19.0.9:80"))
        },
    );

    // The agent's probe of 198.19.0.1:80 is not steered: it meets the blackhole and the backend
    // is taken out. (Steered, it would reach b1 or b2 and stay in.)
    within(Duration::from_secs(5), "the probe fails unsteered", || {
        backend_status(&vip_status(&vips(), "198.19.0.9:80"), "198.19.0.1:80")["active_down"]
            == true
    });
    // The test process's connections are steered all the while, and its requests to the
    // agent's API reach the agent, not b1.
    in_ns(&client, || {
        for _ in 0..20 {
            let c = connect(SocketAddr::new(VIP4, 80)).expect("connect through the VIP");
            assert!(c.backend == "b1" || c.backend == "b2", "{}", c.backend);
        }
    });
    let all = vips();
    for refused in [
        http.as_str(),
        "198.18.1.1:8080",
        "198.18.1.2:53",
        "198.18.2.2:5050",
        "192.0.2.80:80",
    ] {
        assert!(
            !all.as_array()
                .unwrap()
                .iter()
                .any(|v| v["address"] == refused),
            "{refused} was taken as a VIP: {all}"
        );
    }
    let metrics = in_ns(&client, || http_get(agent.http, "/metrics"));
    for reason in [
        "loopback",
        "node_address",
        "upstream",
        "master",
        "outside_ranges",
    ] {
        assert_eq!(
            metric(
                &metrics,
                &format!("lodestar_vip_refused{{reason=\"{reason}\"}}")
            ),
            1,
            "{reason}:\n{metrics}"
        );
        assert_eq!(
            metric(
                &metrics,
                &format!("lodestar_vip_refusals_total{{reason=\"{reason}\"}}")
            ),
            1,
            "{reason}"
        );
    }
    let logs = agent.logs();
    assert_eq!(
        logs.matches("VIP address refused").count(),
        5,
        "one line per refusal:\n{logs}"
    );
}
