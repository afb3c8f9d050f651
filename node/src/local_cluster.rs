//! A cluster of real `halyard serve` processes on 127.0.0.1, for the commit bench and the
//! cluster tests. Each node gets its own data directory, configuration file and port; the
//! cluster uses mutual TLS with a freshly generated CA unless asked for plaintext.
//! Every process is killed when the [`LocalCluster`] is dropped, even on panic.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::config::{
    ClusterConfig, DirectoryConfig, GroupConfig, NodeConfig, PeerConfig, RaftConfig, TlsConfig,
};
use crate::tls::TlsMaterial;
use halyard_api::Admin;

pub struct LocalCluster {
    pub binary: PathBuf,
    pub dir: PathBuf,
    pub configs: Vec<NodeConfig>,
    children: Vec<Option<Child>>,
    tls: Option<TlsMaterial>,
}

/// What kind of cluster to build.
#[derive(Clone)]
pub struct ClusterSpec {
    pub nodes: u64,
    pub base_port: u16,
    pub groups: Vec<String>,
    pub plaintext: bool,
    pub raft: RaftConfig,
    /// `[directory]` of every node (default: the embedded directory).
    pub directory: DirectoryConfig,
    /// `[access]` of node 1; other nodes get the same with every listener's port shifted by
    /// 10 per node id.
    pub access: halyard_access::AccessConfig,
    /// `[mta]` of node 1; other nodes get listener ports shifted like `access`.
    pub mta: halyard_mta::MtaConfig,
}

/// Node `id`'s copy of the MTA configuration: each listener's port + 10 × (id − 1).
fn shifted_mta(m: &halyard_mta::MtaConfig, id: u64) -> halyard_mta::MtaConfig {
    let mut out = m.clone();
    out.smtp_listen = shift_port(&m.smtp_listen, id);
    out.submission_listen = shift_port(&m.submission_listen, id);
    out
}

fn shift_port(l: &Option<String>, id: u64) -> Option<String> {
    l.as_ref()
        .map(|addr| match addr.parse::<std::net::SocketAddr>() {
            Ok(mut sa) => {
                sa.set_port(sa.port() + 10 * (id as u16 - 1));
                sa.to_string()
            }
            Err(_) => addr.clone(),
        })
}

/// Node `id`'s copy of the access configuration: each listener's port + 10 × (id − 1).
fn shifted_access(a: &halyard_access::AccessConfig, id: u64) -> halyard_access::AccessConfig {
    let shift = |l: &Option<String>| shift_port(l, id);
    let mut out = a.clone();
    out.imap_listen = shift(&a.imap_listen);
    out.imaps_listen = shift(&a.imaps_listen);
    out.pop3_listen = shift(&a.pop3_listen);
    out.pop3s_listen = shift(&a.pop3s_listen);
    out
}

impl LocalCluster {
    /// Writes configurations (and certificates) under `dir`; starts nothing.
    pub fn new(binary: &Path, dir: &Path, spec: &ClusterSpec) -> Result<LocalCluster> {
        std::fs::create_dir_all(dir)?;
        let ids: Vec<u64> = (1..=spec.nodes).collect();
        let certs = dir.join("certs");
        if !spec.plaintext {
            crate::tls::generate(&certs, &ids)?;
        }
        let peers: Vec<PeerConfig> = ids
            .iter()
            .map(|i| PeerConfig {
                id: *i,
                addr: format!("127.0.0.1:{}", spec.base_port as u64 + i - 1),
                imap: shifted_access(&spec.access, *i).imap_listen,
                pop3: shifted_access(&spec.access, *i).pop3_listen,
                witness: false,
            })
            .collect();
        let mut configs = Vec::new();
        for id in &ids {
            let tls = (!spec.plaintext).then(|| TlsConfig {
                ca: certs.join("ca.pem"),
                cert: certs.join(format!("node-{id}.pem")),
                key: certs.join(format!("node-{id}.key")),
            });
            let cfg = NodeConfig {
                node_id: *id,
                data_dir: dir.join(format!("node-{id}")),
                default_group: spec.groups.first().cloned(),
                cluster: ClusterConfig {
                    listen: peers[(*id - 1) as usize].addr.clone(),
                    advertise: None,
                    plaintext: spec.plaintext,
                    tls,
                    nodes: peers.clone(),
                },
                groups: spec
                    .groups
                    .iter()
                    .map(|g| GroupConfig {
                        name: g.clone(),
                        members: ids.clone(),
                        address: None,
                        preferred: None,
                        leaders: None,
                        failback: true,
                    })
                    .collect(),
                raft: spec.raft.clone(),
                directory: spec.directory.clone(),
                access: shifted_access(&spec.access, *id),
                mta: shifted_mta(&spec.mta, *id),
                fencing: Default::default(),
            };
            std::fs::write(dir.join(format!("node-{id}.toml")), toml::to_string(&cfg)?)?;
            configs.push(cfg);
        }
        let tls = if spec.plaintext {
            None
        } else {
            Some(TlsMaterial::load(
                &certs.join("ca.pem"),
                &certs.join("ctl.pem"),
                &certs.join("ctl.key"),
            )?)
        };
        Ok(LocalCluster {
            binary: binary.to_path_buf(),
            dir: dir.to_path_buf(),
            children: (0..spec.nodes).map(|_| None).collect(),
            configs,
            tls,
        })
    }

    pub fn config_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("node-{id}.toml"))
    }

    pub fn addr(&self, id: u64) -> String {
        self.configs[(id - 1) as usize].cluster.listen.clone()
    }

    /// Starts node `id` (1-based); its output goes to `<dir>/node-<id>.log`.
    pub fn start(&mut self, id: u64) -> Result<()> {
        let slot = (id - 1) as usize;
        if self.children[slot].is_some() {
            bail!("node {id} already running");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("node-{id}.log")))?;
        let child = Command::new(&self.binary)
            .arg("serve")
            .arg("--config")
            .arg(self.config_path(id))
            .env(
                "RUST_LOG",
                std::env::var("HALYARD_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", self.binary.display()))?;
        self.children[slot] = Some(child);
        Ok(())
    }

    pub fn start_all(&mut self) -> Result<()> {
        for id in 1..=self.configs.len() as u64 {
            self.start(id)?;
        }
        Ok(())
    }

    /// SIGKILL, no goodbye: what a crash or power loss looks like to the others.
    pub fn kill(&mut self, id: u64) -> Result<()> {
        if let Some(mut c) = self.children[(id - 1) as usize].take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// Runs `halyard ctl --config <node's config> args...` with `stdin` (passwords) and
    /// returns (success, stdout, stderr).
    pub fn ctl(&self, node: u64, args: &[&str], stdin: &str) -> Result<(bool, String, String)> {
        use std::io::Write;
        let mut child = Command::new(&self.binary)
            .arg("ctl")
            .arg("--config")
            .arg(self.config_path(node))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running halyard ctl")?;
        if let Some(mut i) = child.stdin.take() {
            i.write_all(stdin.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Process id of node `id`, if running.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.children[(id - 1) as usize].as_ref().map(|c| c.id())
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.children[(id - 1) as usize].is_some()
    }

    /// Admin client of node `id`, retrying the connection for up to `wait`.
    pub async fn admin(&self, id: u64, wait: Duration) -> Result<Admin> {
        let deadline = Instant::now() + wait;
        loop {
            match Admin::connect(&self.addr(id), self.tls.clone()).await {
                Ok(a) => match a.status().await {
                    Ok(_) => return Ok(a),
                    Err(e) if Instant::now() > deadline => return Err(e),
                    Err(_) => {}
                },
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the running nodes agree on a leader of `group` (other than `not`); returns
    /// its id.
    pub async fn wait_leader(&self, group: &str, not: Option<u64>, wait: Duration) -> Result<u64> {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            let mut seen = Vec::new();
            for id in 1..=self.configs.len() as u64 {
                if !self.is_running(id) {
                    continue;
                }
                if let Ok(a) = self.admin(id, Duration::from_millis(200)).await
                    && let Ok(st) = a.status().await
                    && let Some(g) = st.groups.iter().find(|g| g.name == group)
                {
                    seen.push(g.leader);
                }
            }
            if let Some(Some(l)) = seen.first()
                && seen.iter().all(|s| *s == Some(*l))
                && Some(*l) != not
                && self.is_running(*l)
            {
                return Ok(*l);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(anyhow!(
            "no agreed leader for group {group} within {wait:?}"
        ))
    }

    /// Waits until node `id` has applied at least `index` in `group`.
    pub async fn wait_applied(
        &self,
        id: u64,
        group: &str,
        index: u64,
        wait: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + wait;
        loop {
            if let Ok(a) = self.admin(id, Duration::from_millis(500)).await
                && let Ok(st) = a.status().await
                && st
                    .groups
                    .iter()
                    .any(|g| g.name == group && g.applied_index.unwrap_or(0) >= index)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("node {id} did not apply index {index} of {group} within {wait:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
