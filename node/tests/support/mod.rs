//! Shared by the integration tests that drive `halyard serve` processes with real clients:
//! starting a cluster with the example.org domain and its users, running `halyard ctl`, and
//! running the client scripts in tests/clients (Python, and Node.js for the npm libraries).
#![allow(dead_code)]

use std::process::Command;
use std::time::Duration;

use halyard_node::local_cluster::{ClusterSpec, LocalCluster};

pub const WAIT: Duration = Duration::from_secs(30);

/// `halyard ctl` on node 1; fails the test on error.
pub fn ctl(c: &LocalCluster, args: &[&str], stdin: &str) {
    let (ok, out, err) = c.ctl(1, args, stdin).expect("halyard ctl");
    assert!(ok, "ctl {args:?}: {out}{err}");
}

/// A client script of node/tests/clients.
///
/// The crate directory comes from the environment `cargo test` sets when it runs the test: a
/// binary reused from a build in another clone (same target directory) must not read that
/// clone's scripts, which may be gone.
pub fn script(name: &str) -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("tests/clients")
        .join(name)
}

/// Where `scripts/deps.sh --test` installs the npm client libraries (ImapFlow).
pub fn npm_modules() -> std::path::PathBuf {
    std::env::var_os("HALYARD_NPM_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/halyard-npm")
        })
        .join("node_modules")
}

/// Where `scripts/deps.sh --test` installs the PyPI client libraries (scramp).
pub fn python_modules() -> std::path::PathBuf {
    std::env::var_os("HALYARD_PY_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/halyard-py")
        })
}

/// The command that runs a client script: Python, or Node.js for `.cjs` scripts (with the
/// npm libraries on its module path).
pub fn client_command(name: &str) -> Command {
    let mut cmd = if name.ends_with(".cjs") {
        let mut c = Command::new("node");
        c.env("NODE_PATH", npm_modules());
        c
    } else {
        let mut c = Command::new("python3");
        c.env("PYTHONPATH", python_modules());
        c
    };
    cmd.arg(script(name));
    cmd
}

/// Runs a client script with these environment variables; fails the test with its output.
pub fn run_client(name: &str, env: &[(&str, String)]) {
    let mut cmd = client_command(name);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("client script");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{name} failed:\n{text}");
    eprintln!("{text}");
}

/// Runs a client script until it succeeds (right after a change of master a client may meet
/// a temporary failure and retries, as a mail client would); fails the test with the last
/// output once `wait` has passed.
pub async fn run_client_until_ok(name: &str, env: &[(&str, String)], wait: Duration) {
    let deadline = std::time::Instant::now() + wait;
    loop {
        let mut cmd = client_command(name);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("client script");
        if out.status.success() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Starts the cluster, waits for the meta and rg1 leaders, creates example.org and `users`
/// (address, login, password).
pub async fn cluster(
    name: &str,
    spec: &ClusterSpec,
    users: &[(&str, &str, &str)],
) -> (tempfile::TempDir, LocalCluster) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("halyard-{name}-"))
        .tempdir()
        .unwrap();
    let mut c = LocalCluster::new(
        std::path::Path::new(env!("CARGO_BIN_EXE_halyard")),
        dir.path(),
        spec,
    )
    .unwrap();
    c.start_all().unwrap();
    c.wait_leader("meta", None, WAIT).await.unwrap();
    c.wait_leader("rg1", None, WAIT).await.unwrap();
    ctl(&c, &["domain", "add", "example.org", "--quota", "100M"], "");
    for (address, login, password) in users {
        ctl(
            &c,
            &["user", "add", address, "--login", login],
            &format!("{password}\n"),
        );
    }
    (dir, c)
}
