//! The XDP and tc programs on packet fixtures, through `BPF_PROG_TEST_RUN` in the real kernel:
//! each case is a description, an input packet, the expected action and the expected output
//! packet, byte for byte (checksums included: expected packets are built from scratch, so the
//! programs' incremental checksum updates are checked against full computations). Maps are
//! programmed by the real reconciler from a plan. Needs root (BPF).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

mod packet;

use lodestar_control::model::Protocol;
use lodestar_l4lb::kernel_xdp::{XdpConfig, XdpLb};
use lodestar_l4lb::layout::Ct;
use lodestar_l4lb::maglev;
use lodestar_l4lb::plan::{
    BackendAddr, Locality, Plan, PlannedBackend, PlannedService, ServiceAddr,
};
use lodestar_l4lb::xdp::{flow_hash, Mode, XdpMaps, XdpReconciler};
use packet::{eth, finish, pkt, sum16, Pkt};

/// A packet from the fixtures' IPv4 client.
fn client4(dst: &str, proto: Protocol, sport: u16, dport: u16) -> Pkt {
    pkt("198.18.100.1", dst, proto, sport, dport)
}

/// A packet from the fixtures' IPv6 client.
fn client6(dst: &str, proto: Protocol, sport: u16, dport: u16) -> Pkt {
    pkt("2001:db8:100::1", dst, proto, sport, dport)
}

/// The VIP a client's packet `p` is sent to.
fn vip_of(p: &Pkt) -> ServiceAddr {
    ServiceAddr {
        ip: p.dst,
        port: p.dport,
        protocol: p.proto,
    }
}

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;

/// The GUE packet the XDP program should make of `inner`, to `node`.
fn gue(inner: &Pkt, node: IpAddr, src: IpAddr) -> Vec<u8> {
    let ip = inner.ip();
    let sport = 0xc000 | (flow_hash(&inner.flow()) & 0x3fff) as u16;
    let mut udp = Vec::new();
    udp.extend(sport.to_be_bytes());
    udp.extend(6080u16.to_be_bytes());
    udp.extend(((8 + ip.len()) as u16).to_be_bytes());
    udp.extend([0, 0]);
    udp.extend(&ip);
    match (src, node) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut h = vec![0x45, 0];
            h.extend(((20 + udp.len()) as u16).to_be_bytes());
            h.extend([0, 0, 0x40, 0, 64, 17, 0, 0]);
            h.extend(s.octets());
            h.extend(d.octets());
            let c = finish(sum16(&h, 0));
            h[10..12].copy_from_slice(&c.to_be_bytes());
            h.extend(udp);
            eth(true, h)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut h = vec![0x60, 0, 0, 0];
            h.extend((udp.len() as u16).to_be_bytes());
            h.extend([17, 64]);
            h.extend(s.octets());
            h.extend(d.octets());
            h.extend(udp);
            eth(false, h)
        }
        _ => panic!(),
    }
}

struct Lab {
    lb: XdpLb,
    rec: XdpReconciler,
    pin: std::path::PathBuf,
    modes: BTreeMap<String, Mode>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.pin);
    }
}

fn backend(ip: &str, port: u16, node: &str, slots: u32) -> (BackendAddr, PlannedBackend) {
    (
        BackendAddr {
            ip: ip.parse().unwrap(),
            port,
        },
        PlannedBackend {
            task: ip.into(),
            weight: slots,
            healthy: true,
            active_down: false,
            local: false,
            slots,
            node: node.parse().unwrap(),
        },
    )
}

fn service(
    ip: &str,
    port: u16,
    proto: Protocol,
    backends: Vec<(BackendAddr, PlannedBackend)>,
) -> (ServiceAddr, PlannedService) {
    let addr = ServiceAddr {
        ip: ip.parse().unwrap(),
        port,
        protocol: proto,
    };
    let vip = format!("{}/{}", std::net::SocketAddr::new(addr.ip, port), proto);
    (
        addr,
        PlannedService {
            vip,
            backends: backends.into_iter().collect(),
            fail_open: false,
            locality: Locality::Any,
        },
    )
}

fn base_plan(b1_slots: u32, b2_slots: u32) -> Plan {
    let v4 = || {
        vec![
            backend("198.18.1.2", 8080, "198.18.1.10", b1_slots),
            backend("198.18.2.2", 8080, "198.18.2.10", b2_slots),
        ]
    };
    let v6 = || {
        vec![
            backend("2001:db8:1::2", 8080, "2001:db8:1::10", 1),
            backend("2001:db8:2::2", 8080, "2001:db8:2::10", 1),
        ]
    };
    [
        service("198.19.0.1", 80, Protocol::Tcp, v4()),
        service("198.19.0.1", 53, Protocol::Udp, v4()),
        service("2001:db8:ffff::1", 80, Protocol::Tcp, v6()),
        service("2001:db8:ffff::1", 53, Protocol::Udp, v6()),
        service("198.19.0.2", 80, Protocol::Tcp, v4()),
        service("2001:db8:ffff::2", 80, Protocol::Tcp, v6()),
        service("198.19.0.3", 80, Protocol::Tcp, vec![]),
    ]
    .into_iter()
    .collect()
}

fn lab_config() -> XdpConfig {
    XdpConfig {
        gue_source_v4: Some(Ipv4Addr::new(198, 18, 0, 1)),
        gue_source_v6: Some("2001:db8::1".parse::<Ipv6Addr>().unwrap()),
        gue_sources: vec![
            IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
            "2001:db8::1".parse().unwrap(),
        ],
        ..XdpConfig::default()
    }
}

impl Lab {
    fn new(tag: &str) -> Lab {
        Lab::with_config(tag, &lab_config())
    }

    fn with_config(tag: &str, cfg: &XdpConfig) -> Lab {
        let pin = std::path::PathBuf::from(format!(
            "/sys/fs/bpf/lodestar-fixtures-{tag}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&pin);
        let lb = XdpLb::open(&pin, cfg, true).unwrap_or_else(|e| {
            panic!("cannot load the XDP object ({e}); these tests need root and BPF")
        });
        let modes = [
            ("198.19.0.2:80/tcp".to_string(), Mode::Gue),
            ("[2001:db8:ffff::2]:80/tcp".to_string(), Mode::Gue),
        ]
        .into_iter()
        .collect();
        let mut lab = Lab {
            lb,
            rec: XdpReconciler::new(maglev::DEFAULT_MAX, maglev::DEFAULT_SEED),
            pin,
            modes,
        };
        lab.program(&base_plan(1, 1));
        lab
    }

    fn program(&mut self, plan: &Plan) {
        let modes = self.modes.clone();
        let rep = self.rec.apply(
            plan,
            &|v| modes.get(v).copied().unwrap_or(Mode::Nat),
            &mut self.lb,
        );
        assert!(rep.errors.is_empty(), "{rep:?}");
    }

    /// The backend Maglev gives a new flow of `p`.
    fn maglev_pick(&self, p: &Pkt) -> BackendAddr {
        let st = &self.rec.vips()[&vip_of(p)];
        let slot = flow_hash(&p.flow()) as usize % st.ring.len();
        let id = st.ring[slot];
        *st.reals.iter().find(|(_, (rid, _))| *rid == id).unwrap().0
    }

    fn run(&self, prog: &str, frame: &[u8]) -> (u32, Vec<u8>) {
        let r = self.lb.test_run(prog, frame, 1).expect("BPF_PROG_TEST_RUN");
        (r.retval, r.data)
    }

    fn counter(&self, name: &str) -> u64 {
        let slot = lodestar_l4lb::layout::LX_COUNTERS
            .iter()
            .find(|c| c.0 == name)
            .unwrap()
            .2;
        self.lb.global()[slot as usize]
    }
}

/// The node of a fixture backend: 198.18.N.2 runs on 198.18.N.10, 2001:db8:N::2 on ::10.
fn node_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let mut o = v4.octets();
            o[3] = 10;
            IpAddr::from(o)
        }
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[15] = 0x10;
            IpAddr::from(o)
        }
    }
}

fn rewritten(p: &Pkt, to: BackendAddr) -> Pkt {
    let mut q = p.clone();
    q.dst = to.ip;
    q.dport = to.port;
    q
}

fn no_csum(mut p: Pkt) -> Pkt {
    p.udp_no_csum = true;
    p
}

struct Case {
    what: &'static str,
    input: Vec<u8>,
    action: u32,
    output: Vec<u8>,
}

#[test]
fn xdp_fixtures() {
    let lab = Lab::new("table");
    let mut cases = Vec::new();
    for (what, p) in [
        (
            "IPv4 TCP SYN to a NAT VIP",
            client4("198.19.0.1", Protocol::Tcp, 40000, 80),
        ),
        (
            "IPv4 UDP to a NAT VIP",
            client4("198.19.0.1", Protocol::Udp, 40001, 53),
        ),
        (
            "IPv6 TCP SYN to a NAT VIP",
            client6("2001:db8:ffff::1", Protocol::Tcp, 40002, 80),
        ),
        (
            "IPv6 UDP to a NAT VIP",
            client6("2001:db8:ffff::1", Protocol::Udp, 40003, 53),
        ),
        (
            "IPv4 UDP without a checksum stays without one",
            no_csum(client4("198.19.0.1", Protocol::Udp, 40004, 53)),
        ),
        (
            "IPv6 UDP with a zero checksum (a tunnel's, RFC 6935) stays zero",
            no_csum(client6("2001:db8:ffff::1", Protocol::Udp, 40004, 53)),
        ),
    ] {
        let to = lab.maglev_pick(&p);
        cases.push(Case {
            what,
            input: p.frame(),
            action: XDP_PASS,
            output: rewritten(&p, to).frame(),
        });
    }
    let mut frag = client4("198.19.0.1", Protocol::Udp, 40020, 53);
    frag.fragment = true;
    let mut frag6 = client6("2001:db8:ffff::1", Protocol::Udp, 40021, 53);
    frag6.fragment = true;
    let mut opts = client4("198.19.0.1", Protocol::Tcp, 40022, 80);
    opts.ip_options = true;
    let mut short = client4("198.19.0.1", Protocol::Tcp, 40024, 80).frame();
    // The IPv4 total length still claims the full packet; only the buffer is short.
    short.truncate(14 + 20 + 10);
    // Packets that leave as they came.
    for (what, frame, action) in [
        (
            "traffic to no VIP passes untouched",
            client4("198.18.9.9", Protocol::Tcp, 40010, 80).frame(),
            XDP_PASS,
        ),
        (
            "a VIP address on an unknown port passes untouched",
            client4("198.19.0.1", Protocol::Tcp, 40011, 81).frame(),
            XDP_PASS,
        ),
        (
            "a VIP port over the other protocol passes untouched",
            client4("198.19.0.1", Protocol::Udp, 40012, 80).frame(),
            XDP_PASS,
        ),
        (
            "an IPv4 fragment passes to the kernel",
            frag.frame(),
            XDP_PASS,
        ),
        (
            "an IPv6 fragment passes to the kernel",
            frag6.frame(),
            XDP_PASS,
        ),
        ("IPv4 options pass to the kernel", opts.frame(), XDP_PASS),
        (
            "a VIP without backends drops",
            client4("198.19.0.3", Protocol::Tcp, 40023, 80).frame(),
            XDP_DROP,
        ),
        (
            "a truncated TCP header passes to the kernel",
            short,
            XDP_PASS,
        ),
    ] {
        cases.push(Case {
            what,
            input: frame.clone(),
            action,
            output: frame,
        });
    }
    for (what, p, src) in [
        (
            "IPv4 TCP to a GUE VIP is encapsulated to the backend's node",
            client4("198.19.0.2", Protocol::Tcp, 40030, 80),
            "198.18.0.1",
        ),
        (
            "IPv6 TCP to a GUE VIP is encapsulated to the backend's node",
            client6("2001:db8:ffff::2", Protocol::Tcp, 40031, 80),
            "2001:db8::1",
        ),
    ] {
        let to = lab.maglev_pick(&p);
        let node = node_of(to.ip);
        cases.push(Case {
            what,
            input: p.frame(),
            action: XDP_PASS,
            output: gue(&p, node, src.parse().unwrap()),
        });
    }

    let mut failures = Vec::new();
    for c in &cases {
        let (action, out) = lab.run("lx_xdp", &c.input);
        if action != c.action || out != c.output {
            failures.push(format!(
                "{}: action {action} (expected {}), output {}",
                c.what,
                c.action,
                if out == c.output {
                    "as expected".to_string()
                } else {
                    format!("{out:02x?}\n  expected {:02x?}", c.output)
                }
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert_eq!(lab.counter("pass_fragment"), 2);
    assert_eq!(lab.counter("pass_ip_options"), 1);
    assert_eq!(lab.counter("drop_no_backend"), 1);
    assert_eq!(lab.counter("pass_malformed"), 1);
}

#[test]
fn gue_decapsulation_and_nat_replies_byte_for_byte() {
    let lab = Lab::new("tc");
    for (p, src) in [
        (
            client4("198.19.0.2", Protocol::Tcp, 41000, 80),
            "198.18.0.1",
        ),
        (
            client6("2001:db8:ffff::2", Protocol::Tcp, 41001, 80),
            "2001:db8::1",
        ),
    ] {
        let (action, encapsulated) = lab.run("lx_xdp", &p.frame());
        assert_eq!(action, XDP_PASS);
        let to = lab.maglev_pick(&p);
        let node = node_of(to.ip);
        assert_eq!(encapsulated, gue(&p, node, src.parse().unwrap()));
        let (action, inner) = lab.run("lx_tc_decap", &encapsulated);
        assert_eq!(action, TC_ACT_OK);
        assert_eq!(
            inner,
            p.frame(),
            "decapsulation gives back the client's packet"
        );
    }
    assert_eq!(lab.counter("tc_decap"), 2);

    // NAT: the reply from the backend gets the VIP back as its source on tc egress.
    for p in [
        client4("198.19.0.1", Protocol::Tcp, 41002, 80),
        client6("2001:db8:ffff::1", Protocol::Udp, 41003, 53),
    ] {
        let (action, _) = lab.run("lx_xdp", &p.frame());
        assert_eq!(action, XDP_PASS);
        let to = lab.maglev_pick(&p);
        let (reply, expected) = reply_to(&p, to);
        let (action, out) = lab.run("lx_tc_revnat", &reply.frame());
        assert_eq!(action, TC_ACT_OK);
        assert_eq!(out, expected.frame(), "the reply leaves from the VIP");
        // Unrelated traffic leaves untouched.
        let other = pkt("198.18.1.2", "198.18.100.9", Protocol::Tcp, 8080, 5555);
        assert_eq!(
            lab.run("lx_tc_revnat", &other.frame()),
            (TC_ACT_OK, other.frame())
        );
        // A packet that is not GUE is not decapsulated.
        assert_eq!(lab.run("lx_tc_decap", &other.frame()).1, other.frame());
    }
    assert_eq!(lab.counter("tc_revnat"), 2);
}

/// 198.19.0.1's plan's slots with backend `to` drained.
fn drained_slots(to: BackendAddr) -> (u32, u32) {
    if to.ip.to_string() == "198.18.1.2" {
        (0, 1)
    } else {
        (1, 0)
    }
}

/// The base plan with backend `to` of 198.19.0.1 drained.
fn drained(to: BackendAddr) -> Plan {
    let (b1, b2) = drained_slots(to);
    base_plan(b1, b2)
}

/// Starts the flow of `first` (checking it goes where Maglev says), then drains its backend
/// in 198.19.0.1's plan. Returns the backend, the plan's slots, and a mid-flow packet.
fn start_then_drain(lab: &mut Lab, first: &Pkt) -> (BackendAddr, (u32, u32), Pkt) {
    let to = lab.maglev_pick(first);
    assert_eq!(
        lab.run("lx_xdp", &first.frame()).1,
        rewritten(first, to).frame()
    );
    let slots = drained_slots(to);
    lab.program(&base_plan(slots.0, slots.1));
    let mut next = first.clone();
    next.syn = false;
    (to, slots, next)
}

#[test]
fn a_known_flow_keeps_its_backend_and_draining_takes_no_new_flows() {
    let mut lab = Lab::new("ct");
    let first = client4("198.19.0.1", Protocol::Tcp, 42000, 80);
    // The flow's backend leaves the set (drained to weight 0): the flow stays with it.
    let (to, _, mut next) = start_then_drain(&mut lab, &first);
    next.payload = b"more".to_vec();
    assert_eq!(
        lab.run("lx_xdp", &next.frame()).1,
        rewritten(&next, to).frame(),
        "tracked flow keeps its backend"
    );
    // New flows never go to the drained backend.
    for port in 0..200u16 {
        let p = pkt(
            "198.18.100.2",
            "198.19.0.1",
            Protocol::Tcp,
            43000 + port,
            80,
        );
        let (_, out) = lab.run("lx_xdp", &p.frame());
        assert_ne!(
            out,
            rewritten(&p, to).frame(),
            "a new flow went to the drained backend"
        );
    }
    // And a backend added later takes new flows without moving the tracked one.
    lab.program(&base_plan(1, 1));
    assert_eq!(
        lab.run("lx_xdp", &next.frame()).1,
        rewritten(&next, to).frame()
    );
    // A mid-flow packet the tracker does not know (its entry was evicted) goes where Maglev
    // says, which is where its flow started, and counts as an LRU miss.
    let mut evicted = pkt("198.18.100.3", "198.19.0.1", Protocol::Tcp, 44000, 80);
    evicted.syn = false;
    let to = lab.maglev_pick(&evicted);
    assert_eq!(
        lab.run("lx_xdp", &evicted.frame()).1,
        rewritten(&evicted, to).frame()
    );
    let vip = vip_of(&first);
    let stats = lab.lb.vip_stats(lab.rec.vips()[&vip].id);
    assert!(stats.packets >= 2, "{stats:?}");
    assert!(stats.new_flows >= 1 && stats.lru_misses >= 1, "{stats:?}");
}

/// Runs the rest of the calling thread on `cpu` (the flow cache is per CPU).
fn on_cpu(cpu: usize) {
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    assert!(
        cpus >= 2,
        "this test needs two CPUs to show a flow moving between flow caches ({cpus} available)"
    );
    // SAFETY: a zeroed cpu_set_t with one bit set, for this thread.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    assert_eq!(rc, 0, "sched_setaffinity to CPU {cpu}");
}

#[test]
fn the_flow_cache_is_per_cpu_backed_by_the_shared_table_and_follows_its_vip() {
    let mut lab = Lab::new("cache");
    on_cpu(0);
    let first = client4("198.19.0.1", Protocol::Tcp, 45000, 80);
    let vip = vip_of(&first);
    // Drain the flow's backend: Maglev would now send the flow elsewhere, so only tracking
    // keeps it in place.
    let (to, (b1, b2), next) = start_then_drain(&mut lab, &first);
    assert_ne!(lab.maglev_pick(&next), to);
    let misses = lab.counter("flow_cache_miss");
    assert_eq!(
        lab.run("lx_xdp", &next.frame()).1,
        rewritten(&next, to).frame(),
        "served by CPU 0's cache"
    );
    assert_eq!(lab.counter("flow_cache_miss"), misses);
    // On the other CPU the cache does not know the flow: the shared table does.
    on_cpu(1);
    assert_eq!(
        lab.run("lx_xdp", &next.frame()).1,
        rewritten(&next, to).frame(),
        "served by the shared table on CPU 1"
    );
    assert_eq!(lab.counter("flow_cache_miss"), misses + 1);
    lab.run("lx_xdp", &next.frame());
    assert_eq!(
        lab.counter("flow_cache_miss"),
        misses + 1,
        "then cached on CPU 1"
    );

    // A cached flow keeps its shared entry: gone from lx_ct (as an LRU eviction would do),
    // it is put back by the next packet once LX_CT_REFRESH other flows entered the cache.
    let flow = next.flow();
    let kept = lab.lb.flow(&flow).expect("the flow is in lx_ct");
    lab.lb.remove_flow(&flow).unwrap();
    lab.run("lx_xdp", &next.frame());
    assert!(lab.lb.flow(&flow).is_none(), "not before LX_CT_REFRESH");
    for port in 0..1100u16 {
        // Two datagrams each: a flow enters the cache when its second packet confirms it.
        let p = pkt("198.18.101.1", "198.19.0.1", Protocol::Udp, 1024 + port, 53);
        lab.run("lx_xdp", &p.frame());
        lab.run("lx_xdp", &p.frame());
    }
    assert_eq!(
        lab.run("lx_xdp", &next.frame()).1,
        rewritten(&next, to).frame()
    );
    assert_eq!(lab.lb.flow(&flow), Some(kept), "put back in lx_ct");

    // An lx_ct entry from before generations (gen 0) is taken as it was: this one sends a new
    // flow to the drained backend, where Maglev would not.
    let mut legacy = pkt("198.18.102.1", "198.19.0.1", Protocol::Tcp, 46000, 80);
    legacy.syn = false;
    assert_ne!(lab.maglev_pick(&legacy), to);
    lab.lb
        .set_flow(&legacy.flow(), &Ct { gen: 0, ..kept })
        .unwrap();
    assert_eq!(
        lab.run("lx_xdp", &legacy.frame()).1,
        rewritten(&legacy, to).frame()
    );

    // The VIP goes: its tracked flows pass to the kernel untouched, from either cache.
    let mut without = base_plan(b1, b2);
    without.remove(&vip);
    lab.program(&without);
    for cpu in [0, 1] {
        on_cpu(cpu);
        assert_eq!(
            lab.run("lx_xdp", &next.frame()),
            (XDP_PASS, next.frame()),
            "a flow of a removed VIP, CPU {cpu}"
        );
    }
    // It comes back (with a new generation): the flow is decided again, by Maglev, so it
    // does not return to the drained backend.
    lab.program(&base_plan(b1, b2));
    let again = lab.maglev_pick(&next);
    assert_ne!(again, to);
    assert_eq!(
        lab.run("lx_xdp", &next.frame()).1,
        rewritten(&next, again).frame()
    );
    // A mode change decides tracked flows again too: now they are encapsulated.
    lab.modes.insert("198.19.0.1:80/tcp".into(), Mode::Gue);
    lab.program(&base_plan(b1, b2));
    assert_eq!(
        lab.run("lx_xdp", &next.frame()).1,
        gue(&next, node_of(again.ip), "198.18.0.1".parse().unwrap())
    );
}

#[test]
fn maps_from_before_the_filter_are_seeded_before_the_new_program_runs() {
    let mut lab = Lab::new("seed");
    let p = pkt("198.18.100.9", "198.19.0.1", Protocol::Tcp, 47000, 80);
    let to = lab.maglev_pick(&p);
    let vip = vip_of(&p);
    // What an agent from before the VIP filter and generations leaves pinned: neither.
    for w in 0..lodestar_l4lb::layout::LX_FILTER_WORDS {
        lab.lb.put_filter_word(w, 0).unwrap();
    }
    let id = lab.rec.vips()[&vip].id;
    lab.lb
        .put_live(id, &lodestar_l4lb::layout::XVip::default())
        .unwrap();
    assert_eq!(
        lab.run("lx_xdp", &p.frame()),
        (XDP_PASS, p.frame()),
        "without its filter bit the VIP is invisible"
    );
    // A new agent opens the maps: before any apply, the VIPs are found again.
    lab.lb = XdpLb::open(&lab.pin, &lab_config(), false).expect("reopen the maps");
    assert_eq!(lab.run("lx_xdp", &p.frame()).1, rewritten(&p, to).frame());
}

#[test]
fn gue_is_decapsulated_only_from_a_load_balancer_and_only_for_a_vip() {
    let lab = Lab::new("guepeer");
    for (p, lb, stranger, not_vip) in [
        (
            client4("198.19.0.2", Protocol::Tcp, 41100, 80),
            "198.18.0.1",
            "198.18.0.99",
            "198.18.7.7",
        ),
        (
            client6("2001:db8:ffff::2", Protocol::Tcp, 41101, 80),
            "2001:db8::1",
            "2001:db8::99",
            "2001:db8:7::7",
        ),
    ] {
        let node = node_of(lab.maglev_pick(&p).ip);
        // A sender that is no load balancer wraps a packet for a VIP.
        let forged = gue(&p, node, stranger.parse().unwrap());
        assert_eq!(lab.run("lx_tc_decap", &forged).0, TC_ACT_SHOT, "{stranger}");
        // A load balancer's address, but the inner packet is for no VIP: this node would relay
        // it (to an address of the attacker's choice) once decapsulated.
        let mut relay = p.clone();
        relay.dst = not_vip.parse().unwrap();
        relay.dport = 22;
        let wrapped = gue(&relay, node, lb.parse().unwrap());
        assert_eq!(lab.run("lx_tc_decap", &wrapped).0, TC_ACT_SHOT, "{not_vip}");
    }
    assert_eq!(lab.counter("drop_gue_unknown_sender"), 2);
    assert_eq!(lab.counter("drop_gue_not_vip"), 2);
    assert_eq!(lab.counter("tc_decap"), 0);
}

#[test]
fn a_packet_too_big_for_the_tunnel_gets_fragmentation_needed_back() {
    let lab = Lab::new("mtu");
    // Full 1500-byte IP packets with DF (the builder's default), to GUE VIPs: with the outer
    // headers (28 or 48 bytes) they would not fit the default tunnel MTU of 1500.
    let mut v4 = client4("198.19.0.2", Protocol::Tcp, 41200, 80);
    v4.payload = vec![7; 1500 - 20 - 20];
    let mut v6 = client6("2001:db8:ffff::2", Protocol::Tcp, 41201, 80);
    v6.payload = vec![7; 1500 - 40 - 20];
    for (p, ip_len, quote, mtu) in [(&v4, 20, 84, 1472u32), (&v6, 40, 248, 1452)] {
        let frame = p.frame();
        let (action, out) = lab.run("lx_xdp", &frame);
        assert_eq!(
            action, XDP_TX,
            "the message goes back out where the packet came in"
        );
        assert_eq!(out.len(), 14 + ip_len + 8 + quote);
        assert_eq!(out[0..6], frame[6..12], "to the sender's MAC");
        assert_eq!(out[6..12], frame[0..6]);
        let (ip, icmp) = out[14..].split_at(ip_len);
        assert_eq!(icmp[8..], p.ip()[..quote], "quotes the packet's start");
        if ip_len == 20 {
            assert_eq!(ip[9], 1, "ICMP");
            assert_eq!(ip[12..16], [198, 19, 0, 2], "from the VIP");
            assert_eq!(ip[16..20], [198, 18, 100, 1], "to the client");
            assert_eq!(finish(sum16(ip, 0)), 0, "IP header checksum");
            assert_eq!((icmp[0], icmp[1]), (3, 4), "fragmentation needed");
            assert_eq!(u32::from(u16::from_be_bytes([icmp[6], icmp[7]])), mtu);
            assert_eq!(finish(sum16(icmp, 0)), 0, "ICMP checksum");
        } else {
            assert_eq!(ip[6], 58, "ICMPv6");
            assert_eq!(
                ip[8..24],
                p.dst.to_string().parse::<Ipv6Addr>().unwrap().octets()
            );
            assert_eq!(
                ip[24..40],
                p.src.to_string().parse::<Ipv6Addr>().unwrap().octets()
            );
            assert_eq!((icmp[0], icmp[1]), (2, 0), "packet too big");
            assert_eq!(
                u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]]),
                mtu
            );
            let mut pseudo = Vec::new();
            pseudo.extend(&ip[8..40]);
            pseudo.extend((icmp.len() as u32).to_be_bytes());
            pseudo.extend([0, 0, 0, 58]);
            assert_eq!(finish(sum16(icmp, sum16(&pseudo, 0))), 0, "ICMPv6 checksum");
        }
    }
    assert_eq!(lab.counter("icmp_too_big"), 2);
    // One byte less on each side fits: encapsulated as usual.
    v4.payload.truncate(1500 - 28 - 40);
    let node = node_of(lab.maglev_pick(&v4).ip);
    assert_eq!(
        lab.run("lx_xdp", &v4.frame()),
        (XDP_PASS, gue(&v4, node, "198.18.0.1".parse().unwrap()))
    );
}

#[test]
fn only_new_flows_are_tracked_and_only_once_a_second_packet_shows_them_real() {
    let lab = Lab::new("flood");
    on_cpu(0);
    // A flood of mid-flow TCP packets (no SYN) that no connection started: each goes where
    // Maglev says, and none takes a place in lx_ct.
    for port in 0..200u16 {
        let mut p = pkt(
            "198.18.103.1",
            "198.19.0.1",
            Protocol::Tcp,
            20000 + port,
            80,
        );
        p.syn = false;
        let to = lab.maglev_pick(&p);
        assert_eq!(lab.run("lx_xdp", &p.frame()).1, rewritten(&p, to).frame());
        assert!(
            lab.lb.flow(&p.flow()).is_none(),
            "a packet without SYN was tracked"
        );
    }
    // A SYN flood: every SYN is served, none enters lx_ct.
    for port in 0..200u16 {
        let p = pkt(
            "198.18.103.2",
            "198.19.0.1",
            Protocol::Tcp,
            20000 + port,
            80,
        );
        let to = lab.maglev_pick(&p);
        assert_eq!(lab.run("lx_xdp", &p.frame()).1, rewritten(&p, to).frame());
        assert!(lab.lb.flow(&p.flow()).is_none(), "a lone SYN was tracked");
    }
    let confirmed = lab.counter("flow_confirmed");
    // A connection: its SYN, then its first ACK, which makes it tracked. A UDP flow likewise
    // with its second datagram.
    let syn = pkt("198.18.103.3", "198.19.0.1", Protocol::Tcp, 21000, 80);
    let mut ack = syn.clone();
    ack.syn = false;
    let udp = pkt("198.18.103.3", "198.19.0.1", Protocol::Udp, 21001, 53);
    for (first, second) in [(&syn, &ack), (&udp, &udp)] {
        let to = lab.maglev_pick(first);
        lab.run("lx_xdp", &first.frame());
        assert!(lab.lb.flow(&first.flow()).is_none());
        assert_eq!(
            lab.run("lx_xdp", &second.frame()).1,
            rewritten(second, to).frame()
        );
        let ct = lab
            .lb
            .flow(&first.flow())
            .expect("tracked after its second packet");
        assert_eq!(ct.real.port, to.port.to_be());
    }
    assert_eq!(lab.counter("flow_confirmed"), confirmed + 2);
}

/// The backend's reply to `p` (which went to `to`), and that reply as it must leave: from the
/// VIP.
fn reply_to(p: &Pkt, to: BackendAddr) -> (Pkt, Pkt) {
    let mut reply = pkt(
        &to.ip.to_string(),
        &p.src.to_string(),
        p.proto,
        to.port,
        p.sport,
    );
    reply.syn = false;
    let mut from_vip = reply.clone();
    from_vip.src = p.dst;
    from_vip.sport = p.dport;
    (reply, from_vip)
}

#[test]
fn a_reply_whose_vip_is_lost_never_leaves_with_the_backends_address() {
    let mut lab = Lab::new("revnat");
    // Every VIP NAT: 198.18.N.2:8080/tcp now serves both 198.19.0.1:80 and 198.19.0.2:80, so a
    // reply's VIP is known only from its flow's lx_revnat entry.
    lab.modes.clear();
    lab.program(&base_plan(1, 1));
    let p = client4("198.19.0.2", Protocol::Tcp, 41300, 80);
    let to = lab.maglev_pick(&p);
    assert_eq!(lab.run("lx_xdp", &p.frame()).1, rewritten(&p, to).frame());
    let (reply, expected) = reply_to(&p, to);
    assert_eq!(
        lab.run("lx_tc_revnat", &reply.frame()),
        (TC_ACT_OK, expected.frame()),
        "the reply leaves from its own VIP"
    );
    // A reply of a flow whose entry is gone (evicted, or never made): dropped, not sent with
    // the backend's address to a client that expects the VIP's.
    let mut lost = reply.clone();
    lost.dport = 41399;
    assert_eq!(lab.run("lx_tc_revnat", &lost.frame()).0, TC_ACT_SHOT);
    assert_eq!(lab.counter("drop_revnat_lost"), 1);

    // A backend of one NAT VIP (the other back in GUE mode): its replies need no entry of
    // their own. A confirmed flow's are known by the client's flow in lx_ct, the first ones of
    // a flow that only sent its SYN by the SYN's mark; a packet of a connection made to the
    // backend's own address leaves as it is.
    lab.modes.insert("198.19.0.2:80/tcp".to_string(), Mode::Gue);
    lab.program(&base_plan(1, 1));
    let p = client4("198.19.0.1", Protocol::Tcp, 41301, 80);
    let to = lab.maglev_pick(&p);
    let mut second = p.clone();
    second.syn = false;
    lab.run("lx_xdp", &p.frame());
    lab.run("lx_xdp", &second.frame());
    assert!(lab.lb.flow(&p.flow()).is_some());
    let (reply, expected) = reply_to(&p, to);
    assert_eq!(
        lab.run("lx_tc_revnat", &reply.frame()),
        (TC_ACT_OK, expected.frame())
    );
    assert!(lab.lb.reply(&reply.flow()).is_none(), "no entry of its own");
    assert_eq!(lab.counter("nat_reply_marked"), 0, "known by lx_ct");
    // Its SYN only: the SYN-ACK comes before the flow is confirmed.
    let syn = client4("198.19.0.1", Protocol::Tcp, 41302, 80);
    let to = lab.maglev_pick(&syn);
    lab.run("lx_xdp", &syn.frame());
    assert!(lab.lb.flow(&syn.flow()).is_none());
    let (syn_ack, expected) = reply_to(&syn, to);
    assert_eq!(
        lab.run("lx_tc_revnat", &syn_ack.frame()),
        (TC_ACT_OK, expected.frame())
    );
    assert_eq!(lab.counter("nat_reply_marked"), 1);
    let mut direct = reply.clone();
    direct.dport = 41398;
    assert_eq!(
        lab.run("lx_tc_revnat", &direct.frame()),
        (TC_ACT_OK, direct.frame())
    );
    assert_eq!(lab.counter("drop_revnat_lost"), 1);
}

/// A flow like `p` from another client of 198.18.104.0/24 whose record takes `p`'s slot of
/// `lx_first`.
fn same_first_slot(p: &Pkt) -> Pkt {
    let slot = |q: &Pkt| flow_hash(&q.flow()) % lodestar_l4lb::layout::LX_FIRST_SLOTS;
    let want = slot(p);
    for host in 1..=254u8 {
        for port in 1024..=u16::MAX {
            let mut q = p.clone();
            q.src = IpAddr::from([198, 18, 104, host]);
            q.sport = port;
            if slot(&q) == want {
                return q;
            }
        }
    }
    panic!(
        "no flow of 198.18.104.0/24 shares the slot of {}:{}",
        p.src, p.sport
    );
}

#[test]
fn a_first_packets_record_confirms_its_flow_on_any_cpu_and_a_lost_one_changes_nothing() {
    let mut lab = Lab::new("first");
    // A NAT VIP whose backends serve it alone. The SYN on CPU 0, then its backend drained:
    // Maglev would now send the flow elsewhere, and only the SYN's record knows its backend.
    on_cpu(0);
    let syn = client4("198.19.0.1", Protocol::Tcp, 48000, 80);
    let vip = vip_of(&syn);
    let (to, _, ack) = start_then_drain(&mut lab, &syn);
    assert_ne!(lab.maglev_pick(&ack), to);
    assert!(
        lab.lb.flow(&syn.flow()).is_none(),
        "a lone SYN is not tracked"
    );
    // Its SYN-ACK leaves from the VIP, known by the record.
    let marked = lab.counter("nat_reply_marked");
    let (syn_ack, expected) = reply_to(&syn, to);
    assert_eq!(
        lab.run("lx_tc_revnat", &syn_ack.frame()),
        (TC_ACT_OK, expected.frame())
    );
    assert_eq!(lab.counter("nat_reply_marked"), marked + 1);
    // Its ACK comes in on the other CPU, whose cache never saw the flow: the record confirms
    // the flow, with the SYN's backend, into lx_ct and that CPU's cache.
    on_cpu(1);
    let confirmed = lab.counter("flow_confirmed");
    assert_eq!(
        lab.run("lx_xdp", &ack.frame()).1,
        rewritten(&ack, to).frame(),
        "the second packet follows the first"
    );
    assert_eq!(lab.counter("flow_confirmed"), confirmed + 1);
    let ct = lab.lb.flow(&syn.flow()).expect("confirmed into lx_ct");
    assert_eq!(ct.real.port, to.port.to_be());
    let misses = lab.counter("flow_cache_miss");
    assert_eq!(
        lab.run("lx_xdp", &ack.frame()).1,
        rewritten(&ack, to).frame()
    );
    assert_eq!(
        lab.counter("flow_confirmed"),
        confirmed + 1,
        "confirmed once"
    );
    assert_eq!(
        lab.counter("flow_cache_miss"),
        misses,
        "then served by CPU 1's cache"
    );

    // A flow whose record a later flow's SYN took before its second packet came: its reply
    // leaves as it is (as one of a connection to the backend's own address does, never with
    // a VIP that is not its own), and its ACK goes where Maglev says, tracked nowhere.
    lab.program(&base_plan(1, 1));
    on_cpu(0);
    let lost = client4("198.19.0.1", Protocol::Tcp, 48001, 80);
    let taker = same_first_slot(&lost);
    let to = lab.maglev_pick(&lost);
    lab.run("lx_xdp", &lost.frame());
    lab.run("lx_xdp", &taker.frame());
    let (reply, _) = reply_to(&lost, to);
    assert_eq!(
        lab.run("lx_tc_revnat", &reply.frame()),
        (TC_ACT_OK, reply.frame()),
        "a reply without its record leaves unchanged"
    );
    let id = lab.rec.vips()[&vip].id;
    let untracked = lab.lb.vip_stats(id).lru_misses;
    let mut ack = lost.clone();
    ack.syn = false;
    assert_eq!(
        lab.run("lx_xdp", &ack.frame()).1,
        rewritten(&ack, to).frame()
    );
    assert!(lab.lb.flow(&lost.flow()).is_none(), "nothing confirms it");
    assert_eq!(lab.lb.vip_stats(id).lru_misses, untracked + 1);
    // The flow that took the slot is confirmed by its own second packet.
    let mut taker_ack = taker.clone();
    taker_ack.syn = false;
    lab.run("lx_xdp", &taker_ack.frame());
    assert!(lab.lb.flow(&taker.flow()).is_some());
}

/// Sends `syn` and its ACK on this CPU; checks both go to `to`. Returns the ACK.
fn connect(lab: &Lab, syn: &Pkt, to: BackendAddr, what: &str) -> Pkt {
    let mut ack = syn.clone();
    ack.syn = false;
    assert_eq!(
        lab.run("lx_xdp", &syn.frame()).1,
        rewritten(syn, to).frame(),
        "{what}: the SYN"
    );
    assert_eq!(
        lab.run("lx_xdp", &ack.frame()).1,
        rewritten(&ack, to).frame(),
        "{what}: its ACK follows it"
    );
    ack
}

#[test]
fn a_syn_of_a_5_tuple_used_again_is_decided_anew_and_its_ack_follows_it() {
    let mut lab = Lab::new("reuse");
    // An old connection, confirmed with backend A into lx_ct and CPU 0's cache; then A is
    // drained, so that Maglev gives the 5-tuple B.
    on_cpu(0);
    let syn = pkt("198.18.105.1", "198.19.0.1", Protocol::Tcp, 49000, 80);
    let a = lab.maglev_pick(&syn);
    let old_ack = connect(&lab, &syn, a, "the old connection");
    lab.run("lx_xdp", &old_ack.frame());
    lab.program(&drained(a));
    let b = lab.maglev_pick(&syn);
    assert_ne!(a, b);
    assert_eq!(
        lab.run("lx_xdp", &old_ack.frame()).1,
        rewritten(&old_ack, a).frame(),
        "the old connection keeps A"
    );
    // The client uses the 5-tuple again while CPU 0 still caches the old entry: the SYN goes
    // to B, and so does its ACK (on the same CPU), which confirms B into lx_ct.
    let ack = connect(&lab, &syn, b, "the new connection, CPU 0");
    assert_eq!(
        lab.lb.flow(&syn.flow()).map(|ct| ct.real.port),
        Some(b.port.to_be())
    );
    assert_eq!(
        lab.run("lx_xdp", &ack.frame()).1,
        rewritten(&ack, b).frame()
    );

    // The old connection only in lx_ct (it ran on CPU 1, and CPU 0 never cached it): its
    // entry does not take the new SYN's ACK either.
    lab.program(&base_plan(1, 1));
    on_cpu(1);
    let syn = pkt("198.18.105.1", "198.19.0.1", Protocol::Tcp, 49001, 80);
    let a = lab.maglev_pick(&syn);
    connect(&lab, &syn, a, "the old connection, CPU 1");
    lab.program(&drained(a));
    let b = lab.maglev_pick(&syn);
    on_cpu(0);
    connect(&lab, &syn, b, "the new connection, lx_ct's entry older");
    assert_eq!(
        lab.lb.flow(&syn.flow()).map(|ct| ct.real.port),
        Some(b.port.to_be())
    );
}

#[test]
fn a_flooded_syn_of_a_5_tuple_used_again_takes_its_ack_and_the_old_entry_goes() {
    let mut lab = Lab::with_config(
        "reuse-flood",
        &XdpConfig {
            flood_new_flows_per_cpu: 1,
            ..lab_config()
        },
    );
    on_cpu(0);
    // The old connection, confirmed with A before the CPU counts itself flooded; A drained.
    let syn = pkt("198.18.106.1", "198.19.0.1", Protocol::Tcp, 49000, 80);
    let a = lab.maglev_pick(&syn);
    connect(&lab, &syn, a, "the old connection");
    lab.program(&drained(a));
    let b = lab.maglev_pick(&syn);
    assert_ne!(a, b);
    // Over the rate (1 a second): once the rate is looked at, the CPU is flooded.
    for port in 0..lodestar_l4lb::layout::LX_FLOOD_SAMPLE as u16 {
        let p = pkt(
            "198.18.106.2",
            "198.19.0.1",
            Protocol::Tcp,
            20000 + port,
            80,
        );
        lab.run("lx_xdp", &p.frame());
    }
    let uncached = lab.counter("flood_uncached");
    let confirmed = lab.counter("flow_confirmed");
    // The 5-tuple again: the SYN goes to B and so does its ACK, although lx_ct still holds A;
    // the ACK confirms nothing (flooded), and A's entry goes.
    let ack = connect(&lab, &syn, b, "the new connection, flooded");
    assert_eq!(lab.counter("flood_uncached"), uncached + 1, "flooded");
    assert_eq!(
        lab.counter("flow_confirmed"),
        confirmed,
        "nothing confirmed"
    );
    assert!(lab.lb.flow(&syn.flow()).is_none(), "the old entry is gone");
    // Later packets go where Maglev says, tracked nowhere: B.
    assert_eq!(
        lab.run("lx_xdp", &ack.frame()).1,
        rewritten(&ack, b).frame()
    );
    assert!(lab.lb.flow(&syn.flow()).is_none());
}

/// Removes a pin directory when dropped (also when the test fails).
struct PinGuard(std::path::PathBuf);

impl Drop for PinGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn bpftool(args: &[&str]) {
    let out = std::process::Command::new("bpftool")
        .args(args)
        .output()
        .expect("bpftool (these tests need it)");
    assert!(
        out.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pinned_shape(path: &std::path::Path) -> (u32, u32, u32) {
    let info = aya::maps::MapData::from_pin(path)
        .expect("the pinned map")
        .info()
        .expect("its info");
    (info.key_size(), info.value_size(), info.max_entries())
}

#[test]
fn pinned_maps_of_another_shape_are_migrated_with_their_flows_or_recreated() {
    let pin = PinGuard(std::path::PathBuf::from(format!(
        "/sys/fs/bpf/lodestar-fixtures-shape-{}",
        std::process::id()
    )));
    let _ = std::fs::remove_dir_all(&pin.0);
    std::fs::create_dir_all(&pin.0).unwrap();
    let ct_path = pin.0.join("lx_ct");
    let revnat_path = pin.0.join("lx_revnat");
    // What an agent of another version left: its flow table with room for 1,024 flows (and a
    // shared LRU list), holding one; a reply table whose entries are 8 bytes, not 20.
    let (flow_key, ct_value) = (
        std::mem::size_of::<lodestar_l4lb::layout::Flow>(),
        std::mem::size_of::<Ct>(),
    );
    let pin_lru = |path: &std::path::Path, value: usize, name: &str| {
        bpftool(&[
            "map",
            "create",
            path.to_str().unwrap(),
            "type",
            "lru_hash",
            "key",
            &flow_key.to_string(),
            "value",
            &value.to_string(),
            "entries",
            "1024",
            "name",
            name,
        ])
    };
    pin_lru(&ct_path, ct_value, "lx_ct");
    pin_lru(&revnat_path, 8, "lx_revnat");
    // And its flow cache as a per-CPU array (the layout before one array held every CPU's).
    let cache_path = pin.0.join("lx_flow_cache");
    let bucket = std::mem::size_of::<lodestar_l4lb::layout::CacheBucket>();
    let sets = 1u32 << lodestar_ebpf::header::LX_CACHE_BITS;
    bpftool(&[
        "map",
        "create",
        cache_path.to_str().unwrap(),
        "type",
        "percpu_array",
        "key",
        "4",
        "value",
        &bucket.to_string(),
        "entries",
        &sets.to_string(),
        "name",
        "lx_flow_cache",
    ]);
    // And its first-reply marks, which lx_first replaced.
    let marks_path = pin.0.join("lx_nat_marks");
    bpftool(&[
        "map",
        "create",
        marks_path.to_str().unwrap(),
        "type",
        "array",
        "key",
        "4",
        "value",
        "4",
        "entries",
        "1024",
        "name",
        "lx_nat_marks",
    ]);
    let flow = pkt("198.18.100.7", "198.19.0.1", Protocol::Tcp, 48000, 80).flow();
    let tracked = Ct {
        real_id: 7,
        gen: 3,
        ..Ct::default()
    };
    {
        let map = aya::maps::Map::LruHashMap(aya::maps::MapData::from_pin(&ct_path).unwrap());
        let mut ct: aya::maps::HashMap<_, lodestar_l4lb::layout::Flow, Ct> =
            aya::maps::HashMap::try_from(map).unwrap();
        ct.insert(flow, tracked, 0).unwrap();
    }

    let lb = XdpLb::open(&pin.0, &lab_config(), true).expect("load over the old maps");
    assert_eq!(
        pinned_shape(&ct_path),
        (
            flow_key as u32,
            ct_value as u32,
            lodestar_ebpf::header::LX_MAX_CT
        ),
        "lx_ct has the object's capacity"
    );
    assert_eq!(lb.flow(&flow), Some(tracked), "and the flow it tracked");
    assert_eq!(
        pinned_shape(&revnat_path),
        (
            flow_key as u32,
            std::mem::size_of::<lodestar_l4lb::layout::XRev>() as u32,
            lodestar_ebpf::header::LX_MAX_CT
        ),
        "lx_revnat is recreated with the object's layout"
    );
    assert!(!marks_path.exists(), "the retired lx_nat_marks is unpinned");
    let cpus = aya::util::nr_cpus().unwrap() as u32;
    let cache = aya::maps::MapData::from_pin(&cache_path)
        .unwrap()
        .info()
        .unwrap();
    assert_eq!(
        (
            cache.map_type().unwrap(),
            cache.value_size(),
            cache.max_entries()
        ),
        (aya::maps::MapType::Array, bucket as u32, sets * cpus),
        "lx_flow_cache is recreated as one array with a run of sets per CPU"
    );
    // The programs run on the new maps.
    let p = pkt("198.18.100.8", "198.19.0.1", Protocol::Tcp, 48001, 80);
    assert_eq!(
        lb.test_run("lx_xdp", &p.frame(), 1).unwrap().retval,
        XDP_PASS
    );
    // A later load takes the flow cache as it is (the size the loader gave it is its shape).
    let id = cache.id();
    drop(lb);
    let _lb = XdpLb::open(&pin.0, &lab_config(), true).expect("load over its own maps");
    assert_eq!(
        aya::maps::MapData::from_pin(&cache_path)
            .unwrap()
            .info()
            .unwrap()
            .id(),
        id,
        "adopted, not recreated"
    );
}
