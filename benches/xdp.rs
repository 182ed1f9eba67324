//! XDP benchmark, in one run:
//!
//! 1. **Per-packet cost** with `BPF_PROG_TEST_RUN` (the kernel times `--repeat` runs of the
//!    program on one packet): a conntrack hit through a NAT VIP, a packet to no VIP, and a
//!    conntrack miss, against the floor: a minimal XDP program that only rewrites the
//!    destination and returns XDP_TX (`ebpf/bpf/xdp_floor.c`).
//! 2. **End to end**: small UDP packets from a `sendmmsg` generator in a client namespace,
//!    through a load-balancer namespace, to two backends (tests/support/xdp.rs): Lodestar's XDP
//!    NAT with XDP_REDIRECT, against an nftables DNAT rule set doing the same job, with the same
//!    generator; delivered packets per second and CPU per packet (the whole machine's, and the
//!    softirq share, where forwarding happens) for each.
//!
//! Run as root: `cargo bench --bench xdp [-- --repeat 1000000 --seconds 5 --rounds 3]`.

#[path = "../l4lb/tests/packet/mod.rs"]
mod packet;
#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::bench::arg;
use support::report::{median, Plot, Report};
use support::{l4lb, netns, xdp};

use lodestar_control::model::Protocol;
use lodestar_l4lb::kernel_xdp::{Floor, XdpConfig, XdpLb};
use lodestar_l4lb::plan::{
    BackendAddr, Locality, Plan, PlannedBackend, PlannedService, ServiceAddr,
};
use lodestar_l4lb::xdp::{Mode, XdpReconciler};

fn service(
    vip: &str,
    port: u16,
    backends: &[&str],
    bport: u16,
    protocol: Protocol,
) -> (ServiceAddr, PlannedService) {
    let addr = ServiceAddr {
        ip: vip.parse().unwrap(),
        port,
        protocol,
    };
    (
        addr,
        PlannedService {
            vip: format!("{}/{protocol}", SocketAddr::new(addr.ip, port)),
            fail_open: false,
            locality: Locality::Any,
            backends: backends
                .iter()
                .map(|b| {
                    (
                        BackendAddr {
                            ip: b.parse().unwrap(),
                            port: bport,
                        },
                        PlannedBackend {
                            task: b.to_string(),
                            weight: 1,
                            healthy: true,
                            active_down: false,
                            local: false,
                            slots: 1,
                            node: b.parse().unwrap(),
                        },
                    )
                })
                .collect(),
        },
    )
}

struct Cost {
    floor: f64,
    hit: f64,
    not_vip: f64,
    /// A new flow (a TCP SYN to a NAT VIP), every repetition a flow never seen before.
    miss: f64,
    /// The same while the CPU counts itself flooded (a new flow's record confirms nothing).
    flooded: f64,
    /// A TCP packet without SYN of a flow nobody tracks (an ACK flood, or tracking lost).
    untracked: f64,
    /// A connection's first two packets together (its SYN, and the ACK that puts it into the
    /// shared table).
    connection: f64,
    connection_ratio: f64,
    /// The new-flow wrapper by itself (subtracted from `miss`, `flooded` and `untracked`).
    wrapper: f64,
    /// Medians of the ratios to the floor measured next to it (the machine's speed drifts).
    hit_ratio: f64,
    not_vip_ratio: f64,
    miss_ratio: f64,
    flooded_ratio: f64,
    untracked_ratio: f64,
    trials: usize,
}

/// Keeps this thread on one CPU: per-CPU state (the flow cache, counters) is then the same
/// from one run to the next, and the kernel's timings are not split across migrations.
fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one bit set, for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// A pin directory of ours, removed when dropped (also when the benchmark panics).
struct PinDir(std::path::PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The XDP object in a pin directory of its own, programmed with the benchmark's VIPs.
struct Bench {
    lb: XdpLb,
    _pin: PinDir,
}

/// Loads and programs the object; `flood`: new flows per second and CPU above which the CPU
/// counts itself flooded (0: never).
fn bench_lb(tag: &str, flood: u32) -> Bench {
    let pin = PinDir(std::path::PathBuf::from(format!(
        "/sys/fs/bpf/lodestar-bench-xdp-{tag}-{}",
        std::process::id()
    )));
    let _ = std::fs::remove_dir_all(&pin.0);
    let cfg = XdpConfig {
        gue_source_v4: Some("198.18.0.1".parse().unwrap()),
        flood_new_flows_per_cpu: flood,
        ..XdpConfig::default()
    };
    let mut lb = XdpLb::open(&pin.0, &cfg, true).expect("load the XDP object (needs root)");
    // 198.18.1.2:8080 is a VIP whose one backend is itself: a packet rewritten by one run is
    // the same packet for the next, so every repetition takes the full conntrack-hit path.
    let plan: Plan = [
        service("198.18.1.2", 8080, &["198.18.1.2"], 8080, Protocol::Tcp),
        // New flows' VIP: backends of no other VIP, so their replies need no per-flow entry.
        service(
            "198.19.0.1",
            80,
            &["198.18.2.2", "198.18.3.2"],
            8080,
            Protocol::Tcp,
        ),
    ]
    .into_iter()
    .collect();
    let mut rec = XdpReconciler::new(lodestar_l4lb::maglev::DEFAULT_MAX, 1);
    let rep = rec.apply(&plan, &|_| Mode::Nat, &mut lb);
    assert!(rep.errors.is_empty(), "{rep:?}");
    Bench { lb, _pin: pin }
}

/// The per-packet costs: `trials` rounds, each timing the floor, the hit, the no-VIP packet,
/// new flows (with and without a flood) and untracked mid-flow packets one after the other
/// (`repeat` runs each), and the medians.
fn per_packet(repeat: u32, trials: usize) -> Cost {
    pin_to_cpu(1);
    let tracked = bench_lb("t", 0);
    // Every new flow over the rate: the CPU counts itself flooded throughout.
    let flooding = bench_lb("f", 1);
    let lb = &tracked.lb;
    let mut floor = Floor::load().expect("load the floor program");

    // The hit flow starts with its SYN and is confirmed by its second packet; then every
    // repetition is a packet of a tracked flow, from the CPU's cache.
    let mut hit_pkt = packet::pkt("198.18.100.1", "198.18.1.2", Protocol::Tcp, 40000, 8080);
    let hit_syn = hit_pkt.frame();
    lb.test_run("lx_xdp", &hit_syn, 1).unwrap();
    hit_pkt.syn = false;
    let hit_frame = hit_pkt.frame();
    lb.test_run("lx_xdp", &hit_frame, 1).unwrap();
    assert!(
        lb.flow(&hit_pkt.flow()).is_some(),
        "the hit flow is tracked"
    );
    let other = packet::pkt("198.18.100.1", "198.18.9.9", Protocol::Tcp, 40000, 8080).frame();
    let mut syn = packet::pkt("198.18.100.1", "198.19.0.1", Protocol::Tcp, 40000, 80);
    // The new-flow wrapper's template size.
    syn.payload = b"hello!".to_vec();
    let floor_frame = syn.frame();
    let mut ack = syn.clone();
    ack.syn = false;
    let ack_frame = ack.frame();
    let lx = lb.program("lx_xdp").expect("lx_xdp");
    let lx_flooded = flooding.lb.program("lx_xdp").expect("lx_xdp");
    let (mut fl, mut hit, mut not_vip) = (Vec::new(), Vec::new(), Vec::new());
    let (mut wrap, mut miss, mut flooded, mut untracked) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut connection = Vec::new();
    for _ in 0..trials {
        // The last trial's connections may have pushed the hit flow out of the CPU's cache
        // and out of lx_ct: it starts again (SYN, then the packet that confirms it from the
        // SYN's record).
        lb.test_run("lx_xdp", &hit_syn, 1).unwrap();
        lb.test_run("lx_xdp", &hit_frame, 1).unwrap();
        let f = floor.test_run(&floor_frame, repeat).unwrap();
        assert_eq!(f.retval, 3, "the floor returns XDP_TX");
        fl.push(f64::from(f.duration_ns));
        hit.push(f64::from(
            lb.test_run("lx_xdp", &hit_frame, repeat)
                .unwrap()
                .duration_ns,
        ));
        not_vip.push(f64::from(
            lb.test_run("lx_xdp", &other, repeat).unwrap().duration_ns,
        ));
        let w = f64::from(
            floor
                .new_flows(None, &floor_frame, repeat, 1)
                .unwrap()
                .duration_ns,
        );
        wrap.push(w);
        let m = floor.new_flows(Some(lx), &floor_frame, repeat, 1).unwrap();
        assert_eq!(
            m.retval, 2,
            "a new flow is rewritten and passed to the kernel"
        );
        miss.push(f64::from(m.duration_ns) - w);
        let m = floor
            .new_flows(Some(lx_flooded), &floor_frame, repeat, 1)
            .unwrap();
        assert_eq!(
            m.retval, 2,
            "a new flow is rewritten and passed to the kernel"
        );
        flooded.push(f64::from(m.duration_ns) - w);
        let u = floor.new_flows(Some(lx), &ack_frame, repeat, 1).unwrap();
        untracked.push(f64::from(u.duration_ns) - w);
        // SYN then ACK: the mean of the two, one of which confirms the flow into lx_ct.
        let c = floor.new_flows(Some(lx), &floor_frame, repeat, 2).unwrap();
        connection.push(2.0 * (f64::from(c.duration_ns) - w));
    }
    let ratio = |v: &[f64]| median(&v.iter().zip(&fl).map(|(x, f)| x / f).collect::<Vec<_>>());
    let cost = Cost {
        hit_ratio: ratio(&hit),
        not_vip_ratio: ratio(&not_vip),
        miss_ratio: ratio(&miss),
        flooded_ratio: ratio(&flooded),
        untracked_ratio: ratio(&untracked),
        connection_ratio: ratio(&connection),
        connection: median(&connection),
        floor: median(&fl),
        hit: median(&hit),
        not_vip: median(&not_vip),
        miss: median(&miss),
        flooded: median(&flooded),
        untracked: median(&untracked),
        wrapper: median(&wrap),
        trials,
    };
    // What the runs did, as the counters say: every connection confirmed (into the CPU's cache
    // and lx_ct) by its ACK from its SYN's record, no lone SYN cached (flooded: none counted
    // as confirmable), and no packet of an untracked flow put into the shared table.
    let counter = |lb: &XdpLb, name: &str| {
        let slot = lodestar_l4lb::layout::LX_COUNTERS
            .iter()
            .find(|c| c.0 == name)
            .unwrap()
            .2;
        lb.global()[slot as usize]
    };
    let runs = u64::from(repeat) * trials as u64;
    assert!(counter(lb, "flow_cache_insert") >= runs / 2);
    // Each connection's ACK and the hit flow (again in a trial whose flow cache lost it), no
    // packet of an untracked flow.
    let confirmed = counter(lb, "flow_confirmed");
    assert!(
        (1 + runs / 2..=1 + trials as u64 + runs / 2).contains(&confirmed),
        "{confirmed} flows confirmed"
    );
    // All but the first few: the rate is looked at every LX_FLOOD_SAMPLE new flows.
    let sample = u64::from(lodestar_l4lb::layout::LX_FLOOD_SAMPLE);
    assert!(counter(&flooding.lb, "flood_uncached") + sample >= runs);
    cost
}

/// The backends' XDP sinks: what arrived, dropped at once so the backends cost little
/// (attached while their `Floor` lives).
struct Sinks(Vec<Floor>);

impl Sinks {
    fn attach(lab: &xdp::XdpLab) -> Sinks {
        Sinks(
            lab.backends
                .iter()
                .zip(&lab.backend_ifaces)
                .map(|(b, ifname)| {
                    l4lb::in_ns(&b.ns.name, || {
                        let mut f = Floor::load().expect("load the sink");
                        f.attach_sink(ifname).expect("attach the sink");
                        f
                    })
                })
                .collect(),
        )
    }

    fn count(&self) -> u64 {
        self.0.iter().map(Floor::sunk).sum()
    }
}

/// What arrived at the sinks, and the CPU spent, from `start` on.
struct Meter {
    rx0: u64,
    cpu0: (f64, f64),
    start: Instant,
}

impl Meter {
    fn start(sinks: &Sinks) -> Meter {
        Meter {
            rx0: sinks.count(),
            cpu0: support::bench::cpu_seconds(),
            start: Instant::now(),
        }
    }

    /// The flow, given what was sent: delivered rate and CPU per delivered packet.
    fn finish(self, sinks: &Sinks, sent: u64) -> Flow {
        let secs = self.start.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(200));
        let (c1, s1) = support::bench::cpu_seconds();
        let got = sinks.count() - self.rx0;
        Flow {
            pps: got as f64 / secs,
            cpu_ns: (c1 - self.cpu0.0) * 1e9 / got.max(1) as f64,
            softirq_ns: (s1 - self.cpu0.1) * 1e9 / got.max(1) as f64,
            sent_pps: sent as f64 / secs,
        }
    }
}

struct Flow {
    pps: f64,
    cpu_ns: f64,
    softirq_ns: f64,
    sent_pps: f64,
}

/// Sends 18-byte UDP datagrams to `vip` from 32 sockets in the client namespace with
/// sendmmsg (batches of 64) for `seconds`; counts what reaches the backends.
fn blast(lab: &xdp::XdpLab, sinks: &Sinks, vip: SocketAddr, seconds: u64) -> Flow {
    use std::os::fd::AsRawFd;
    let meter = Meter::start(sinks);
    let sent = l4lb::in_ns(&lab.client.name, || {
        let socks: Vec<std::net::UdpSocket> = (0..32)
            .map(|_| std::net::UdpSocket::bind("198.18.0.2:0").unwrap())
            .collect();
        let std::net::IpAddr::V4(v4) = vip.ip() else {
            panic!("an IPv4 VIP")
        };
        // SAFETY: a zeroed sockaddr_in, filled in field by field.
        let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sa.sin_family = libc::AF_INET as u16;
        sa.sin_port = vip.port().to_be();
        sa.sin_addr.s_addr = u32::from_ne_bytes(v4.octets());
        let payload = [0x5au8; 18];
        let mut iov = libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: payload.len(),
        };
        let mut msgs: Vec<libc::mmsghdr> = (0..64)
            .map(|_| {
                // SAFETY: a zeroed mmsghdr, then pointers to locals that outlive the sends.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_name = &mut sa as *mut _ as *mut libc::c_void;
                m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
                m.msg_hdr.msg_iov = &mut iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let (mut sent, mut i) = (0u64, 0usize);
        while Instant::now() < deadline {
            let fd = socks[i % socks.len()].as_raw_fd();
            i += 1;
            // SAFETY: msgs holds valid headers for the duration of the call.
            let n = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), msgs.len() as u32, 0) };
            if n > 0 {
                sent += n as u64;
            }
        }
        sent
    });
    meter.finish(sinks, sent)
}

/// An interface's MAC address in a namespace.
fn mac(ns: &netns::Netns, ifname: &str) -> [u8; 6] {
    let out = ns.exec_ok(&["cat", &format!("/sys/class/net/{ifname}/address")]);
    let text = String::from_utf8_lossy(&out.stdout);
    let bytes: Vec<u8> = text
        .trim()
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).expect("a MAC address"))
        .collect();
    bytes.try_into().expect("six bytes")
}

/// Generates 18-byte UDP datagrams to `vip` from 256 source ports with BPF_PROG_RUN's
/// live-frames mode in the client namespace (as a NIC would hand frames to XDP: no socket,
/// no skb) for `seconds`; counts what reaches the backends.
fn live(lab: &xdp::XdpLab, sinks: &Sinks, vip: SocketAddr, seconds: f64) -> Flow {
    let mut p = packet::pkt(
        "198.18.0.2",
        &vip.ip().to_string(),
        Protocol::Udp,
        20000,
        vip.port(),
    );
    p.payload = vec![0x5a; 18];
    let mut frame = p.frame();
    frame[..6].copy_from_slice(&mac(&lab.lb, &lab.lb_front));
    frame[6..12].copy_from_slice(&mac(&lab.client, &lab.client_if));
    let meter = Meter::start(sinks);
    let start = meter.start;
    let sent = l4lb::in_ns(&lab.client.name, || {
        pin_to_cpu(1);
        let mut gen = Floor::load().expect("load the generator");
        let mut sent = 0u64;
        while start.elapsed().as_secs_f64() < seconds {
            let n = 1 << 16;
            gen.generate(&lab.client_if, &frame, 20000, 256, n)
                .expect("BPF_PROG_RUN live frames");
            sent += u64::from(n);
        }
        sent
    });
    meter.finish(sinks, sent)
}

fn main() {
    let repeat = arg("--repeat", 1_000_000) as u32;
    let seconds = arg("--seconds", 5);
    let rounds = arg("--rounds", 3) as usize;
    let trials = arg("--trials", 15) as usize;

    let c = per_packet(repeat, trials);
    if rounds == 0 {
        println!(
            "floor {:.1} ns, hit {:.1} ns ({:.2}x), no VIP {:.1} ns ({:.2}x), new flow {:.1} ns \
             ({:.2}x), new flow flooded {:.1} ns ({:.2}x), untracked {:.1} ns ({:.2}x), \
             connection (SYN + ACK) {:.1} ns ({:.2}x), wrapper {:.1} ns",
            c.floor,
            c.hit,
            c.hit_ratio,
            c.not_vip,
            c.not_vip_ratio,
            c.miss,
            c.miss_ratio,
            c.flooded,
            c.flooded_ratio,
            c.untracked,
            c.untracked_ratio,
            c.connection,
            c.connection_ratio,
            c.wrapper,
        );
        return;
    }
    // End to end.
    let mut lab = xdp::XdpLab::new("xbench", 2);
    lab.write_catalog(&[(1, ""), (2, "")], &[("198.19.0.1:8080", 8080, "udp")]);
    // The backends drop the datagrams in XDP and count them (both modes pay the same small
    // receive cost; and a veth takes XDP_REDIRECTed frames only when its peer runs XDP).
    let sinks = Sinks::attach(&lab);
    let vip: SocketAddr = "198.19.0.1:8080".parse().unwrap();
    let dnat = format!(
        "table ip lodestar_bench {{\n  chain pre {{\n    type nat hook prerouting priority -100;\n    \
         ip daddr 198.19.0.1 udp dport 8080 dnat to numgen random mod 2 map {{ 0 : {}, 1 : {} }}\n  }}\n}}\n",
        lab.backends[0].v4, lab.backends[1].v4
    );
    let dnat_file = lab.dir.path().join("dnat.nft");
    std::fs::write(&dnat_file, dnat).unwrap();
    // Frames from XDP reach a veth only if it runs NAPI: with an XDP program, or with GRO on
    // (nftables' case). On for both.
    lab.lb
        .exec_ok(&["ethtool", "-K", &lab.lb_front, "gro", "on"]);
    let (mut x_runs, mut n_runs) = (Vec::new(), Vec::new());
    let (mut x_live, mut n_live) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let agent = lab.lb_agent("fib_forward = true\n");
        blast(&lab, &sinks, vip, 1); // warm: neighbours resolved, flows tracked
        x_runs.push(blast(&lab, &sinks, vip, seconds));
        let l = live(&lab, &sinks, vip, seconds as f64);
        assert!(
            l.pps > 0.9 * l.sent_pps,
            "live frames through the XDP path: {:.0} pps delivered of {:.0} generated",
            l.pps,
            l.sent_pps
        );
        x_live.push(l);
        drop(agent);
        let pin = lab
            .pins()
            .iter()
            .find(|p| p.to_string_lossy().contains("-lb-"))
            .cloned()
            .expect("the load balancer's pin directory");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lodestar"))
            .args(["l4lb", "detach", "--pin-path"])
            .arg(&pin)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        lab.lb
            .exec_ok(&["nft", "-f", &dnat_file.display().to_string()]);
        blast(&lab, &sinks, vip, 1);
        n_runs.push(blast(&lab, &sinks, vip, seconds));
        n_live.push(live(&lab, &sinks, vip, seconds as f64));
        lab.lb
            .exec_ok(&["nft", "delete", "table", "ip", "lodestar_bench"]);
        eprintln!(
            "round {round}: sendmmsg: XDP {:.0} pps of {:.0} offered, nftables DNAT {:.0} pps of {:.0} offered",
            x_runs[round].pps, x_runs[round].sent_pps, n_runs[round].pps, n_runs[round].sent_pps
        );
        eprintln!(
            "round {round}: live frames: XDP {:.0} pps of {:.0} offered ({:.0} ns softirq/pkt), nftables DNAT {:.0} pps of {:.0} offered ({:.0} ns)",
            x_live[round].pps, x_live[round].sent_pps, x_live[round].softirq_ns,
            n_live[round].pps, n_live[round].sent_pps, n_live[round].softirq_ns
        );
    }

    let mut report = Report::new("xdp");
    report.say(format!(
        "xdp: per-packet cost (BPF_PROG_TEST_RUN, {repeat} repetitions, median of {} trials, \
         each timing the floor next to the others)\n",
        c.trials
    ));
    report.say("| path | ns per packet | vs floor |");
    report.say("| --- | --- | --- |");
    report.say(format!(
        "| floor: rewrite + XDP_TX, no lookups | {:.1} | 1.00 |",
        c.floor
    ));
    report.say(format!(
        "| Lodestar, conntrack hit (NAT, flow cache) | {:.1} | {:.2} |",
        c.hit, c.hit_ratio
    ));
    report.say(format!(
        "| Lodestar, conntrack miss: a SYN (Maglev, its record written) | {:.1} | {:.2} |",
        c.miss, c.miss_ratio
    ));
    report.say(format!(
        "| Lodestar, the same while flooded (its record confirms nothing) | {:.1} | {:.2} |",
        c.flooded, c.flooded_ratio
    ));
    report.say(format!(
        "| Lodestar, TCP without SYN of no tracked flow (nothing inserted) | {:.1} | {:.2} |",
        c.untracked, c.untracked_ratio
    ));
    report.say(format!(
        "| Lodestar, a connection's SYN + first ACK (into lx_ct) | {:.1} | {:.2} |",
        c.connection, c.connection_ratio
    ));
    report.say(format!(
        "| Lodestar, packet to no VIP | {:.1} | {:.2} |",
        c.not_vip, c.not_vip_ratio
    ));
    report.say(format!(
        "\n(New-flow rows: the new-flow wrapper's own {:.1} ns per run subtracted.)",
        c.wrapper
    ));
    report.plot(
        "per-packet",
        Plot::bars(
            "XDP cost per packet (BPF_PROG_TEST_RUN), against the map-free floor",
            "ns per packet",
            &[
                ("floor", c.floor),
                ("conntrack hit", c.hit),
                ("no VIP", c.not_vip),
                ("new flow", c.miss),
                ("new flow, flooded", c.flooded),
                ("TCP without SYN", c.untracked),
                ("SYN + first ACK", c.connection),
            ],
        ),
    );
    let delivered = |runs: &[Flow]| runs.iter().map(|f| f.pps).collect::<Vec<_>>();
    report.plot(
        "delivered",
        Plot::rounds(
            "Delivered packets per second, per round",
            "packets per second",
            &[
                ("Lodestar XDP, live frames", &delivered(&x_live)),
                ("nftables DNAT, live frames", &delivered(&n_live)),
                ("Lodestar XDP, sendmmsg", &delivered(&x_runs)),
                ("nftables DNAT, sendmmsg", &delivered(&n_runs)),
            ],
        ),
    );
    flow_table(
        &mut report,
        &format!(
            "xdp: end to end, 18-byte UDP from BPF_PROG_RUN live frames (256 flows), 2 backends, \
             {rounds} rounds of {seconds} s (median)"
        ),
        &x_live,
        &n_live,
    );
    flow_table(
        &mut report,
        &format!(
            "xdp: end to end, 18-byte UDP from 32 sockets (sendmmsg), 2 backends, \
             {rounds} rounds of {seconds} s (median)"
        ),
        &x_runs,
        &n_runs,
    );
    report.finish();
}

fn flow_table(report: &mut Report, title: &str, x_runs: &[Flow], n_runs: &[Flow]) {
    let pick = |runs: &[Flow], f: fn(&Flow) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    let (xp, np) = (pick(x_runs, |f| f.pps), pick(n_runs, |f| f.pps));
    let (xc, nc) = (pick(x_runs, |f| f.cpu_ns), pick(n_runs, |f| f.cpu_ns));
    let (xs, ns) = (
        pick(x_runs, |f| f.softirq_ns),
        pick(n_runs, |f| f.softirq_ns),
    );
    let (xo, no) = (pick(x_runs, |f| f.sent_pps), pick(n_runs, |f| f.sent_pps));
    report.say(format!("\n{title}\n"));
    report.say("| measure | Lodestar XDP (NAT, XDP_REDIRECT) | nftables DNAT | ratio |");
    report.say("| --- | --- | --- | --- |");
    report.say(format!(
        "| offered (pps) | {xo:.0} | {no:.0} | {:.2} |",
        xo / no
    ));
    report.say(format!(
        "| delivered (pps) | {xp:.0} | {np:.0} | {:.2} |",
        xp / np
    ));
    report.say(format!(
        "| machine CPU per delivered packet (ns) | {xc:.0} | {nc:.0} | {:.2} |",
        nc / xc
    ));
    report.say(format!(
        "| softirq CPU per delivered packet (ns) | {xs:.0} | {ns:.0} | {:.2} |",
        ns / xs
    ));
    report.say(format!(
        "| delivered packets per softirq CPU-second | {:.0} | {:.0} | {:.2} |",
        1e9 / xs,
        1e9 / ns,
        ns / xs
    ));
}
