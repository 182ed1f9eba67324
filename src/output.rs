//! What the CLI prints: tables of tasks and VIPs, the status screen, and JSON.

use anyhow::{Context, Result};
use lodestar_control::Snapshot;

use crate::ops::Status;

pub fn print_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).context("encoding JSON")?;
    println!("{text}");
    Ok(())
}

fn lower<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Prints rows as left-aligned columns.
fn print_table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
}

pub fn print_tasks(snapshot: &Snapshot) {
    let rows = snapshot
        .tasks
        .values()
        .map(|t| {
            let ports: Vec<String> = match &t.discovery {
                Some(d) if !d.ports.is_empty() => d
                    .ports
                    .iter()
                    .map(|p| {
                        let proto = p.protocol.unwrap_or_default();
                        match &p.name {
                            Some(n) => format!("{n}:{}/{proto}", p.number),
                            None => format!("{}/{proto}", p.number),
                        }
                    })
                    .collect(),
                _ => t.ports.iter().map(|p| p.number.to_string()).collect(),
            };
            vec![
                t.id.clone(),
                t.name.clone(),
                t.framework.clone(),
                t.agent.clone(),
                lower(&t.state),
                lower(&t.health),
                t.ips
                    .iter()
                    .map(|i| i.ip.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                ports.join(","),
            ]
        })
        .collect();
    print_table(
        &[
            "ID",
            "NAME",
            "FRAMEWORK",
            "AGENT",
            "STATE",
            "HEALTH",
            "IPS",
            "PORTS",
        ],
        rows,
    );
}

pub fn print_dataplane_vips(vips: &[lodestar_l4lb::VipStatus]) {
    let mut rows = Vec::new();
    for v in vips {
        let mut flags = format!("{}/{} healthy", v.healthy, v.total);
        if v.fail_open {
            flags.push_str(" FAIL-OPEN");
        }
        if let Some(x) = &v.xdp {
            flags.push_str(&format!(" xdp={} table={}", x.mode, x.table));
            // Cramped: lx_ring had no room for the size its backends ask for.
            if x.table_preferred > x.table {
                flags.push_str(&format!(" (wants {})", x.table_preferred));
            }
            flags.push_str(&format!(
                " ring={}/{} pkts={} flows={} lru_misses={}",
                x.ring_used, x.ring_slots, x.packets, x.new_flows, x.lru_misses
            ));
        }
        rows.push(vec![
            v.vip.clone(),
            format!("{}/{}", v.address, v.protocol),
            flags,
            format!(
                "conns={} dgrams={} no_backend={} fail_open={}",
                v.connects, v.datagrams, v.no_backend, v.fail_open_steered
            ),
        ]);
        for b in &v.backends {
            let health = if b.weight == 0 {
                "draining"
            } else if b.healthy {
                "healthy"
            } else {
                "unhealthy"
            };
            rows.push(vec![
                String::new(),
                format!("  -> {}", b.address),
                format!(
                    "{} weight={} slots={}{}",
                    health,
                    b.weight,
                    b.slots,
                    if b.local { " local" } else { "" }
                ),
                format!(
                    "conns={} dgrams={} xdp_pkts={} {}",
                    b.connects, b.datagrams, b.xdp_packets, b.task
                ),
            ]);
        }
    }
    print_table(&["VIP", "ADDRESS / BACKEND", "STATE", "COUNTERS"], rows);
}

pub fn print_vips(snapshot: &Snapshot) {
    let mut rows = Vec::new();
    for vip in snapshot.vips() {
        let addresses: Vec<String> = vip.addresses.iter().map(ToString::to_string).collect();
        let addresses = if addresses.is_empty() {
            "(not allocated)".to_string()
        } else {
            addresses.join(",")
        };
        if vip.backends.is_empty() {
            rows.push(vec![
                vip.key.to_string(),
                addresses.clone(),
                "-".into(),
                String::new(),
            ]);
        }
        for (i, b) in vip.backends.iter().enumerate() {
            let ips: Vec<String> = b.ips.iter().map(ToString::to_string).collect();
            let target = format!("{}:{}", ips.join(","), b.port);
            let detail = format!(
                "{} {} {} site={}",
                b.task,
                lower(&b.state),
                lower(&b.health),
                b.site.as_deref().unwrap_or("-")
            );
            let (k, a) = if i == 0 {
                (vip.key.to_string(), addresses.clone())
            } else {
                (String::new(), String::new())
            };
            rows.push(vec![k, a, target, detail]);
        }
    }
    print_table(
        &["VIP", "ADDRESSES", "BACKEND", "TASK STATE HEALTH SITE"],
        rows,
    );
}

/// `lodestar status`: one screen about a node, from its agent's HTTP API.
/// `second` a second after `first`, for the rates.
pub fn print_status(first: &Status, second: &Status) {
    let s = second;
    let c = &s.catalog;
    println!(
        "node      {} (site {})",
        s.node,
        s.site.as_deref().unwrap_or("-")
    );
    println!("uptime    {} s", s.uptime_seconds);
    println!(
        "catalog   {}  revision {}  {} tasks  {} VIPs",
        c.source, c.revision, c.tasks, c.vips
    );
    let contact = c
        .last_contact_age_seconds
        .map(|a| format!("last contact {a:.1} s ago"))
        .unwrap_or_else(|| "no etcd".into());
    println!(
        "          {}{}{}",
        if c.stale { "STALE, " } else { "fresh, " },
        contact,
        if c.from_local_cache {
            ", served from the local cache"
        } else {
            ""
        }
    );
    let qps = second.dns.queries.saturating_sub(first.dns.queries);
    println!(
        "dns       {}  {} names  {} qps  {} queries in all  {} forwarded",
        s.dns.listen.join(","),
        s.dns.names,
        qps,
        s.dns.queries,
        s.dns.forwarded
    );
    let rcodes: Vec<String> = s
        .dns
        .responses
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    println!(
        "          {}",
        if rcodes.is_empty() {
            "no responses yet".into()
        } else {
            rcodes.join("  ")
        }
    );
    let l = &s.l4lb;
    println!("vips      {}  revision {}", l.state, l.revision);
    for (vip, addr, healthy, total, conns) in &l.vips {
        println!("          {vip:<28} {addr:<26} {healthy}/{total} healthy  {conns} connections");
    }
}
