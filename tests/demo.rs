//! The demo as a newcomer meets it (README's tour): `lodestar agent` on the embedded catalog
//! answers `dig web.marathon.mesos`, serves its own VIP backends on loopback so that
//! `curl http://198.19.0.10/` answers from both in turn, shows the same catalog in `lodestar
//! vips ls`, and removes everything it attached when it stops.
//!
//! The agent runs inside a network namespace of the test's own (loopback only: nothing
//! unsteered can leave) with the hooks on a cgroup of the test's own, instead of the root
//! cgroup a real demo uses.

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use support::agent::Agent;
use support::l4lb::{attached_programs, in_ns, udp_exchange, Lab};
use support::{assert_contains_all, lodestar_ok};

const WEB_VIP: &str = "198.19.0.10:80";
const ECHO_VIP: &str = "198.19.0.7:7";

/// `curl http://VIP/`: the body of one HTTP/1.1 GET.
fn http_body(vip: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&vip, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    Ok(body.to_string())
}

fn blackholes(lab: &Lab) -> String {
    let out = lab
        .client
        .exec_ok(&["ip", "-4", "route", "show", "type", "blackhole"]);
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn the_demo_serves_its_own_backends_and_cleans_up_after_itself() {
    let lab = Lab::new("demo", 0);
    let cgroup = lab.cgroup.path.display().to_string();
    let pin = lab.pin.display().to_string();
    let mut agent = Agent::start_in(
        &lab.client,
        &[
            "--l4lb-cgroup",
            &cgroup,
            "--l4lb-pin-path",
            &pin,
            "--l4lb-required",
        ],
    );
    let ns = lab.client.name.clone();

    // dig @127.0.0.1 web.marathon.mesos: the two web tasks, on loopback.
    let port = agent.dns.port().to_string();
    let dig = lab.client.exec_ok(&[
        "dig",
        "@127.0.0.1",
        "-p",
        &port,
        "+short",
        "web.marathon.mesos",
    ]);
    let answers: BTreeSet<String> = String::from_utf8_lossy(&dig.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        answers,
        BTreeSet::from(["127.0.1.101".to_string(), "127.0.2.101".to_string()])
    );

    // curl http://198.19.0.10/: both backends answer, each with its own name.
    let vip: SocketAddr = WEB_VIP.parse().unwrap();
    let bodies: BTreeSet<String> = in_ns(&ns, || {
        (0..40)
            .map(|_| http_body(vip).expect("an answer through the web VIP"))
            .collect()
    });
    assert_eq!(
        bodies,
        BTreeSet::from([
            "web.7c1b2f0e-1111-11ef-9c9a-0242ac110002 at 127.0.1.101:8080\n".to_string(),
            "web.7c1b2f0e-2222-11ef-9c9a-0242ac110002 at 127.0.2.101:8080\n".to_string(),
        ]),
        "both web backends answer through the VIP"
    );
    // The UDP VIP answers from its backend, and the reply comes from the VIP.
    let (reply, from) = in_ns(&ns, || udp_exchange(ECHO_VIP.parse().unwrap())).unwrap();
    assert_eq!(
        reply,
        "echo.9a8e6c4d-3333-11ef-9c9a-0242ac110002 at 127.0.1.102:7\n"
    );
    assert_eq!(from, ECHO_VIP.parse::<SocketAddr>().unwrap());

    // While the demo runs, its VIPs are blackholed: what the hooks do not steer stays here.
    assert_contains_all(&blackholes(&lab), &["198.19.0.10", "198.19.0.7"]);

    // lodestar vips ls: the same catalog, from the embedded demo and from the agent.
    let table = lodestar_ok(&["vips", "ls"]);
    let backends = ["127.0.1.101:8080", "127.0.2.101:8080"];
    assert_contains_all(&table, &["/web:80/tcp", "198.19.0.10"]);
    assert_contains_all(&table, &backends);
    let http = agent.http.to_string();
    let dataplane = in_ns(&ns, || lodestar_ok(&["vips", "ls", "--agent", &http]));
    assert_contains_all(&dataplane, &["198.19.0.10:80/tcp"]);
    assert_contains_all(&dataplane, &backends);
    assert!(!attached_programs(&lab.cgroup.path).is_empty());

    // A demo agent that stops leaves nothing behind: no programs, no pins, no routes.
    let status = agent.terminate().expect("the agent exits");
    assert!(status.success(), "{status:?}\n{}", agent.logs());
    assert!(
        attached_programs(&lab.cgroup.path).is_empty(),
        "programs still attached after the demo stopped:\n{}",
        agent.logs()
    );
    assert!(!lab.pin.exists(), "{} is still pinned", lab.pin.display());
    assert_eq!(blackholes(&lab), "", "blackhole routes left behind");
    assert!(
        in_ns(&ns, || http_body(vip)).is_err(),
        "the VIP still answers after the demo stopped"
    );
}
