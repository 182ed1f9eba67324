//! Where the DNS zone's memory goes at N tasks: a catalog of N Marathon-shaped tasks (3 per
//! app, 500 agents), built into a zone, with the heap bytes each stage holds counted by a
//! counting allocator. Run: `cargo run --release -p lodestar-dns --example zone_memory -- 100000`
//! (under heaptrack for the allocation sites).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use lodestar_control::keys::Record;
use lodestar_control::model::{Agent, IpSource, Port, Protocol, Task};
use lodestar_control::{CatalogState, Source};
use lodestar_dns::config::ZoneConfig;
use lodestar_dns::zone::ZoneBuilder;

struct Counting;
static HELD: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        HELD.fetch_add(l.size(), Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        HELD.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        HELD.fetch_add(new, Ordering::Relaxed);
        HELD.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn held() -> usize {
    HELD.load(Ordering::Relaxed)
}

/// This thread's CPU time: less moved by other work on a shared machine than wall time.
fn cpu() -> std::time::Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a timespec, which the call fills.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    std::time::Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn mb(b: usize) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
}

/// Task `i` of the catalog; `generation` moves its address (the incremental updates).
fn task(i: usize, agents: usize, generation: usize) -> Task {
    let app = i / 3;
    let agent = i % agents;
    Task::new(
        format!("app{app}.{:08x}-7c1d-11ef-9a3b-0242ac110002", i),
        format!("app{app}"),
        "marathon",
        format!("9c4a7d52-1f3e-4b8a-a0c6-5e2f8d1b7c3a-S{agent}"),
    )
    .with_framework_id("2f6e1b3c-8d4a-4e7f-b5c2-9a1d0e3f6b8c-0001")
    .with_ip(
        format!("198.18.{}.{}", (i / 250 + generation) % 200, i % 250 + 1)
            .parse()
            .unwrap(),
        IpSource::Netinfo,
    )
    .with_resource_port(31000 + (i % 1000) as u16)
    .with_discovery_name(format!("app{app}"))
    .with_discovery_port(Port {
        name: Some("http".into()),
        protocol: Some(Protocol::Tcp),
        ..Port::new(8080)
    })
    .with_label("HAPROXY_GROUP", "external")
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("a task count"))
        .unwrap_or(100_000);
    let agents = 500;
    let base = held();
    let mut state = CatalogState::new();
    for a in 0..agents {
        state.upsert(Record::Agent(
            Agent::new(
                format!("9c4a7d52-1f3e-4b8a-a0c6-5e2f8d1b7c3a-S{a}"),
                format!("agent-{a}.vsphere.example"),
                format!("198.18.{}.{}", 200 + a / 250, a % 250 + 1)
                    .parse()
                    .unwrap(),
            )
            .with_site(if a % 2 == 0 { "azure" } else { "vsphere" }),
        ));
    }
    let mut tasks = Vec::with_capacity(n);
    let before_tasks = held();
    for i in 0..n {
        let mut task = task(i, agents, 0);
        task.shrink_to_fit();
        tasks.push(task);
    }
    let task_bytes = held() - before_tasks + n * std::mem::size_of::<Task>();
    for task in tasks {
        state.upsert(Record::Task(task));
    }
    let catalog = held() - base;
    let snapshot = Arc::new(state.snapshot(1, Source::Demo));
    // The same catalog as a file, for `lodestar agent --catalog` (or `lodestar catalog load`).
    if let Some(path) = std::env::var_os("CATALOG_OUT") {
        let doc = lodestar_control::CatalogDocument::from_snapshot(&snapshot);
        std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
    }
    let config = ZoneConfig::default();
    let before = held();
    let started = Instant::now();
    let cpu_started = cpu();
    let mut builder = ZoneBuilder::new(config, vec!["198.18.0.1".parse().unwrap()]).unwrap();
    let zone = builder.update(&snapshot);
    let build = started.elapsed();
    let build_cpu = cpu() - cpu_started;
    let with_builder = held() - before;
    drop(builder);
    let zone_only = held() - before;
    println!("tasks {n}: {} owner names", zone.len());

    println!(
        "  catalog (CatalogState/Snapshot)  {:>10}  {:>6} B/task",
        mb(catalog),
        catalog / n
    );
    println!(
        "    of which the tasks themselves  {:>10}  {:>6} B/task",
        mb(task_bytes),
        task_bytes / n
    );
    println!(
        "  zone + builder                   {:>10}  {:>6} B/task",
        mb(with_builder),
        with_builder / n
    );
    println!(
        "    of which the builder alone     {:>10}",
        mb(with_builder - zone_only)
    );
    println!("    of which the zone              {:>10}", mb(zone_only));
    // Incremental updates, on a builder of their own: one task moves per snapshot, then 1% of
    // them at once.
    let mut builder =
        ZoneBuilder::new(ZoneConfig::default(), vec!["198.18.0.1".parse().unwrap()]).unwrap();
    builder.update(&snapshot);
    let rounds = 200;
    let started = cpu();
    for r in 0..rounds {
        let i = (r * 7919) % n;
        state.upsert(Record::Task(task(i, agents, r + 1)));
        builder.update(&Arc::new(state.snapshot(2 + r as i64, Source::Demo)));
    }
    let one = (cpu() - started) / rounds as u32;
    let batch = n / 100;
    for i in 0..batch {
        state.upsert(Record::Task(task(i * 97 % n, agents, rounds + 1)));
    }
    let started = cpu();
    builder.update(&Arc::new(state.snapshot(3 + rounds as i64, Source::Demo)));
    let per_task = (cpu() - started) / batch as u32;
    println!(
        "  one changed task per snapshot    {:>10.1} us of CPU",
        one.as_secs_f64() * 1e6
    );
    println!(
        "  1% changed at once, per task     {:>10.1} us of CPU",
        per_task.as_secs_f64() * 1e6
    );
    println!(
        "  first build                      {:>10.0} ms ({:.0} ms of CPU)",
        build.as_secs_f64() * 1e3,
        build_cpu.as_secs_f64() * 1e3
    );
}
