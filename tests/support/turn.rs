//! A real coturn (Debian's `turnserver`) per test: long-term credentials, listening on
//! an address of the test's namespace (the host side of a `uplink::BoxNet`), relaying
//! to Janus in the same namespace. Started in the foreground, killed when dropped.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{TempDir, free_port, wait_listening_at};

pub struct Coturn {
    dir: TempDir,
    child: Child,
    pub ip: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    /// TLS (`turns://`) port, when started with [`Coturn::start_tls`].
    pub tls_port: Option<u16>,
}

impl Coturn {
    /// coturn on `ip` with one user; UDP and TCP on one port, no TLS.
    pub fn start(ip: &str) -> Self {
        Self::launch(ip, None)
    }

    /// The same, plus TURN over TLS on another port with this certificate and key (PEM).
    pub fn start_tls(ip: &str, cert: &std::path::Path, key: &std::path::Path) -> Self {
        Self::launch(ip, Some((free_port(), cert.to_owned(), key.to_owned())))
    }

    fn launch(ip: &str, tls: Option<(u16, std::path::PathBuf, std::path::PathBuf)>) -> Self {
        let dir = TempDir::new("coturn");
        let port = free_port();
        let (user, password) = ("box".to_owned(), format!("pw{}", std::process::id()));
        let relay_base = 40000 + (rand::random::<u16>() % 20) * 1000;
        let log = std::fs::File::create(dir.path().join("turnserver.log")).expect("log");
        let mut command = Command::new("turnserver");
        match &tls {
            None => {
                command.arg("--no-tls");
            }
            Some((port, cert, key)) => {
                command
                    .arg(format!("--tls-listening-port={port}"))
                    .arg(format!("--cert={}", cert.display()))
                    .arg(format!("--pkey={}", key.display()));
            }
        }
        let child = command
            .args([
                "-n",
                "--no-cli",
                "--no-dtls",
                "--fingerprint",
                "--lt-cred-mech",
                "--realm=roomcast.test",
                "--log-file=stdout",
                "--simple-log",
                "--no-stdout-log",
            ])
            .arg(format!("--listening-ip={ip}"))
            .arg(format!("--relay-ip={ip}"))
            .arg(format!("--listening-port={port}"))
            .arg(format!("--min-port={relay_base}"))
            .arg(format!("--max-port={}", relay_base + 999))
            .arg(format!("--user={user}:{password}"))
            .arg(format!(
                "--pidfile={}",
                dir.path().join("turn.pid").display()
            ))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("start turnserver (apt-get install coturn)");
        assert!(
            wait_listening_at(ip, port, Duration::from_secs(10)),
            "coturn did not listen on {ip}:{port}"
        );
        if let Some((tls_port, ..)) = &tls {
            assert!(
                wait_listening_at(ip, *tls_port, Duration::from_secs(10)),
                "coturn did not listen for TLS on {ip}:{tls_port}"
            );
        }
        Self {
            dir,
            child,
            ip: ip.to_owned(),
            port,
            user,
            password,
            tls_port: tls.map(|(port, ..)| port),
        }
    }

    /// A `turn://` URL for the box's config, over `transport` ("udp" or "tcp").
    pub fn url(&self, transport: &str) -> String {
        format!(
            "turn://{}:{}@{}:{}?transport={transport}",
            self.user, self.password, self.ip, self.port
        )
    }

    /// A `turns://` URL (see [`Coturn::start_tls`]).
    pub fn tls_url(&self) -> String {
        let port = self.tls_port.expect("started with start_tls");
        format!("turns://{}:{}@{}:{port}", self.user, self.password, self.ip)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("turnserver.log")).unwrap_or_default()
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
