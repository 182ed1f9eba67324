//! A lab for the per-packet (XDP) path: a client namespace, a load-balancer namespace that
//! routes between the client and the backends, and backends behind it (tests/support/l4lb.rs's
//! servers). No cgroup: the socket hooks play no part here; every packet crosses the load
//! balancer's interfaces.
//!
//!   client 198.18.0.2 ── 198.18.0.1 lb 198.18.i.1 ── 198.18.i.2 backend i
//!          2001:db8::2      2001:db8::1  2001:db8:i::1   2001:db8:i::2

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::agent::Agent;
use super::l4lb::{backend_behind, Backend};
use super::netns::{link, Netns};

pub struct XdpLab {
    pub client: Netns,
    pub lb: Netns,
    /// The load balancer's interface towards the client.
    pub lb_front: String,
    /// The client's interface towards the load balancer.
    pub client_if: String,
    pub backends: Vec<Backend>,
    /// The backends' interfaces (for GUE decapsulation).
    pub backend_ifaces: Vec<String>,
    pub dir: tempfile::TempDir,
    pins: Vec<PathBuf>,
}

impl XdpLab {
    pub fn new(tag: &str, n: u8) -> XdpLab {
        let client = Netns::new(&format!("{tag}c"));
        let lb = Netns::new(&format!("{tag}l"));
        let (_, lb_front) = link(
            &client,
            "198.18.0.2/24",
            &lb,
            "198.18.0.1/24",
            &format!("{}0", &tag[..tag.len().min(3)]),
        );
        let client_if = client.exec_ok(&["ip", "-o", "link", "show", "type", "veth"]);
        let client_if = String::from_utf8_lossy(&client_if.stdout)
            .split(':')
            .nth(1)
            .map(|s| s.trim().split('@').next().unwrap_or("").to_string())
            .expect("the client's veth");
        client.exec_ok(&[
            "ip",
            "-6",
            "addr",
            "add",
            "2001:db8::2/64",
            "dev",
            &client_if,
            "nodad",
        ]);
        lb.exec_ok(&[
            "ip",
            "-6",
            "addr",
            "add",
            "2001:db8::1/64",
            "dev",
            &lb_front,
            "nodad",
        ]);
        client.exec_ok(&["ip", "route", "add", "default", "via", "198.18.0.1"]);
        client.exec_ok(&["ip", "-6", "route", "add", "default", "via", "2001:db8::1"]);
        lb.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        lb.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        let mut backends = Vec::new();
        let mut backend_ifaces = Vec::new();
        for i in 1..=n {
            let (b, _, bi) = backend_behind(&lb, tag, i);
            backends.push(b);
            backend_ifaces.push(bi);
        }
        // IPv6 neighbour discovery needs the link-local addresses out of duplicate-address
        // detection; until then the first packets of a flow can vanish.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        for ns in std::iter::once(&client)
            .chain(std::iter::once(&lb))
            .chain(backends.iter().map(|b| &b.ns))
        {
            while !ns
                .exec_ok(&["ip", "-6", "addr", "show", "tentative"])
                .stdout
                .is_empty()
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "IPv6 addresses in {} stay tentative",
                    ns.name
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        XdpLab {
            client,
            client_if,
            lb,
            lb_front,
            backends,
            backend_ifaces,
            dir: tempfile::tempdir().expect("temp dir"),
            pins: Vec::new(),
        }
    }

    /// A catalog with backends `which` (1-based) behind the given VIPs: (VIP label, backend
    /// port, protocol). Extra TOML per backend (e.g. `state = "draining"`).
    pub fn write_catalog(&self, which: &[(usize, &str)], vips: &[(&str, u16, &str)]) -> PathBuf {
        let mut doc = String::from("schema = 1\n");
        for (i, extra) in which {
            let b = &self.backends[i - 1];
            doc.push_str(&format!(
                "[[tasks]]\nid = \"{n}\"\nname = \"web\"\nframework = \"marathon\"\nagent = \"a1\"\n\
                 ips = [{{ ip = \"{v4}\", source = \"netinfo\" }}, {{ ip = \"{v6}\", source = \"netinfo\" }}]\n{extra}\n\
                 [tasks.discovery]\nname = \"web\"\n",
                n = b.name,
                v4 = b.v4,
                v6 = b.v6
            ));
            for (vip, port, proto) in vips {
                doc.push_str(&format!(
                    "[[tasks.discovery.ports]]\nnumber = {port}\nprotocol = \"{proto}\"\nlabels = {{ VIP_0 = \"{vip}\" }}\n"
                ));
            }
        }
        let path = self.dir.path().join("catalog.toml");
        let tmp = self.dir.path().join("catalog.toml.new");
        std::fs::write(&tmp, doc).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }

    /// An agent inside `ns` on the catalog file, with `config` (TOML) and its own pin path.
    pub fn agent(&mut self, ns: &Netns, name: &str, config: &str) -> Agent {
        let cfg = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&cfg, config).unwrap();
        let pin = PathBuf::from(format!(
            "/sys/fs/bpf/lodestar-xdp-{name}-{}",
            std::process::id()
        ));
        if !self.pins.contains(&pin) {
            self.pins.push(pin.clone());
        }
        let catalog = self.dir.path().join("catalog.toml");
        Agent::start_in(
            ns,
            &[
                "--catalog",
                catalog.to_str().unwrap(),
                "--config",
                cfg.to_str().unwrap(),
                "--l4lb-pin-path",
                pin.to_str().unwrap(),
            ],
        )
    }

    /// The load balancer's agent: XDP on its front interface, NAT replies restored there, and
    /// VIP modes as given (`[[l4lb.xdp.vips]]` entries).
    pub fn lb_agent(&mut self, extra: &str) -> Agent {
        let config = format!(
            "[catalog]\nfile_poll_ms = 50\n[l4lb]\nsocket = false\nvip_ranges = [\"198.18.0.0/15\", \"2001:db8::/32\"]\n[l4lb.passive]\nfail_threshold = 0\n\
             [l4lb.xdp]\ninterfaces = [\"{f}\"]\nnat_reply_interfaces = [\"{f}\"]\n\
             gue_source_v4 = \"198.18.0.1\"\ngue_source_v6 = \"2001:db8::1\"\n{extra}",
            f = self.lb_front
        );
        let lb = Netns {
            name: self.lb.name.clone(),
        };
        let a = self.agent(&lb, "lb", &config);
        std::mem::forget(lb);
        // Full checksums from the client, as from a real NIC: a veth leaves them to the
        // receiver (CHECKSUM_PARTIAL), which an XDP_REDIRECTed frame no longer carries. After
        // the XDP attach, which recomputes the peer's offloads.
        self.client
            .exec_ok(&["ethtool", "-K", &self.client_if, "tx", "off"]);
        a
    }

    /// Per backend: the VIPs on its loopback, TCP and UDP listeners on them, and an agent
    /// decapsulating GUE.
    pub fn gue_backends(&mut self, vips: &[SocketAddr]) -> Vec<Agent> {
        let mut agents = Vec::new();
        for i in 0..self.backends.len() {
            let (ns, name, iface) = (
                self.backends[i].ns.name.clone(),
                self.backends[i].name.clone(),
                self.backend_ifaces[i].clone(),
            );
            let b = Netns { name: ns.clone() };
            b.exec_ok(&["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"]);
            for vip in vips {
                let plen = if vip.is_ipv4() { 32 } else { 128 };
                b.exec_ok(&[
                    "ip",
                    "addr",
                    "add",
                    &format!("{}/{plen}", vip.ip()),
                    "dev",
                    "lo",
                    "nodad",
                ]);
                super::l4lb::listen_echo(&ns, *vip, &name);
            }
            let config = format!(
                "[l4lb]\nsocket = false\nvip_ranges = [\"198.18.0.0/15\", \"2001:db8::/32\"]\n[l4lb.passive]\nfail_threshold = 0\n[l4lb.xdp]\ndecap_interfaces = [\"{iface}\"]\ngue_sources = [\"198.18.0.1\", \"2001:db8::1\"]\n"
            );
            agents.push(self.agent(&b, &name, &config));
            std::mem::forget(b);
        }
        agents
    }

    /// Per backend, an agent running the XDP program on its interface (no VIPs there: it only
    /// passes packets). A veth receives XDP_REDIRECTed frames only when its peer runs XDP.
    pub fn xdp_on_backends(&mut self) -> Vec<Agent> {
        let mut agents = Vec::new();
        for i in 0..self.backends.len() {
            let b = Netns {
                name: self.backends[i].ns.name.clone(),
            };
            let config = format!(
                "[l4lb]\nsocket = false\nvip_ranges = [\"198.18.0.0/15\", \"2001:db8::/32\"]\n[l4lb.passive]\nfail_threshold = 0\n[l4lb.xdp]\ninterfaces = [\"{}\"]\n",
                self.backend_ifaces[i]
            );
            let name = format!("{}x", self.backends[i].name);
            agents.push(self.agent(&b, &name, &config));
            std::mem::forget(b);
        }
        agents
    }

    pub fn pins(&self) -> &[PathBuf] {
        &self.pins
    }
}

impl Drop for XdpLab {
    fn drop(&mut self) {
        for pin in &self.pins {
            let _ = std::process::Command::new(env!("CARGO_BIN_EXE_lodestar"))
                .args(["l4lb", "detach", "--pin-path"])
                .arg(pin)
                .output();
            let _ = std::fs::remove_dir_all(pin);
        }
    }
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}
