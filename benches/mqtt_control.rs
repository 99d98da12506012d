//! `get_state` round trips through a real mosquitto on loopback: dashboard → broker →
//! agent → engine → agent → broker → dashboard. Run with
//! `cargo bench --bench mqtt_control` (needs the `mosquitto` binary; no Janus: get_state
//! does not touch the SFU).
//!
//! Measured twice: with mosquitto's defaults, and with `set_tcp_nodelay true` on its
//! listener. Without it, mosquitto's Nagle algorithm holds the next command to the box
//! until the box's TCP acknowledges the broker's last PUBACK (delayed ACK, ~40 ms on
//! Linux): every sequential round trip then costs ~40 ms more. roomcast disables Nagle on
//! its own socket; the broker's is the operator's setting (docs/mqtt.md).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use roomcast::config::{Config, MqttUrl};
use roomcast::control::client::CommandClient;
use roomcast::control::{BrokerSettings, Topics};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const ROUND_TRIPS: usize = 1000;
const WARM_UP: usize = 50;

struct Broker(Child, std::path::PathBuf);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn start_broker(port: u16, nodelay: bool) -> Broker {
    let dir = std::env::temp_dir().join(format!("roomcast-bench-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay {nodelay}\npersistence false\nlog_dest none\n"
        ),
    )
    .expect("write mosquitto.conf");
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mosquitto (apt-get install mosquitto)");
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mosquitto did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Broker(child, dir)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

fn main() {
    for nodelay in [false, true] {
        measure(nodelay);
    }
}

fn measure(nodelay: bool) {
    let port = free_port();
    let _broker = start_broker(port, nodelay);
    let url = format!("mqtt://127.0.0.1:{port}");
    // The agent keeps its rooms in state_dir: a folder of this run's own, so that no
    // earlier run's rooms are taken up.
    let state_dir = std::env::temp_dir()
        .join(format!("roomcast-bench-state-{}", std::process::id()))
        .display()
        .to_string();
    let config_text = format!(
        r#"
device_id = "bench-box"
state_dir = "{state_dir}"
[identity]
user_id = "bench-box"
user_name = "Benchmark"
[sources.main]
video = "test"
[mqtt]
url = "{url}"
[janus]
url = "ws://127.0.0.1:{}"
"#,
        free_port()
    );
    let config = Config::parse(&config_text, Path::new("bench.toml")).expect("config");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let agent = tokio::spawn(roomcast::run(config, shutdown.clone()));
        let settings = BrokerSettings {
            url: MqttUrl::parse(&url).expect("url"),
            client_id: "bench-dashboard".into(),
            username: None,
            password: None,
            ca_file: None,
            client_cert: None,
            keepalive: Duration::from_secs(30),
        };
        let topics = Topics::new("roomcast", "bench-box");
        // Until the agent has subscribed, commands go nowhere: probe with a short timeout.
        let probe = CommandClient::connect(&settings, topics.clone(), Duration::from_millis(500))
            .await
            .expect("dashboard connects");
        let deadline = Instant::now() + Duration::from_secs(15);
        while probe.request("get_state", json!({})).await.is_err() {
            assert!(Instant::now() < deadline, "the agent never answered");
        }
        probe.close().await;
        let dash = CommandClient::connect(&settings, topics, Duration::from_secs(10))
            .await
            .expect("dashboard connects");
        for _ in 0..WARM_UP {
            dash.request("get_state", json!({})).await.expect("warm-up");
        }
        let mut times = Vec::with_capacity(ROUND_TRIPS);
        let started = Instant::now();
        for _ in 0..ROUND_TRIPS {
            let asked = Instant::now();
            let reply = dash.request("get_state", json!({})).await.expect("reply");
            assert_eq!(reply["ok"], true, "{reply}");
            times.push(asked.elapsed());
        }
        let total = started.elapsed();
        times.sort();
        println!(
            "get_state round trip over MQTT, mosquitto on loopback with set_tcp_nodelay {nodelay}, {ROUND_TRIPS} sequential commands:"
        );
        println!(
            "  p50 {:.2} ms   p90 {:.2} ms   p99 {:.2} ms   max {:.2} ms   ({:.0} commands/s)",
            percentile(&times, 0.50),
            percentile(&times, 0.90),
            percentile(&times, 0.99),
            percentile(&times, 1.0),
            ROUND_TRIPS as f64 / total.as_secs_f64()
        );
        let p99 = percentile(&times, 0.99);
        println!(
            "  goal p99 <= 10 ms: {}",
            if p99 <= 10.0 { "met" } else { "NOT met" }
        );
        dash.close().await;
        shutdown.cancel();
        let _ = agent.await;
    });
    let _ = std::fs::remove_dir_all(&state_dir);
}
