//! The `lodestar` binary run to completion as a test runs a CLI, and child processes whose
//! standard error a thread reads line by line.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// The `LODESTAR_ETCD*` variables, which a test never takes from the environment it runs in.
const ETCD_ENV: [&str; 6] = [
    "LODESTAR_ETCD",
    "LODESTAR_ETCD_CA",
    "LODESTAR_ETCD_CERT",
    "LODESTAR_ETCD_KEY",
    "LODESTAR_ETCD_USER",
    "LODESTAR_ETCD_PASSWORD_FILE",
];

/// A `lodestar` command with nothing on its standard input and nothing from the environment's
/// `LODESTAR_ETCD*`.
pub fn lodestar_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lodestar"));
    for var in ETCD_ENV {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// Runs `lodestar ARGS` to completion.
pub fn lodestar<S: AsRef<OsStr>>(args: &[S]) -> Output {
    lodestar_command()
        .args(args)
        .output()
        .expect("run lodestar")
}

/// Runs `lodestar ARGS`, which must succeed; its standard output.
pub fn lodestar_ok<S: AsRef<OsStr> + std::fmt::Debug>(args: &[S]) -> String {
    let o = lodestar(args);
    assert!(
        o.status.success(),
        "lodestar {args:?} failed: {}",
        stderr(&o)
    );
    stdout(&o)
}

/// `lodestar ARGS` off the async runtime, for tests whose fakes (a Mesos master) run on it.
pub async fn lodestar_blocking(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || lodestar(&args))
        .await
        .unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Starts `cmd` (standard output discarded, killed if the test dies first) and hands each line
/// of its standard error to `each_line` on a thread of its own. `what` names it in a panic.
pub fn spawn_reading_stderr(
    cmd: &mut Command,
    what: &str,
    mut each_line: impl FnMut(String) + Send + 'static,
) -> Child {
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    super::die_with_test(cmd);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            each_line(line);
        }
    });
    child
}

/// A file written into a temporary directory of its own, removed with it on drop.
pub struct TempFile {
    dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl TempFile {
    /// `name` holding `contents`.
    pub fn new(name: &str, contents: impl AsRef<[u8]>) -> TempFile {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(name);
        std::fs::write(&path, contents).expect("write temp file");
        TempFile { dir, path }
    }

    /// Replaces the contents.
    pub fn write(&self, contents: impl AsRef<[u8]>) {
        std::fs::write(&self.path, contents).expect("write temp file");
    }

    /// The path as a command-line argument.
    pub fn arg(&self) -> &str {
        self.path.to_str().expect("a UTF-8 temp path")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
