//! VIP benchmark: new TCP connections per second and request latency through a VIP, side by
//! side in one run with (a) the same load sent straight to the backends and (b) an nftables
//! DNAT rule set doing the VIP's job (the iptables/IPVS class). Also the time from an etcd
//! write to the data path steering a new VIP.
//!
//! Topology (tests/support/l4lb.rs): the client threads run in a network namespace of their
//! own, two backends (nginx, one worker each) in namespaces behind veths. The benchmark process
//! moves itself between two cgroups: one with Lodestar's hooks attached (VIP mode), one without
//! (direct and nftables modes), so the baselines pay nothing for Lodestar.
//!
//! Run as root: `cargo bench --bench vip [-- --seconds 5 --rounds 3 --threads 4 --writes 100]`.
//! Needs nginx (Debian nginx-light) and nft (nftables).

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::bench::arg;
use support::report::{percentile, sorted, Plot, Report};
use support::{agent, etcd, l4lb, netns};

use lodestar_control::file::CatalogDocument;
use lodestar_control::{EtcdConfig, EtcdStore};

fn need(tool: &str, package: &str) {
    if Command::new(tool).arg("-v").output().is_err() {
        panic!("this benchmark needs {tool}: apt-get install {package}");
    }
}

struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nginx(ns: &netns::Netns, ip: Ipv4Addr, name: &str, dir: &Path) -> Nginx {
    let conf = dir.join(format!("{name}.conf"));
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1; daemon off; master_process off;\n\
             pid {dir}/{name}.pid; error_log stderr error;\n\
             events {{ worker_connections 8192; }}\n\
             http {{ access_log off; server {{ listen {ip}:80 backlog=8192;\n\
             location / {{ return 200 \"{name}\\n\"; }} }} }}\n",
            dir = dir.display()
        ),
    )
    .unwrap();
    ns.exec_ok(&["sysctl", "-qw", "net.core.somaxconn=8192"]);
    // No TIME_WAIT on the servers: the client runs through its port range several times, and
    // a DNAT'd client's TCP timestamps (offset by the VIP, not the backend) would look old to a
    // TIME_WAIT left by an earlier mode and have its SYN dropped.
    ns.exec_ok(&["sysctl", "-qw", "net.ipv4.tcp_max_tw_buckets=0"]);
    let child = ns
        .command("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .spawn()
        .expect("start nginx");
    Nginx(child)
}

/// One request on a new connection: connect, GET, read to EOF.
fn request(to: SocketAddr) -> std::io::Result<()> {
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut buf = [0u8; 512];
    let mut got = 0;
    loop {
        match s.read(&mut buf)? {
            0 => break,
            n => got += n,
        }
    }
    if got == 0 {
        return Err(std::io::Error::other("empty reply"));
    }
    Ok(())
}

struct Run {
    conns: u64,
    errors: u64,
    seconds: f64,
    cpu: f64,
    lat_us: Vec<u32>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.conns as f64 / self.seconds
    }
    fn pct(&self, p: f64) -> f64 {
        self.lat_us[((self.lat_us.len() - 1) as f64 * p) as usize] as f64 / 1000.0
    }
    fn cpu_us_per_conn(&self) -> f64 {
        self.cpu * 1e6 / self.conns as f64
    }
}

/// `threads` clients in the client namespace, each opening connections to `targets` in turn
/// for `seconds`.
fn load(client_ns: &str, targets: &[SocketAddr], threads: usize, seconds: u64) -> Run {
    let cpu0 = support::bench::cpu_seconds().0;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let results: Vec<(u64, u64, Vec<u32>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    l4lb::in_ns(client_ns, || {
                        let (mut ok, mut err, mut lat) = (0u64, 0u64, Vec::new());
                        let mut i = t;
                        while Instant::now() < deadline && ok < 5_000_000 {
                            let to = targets[i % targets.len()];
                            i += 1;
                            let t0 = Instant::now();
                            match request(to) {
                                Ok(()) => {
                                    ok += 1;
                                    lat.push(t0.elapsed().as_micros() as u32);
                                }
                                Err(e) => {
                                    if err == 0 {
                                        eprintln!("first failure to {to}: {e}");
                                    }
                                    err += 1
                                }
                            }
                        }
                        (ok, err, lat)
                    })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let seconds = start.elapsed().as_secs_f64();
    let cpu = support::bench::cpu_seconds().0 - cpu0;
    let mut run = Run {
        conns: 0,
        errors: 0,
        seconds,
        cpu,
        lat_us: Vec::new(),
    };
    for (ok, err, lat) in results {
        run.conns += ok;
        run.errors += err;
        run.lat_us.extend(lat);
    }
    run.lat_us.sort_unstable();
    run
}

/// The cgroup without Lodestar's hooks; removed on drop (after the Lab has moved us home).
struct PlainCgroup(std::path::PathBuf);

impl Drop for PlainCgroup {
    fn drop(&mut self) {
        // A process that just left may hold it for a moment.
        for _ in 0..100 {
            if std::fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn join_cgroup(dir: &Path) {
    std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string()).expect("join cgroup");
}

fn task_toml(id: &str, ip: Ipv4Addr, vip: &str) -> String {
    format!(
        "schema = 1\n[[tasks]]\nid = \"{id}\"\nname = \"web\"\nframework = \"marathon\"\n\
         agent = \"a1\"\nips = [{{ ip = \"{ip}\", source = \"netinfo\" }}]\n\
         [tasks.discovery]\nname = \"web\"\n[[tasks.discovery.ports]]\nnumber = 80\n\
         protocol = \"tcp\"\nlabels = {{ VIP_0 = \"{vip}\" }}\n"
    )
}

fn records(toml_text: &str) -> Vec<lodestar_control::keys::Record> {
    toml::from_str::<CatalogDocument>(toml_text)
        .expect("catalog document")
        .into_records()
}

fn median_by(runs: &mut [Run], f: impl Fn(&Run) -> f64) -> &Run {
    runs.sort_by(|a, b| f(a).partial_cmp(&f(b)).unwrap());
    &runs[runs.len() / 2]
}

fn main() {
    let seconds = arg("--seconds", 5);
    let rounds = arg("--rounds", 3) as usize;
    let threads = arg("--threads", 4) as usize;
    let writes = arg("--writes", 100) as usize;
    need("nginx", "nginx-light");
    need("nft", "nftables");

    let plain = PlainCgroup(
        l4lb::cgroup2_root().join(format!("lodestar-bench-plain-{}", std::process::id())),
    );
    let _ = std::fs::create_dir(&plain.0);
    let plain_dir = plain.0.clone();
    let plain = plain_dir.as_path();
    let lab = l4lb::Lab::new("bench", 2);
    let dir = tempfile::tempdir().unwrap();
    let _servers: Vec<Nginx> = lab
        .backends
        .iter()
        .map(|b| nginx(&b.ns, b.v4, &b.name, dir.path()))
        .collect();
    lab.client
        .exec_ok(&["sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65000"]);

    let etcd = etcd::EtcdServer::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = rt
        .block_on(EtcdStore::connect(EtcdConfig::from_list(&etcd.endpoint())))
        .expect("etcd");
    for b in &lab.backends {
        let recs = records(&task_toml(&b.name, b.v4, "198.19.0.1:80"));
        rt.block_on(store.put(&recs)).expect("put");
    }
    let agent = {
        let ep = etcd.endpoint();
        let extra = lab.agent_args();
        let mut args = vec!["--etcd", ep.as_str()];
        args.extend(extra.iter().map(String::as_str));
        agent::Agent::start(&args)
    };
    let vip = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1)), 80);
    let direct: Vec<SocketAddr> = lab
        .backends
        .iter()
        .map(|b| SocketAddr::new(IpAddr::V4(b.v4), 80))
        .collect();
    let nft_rules = format!(
        "table ip lodestar_bench {{\n  chain out {{\n    type nat hook output priority -100;\n    \
         ip daddr 198.19.0.1 tcp dport 80 dnat to numgen random mod 2 map {{ 0 : {}, 1 : {} }}\n  }}\n}}\n",
        lab.backends[0].v4, lab.backends[1].v4
    );
    let nft_file = dir.path().join("dnat.nft");
    std::fs::write(&nft_file, &nft_rules).unwrap();
    let client = lab.client.name.clone();

    // Warm up every path once.
    join_cgroup(&lab.cgroup.path);
    load(&client, &[vip], threads, 1);

    let (mut d_runs, mut v_runs, mut n_runs) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        join_cgroup(plain);
        d_runs.push(load(&client, &direct, threads, seconds));

        join_cgroup(&lab.cgroup.path);
        v_runs.push(load(&client, &[vip], threads, seconds));

        join_cgroup(plain);
        lab.client
            .exec_ok(&["ip", "route", "add", "198.19.0.1/32", "via", "198.18.1.2"]);
        lab.client
            .exec_ok(&["nft", "-f", &nft_file.display().to_string()]);
        n_runs.push(load(&client, &[vip], threads, seconds));
        lab.client
            .exec_ok(&["nft", "delete", "table", "ip", "lodestar_bench"]);
        lab.client.exec_ok(&["ip", "route", "del", "198.19.0.1/32"]);
        eprintln!(
            "round {round}: direct {:.0}/s, VIP {:.0}/s, nftables DNAT {:.0}/s",
            d_runs[round].rate(),
            v_runs[round].rate(),
            n_runs[round].rate()
        );
    }

    // Write -> steering: each write adds a task behind a new VIP; time until a connect() to
    // that VIP from the client namespace reaches nginx (before: no route, refused at once).
    join_cgroup(&lab.cgroup.path);
    let mut fresh_ms = Vec::new();
    let mut timeouts = 0;
    for k in 0..writes {
        let vip_k = SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(
                198,
                19,
                1 + (k / 250) as u8,
                (k % 250) as u8 + 1,
            )),
            80,
        );
        let recs = records(&task_toml(
            &format!("fresh-{k}"),
            lab.backends[0].v4,
            &vip_k.to_string(),
        ));
        let t0 = Instant::now();
        rt.block_on(store.put(&recs)).expect("put");
        let ok = l4lb::in_ns(&client, || {
            while t0.elapsed() < Duration::from_secs(5) {
                if request(vip_k).is_ok() {
                    return true;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            false
        });
        if !ok {
            timeouts += 1;
        }
        fresh_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    let fresh_ms = sorted(&fresh_ms);
    join_cgroup(plain);
    drop(agent);
    let _ = lab.detach();
    join_cgroup(&lab.cgroup.path);

    let per_round = |runs: &[Run]| runs.iter().map(Run::rate).collect::<Vec<_>>();
    let rates = [per_round(&d_runs), per_round(&v_runs), per_round(&n_runs)];
    let d = median_by(&mut d_runs, Run::rate);
    let v = median_by(&mut v_runs, Run::rate);
    let n = median_by(&mut n_runs, Run::rate);
    let mut report = Report::new("vip");
    report.say(format!(
        "vip: {threads} client threads, HTTP/1.0 GET on a new TCP connection each, 2 nginx backends, \
         {rounds} rounds of {seconds} s per mode (median round shown)\n"
    ));
    report.say("| measure | direct to backends | Lodestar VIP | nftables DNAT | VIP / direct | VIP vs DNAT |");
    report.say("| --- | --- | --- | --- | --- | --- |");
    // A row: each mode's value, VIP / direct, and how many times better the VIP does than DNAT.
    let row = |measure: &str, digits: usize, value: &dyn Fn(&Run) -> f64, more_is_better: bool| {
        let (dv, vv, nv) = (value(d), value(v), value(n));
        let vs_dnat = if more_is_better { vv / nv } else { nv / vv };
        let vs_direct = vv / dv;
        format!(
            "| {measure} | {dv:.digits$} | {vv:.digits$} | {nv:.digits$} | {vs_direct:.3} | {vs_dnat:.2}x |"
        )
    };
    report.say(row("connections/s", 0, &Run::rate, true));
    for (label, p) in [("p50 latency", 0.5), ("p99 latency", 0.99)] {
        report.say(row(&format!("{label} (ms)"), 3, &|r| r.pct(p), false));
    }
    let cpu = "machine CPU per connection (us)";
    report.say(row(cpu, 1, &Run::cpu_us_per_conn, false));
    report.say(format!(
        "| failed connections | {} | {} | {} | | |",
        d.errors, v.errors, n.errors
    ));
    let pct = |p: f64| percentile(&fresh_ms, p);
    report.say(format!(
        "\netcd write -> VIP steered (connect() reaches the backend), {writes} writes: \
         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {timeouts} over 5 s (target p99 < 100 ms)",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    ));
    let latencies = |r: &Run| {
        r.lat_us
            .iter()
            .map(|u| *u as f64 / 1000.0)
            .collect::<Vec<_>>()
    };
    report.plot(
        "connections",
        Plot::rounds(
            &format!("New TCP connections per second, {threads} client threads"),
            "connections per second",
            &[
                ("direct to backends", &rates[0]),
                ("Lodestar VIP", &rates[1]),
                ("nftables DNAT", &rates[2]),
            ],
        ),
    );
    report.plot(
        "latency",
        Plot::cdf(
            "Connect + HTTP GET latency (median round)",
            "ms",
            &[
                ("direct to backends", &latencies(d)),
                ("Lodestar VIP", &latencies(v)),
                ("nftables DNAT", &latencies(n)),
            ],
        ),
    );
    report.plot(
        "write-to-steered",
        Plot::cdf(
            "etcd write to a VIP steered",
            "ms",
            &[("Lodestar", &fresh_ms)],
        ),
    );
    report.finish();
}
