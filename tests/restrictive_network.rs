//! Restrictive school networks (issue 19): UDP blocked, TURN relays, random loss. Real
//! coturn, real nftables, the agent process in a namespace of its own
//! (`support::uplink::BoxNet`), Janus and the subscribers on the other side.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::dashboard::{dashboard, ok, wait_online};
use support::janus::Janus;
use support::mosquitto::Mosquitto;
use support::peers::Subscriber;
use support::process::{AgentProcess, Options, config_text};
use support::turn::Coturn;
use support::uplink::BoxNet;

// One school at a time: Janus gathers its candidates on every interface of the test
// namespace, and another test's box link coming and going under a relayed path made
// the relay test fail; the machine has two cores anyway.
use support::ONE_AT_A_TIME;

struct School {
    net: BoxNet,
    janus: Janus,
    broker: Mosquitto,
    turn: Coturn,
    /// Dropped last: the next test starts once everything of this one is gone.
    _turn_of_this_test: tokio::sync::MutexGuard<'static, ()>,
}

impl School {
    async fn new() -> Self {
        Self::with_relay(None).await
    }

    /// With `certs` (a folder with `server.pem`/`server.key` for the relay's address),
    /// the relay also speaks TLS.
    async fn with_relay(certs: Option<&Path>) -> Self {
        let turn_of_this_test = ONE_AT_A_TIME.lock().await;
        let net = BoxNet::create();
        let janus = Janus::start_at(&net.host_addr, "");
        let broker = Mosquitto::start_also_on(&net.host_addr);
        let turn = match certs {
            Some(dir) => {
                support::certs::make_certs_for(dir, "relay", &net.host_addr);
                Coturn::start_tls(
                    &net.host_addr,
                    &dir.join("server.pem"),
                    &dir.join("server.key"),
                )
            }
            None => Coturn::start(&net.host_addr),
        };
        Self {
            _turn_of_this_test: turn_of_this_test,
            net,
            janus,
            broker,
            turn,
        }
    }

    fn agent(&self, network: &str) -> AgentProcess {
        let text = config_text(
            &self.broker.url_at(&self.net.host_addr),
            &self.janus.ws_url(),
            Path::new("@STATE@"),
            &format!("[network]\n{network}\n"),
        );
        AgentProcess::start(
            &text,
            Options {
                netns_pid: Some(self.net.pid()),
                rust_log: std::env::var("AGENT_LOG").ok(),
                ..Options::default()
            },
        )
    }
}

/// Publishes `cam-<room>` into each room and waits for an independent subscriber in each
/// to decode 20 frames; returns the state's publishing entries once every stream shows
/// its transport.
async fn publish_and_watch(school: &School, agent: &AgentProcess, rooms: &[&str]) -> Vec<Value> {
    wait_online(school.broker.port).await;
    let dash = dashboard(&school.broker.url()).await;
    for room in rooms {
        ok(&dash, "login_room", json!({"room_id": room})).await;
        let reply = support::dashboard::call(
            &dash,
            "start_publishing",
            json!({"stream_id": format!("cam-{room}"), "room_id": room}),
        )
        .await;
        assert_eq!(
            reply["ok"],
            true,
            "{reply}\nagent log:\n{}\ncoturn log:\n{}",
            agent.log(),
            school.turn.log()
        );
    }
    for room in rooms {
        let subscriber = Subscriber::wait_for(
            &school.janus.ws_url(),
            room,
            &format!("cam-{room}"),
            Duration::from_secs(20),
        )
        .await;
        let started = std::time::Instant::now();
        while subscriber.seen.frames() < 20 && started.elapsed() < Duration::from_secs(15) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let frames = subscriber.seen.frames();
        assert!(
            frames >= 20,
            "room {room}: {frames} frames decoded in 15 s; agent log:\n{}\ncoturn log:\n{}",
            agent.log(),
            school.turn.log()
        );
    }
    let started = std::time::Instant::now();
    let publishing = loop {
        let reply = dash.request("get_state", json!({})).await.expect("state");
        let publishing = reply["result"]["publishing"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if publishing
            .iter()
            .all(|p| p["stats"]["transport"].is_string())
        {
            break publishing;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no transport in the state: {publishing:?}\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    dash.close().await;
    publishing
}

fn transports(publishing: &[Value]) -> Vec<String> {
    publishing
        .iter()
        .map(|p| p["stats"]["transport"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// A firewall that drops every UDP packet the box sends: media reaches both rooms
/// through the TURN relay over TCP, and the state says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn udp_blocked_media_goes_through_turn_over_tcp() {
    let school = School::new().await;
    school.net.block_udp();
    let agent = school.agent(&format!("turn_servers = [\"{}\"]", school.turn.url("tcp")));
    let publishing = publish_and_watch(&school, &agent, &["bigclass", "group-3"]).await;
    assert_eq!(
        transports(&publishing),
        ["relay-tcp", "relay-tcp"],
        "{publishing:?}\n{}",
        agent.log()
    );
    assert!(
        !agent.log().contains(&school.turn.password),
        "the TURN password was logged"
    );
}

/// UDP blocked, the only relay `turns://` (TLS, the school's own CA named in
/// `network.turn_ca_file`): media flows through it; without the CA the relay's
/// certificate is refused and logging in says the relay gave no path (1002907).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn udp_blocked_media_goes_through_turn_over_tls_verified() {
    let certs = support::TempDir::new("relay-certs");
    let school = School::with_relay(Some(certs.path())).await;
    school.net.block_udp();
    let ca = certs.path().join("relay-ca.pem");
    let agent = school.agent(&format!(
        "turn_servers = [\"{}\"]\nturn_ca_file = \"{}\"",
        school.turn.tls_url(),
        ca.display()
    ));
    let publishing = publish_and_watch(&school, &agent, &["bigclass", "group-3"]).await;
    assert_eq!(
        transports(&publishing),
        ["relay-tls", "relay-tls"],
        "{}",
        agent.log()
    );
    drop(agent);

    // The same relay, trusted by nobody: refused, with the reason in the log.
    let untrusted = school.agent(&format!("turn_servers = [\"{}\"]", school.turn.tls_url()));
    wait_online(school.broker.port).await;
    let dash = dashboard(&school.broker.url()).await;
    let reply = support::dashboard::call(&dash, "login_room", json!({"room_id": "other"})).await;
    assert_eq!(
        reply["error"]["code"],
        1002907,
        "{reply}\n{}",
        untrusted.log()
    );
    assert!(
        untrusted.log().contains("certificate"),
        "{}",
        untrusted.log()
    );
    dash.close().await;
}

/// `ice_transport_policy = "relay"` with UDP open: still through the relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relay_policy_relays_even_when_direct_would_work() {
    let school = School::new().await;
    let agent = school.agent(&format!(
        "turn_servers = [\"{}\"]\nice_transport_policy = \"relay\"",
        school.turn.url("udp")
    ));
    let publishing = publish_and_watch(&school, &agent, &["bigclass"]).await;
    assert_eq!(transports(&publishing), ["relay-udp"], "{}", agent.log());
}

/// Without a relay the same box publishes directly, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_open_network_goes_direct() {
    let school = School::new().await;
    let agent = school.agent("");
    let publishing = publish_and_watch(&school, &agent, &["bigclass"]).await;
    assert_eq!(transports(&publishing), ["udp"], "{}", agent.log());
}

/// Wrong TURN credentials behind a firewall that drops UDP: logging in says the relay
/// refused (1002907, naming the key to fix) instead of hanging or timing out vaguely.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_refusing_the_credentials_is_a_coded_error() {
    let school = School::new().await;
    school.net.block_udp();
    let wrong = school
        .turn
        .url("tcp")
        .replace(&school.turn.password, "not-the-password");
    let agent = school.agent(&format!("turn_servers = [\"{wrong}\"]"));
    wait_online(school.broker.port).await;
    let dash = dashboard(&school.broker.url()).await;
    let started = std::time::Instant::now();
    let reply = support::dashboard::call(&dash, "login_room", json!({"room_id": "bigclass"})).await;
    assert_eq!(reply["ok"], false, "{reply}");
    assert_eq!(reply["error"]["code"], 1002907, "{reply}\n{}", agent.log());
    let message = reply["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("network.turn_servers"), "{message}");
    println!("refused after {:?}", started.elapsed());
    assert!(!agent.log().contains("not-the-password"));
    dash.close().await;
}

/// The box's address changes mid-stream (a new DHCP lease): the rooms stay, every
/// stream comes back on its own, and the operator is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_address_change_brings_every_stream_back() {
    let mut school = School::new().await;
    let agent = school.agent("");
    let rooms = ["bigclass", "group-3"];
    publish_and_watch(&school, &agent, &rooms).await;
    let mut events = support::mqtt::Observer::connect(school.broker.port, "addr-events").await;
    events.subscribe(&support::dashboard::topics().events).await;

    school.net.change_address();
    let changed = std::time::Instant::now();
    let mut back = Vec::new();
    for room in rooms {
        // The stream is published again: a new viewer decodes it.
        let deadline = changed + Duration::from_secs(15);
        let frames_at = loop {
            assert!(
                std::time::Instant::now() < deadline,
                "room {room}: no frames 15 s after the address changed; agent log:\n{}",
                agent.log()
            );
            let viewer =
                Subscriber::start(&school.janus.ws_url(), room, &format!("cam-{room}")).await;
            let until = std::time::Instant::now() + Duration::from_secs(2);
            while viewer.seen.frames() == 0 && std::time::Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if let Some(first) = viewer.seen.first_frame() {
                break first;
            }
        };
        back.push((room, frames_at.saturating_duration_since(changed)));
    }
    println!("frames again after the address change: {back:?}");
    // The operator is told: each stream goes Publishing again (the box's MQTT
    // connection was on the old address too, so the events may come a little later).
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < rooms.len() {
        let Some(event) = events
            .next_where(Duration::from_secs(20), |m| {
                let e = m.json();
                e["event"] == "publisher_state_update" && e["state"] == "Publishing"
            })
            .await
        else {
            break;
        };
        seen.insert(event.json()["room_id"].as_str().unwrap_or("").to_owned());
    }
    assert_eq!(
        seen.len(),
        rooms.len(),
        "Publishing again in each room: {seen:?}"
    );
    println!("operator told after {:?}", changed.elapsed());
    for (room, after) in back {
        assert!(
            after < Duration::from_secs(5),
            "{room}: frames again after {after:?}"
        );
    }
}

/// Decoded frames per second, the longest gap and the share of frames whose BLK1 stamp
/// was readable (a corrupt frame's is not) of one room's subscriber over `window`.
async fn watch_room(school: &School, room: &str, window: Duration) -> (f64, Duration, f64) {
    let subscriber = Subscriber::wait_for_buffered(
        &school.janus.ws_url(),
        room,
        &format!("cam-{room}"),
        Duration::from_secs(20),
        LOSSY_JITTER_BUFFER_MS,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stamps = || {
        subscriber
            .seen
            .latencies_ms
            .lock()
            .map(|l| l.len())
            .unwrap_or(0)
    };
    let (start, frames, read) = (
        std::time::Instant::now(),
        subscriber.seen.frames(),
        stamps(),
    );
    tokio::time::sleep(window).await;
    let decoded = subscriber.seen.frames() - frames;
    let fps = decoded as f64 / window.as_secs_f64();
    let readable = (stamps() - read) as f64 / (decoded.max(1)) as f64;
    (fps, subscriber.seen.max_gap_after(start), readable)
}

/// What the loss test's subscribers hold packets for before they give the missing ones
/// up: webrtcbin's default, and about what a browser's jitter buffer grows to on a
/// lossy path. A retransmission takes a round trip and Janus's wait before it asks.
const LOSSY_JITTER_BUFFER_MS: u32 = 200;

/// Sends `command` until it succeeds, again only after a `retry_code` answer and at
/// most `tries` times, as an operator would; returns how many were sent.
async fn send_until_ok(
    dash: &roomcast::control::client::CommandClient,
    command: &str,
    params: serde_json::Value,
    retry_code: u64,
    tries: usize,
) -> usize {
    for sent in 1..=tries {
        let reply = support::dashboard::call(dash, command, params.clone()).await;
        if reply["ok"] == true {
            return sent;
        }
        assert!(
            reply["error"]["code"] == retry_code && sent < tries,
            "{command} {params}: {reply}"
        );
        println!("{command} {params} failed, sending it again: {reply}");
    }
    tries
}

/// 3 % of what the box sends lost at random (Wi-Fi), two rooms, 640x360 at 30 fps:
/// with retransmissions (the default) every room keeps decoding at >= 25 fps with no
/// gap over 500 ms and its frames whole. Without them (printed, not asserted) the same
/// loss corrupts about a fifth of the frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_percent_loss_keeps_every_room_playing() {
    let mut figures = Vec::new();
    for retransmissions in [true, false] {
        let school = School::new().await;
        school.net.lose_randomly(3);
        let text = config_text(
            &school.broker.url_at(&school.net.host_addr),
            &school.janus.ws_url(),
            Path::new("@STATE@"),
            &format!("[network]\nretransmissions = {retransmissions}\n"),
        )
        .replace(
            "width = 320\nheight = 240\nframerate = 15",
            "width = 640\nheight = 360\nframerate = 30",
        );
        let agent = AgentProcess::start(
            &text,
            Options {
                netns_pid: Some(school.net.pid()),
                ..Options::default()
            },
        );
        wait_online(school.broker.port).await;
        let dash = dashboard(&school.broker.url()).await;
        // At 3 % loss a first connection attempt can fail (1003902, seen once in CI
        // without retransmissions), and so can a login whose Janus request is lost more
        // than once (1002902, seen once in CI): the operator sends the command again,
        // as here.
        let mut attempts = 0;
        for room in ["bigclass", "group-3"] {
            let login = json!({"room_id": room});
            send_until_ok(&dash, "login_room", login, 1002902, 3).await;
            let publish = json!({"stream_id": format!("cam-{room}"), "room_id": room});
            attempts += send_until_ok(&dash, "start_publishing", publish, 1003902, 5).await;
        }
        let window = Duration::from_secs(20);
        let (a, b) = tokio::join!(
            watch_room(&school, "bigclass", window),
            watch_room(&school, "group-3", window)
        );
        println!(
            "3 % loss, retransmissions {retransmissions}, {attempts} start_publishing for 2 streams: bigclass {:.1} fps, longest gap {} ms, {:.1} % intact; group-3 {:.1} fps, longest gap {} ms, {:.1} % intact",
            a.0,
            a.1.as_millis(),
            a.2 * 100.0,
            b.0,
            b.1.as_millis(),
            b.2 * 100.0
        );
        figures.push((retransmissions, a, b, agent.log()));
        dash.close().await;
    }
    let (_, a, b, log) = &figures[0];
    // With retransmissions the subscribers' jitter buffers get the lost packets back in
    // time: every frame decodes whole, and no gap reaches the 500 ms.
    for (room, (fps, gap, intact)) in [("bigclass", a), ("group-3", b)] {
        assert!(
            *fps >= 25.0 && *gap < Duration::from_millis(500) && *intact >= 0.95,
            "{room} at 3 % loss with retransmissions: {fps:.1} fps, longest gap {gap:?}, {:.1} % intact\n{log}",
            intact * 100.0
        );
    }
}
