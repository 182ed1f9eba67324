//! Freshness: from the start of an etcd write of a new task to the first DNS answer from the
//! agent that contains it, over a catalog already holding the benchmark's tasks.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use lodestar_control::keys::Record;
use lodestar_control::model::{IpSource, TaskIp};
use lodestar_control::{EtcdConfig, EtcdStore};

use crate::catalog;
use crate::support::dns;
use crate::support::EtcdServer;

/// A write not answered within this long counts as this long, and as a timeout.
const PATIENCE: Duration = Duration::from_secs(10);
/// Pause between polls: a resolution of a fraction of a millisecond without spinning a core
/// that etcd and the agent need.
const POLL_GAP: Duration = Duration::from_micros(200);

pub struct Freshness {
    /// Write start -> first answer with the new task, per write, in ms.
    pub latencies_ms: Vec<f64>,
    /// Write start -> etcd acknowledged the put, per write, in ms.
    pub put_ms: Vec<f64>,
    pub timeouts: usize,
    pub base_tasks: usize,
    pub polls: u64,
}

pub fn measure(binary: &Path, tasks: usize, apps: usize, writes: usize) -> Freshness {
    let etcd = EtcdServer::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let store = rt
        .block_on(EtcdStore::connect(EtcdConfig::from_list(&etcd.endpoint())))
        .expect("connect to etcd");
    let mut base = vec![
        Record::Agent(catalog::agent()),
        Record::Framework(catalog::framework()),
    ];
    base.extend((0..tasks).map(|i| Record::Task(catalog::task(i, apps))));
    rt.block_on(store.put(&base)).expect("fill etcd");

    let agent = crate::servers::start_lodestar(binary, &["--etcd", &etcd.endpoint()]);
    // The first snapshot is published whole, so one answer means the whole catalog is in.
    let probe = format!("app-{}.{}.mesos.", apps - 1, catalog::FRAMEWORK);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !answers_a(&socket(agent.dns), &probe) {
        assert!(
            Instant::now() < deadline,
            "the agent never served {probe} from etcd"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let sock = socket(agent.dns);
    let mut out = Freshness {
        latencies_ms: Vec::with_capacity(writes),
        put_ms: Vec::with_capacity(writes),
        timeouts: 0,
        base_tasks: tasks,
        polls: 0,
    };
    for i in 0..writes {
        let mut task = catalog::task(i, apps);
        task.id = format!("fresh-{i}.{i:08x}-0000-11ef-9c9a-0242ac110002");
        task.name = format!("fresh-{i}");
        task.discovery = None;
        task.ips = vec![TaskIp {
            ip: format!("198.19.{}.{}", (i / 250) % 250, i % 250 + 1)
                .parse()
                .expect("ip"),
            source: IpSource::Netinfo,
        }];
        let name = format!("fresh-{i}.{}.mesos.", catalog::FRAMEWORK);
        assert!(
            !answers_a(&sock, &name),
            "{name} answered before it was written"
        );
        let store = store.clone();
        let started = Instant::now();
        let put = rt.spawn(async move {
            store.put(&[Record::Task(task)]).await.expect("etcd put");
            Instant::now()
        });
        let mut seen = None;
        while started.elapsed() < PATIENCE {
            out.polls += 1;
            if answers_a(&sock, &name) {
                seen = Some(started.elapsed());
                break;
            }
            std::thread::sleep(POLL_GAP);
        }
        let acked = rt.block_on(put).expect("put task");
        out.put_ms.push((acked - started).as_secs_f64() * 1e3);
        if seen.is_none() {
            out.timeouts += 1;
        }
        out.latencies_ms
            .push(seen.unwrap_or(PATIENCE).as_secs_f64() * 1e3);
        // Isolated writes: let the agent settle before the next one.
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(agent);
    drop(etcd);
    out
}

fn socket(server: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.connect(server).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    s
}

/// One A query: true when the answer is NOERROR with at least one record. Replies to earlier
/// (timed-out) queries are skipped by id.
fn answers_a(sock: &UdpSocket, name: &str) -> bool {
    let packet = dns::build(name, RecordType::A, None);
    let mut buf = [0u8; 1500];
    for _ in 0..3 {
        if sock.send(&packet).is_err() {
            continue;
        }
        while let Ok(n) = sock.recv(&mut buf) {
            if n >= 12 && buf[..2] == packet[..2] {
                let rcode = buf[3] & 0x0f;
                let answers = u16::from_be_bytes([buf[6], buf[7]]);
                return rcode == 0 && answers > 0;
            }
        }
    }
    panic!(
        "no answer from the agent at {:?} for {name}",
        sock.peer_addr()
    );
}
