//! etcd with client-certificate TLS and authentication, as docs/security.md sets it up: the
//! real agent reads the catalog with its read-only role and etcd refuses its writes;
//! `mesos-sync` writes the catalog, the election key and VIP allocations with its role; and a
//! plaintext client, a wrong CA, a missing client certificate, a wrong password or a TLS client
//! of a plaintext etcd each get one line saying why. Certificates are made by `openssl` in a
//! temporary directory; etcd, the agent and mesos-sync are killed when the test ends.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use hickory_proto::rr::RecordType;
use lodestar_control::mesos::election::LEADER_KEY;
use lodestar_control::model::TaskKey;
use lodestar_control::{EtcdAuth, EtcdConfig, EtcdStore, EtcdTls};
use support::agent::Agent;
use support::command::{lodestar_blocking, stderr};
use support::dns::{answers, udp};
use support::etcd::{AGENT_USER, SYNC_USER};
use support::mesos::{sync_once_args, vip_task, FakeMaster, SyncProcess, AZURE};
use support::{eventually, lodestar, EtcdServer, WEB_CATALOG};

const PATIENCE: Duration = Duration::from_secs(20);

/// The `--etcd-*` flags of a user: TLS with its client certificate, and its password file.
fn credentials(etcd: &EtcdServer, user: &str) -> Vec<String> {
    let (cert, key) = etcd.pki().client(user);
    vec![
        "--etcd".into(),
        etcd.endpoint(),
        "--etcd-ca".into(),
        path(&etcd.pki().ca()),
        "--etcd-cert".into(),
        path(&cert),
        "--etcd-key".into(),
        path(&key),
        "--etcd-user".into(),
        user.into(),
        "--etcd-password-file".into(),
        path(&etcd.password_file(user)),
    ]
}

/// The library's view of the same credentials.
fn config(etcd: &EtcdServer, user: &str) -> EtcdConfig {
    let (cert, key) = etcd.pki().client(user);
    EtcdConfig::from_list(&etcd.endpoint())
        .with_tls(Some(EtcdTls {
            ca: etcd.pki().ca(),
            cert: Some(cert),
            key: Some(key),
        }))
        .with_auth(Some(EtcdAuth {
            user: user.into(),
            password_file: etcd.password_file(user),
        }))
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// `lodestar catalog put` of `WEB_CATALOG` with these flags.
fn put_catalog(dir: &Path, flags: &[String]) -> Output {
    let file = dir.join("catalog.toml");
    std::fs::write(&file, WEB_CATALOG).unwrap();
    let mut args: Vec<String> = vec!["catalog".into(), "put".into(), path(&file)];
    args.extend(flags.iter().cloned());
    lodestar(&args)
}

/// The one line a refused command prints, and that it printed only that.
fn one_error_line(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(1), "{}", stderr(o));
    let text = stderr(o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one line, not: {text}");
    lines[0].to_string()
}

#[test]
fn an_agent_reads_the_catalog_with_its_role_and_etcd_refuses_its_writes() {
    let etcd = EtcdServer::start_secured();
    let dir = tempfile::tempdir().unwrap();
    let o = put_catalog(dir.path(), &credentials(&etcd, SYNC_USER));
    assert!(o.status.success(), "{}", stderr(&o));

    // The agent, configured by its file: TLS with its certificate, its user and password.
    let (cert, key) = etcd.pki().client(AGENT_USER);
    let agent_toml = dir.path().join("agent.toml");
    std::fs::write(
        &agent_toml,
        format!(
            "[catalog]\netcd = [{:?}]\n\n[catalog.etcd_tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n\n\
             [catalog.etcd_auth]\nuser = {AGENT_USER:?}\npassword_file = {:?}\n",
            etcd.endpoint(),
            path(&etcd.pki().ca()),
            path(&cert),
            path(&key),
            path(&etcd.password_file(AGENT_USER)),
        ),
    )
    .unwrap();
    let agent = Agent::start(&["--config", agent_toml.to_str().unwrap()]);
    assert_eq!(
        answers(&udp(agent.dns, "web.marathon.mesos.", RecordType::A, None)),
        ["127.0.3.10"]
    );

    // The same credentials cannot change the catalog...
    let agent_flags = credentials(&etcd, AGENT_USER);
    let o = put_catalog(dir.path(), &agent_flags);
    assert_eq!(
        one_error_line(&o),
        "lodestar: error: etcd put failed: permission denied (PermissionDenied)"
    );
    let mut rm: Vec<String> = ["services", "rm", "web.1"].map(String::from).to_vec();
    rm.extend(agent_flags.iter().cloned());
    assert_eq!(
        one_error_line(&lodestar(&rm)),
        "lodestar: error: etcd delete failed: permission denied (PermissionDenied)"
    );
    // ...nor read what only mesos-sync may (the election key).
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = EtcdStore::connect(config(&etcd, AGENT_USER)).await.unwrap();
        let err = store.client().get(LEADER_KEY, None).await.unwrap_err();
        assert!(err.to_string().contains("permission denied"), "{err}");
        let loaded = store.load(None).await.unwrap();
        let snapshot = loaded.state.snapshot(loaded.revision, store.source());
        assert_eq!(snapshot.tasks.len(), 1);
    });

    // A client certificate alone authenticates as the user its CN names (no password).
    let (cert, key) = etcd.pki().client(AGENT_USER);
    let o = lodestar(&[
        "services",
        "ls",
        "--etcd",
        &etcd.endpoint(),
        "--etcd-ca",
        &path(&etcd.pki().ca()),
        "--etcd-cert",
        &path(&cert),
        "--etcd-key",
        &path(&key),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("web.1"));
}

#[tokio::test]
async fn mesos_sync_writes_the_catalog_its_election_and_vip_addresses_with_its_role() {
    let etcd = EtcdServer::start_secured();
    let master = FakeMaster::start().await;
    let api = vip_task("api.1", "api", AZURE, &["/api:80"]);
    master.set_tasks(vec![api]);
    let sync = SyncProcess::start(
        &master.url(),
        &credentials(&etcd, SYNC_USER),
        "tls-one",
        &["--vip-range-v4", "198.19.0.0/24"],
    );
    let store = EtcdStore::connect(config(&etcd, AGENT_USER)).await.unwrap();
    let snapshot = eventually(PATIENCE, "the task and its VIP address", || async {
        let loaded = store.load(None).await.ok()?;
        let s = loaded.state.snapshot(loaded.revision, store.source());
        (s.tasks.contains_key(&TaskKey::new("fw-marathon", "api.1"))
            && s.vip_addresses.contains_key("/api"))
        .then_some(s)
    })
    .await;
    assert!(snapshot.vip_addresses["/api"]
        .addresses
        .iter()
        .all(|a| a.to_string().starts_with("198.19.0.")));
    assert!(sync.leads());
    drop(sync);

    // The agent's credentials cannot do mesos-sync's job.
    let mut args = sync_once_args(&master.url());
    args.extend(credentials(&etcd, AGENT_USER));
    let o = lodestar_blocking(args).await;
    let line = one_error_line(&o);
    assert!(
        line.starts_with("lodestar: error: etcd: ") && line.contains("permission denied"),
        "{line}"
    );
}

#[test]
fn refused_connections_say_why_in_one_line() {
    let etcd = EtcdServer::start_secured();
    let endpoint = etcd.endpoint();
    let ls = |flags: &[String]| {
        let mut args: Vec<String> = vec!["services".into(), "ls".into()];
        args.extend(flags.iter().cloned());
        one_error_line(&lodestar(&args))
    };
    let agent = credentials(&etcd, AGENT_USER);
    let with = |replace: &[(&str, String)]| {
        let mut flags = agent.clone();
        for (flag, value) in replace {
            let i = flags.iter().position(|f| f == flag).expect(flag);
            flags[i + 1] = value.clone();
        }
        flags
    };
    let plain = endpoint.replace("https://", "http://");

    // A plaintext client.
    assert_eq!(
        ls(&["--etcd".into(), plain.clone()]),
        format!(
            "lodestar: error: etcd at {plain}: TLS: plaintext connection to a TLS endpoint: \
             etcd answers TLS here; use https:// and give its CA"
        )
    );
    // A CA that did not sign etcd's certificate.
    let other = path(&etcd.pki().other_ca());
    assert_eq!(
        ls(&with(&[("--etcd-ca", other.clone())])),
        format!(
            "lodestar: error: etcd at {endpoint}: TLS: certificate verify failed: etcd's \
             certificate is not signed by the CA in {other} (unknown CA)"
        )
    );
    // No client certificate for a member that requires one.
    assert_eq!(
        ls(&[
            "--etcd".into(),
            endpoint.clone(),
            "--etcd-ca".into(),
            path(&etcd.pki().ca())
        ]),
        format!(
            "lodestar: error: etcd at {endpoint}: TLS: etcd requires a client certificate, \
             and none is configured"
        )
    );
    // A wrong password.
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong-password");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        ls(&with(&[("--etcd-password-file", path(&wrong))])),
        format!(
            "lodestar: error: etcd at {endpoint}: authentication failed, invalid user ID or \
             password (user \"{AGENT_USER}\")"
        )
    );
    // A TLS client of a plaintext etcd.
    let plaintext = EtcdServer::start();
    let tls_to_plain = plaintext.endpoint().replace("http://", "https://");
    assert_eq!(
        ls(&with(&[("--etcd", tls_to_plain.clone())])),
        format!(
            "lodestar: error: etcd at {tls_to_plain}: TLS: TLS connection to a plaintext \
             endpoint: etcd does not speak TLS here; use http:// or enable TLS on etcd"
        )
    );
}

#[test]
fn unusable_credential_files_are_configuration_errors_named_by_their_setting() {
    let etcd = EtcdServer::start_tls();
    let dir = tempfile::tempdir().unwrap();
    let open_password = dir.path().join("password");
    std::fs::write(&open_password, "pw\n").unwrap();
    std::fs::set_permissions(&open_password, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (cert, _) = etcd.pki().client(AGENT_USER);
    // A certificate where the key should be (private, so that its content is what is wrong).
    let not_a_key = dir.path().join("not-a-key.pem");
    std::fs::copy(&cert, &not_a_key).unwrap();
    std::fs::set_permissions(&not_a_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let missing: PathBuf = dir.path().join("no-such-ca.pem");
    let o = lodestar(&[
        "services",
        "ls",
        "--etcd",
        &etcd.endpoint().replace("https://", "http://"),
        "--etcd-ca",
        &path(&missing),
        "--etcd-cert",
        &path(&cert),
        "--etcd-key",
        &path(&not_a_key),
        "--etcd-user",
        AGENT_USER,
        "--etcd-password-file",
        &path(&open_password),
    ]);
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    let plain = etcd.endpoint().replace("https://", "http://");
    assert_eq!(
        stderr(&o).lines().collect::<Vec<_>>(),
        [
            format!("lodestar: config error: --etcd: {plain} is plaintext but TLS is configured: write https://"),
            format!("lodestar: config error: --etcd-ca: cannot read {}: No such file or directory (os error 2)", path(&missing)),
            format!("lodestar: config error: --etcd-key: {} holds no PEM private key (no items found)", path(&not_a_key)),
            format!(
                "lodestar: config error: --etcd-password-file: {} can be read by every user on this machine (mode 644): chmod o-rwx it",
                path(&open_password)
            ),
        ]
    );

    // The agent's file names its own settings.
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[catalog]\netcd = [{:?}]\n\n[catalog.etcd_tls]\nca = {:?}\ncert = {:?}\n",
            etcd.endpoint(),
            path(&etcd.pki().ca()),
            path(&cert),
        ),
    )
    .unwrap();
    let o = lodestar(&["agent", "--config", config.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    assert_eq!(
        stderr(&o).trim_end(),
        "lodestar: config error: catalog.etcd_tls.key: needs the certificate's key"
    );
}
