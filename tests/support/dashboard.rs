//! An operator's dashboard for tests: an MQTT client of the box `box-17` that sends
//! commands and reads replies (`roomcast::control::CommandClient`), and a wait for the
//! box's retained `online`.

use std::time::Duration;

use roomcast::config::MqttUrl;
use roomcast::control::client::CommandClient;
use roomcast::control::{BrokerSettings, Topics};
use serde_json::{Value, json};

use super::mqtt::Observer;

/// The device id every test agent runs as.
pub const DEVICE: &str = "box-17";

pub fn topics() -> Topics {
    Topics::new("roomcast", DEVICE)
}

/// A dashboard's broker settings: plain MQTT, a client id of its own.
pub fn broker_settings(url: &str) -> BrokerSettings {
    BrokerSettings {
        url: MqttUrl::parse(url).expect("broker url"),
        client_id: format!("dashboard-{}", rand::random::<u32>()),
        username: None,
        password: None,
        ca_file: None,
        client_cert: None,
        keepalive: Duration::from_secs(30),
    }
}

pub async fn dashboard(url: &str) -> CommandClient {
    CommandClient::connect(&broker_settings(url), topics(), Duration::from_secs(20))
        .await
        .expect("dashboard connects")
}

/// Sends a command and returns the reply.
pub async fn call(dash: &CommandClient, op: &str, args: Value) -> Value {
    dash.request(op, args)
        .await
        .unwrap_or_else(|e| panic!("{op}: {e}"))
}

/// Sends a command that must succeed; returns its result.
pub async fn ok(dash: &CommandClient, op: &str, args: Value) -> Value {
    let reply = call(dash, op, args).await;
    assert_eq!(reply["ok"], true, "{op} should succeed: {reply}");
    assert!(reply.get("error").is_none(), "{reply}");
    reply["result"].clone()
}

/// Logs the box in to each room and publishes its main channel there as `cam-<room>`
/// (both must succeed).
pub async fn publish_in_rooms<R: AsRef<str>>(dash: &CommandClient, rooms: &[R]) {
    for room in rooms {
        let room = room.as_ref();
        ok(dash, "login_room", json!({"room_id": room})).await;
        ok(
            dash,
            "start_publishing",
            json!({"stream_id": format!("cam-{room}"), "room_id": room}),
        )
        .await;
    }
}

/// Waits until the agent says `online` on the broker at 127.0.0.1:`port` (it has
/// subscribed to its commands by then).
pub async fn wait_online(port: u16) {
    let mut observer = Observer::connect(port, &format!("wait-{}", rand::random::<u32>())).await;
    observer.subscribe(&topics().status).await;
    observer
        .next_where(Duration::from_secs(20), |m| m.text() == "online")
        .await
        .expect("the agent says online within 20 s");
    observer.close().await;
}
