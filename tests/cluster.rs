//! A private PostgreSQL cluster for one test: `initdb` into a temporary directory, started
//! with `pg_ctl` on a free port of 127.0.0.1, with the test's own postgresql.conf settings and
//! pg_hba.conf lines, and stopped when the [`Cluster`] is dropped (a failing test too). For
//! what the shared server cannot show: TLS, password authentication, a server restart.
//!
//! The administrator connects over the cluster's Unix socket (trusted, in the directory), so
//! the TCP lines of pg_hba.conf are all the test's. As root (initdb refuses root) the server
//! runs as the `postgres` user through `runuser`. Without the PostgreSQL server binaries, or
//! openssl for [`Tls::generate`], the test is skipped loudly, and fails where
//! PRESCORE_REQUIRE_PG=1 or CI is set.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::{pg_required, text};

/// How to set up a cluster.
#[derive(Default)]
pub struct Setup<'a> {
    /// Extra postgresql.conf lines (`ssl = on`, ...).
    pub conf: Vec<String>,
    /// pg_hba.conf lines for TCP connections (the Unix socket is always trusted).
    pub hba: Vec<String>,
    /// Serve TLS with this server certificate and key (sets `ssl = on`).
    pub tls: Option<&'a Tls>,
}

/// A running private cluster; dropping it stops the server and removes its files.
pub struct Cluster {
    pub port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
    /// The OS user the server runs as, when the tests run as root.
    run_as: Option<&'static str>,
    running: bool,
}

fn skip_or_fail(test: &str, why: &str) -> Option<Cluster> {
    if pg_required() {
        panic!("a private PostgreSQL cluster is required (CI) for `{test}` but {why}");
    }
    eprintln!("\n!!!!! SKIPPING `{test}`: it needs a private PostgreSQL cluster and {why}\n");
    None
}

/// The directory of initdb and pg_ctl: $PRESCORE_PG_BIN, `pg_config --bindir`, or the newest
/// /usr/lib/postgresql/N/bin.
fn pg_bin() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("PRESCORE_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let has_initdb = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Ok(o) = Command::new("pg_config").arg("--bindir").output() {
        let d = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        if o.status.success() && has_initdb(&d) {
            return Some(d);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has_initdb(d))
        .collect();
    versions.sort();
    versions.pop().map(|(_, d)| d)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A TCP port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    /// Creates and starts a cluster for `test`; None when it cannot and that is allowed.
    pub fn start(test: &str, setup: Setup<'_>) -> Option<Cluster> {
        let Some(bin) = pg_bin() else {
            return skip_or_fail(
                test,
                "initdb and pg_ctl were not found (set PRESCORE_PG_BIN)",
            );
        };
        let run_as = if is_root() {
            let has_user = Command::new("id")
                .args(["-u", "postgres"])
                .output()
                .is_ok_and(|o| o.status.success());
            if !has_user {
                return skip_or_fail(
                    test,
                    "the tests run as root, initdb refuses root, and there is no `postgres` user to run it as",
                );
            }
            Some("postgres")
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("prescore-pg")
            .tempdir()
            .unwrap();
        let mut c = Cluster {
            port: 0,
            bin,
            dir,
            run_as,
            running: false,
        };
        c.chown(c.dir.path());
        let data = c.data().display().to_string();
        let o = c.run(
            "initdb",
            &["-D", &data, "-U", "postgres", "-A", "trust", "-N"],
        );
        assert!(o.status.success(), "initdb failed: {}", text(&o));

        let mut conf = vec![
            "listen_addresses = '127.0.0.1'".to_string(),
            format!("unix_socket_directories = '{}'", c.dir.path().display()),
            "password_encryption = 'scram-sha-256'".into(),
            "fsync = off".into(),
            "max_connections = 40".into(),
            "shared_buffers = '16MB'".into(),
        ];
        if let Some(tls) = setup.tls {
            let copy = |from: &Path, name: &str| {
                let to = c.data().join(name);
                std::fs::copy(from, &to).unwrap();
                to
            };
            let cert = copy(&tls.server_crt, "server.crt");
            let key = copy(&tls.server_key, "server.key");
            set_mode(&key, 0o600);
            c.chown(&cert);
            c.chown(&key);
            conf.extend([
                "ssl = on".into(),
                "ssl_cert_file = 'server.crt'".into(),
                "ssl_key_file = 'server.key'".into(),
            ]);
        }
        conf.extend(setup.conf);
        append(&c.data().join("postgresql.conf"), &conf);
        let mut hba = vec!["local all all trust".to_string()];
        hba.extend(setup.hba);
        std::fs::write(c.data().join("pg_hba.conf"), hba.join("\n") + "\n").unwrap();

        // Another process may take the port between the probe and the start: try a few.
        for _ in 0..5 {
            c.port = free_port();
            if c.pg_ctl_start().status.success() {
                c.running = true;
                return Some(c);
            }
        }
        let log = std::fs::read_to_string(c.dir.path().join("server.log")).unwrap_or_default();
        panic!("the private cluster did not start; its log:\n{log}");
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The directory of the cluster's files (the test may put its own files there).
    #[allow(dead_code)] // not every user of a cluster needs it
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs one of the server's programs, as the `postgres` user when the tests run as root.
    fn run(&self, program: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(program);
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.args(args).current_dir(self.dir.path());
        cmd.output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()))
    }

    fn chown(&self, path: &Path) {
        if let Some(user) = self.run_as {
            let o = Command::new("chown")
                .args(["-R", user])
                .arg(path)
                .output()
                .unwrap();
            assert!(o.status.success(), "chown: {}", text(&o));
        }
    }

    fn pg_ctl_start(&self) -> Output {
        let data = self.data().display().to_string();
        let log = self.dir.path().join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &data,
                "-l",
                &log,
                "-w",
                "-t",
                "60",
                "-o",
                &format!("-p {}", self.port),
                "start",
            ],
        )
    }

    /// Stops the server (`fast`: sessions are disconnected; `immediate`: as if it crashed).
    pub fn stop(&mut self, mode: &str) {
        if !self.running {
            return;
        }
        let data = self.data().display().to_string();
        let o = self.run("pg_ctl", &["-D", &data, "-m", mode, "-w", "stop"]);
        assert!(o.status.success(), "pg_ctl stop: {}", text(&o));
        self.running = false;
    }

    /// Starts a stopped server again, on the same port.
    pub fn restart(&mut self) {
        self.stop("fast");
        let o = self.pg_ctl_start();
        assert!(o.status.success(), "pg_ctl start: {}", text(&o));
        self.running = true;
    }

    /// Runs SQL as the superuser over the Unix socket, in `db`; panics when it fails.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let o = Command::new("psql")
            .args(["-h"])
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db])
            .args(["-v", "ON_ERROR_STOP=1", "-Atqc", sql])
            .output()
            .expect("run psql");
        assert!(o.status.success(), "{sql}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// A login role with a password (stored as SCRAM) that owns a database of the same name.
    pub fn create_user(&self, user: &str, password: &str) {
        self.sql(
            "postgres",
            &format!("CREATE ROLE {user} LOGIN PASSWORD '{password}'"),
        );
        self.sql("postgres", &format!("CREATE DATABASE {user} OWNER {user}"));
    }

    /// `postgres://user:password@host:port/db` plus `query` (`sslmode=...`, or empty).
    pub fn url(&self, host: &str, user: &str, password: &str, db: &str, query: &str) -> String {
        let q = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        format!("postgres://{user}:{password}@{host}:{}/{db}{q}", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.running {
            let data = self.data().display().to_string();
            let _ = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
        }
    }
}

fn append(path: &Path, lines: &[String]) {
    let mut s = std::fs::read_to_string(path).unwrap();
    s.push_str("\n# the test's settings\n");
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    std::fs::write(path, s).unwrap();
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A throw-away certificate authority and a server certificate it signed for `localhost` and
/// 127.0.0.1 (EC P-256, valid for 100 years), plus an unrelated second CA.
pub struct Tls {
    pub ca_crt: PathBuf,
    pub other_ca_crt: PathBuf,
    pub server_crt: PathBuf,
    pub server_key: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tls {
    /// Generates the files with the openssl command; None (or a failure in CI) without it.
    pub fn generate(test: &str) -> Option<Tls> {
        Tls::generate_with(test, "prime256v1")
    }

    /// [`Tls::generate`] with the server's key on another elliptic curve (`secp521r1`, which
    /// rustls with ring does not verify, makes the handshake fail).
    pub fn generate_with(test: &str, server_curve: &str) -> Option<Tls> {
        if Command::new("openssl").arg("version").output().is_err() {
            if pg_required() {
                panic!("`{test}` needs the openssl command to make its certificates (CI)");
            }
            eprintln!("\n!!!!! SKIPPING `{test}`: the openssl command is not installed\n");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name);
        let openssl = |args: &[&str]| {
            let o = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .unwrap();
            assert!(o.status.success(), "openssl {args:?}: {}", text(&o));
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        for (name, cn) in [("ca", "prescore test CA"), ("other_ca", "an unrelated CA")] {
            let subj = format!("/CN={cn}");
            let (key, crt) = (format!("{name}.key"), format!("{name}.crt"));
            let mut args = vec!["req", "-x509", "-nodes", "-days", "36500", "-subj", &subj];
            args.extend(ec);
            args.extend([
                "-keyout",
                &key,
                "-out",
                &crt,
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
            openssl(&args);
        }
        let mut args = vec!["req", "-new", "-nodes", "-subj", "/CN=localhost"];
        let curve = format!("ec_paramgen_curve:{server_curve}");
        args.extend(["-newkey", "ec", "-pkeyopt", &curve]);
        args.extend(["-keyout", "server.key", "-out", "server.csr"]);
        openssl(&args);
        std::fs::write(
            p("server.ext"),
            "subjectAltName = DNS:localhost, IP:127.0.0.1\n\
             basicConstraints = critical, CA:FALSE\n\
             keyUsage = critical, digitalSignature\n\
             extendedKeyUsage = serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "36500",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ]);
        Some(Tls {
            ca_crt: p("ca.crt"),
            other_ca_crt: p("other_ca.crt"),
            server_crt: p("server.crt"),
            server_key: p("server.key"),
            _dir: dir,
        })
    }
}
