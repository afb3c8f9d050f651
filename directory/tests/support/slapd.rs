//! A private OpenLDAP `slapd` for tests and the lookup benchmark: its own configuration,
//! database (seeded from tests/data/seed.ldif with the schema in tests/data/mail.schema) and
//! loopback port; killed on drop.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use halyard_directory::ldap::LdapConfig;
use halyard_directory::schema::SchemaMap;

const SLAPD: &str = "/usr/sbin/slapd";

const SLAPADD: &str = "/usr/sbin/slapadd";

/// A private slapd: its own config, database and port; killed on drop.
pub struct Slapd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub child: Option<Child>,
}

/// A file of directory/tests/data. The crate being tested is found from the environment
/// `cargo test` sets when it runs the test (a binary reused from a clone elsewhere must not
/// read that clone); the workspace root is the first ancestor holding Cargo.lock.
fn data(name: &str) -> PathBuf {
    let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let root = crate_dir
        .ancestors()
        .find(|d| d.join("Cargo.lock").exists())
        .unwrap_or(&crate_dir)
        .to_path_buf();
    root.join("directory/tests/data").join(name)
}

impl Slapd {
    pub fn start() -> Slapd {
        assert!(
            Path::new(SLAPD).exists(),
            "slapd is not installed (scripts/test.sh installs it)"
        );
        let dir = tempfile::Builder::new()
            .prefix("halyard-slapd-")
            .tempdir()
            .unwrap();
        let db = dir.path().join("db");
        std::fs::create_dir_all(&db).unwrap();
        let conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             include {schema}\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             pidfile {dir}/slapd.pid\n\
             access to attrs=userPassword by anonymous auth by * none\n\
             access to * by * read\n\
             database mdb\n\
             maxsize 104857600\n\
             suffix \"o=example\"\n\
             rootdn \"cn=admin,o=example\"\n\
             rootpw admin-secret\n\
             directory {db}\n",
            schema = data("mail.schema").display(),
            dir = dir.path().display(),
            db = db.display(),
        );
        std::fs::write(dir.path().join("slapd.conf"), conf).unwrap();
        let out = Command::new(SLAPADD)
            .args([
                "-f",
                dir.path().join("slapd.conf").to_str().unwrap(),
                "-l",
                data("seed.ldif").to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "slapadd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut s = Slapd {
            dir,
            port,
            child: None,
        };
        s.run();
        s
    }

    /// (Re)starts slapd in the foreground on the same port and waits until it accepts.
    pub fn run(&mut self) {
        let child = Command::new(SLAPD)
            .args([
                "-d",
                "0",
                "-f",
                self.dir.path().join("slapd.conf").to_str().unwrap(),
                "-h",
                &format!("ldap://127.0.0.1:{}/", self.port),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // Our slapd must be the one listening: if it exited (port taken), fail loudly
            // instead of talking to somebody else's server.
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "slapd exited at start ({status}); port {} in use?",
                    self.port
                );
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "slapd did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn config(&self) -> LdapConfig {
        LdapConfig {
            urls: vec![format!("ldap://127.0.0.1:{}", self.port)],
            starttls: false,
            ca_file: None,
            bind_dn: None,
            bind_password: None,
            domain_root: "ou=domains,o=example".into(),
            user_base: Some("o=example".into()),
            timeout_ms: 2000,
            max_connections: 4,
            cache_size: 1000,
            cache_ttl_secs: 300,
            negative_ttl_secs: 60,
            schema: SchemaMap::default(),
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}
