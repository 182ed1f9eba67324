//! The `lodestar` binary's catalog commands against a real etcd, and their errors.

mod support;

use support::command::{lodestar_command, stderr};
use support::{lodestar, lodestar_ok as ok, EtcdServer};

/// `lodestar services put` of task `id` named `name` on agent `a1` at `ip` into etcd at `e`,
/// with `extra` flags; its output.
fn services_put(e: &str, id: &str, name: &str, ip: &str, extra: &[&str]) -> String {
    let flags = [
        "--etcd", e, "--id", id, "--name", name, "--agent", "a1", "--ip", ip,
    ];
    ok(&[&["services", "put"], &flags[..], extra].concat())
}

/// Fails with exit code `code` and a single `lodestar: error:` line that mentions `needle`.
fn fails(args: &[&str], code: i32, needle: &str) {
    let o = lodestar(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(code), "lodestar {args:?}: {err}");
    assert!(
        err.contains(needle),
        "lodestar {args:?}: {err:?} lacks {needle:?}"
    );
    if code == 1 {
        assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
        assert!(err.starts_with("lodestar: error: "), "{err}");
    }
}

#[test]
fn services_put_ls_rm_and_vips_ls_through_etcd() {
    let etcd = EtcdServer::start();
    let e = etcd.endpoint();
    for (id, ip) in [("web.1", "198.18.0.11"), ("web.2", "2001:db8::12")] {
        let extra = [
            "--port",
            "http:8080/tcp",
            "--vip",
            "8080=/web:80",
            "--health",
            "healthy",
        ];
        let out = services_put(&e, id, "web", ip, &extra);
        assert!(out.contains(&format!("registered task {id}")), "{out}");
    }
    let ls = ok(&["services", "ls", "--etcd", &e]);
    assert!(ls.lines().next().unwrap().starts_with("ID"), "{ls}");
    assert!(
        ls.contains("web.1") && ls.contains("198.18.0.11") && ls.contains("http:8080/tcp"),
        "{ls}"
    );
    assert!(ls.contains("2001:db8::12"), "{ls}");

    let json: serde_json::Value =
        serde_json::from_str(&ok(&["vips", "ls", "--etcd", &e, "--json"])).unwrap();
    assert_eq!(json[0]["name"]["named"], "/web");
    assert_eq!(json[0]["port"], 80);
    assert_eq!(json[0]["backends"].as_array().unwrap().len(), 2);
    let table = ok(&["vips", "ls", "--etcd", &e]);
    assert!(
        table.contains("/web:80/tcp") && table.contains("198.18.0.11:8080"),
        "{table}"
    );

    // The same port number on both protocols, each behind its own VIP.
    let ports = ["--port", "dns:53/tcp", "--port", "dns:53/udp"];
    let vips = [
        "--vip",
        "53/udp=198.19.0.53:53",
        "--vip",
        "53/tcp=198.19.0.53:53",
    ];
    services_put(&e, "dns.1", "dns", "198.18.0.53", &[ports, vips].concat());
    let vips = ok(&["vips", "ls", "--etcd", &e]);
    assert!(
        vips.contains("198.19.0.53:53/udp") && vips.contains("198.19.0.53:53/tcp"),
        "{vips}"
    );
    ok(&["services", "rm", "--etcd", &e, "dns.1"]);

    let out = ok(&["services", "rm", "--etcd", &e, "web.1"]);
    assert!(out.contains("removed task web.1"), "{out}");
    let snap: serde_json::Value = serde_json::from_str(&ok(&["snapshot", "--etcd", &e])).unwrap();
    assert_eq!(snap["tasks"].as_array().unwrap().len(), 1);
    assert_eq!(snap["source"]["kind"], "etcd");
    assert!(snap["revision"].as_i64().unwrap() > 0);

    fails(
        &["services", "rm", "--etcd", &e, "web.1"],
        1,
        "no task with id web.1",
    );

    // Task ids are unique within a framework only: one id in two frameworks is two tasks,
    // and `rm` takes the framework.
    for (fw, ip) in [("fw-a", "198.18.0.21"), ("fw-b", "198.18.0.22")] {
        let framework = ["--framework", "chronos", "--framework-id", fw];
        services_put(&e, "1", "job", ip, &framework);
    }
    // (framework id, address) of every listed task with id 1.
    let jobs = || -> Vec<(String, String)> {
        let ls: serde_json::Value =
            serde_json::from_str(&ok(&["services", "ls", "--etcd", &e, "--json"])).unwrap();
        let tasks = ls.as_array().unwrap().iter().filter(|t| t["id"] == "1");
        let text = |v: &serde_json::Value| v.as_str().unwrap().to_string();
        tasks
            .map(|t| (text(&t["framework_id"]), text(&t["ips"][0]["ip"])))
            .collect()
    };
    let pair = |fw: &str, ip: &str| (fw.to_string(), ip.to_string());
    assert_eq!(
        jobs(),
        [pair("fw-a", "198.18.0.21"), pair("fw-b", "198.18.0.22")]
    );
    fails(
        &["services", "rm", "--etcd", &e, "1"],
        1,
        "no task with id 1 of framework \"marathon\"",
    );
    ok(&[
        "services",
        "rm",
        "--etcd",
        &e,
        "--framework-id",
        "fw-a",
        "1",
    ]);
    assert_eq!(jobs(), [pair("fw-b", "198.18.0.22")]);
}

#[test]
fn catalog_put_loads_a_document_and_env_selects_etcd() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("demo.toml");
    std::fs::write(&file, lodestar_control::demo::DEMO_CATALOG).unwrap();
    let out = ok(&[
        "catalog",
        "put",
        "--etcd",
        &etcd.endpoint(),
        file.to_str().unwrap(),
    ]);
    assert!(out.contains("wrote 12 records"), "{out}");
    // LODESTAR_ETCD stands in for --etcd.
    let o = lodestar_command()
        .arg("snapshot")
        .env("LODESTAR_ETCD", etcd.endpoint())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let from_etcd: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let demo: serde_json::Value = serde_json::from_str(&ok(&["snapshot"])).unwrap();
    assert_eq!(demo["source"]["kind"], "demo");
    for part in [
        "tasks",
        "agents",
        "frameworks",
        "masters",
        "leader",
        "vip_addresses",
        "vips",
    ] {
        assert_eq!(
            from_etcd[part], demo[part],
            "{part} differs between etcd and the demo"
        );
    }
}

#[test]
fn errors_are_one_clear_line() {
    let dead = format!("127.0.0.1:{}", support::etcd::free_port());
    fails(
        &["services", "ls", "--etcd", &dead],
        1,
        "cannot reach etcd at http://",
    );
    fails(&["snapshot", "--etcd", &dead], 1, "Connection refused");
    fails(
        &["vips", "ls", "--etcd", "http://[bad"],
        1,
        "invalid etcd endpoint",
    );
    fails(
        &["snapshot", "--catalog", "/nonexistent/catalog.toml"],
        1,
        "cannot read catalog file /nonexistent/catalog.toml",
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "schema = 1\n[[tasks]]\nid = \"x\"\n").unwrap();
    fails(
        &["vips", "ls", "--catalog", bad.to_str().unwrap()],
        1,
        "line 2, column 1: missing field `name`",
    );
    fails(
        &["catalog", "put", "--etcd", &dead, bad.to_str().unwrap()],
        1,
        "bad.toml",
    );

    // Invalid addresses and specs are usage errors (exit 2), named by flag.
    let put = [
        "services", "put", "--etcd", &dead, "--id", "a", "--name", "a", "--agent", "x",
    ];
    fn with<'a>(put: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        [put, extra].concat()
    }
    fails(
        &with(&put, &["--ip", "198.18.0.300"]),
        2,
        "invalid value '198.18.0.300' for '--ip <IP>'",
    );
    fails(&with(&put, &["--port", "http:99999"]), 2, "--port");
    fails(
        &with(&put, &["--port", "80", "--vip", "80=web"]),
        2,
        "--vip",
    );
    fails(
        &with(&put, &["--port", "80", "--vip", "81=/web:80"]),
        1,
        "no --port with number 81",
    );
    fails(&["services", "ls"], 2, "--etcd");
}
