//! Test harness: real services on loopback ports chosen at run time, each stopped when
//! the test ends. Nothing is assumed to be running.
#![allow(dead_code)]

pub mod agent;
pub mod audio_meter;
pub mod browser;
pub mod certs;
pub mod dashboard;
pub mod firefox;
pub mod janus;
pub mod janus_ws;
pub mod mosquitto;
pub mod mqtt;
pub mod peers;
pub mod process;
pub mod proxy;
pub mod textroom;
pub mod turn;
pub mod uplink;
pub mod web;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Logs to the test's output, filtered by RUST_LOG (nothing by default).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Tests that talk to Janus need the private network namespace (Janus does no ICE on
/// loopback). `scripts/test.sh` provides it.
pub fn require_netns() {
    init_logs();
    assert_eq!(
        std::env::var("ROOMCAST_NETNS").as_deref(),
        Ok("1"),
        "this test needs Janus, which needs a private network namespace: run it through \
         ./scripts/test.sh (or ./scripts/in-netns.sh cargo test --offline)"
    );
}

/// User + system CPU seconds a process has used so far; `pid` is a number or `self`.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may contain spaces, in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat: 12 and 13 after `) state`.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// A port free for TCP and UDP on 127.0.0.1, for a service the test starts.
///
/// It comes from 10000–19999, below the kernel's ephemeral range (32768–60999), and is
/// never handed out twice in one test process. A port the kernel picks (`bind(0)`, an
/// outgoing connection, the ICE-TCP candidates of an agent's peers) could be taken by
/// someone else between this call and the service binding it; the harness would then
/// find *that* listener and talk to the wrong server (a CI run once sent its MQTT
/// CONNECT to a socket that never answered).
pub fn free_port() -> u16 {
    const FIRST: u32 = 10_000;
    const COUNT: u32 = 10_000;
    static NEXT: std::sync::OnceLock<AtomicU32> = std::sync::OnceLock::new();
    let next = NEXT.get_or_init(|| AtomicU32::new(rand::random::<u32>() % COUNT));
    for _ in 0..COUNT {
        let port = (FIRST + next.fetch_add(1, Ordering::Relaxed) % COUNT) as u16;
        let free = TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok();
        if free {
            return port;
        }
    }
    panic!("no free port in {FIRST}–{}", FIRST + COUNT - 1);
}

/// A folder removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("roomcast-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("ROOMCAST_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_listening(port: u16, within: Duration) -> bool {
    wait_listening_at("127.0.0.1", port, within)
}

/// Whether something listens on `ip`:`port` within `within`.
pub fn wait_listening_at(ip: &str, port: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect((ip, port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after `within`.
pub async fn eventually<T>(
    what: &str,
    within: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Tests that measure media (frame rates, gaps, congestion) take turns within their
/// binary: side by side on a 2-core machine their agents, Janus and decoders starve each
/// other and the figures measure the machine. Each such test starts with
/// `let _one_at_a_time = support::ONE_AT_A_TIME.lock().await;`.
pub static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
