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

struct School {
    net: BoxNet,
    janus: Janus,
    broker: Mosquitto,
    turn: Coturn,
}

impl School {
    fn new() -> Self {
        let net = BoxNet::create();
        let janus = Janus::start_at(&net.host_addr, "");
        let broker = Mosquitto::start_also_on(&net.host_addr);
        let turn = Coturn::start(&net.host_addr);
        Self {
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
        ok(
            &dash,
            "start_publishing",
            json!({"stream_id": format!("cam-{room}"), "room_id": room}),
        )
        .await;
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
    let school = School::new();
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

/// `ice_transport_policy = "relay"` with UDP open: still through the relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relay_policy_relays_even_when_direct_would_work() {
    let school = School::new();
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
    let school = School::new();
    let agent = school.agent("");
    let publishing = publish_and_watch(&school, &agent, &["bigclass"]).await;
    assert_eq!(transports(&publishing), ["udp"], "{}", agent.log());
}

/// Wrong TURN credentials behind a firewall that drops UDP: logging in says the relay
/// refused (1002907, naming the key to fix) instead of hanging or timing out vaguely.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_refusing_the_credentials_is_a_coded_error() {
    let school = School::new();
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
