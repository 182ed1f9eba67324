//! A real etcd (Debian's etcd-server) on free loopback ports with a temporary data dir, in
//! plaintext or with client-certificate TLS and the roles of docs/security.md. Killed on drop,
//! and by the kernel if the test process dies first (PR_SET_PDEATHSIG).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct EtcdServer {
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    /// Plaintext `/health` and `/metrics` (with TLS, the client port speaks only TLS).
    metrics_port: u16,
    child: Option<Child>,
    starts: u32,
    tls: Option<Pki>,
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind a loopback port")
}

fn etcd_binary() -> PathBuf {
    let path = std::env::var_os("LODESTAR_TEST_ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
    assert!(
        path.exists(),
        "{} not found: these tests need a real etcd; install it with `apt-get install etcd-server` \
         (scripts/test does this) or point LODESTAR_TEST_ETCD at one",
        path.display()
    );
    path
}

impl EtcdServer {
    /// Starts a single-member etcd and waits until it answers.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Starts etcd with TLS on its client port, requiring client certificates signed by the
    /// test CA (`--client-cert-auth`); authentication is off until `enable_auth`.
    pub fn start_tls() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = Pki::create(&dir.path().join("pki"));
        Self::start_in(dir, Some(pki))
    }

    /// TLS, and authentication with the roles docs/security.md sets up: `lodestar-agent`
    /// reads the catalog, `lodestar-sync` writes it, `root` administers.
    pub fn start_secured() -> Self {
        let server = Self::start_tls();
        server.enable_auth();
        server
    }

    fn start_with(tls: Option<Pki>) -> Self {
        Self::start_in(tempfile::tempdir().expect("temp dir"), tls)
    }

    fn start_in(dir: tempfile::TempDir, tls: Option<Pki>) -> Self {
        let mut server = EtcdServer {
            dir,
            client_port: 0,
            peer_port: 0,
            metrics_port: 0,
            child: None,
            starts: 0,
            tls,
        };
        // Ports picked this way can race with another test; retry with new ones.
        for attempt in 0.. {
            server.client_port = free_port();
            server.peer_port = free_port();
            server.metrics_port = free_port();
            if server.try_spawn() {
                return server;
            }
            assert!(attempt < 3, "etcd did not start:\n{}", server.log_tail());
            let _ = std::fs::remove_dir_all(server.data_dir());
        }
        unreachable!()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn try_spawn(&mut self) -> bool {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let metrics = format!("http://127.0.0.1:{}", self.metrics_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("etcd log file");
        let mut cmd = Command::new(etcd_binary());
        cmd.arg("--name=t")
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=t={peer}"))
            .arg(format!("--listen-metrics-urls={metrics}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        super::die_with_test(&mut cmd);
        if let Some(pki) = &self.tls {
            cmd.arg(format!("--cert-file={}", pki.server_cert().display()))
                .arg(format!("--key-file={}", pki.server_key().display()))
                .arg(format!("--trusted-ca-file={}", pki.ca().display()))
                .arg("--client-cert-auth");
        }
        let child = cmd.spawn().expect("spawn etcd");
        self.child = Some(child);
        self.starts += 1;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return false;
            }
            if healthy(self.metrics_port) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop();
        false
    }

    /// The client URL, e.g. `http://127.0.0.1:41234` (`https://` with TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// A catalog store on this (plaintext, unauthenticated) etcd.
    pub async fn store(&self) -> lodestar_control::EtcdStore {
        lodestar_control::EtcdStore::connect(lodestar_control::EtcdConfig::from_list(
            &self.endpoint(),
        ))
        .await
        .expect("connect to etcd")
    }

    /// The certificates of a TLS etcd.
    pub fn pki(&self) -> &Pki {
        self.tls.as_ref().expect("etcd was started with TLS")
    }

    /// Runs `etcdctl` against this etcd as root (its client certificate names the user).
    pub fn etcdctl(&self, args: &[&str]) -> std::process::Output {
        let pki = self.pki();
        let (cert, key) = pki.client("root");
        super::run_ok(
            Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={}", self.endpoint()))
                .arg(format!("--cacert={}", pki.ca().display()))
                .arg(format!("--cert={}", cert.display()))
                .arg(format!("--key={}", key.display()))
                .args(args),
            "etcdctl (Debian package etcd-client)",
        )
    }

    /// The roles and users of docs/security.md ("Roles"), the same etcdctl commands, then
    /// `auth enable`. Each user's password is in `password_file(user)`.
    fn enable_auth(&self) {
        for (role, permissions) in ROLES {
            self.etcdctl(&["role", "add", role]);
            for (kind, prefix) in *permissions {
                self.etcdctl(&[
                    "role",
                    "grant-permission",
                    role,
                    "--prefix=true",
                    kind,
                    prefix,
                ]);
            }
        }
        for user in ["root", AGENT_USER, SYNC_USER] {
            let password = format!("{user}-pw-{}", self.client_port);
            let file = self.password_file(user);
            std::fs::write(&file, format!("{password}\n")).expect("password file");
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                .expect("chmod password file");
            self.etcdctl(&[
                "user",
                "add",
                user,
                &format!("--new-user-password={password}"),
            ]);
            let role = if user == "root" { "root" } else { user };
            self.etcdctl(&["user", "grant-role", user, role]);
        }
        self.etcdctl(&["auth", "enable"]);
    }

    /// The file holding `user`'s password (mode 0600).
    pub fn password_file(&self, user: &str) -> PathBuf {
        self.dir.path().join(format!("{user}.password"))
    }

    /// Kills etcd (SIGKILL: no graceful goodbye to watchers, as in a crash).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes etcd (SIGSTOP): its sockets stay open but nothing answers, as in a partition.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Thaws a paused etcd (SIGCONT).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: libc::c_int) {
        let child = self.child.as_ref().expect("etcd is running");
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", child.id());
    }

    /// Starts etcd again with the same data and client port.
    pub fn restart(&mut self) {
        self.stop();
        assert!(
            self.try_spawn(),
            "etcd did not restart:\n{}",
            self.log_tail()
        );
    }

    /// Starts etcd again with the same data on a different client port, so that the test
    /// can write while watchers configured with `endpoint()` still see an outage.
    pub fn restart_hidden(&mut self) -> String {
        self.stop();
        let visible = self.client_port;
        self.client_port = free_port();
        assert!(
            self.try_spawn(),
            "etcd did not restart:\n{}",
            self.log_tail()
        );
        let hidden = self.endpoint();
        self.client_port = visible;
        hidden
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn healthy(port: u16) -> bool {
    let Ok(mut s) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

/// The agents' user: reads the catalog.
pub const AGENT_USER: &str = "lodestar-agent";
/// mesos-sync's user: writes the catalog, the election key and the VIP allocations.
pub const SYNC_USER: &str = "lodestar-sync";

/// docs/security.md's roles: (role, [(permission, key prefix)]). `root` is etcd's own.
pub const ROLES: &[(&str, &[(&str, &str)])] = &[
    ("root", &[]),
    (AGENT_USER, &[("read", "/lodestar/v1/")]),
    (
        SYNC_USER,
        &[
            ("readwrite", "/lodestar/v1/"),
            ("readwrite", "/lodestar/sync/"),
            ("readwrite", "/lodestar/alloc/"),
        ],
    ),
];

/// A test CA, etcd's server certificate for 127.0.0.1 (SAN IP:127.0.0.1), and client
/// certificates whose CN is an etcd user, all made by `openssl` (EC P-256, valid one day).
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// Makes the CA and the server certificate in `dir`.
    pub fn create(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).expect("pki dir");
        let pki = Pki {
            dir: dir.to_path_buf(),
        };
        pki.make_ca("ca");
        pki.sign(
            "server",
            "127.0.0.1",
            &["subjectAltName=IP:127.0.0.1", "extendedKeyUsage=serverAuth"],
        );
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn make_ca(&self, name: &str) {
        self.req(&format!("lodestar test {name}"), name, &[], false);
    }

    /// A certificate for `cn` signed by the test CA.
    fn sign(&self, name: &str, cn: &str, extensions: &[&str]) {
        self.req(cn, name, extensions, true);
    }

    /// `openssl req -x509` for `cn` into `name.pem` and `name-key.pem`: self-signed (a CA), or
    /// a leaf signed by the test CA with `extensions`.
    fn req(&self, cn: &str, name: &str, extensions: &[&str], signed: bool) {
        let mut args: Vec<String> = ["req", "-x509", "-newkey", "ec", "-pkeyopt"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(
            [
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "1",
                "-subj",
            ]
            .map(String::from),
        );
        args.push(format!("/CN={cn}"));
        let leaf = ["basicConstraints=critical,CA:FALSE"];
        for e in leaf.iter().chain(extensions).filter(|_| signed) {
            args.push("-addext".into());
            args.push(e.to_string());
        }
        let mut files = vec![
            ("-keyout", format!("{name}-key.pem")),
            ("-out", format!("{name}.pem")),
        ];
        if signed {
            files.push(("-CA", "ca.pem".into()));
            files.push(("-CAkey", "ca-key.pem".into()));
        }
        for (flag, file) in files {
            args.push(flag.into());
            args.push(self.path(&file).display().to_string());
        }
        openssl(&args.iter().map(String::as_str).collect::<Vec<_>>());
    }

    /// The CA that signed etcd's and the clients' certificates.
    pub fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }

    /// A CA that signed nothing here (a client trusting it must refuse etcd).
    pub fn other_ca(&self) -> PathBuf {
        let path = self.path("other-ca.pem");
        if !path.exists() {
            self.make_ca("other-ca");
        }
        path
    }

    /// The server certificate for 127.0.0.1 and its key, signed by `ca()`.
    pub fn server(&self) -> (PathBuf, PathBuf) {
        (self.server_cert(), self.server_key())
    }

    fn server_cert(&self) -> PathBuf {
        self.path("server.pem")
    }

    fn server_key(&self) -> PathBuf {
        self.path("server-key.pem")
    }

    /// A client certificate and key (mode 0600) for `user`, made on first use.
    pub fn client(&self, user: &str) -> (PathBuf, PathBuf) {
        let name = format!("client-{user}");
        let (cert, key) = (
            self.path(&format!("{name}.pem")),
            self.path(&format!("{name}-key.pem")),
        );
        if !cert.exists() {
            self.sign(&name, user, &["extendedKeyUsage=clientAuth"]);
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
                .expect("chmod key");
        }
        (cert, key)
    }
}

fn openssl(args: &[&str]) {
    super::run_ok(
        Command::new("openssl").args(args),
        "openssl (Debian package openssl)",
    );
}
