//! `mqtt.urls`, a list of brokers (issue 20), against two real mosquitto brokers joined
//! by a mosquitto bridge, a real Janus and the whole agent in-process: when the broker
//! the box is on goes away it moves to the next, subscribes and announces itself there,
//! and commands sent meanwhile are run exactly once. Janus needs the private network
//! namespace: run through `./scripts/test.sh`.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use roomcast::config::Config;
use roomcast::control::client::CommandClient;
use serde_json::{Value, json};
use support::dashboard::{DEVICE, broker_settings, ok, topics, wait_online};
use support::janus::Janus;
use support::mosquitto::Mosquitto;
use support::mqtt::Observer;
use tokio_util::sync::CancellationToken;

fn config(urls: &[String], janus: &Janus, state_dir: &Path) -> Config {
    let urls: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    let text = format!(
        r#"
device_id = "{DEVICE}"
state_dir = "{state_dir}"
[identity]
user_id = "box-17"
user_name = "Room 101 camera"
[rooms]
mode = "multi"
multi_room_enabled = true
[sources.main]
video = "test"
width = 320
height = 240
framerate = 15
audio = "none"
[mqtt]
urls = [{urls}]
keepalive_s = 5
[janus]
url = "{janus}"
request_timeout_ms = 3000
"#,
        urls = urls.join(", "),
        janus = janus.ws_url(),
        state_dir = state_dir.display(),
    );
    Config::parse(&text, Path::new("test.toml")).expect("config")
}

/// Broker 2, and broker 1 bridged to it: every `roomcast/#` message published on
/// either is seen on both (mosquitto's `connection` bridge, from broker 1's side).
fn bridged_brokers() -> (Mosquitto, Mosquitto) {
    let two = Mosquitto::start();
    let one = Mosquitto::start_with(&format!(
        "listener @PORT@ 127.0.0.1\nallow_anonymous true\npersistence false\n\
         connection to-two\naddress 127.0.0.1:{}\ntopic roomcast/# both 1\n\
         cleansession true\nrestart_timeout 1\n",
        two.port
    ));
    (one, two)
}

/// Sends the command `id` to the box again every 2 s (same id, same args: a dashboard's
/// retry) until a reply comes, at most `within`; returns the reply and when it came.
async fn until_answered(
    dash: &CommandClient,
    id: &str,
    op: &str,
    args: Value,
    within: Duration,
) -> (Value, Instant) {
    let payload = json!({"id": id, "op": op, "args": args}).to_string();
    let deadline = Instant::now() + within;
    loop {
        match dash.request_raw(id, payload.clone().into_bytes()).await {
            Ok(reply) => return (reply, Instant::now()),
            Err(e) => assert!(
                Instant::now() < deadline,
                "{op} {id}: no reply within {within:?} ({e})"
            ),
        }
    }
}

/// Issue test 4: the box on broker 1, the dashboard on broker 2; broker 1 killed: the
/// box is back on broker 2 and answers a command within 10 s, its retained state there
/// is current, and the command (sent again and again while the box was away) ran once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_box_moves_to_the_next_broker_and_runs_each_command_once() {
    support::require_netns();
    let janus = Janus::start();
    let (mut one, two) = bridged_brokers();
    let dir = support::TempDir::new("brokers");
    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(roomcast::run(
        config(&[one.url(), two.url()], &janus, dir.path()),
        shutdown.clone(),
    ));
    wait_online(one.port).await;

    // The dashboard is on broker 2: commands reach the box through the bridge.
    let dash = CommandClient::connect(
        &broker_settings(&two.url()),
        topics(),
        Duration::from_secs(2),
    )
    .await
    .expect("dashboard on broker 2");
    let (reply, _) = until_answered(
        &dash,
        "c-bigclass",
        "login_room",
        json!({"room_id": "bigclass"}),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["result"]["server"], "default", "{reply}");

    // Everything the box says about group-3 and every reply, as seen on broker 2.
    let mut watcher = Observer::connect(two.port, "watcher").await;
    watcher
        .subscribe(&format!("roomcast/{DEVICE}/rooms/group-3/events"))
        .await;
    watcher.subscribe(&topics().reply).await;
    let mut status = Observer::connect(two.port, "status").await;
    status.subscribe(&topics().status).await;
    status
        .next_where(Duration::from_secs(5), |m| m.retain)
        .await
        .expect("the retained status, bridged to broker 2");

    let killed = Instant::now();
    one.kill();
    let ((reply, answered), online) = tokio::join!(
        until_answered(
            &dash,
            "c-group-3",
            "login_room",
            json!({"room_id": "group-3"}),
            Duration::from_secs(10),
        ),
        async {
            status
                .next_where(Duration::from_secs(10), |m| m.text() == "online")
                .await
                .map(|_| Instant::now())
        }
    );
    let online = online.expect("the box says online on broker 2") - killed;
    let took = answered - killed;
    println!(
        "broker 1 killed: the box online on broker 2 after {} ms, answered there after {} ms (the dashboard tries every 2 s)",
        online.as_millis(),
        took.as_millis()
    );
    assert_eq!(reply["ok"], true, "{reply}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    status.close().await;

    // Its retained status and state on broker 2 are current.
    let mut late = Observer::connect(two.port, "late").await;
    late.subscribe(&topics().status).await;
    late.subscribe(&topics().state).await;
    let status = late
        .expect_on(&topics().status, Duration::from_secs(5))
        .await;
    assert!(status.retain && status.text() == "online", "{status:?}");
    let state = late
        .next_where(Duration::from_secs(5), |m| {
            m.topic == topics().state
                && m.json()["rooms"]
                    .as_array()
                    .is_some_and(|rooms| rooms.len() == 2)
        })
        .await
        .expect("the retained state on broker 2 lists both rooms");
    assert!(state.retain, "{state:?}");

    // The command ran once: one login (one Logining), every reply to it a success.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = watcher.drain();
    let logining = seen
        .iter()
        .filter(|m| m.topic.ends_with("/events") && m.json()["reason"] == "Logining")
        .count();
    assert_eq!(logining, 1, "{seen:?}");
    let replies: Vec<Value> = seen
        .iter()
        .filter(|m| m.topic == topics().reply)
        .map(|m| m.json())
        .filter(|r| r["id"] == "c-group-3")
        .collect();
    assert!(!replies.is_empty());
    assert!(
        replies.iter().all(|r| r["ok"] == true),
        "a repeated delivery ran again: {replies:?}"
    );
    // And the box goes on answering there.
    let state = ok(&dash, "get_state", json!({})).await;
    assert_eq!(state["rooms"].as_array().map(Vec::len), Some(2), "{state}");

    dash.close().await;
    watcher.close().await;
    late.close().await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), agent)
        .await
        .expect("the agent stops within 15 s")
        .expect("the agent task")
        .expect("the agent ran without error");
}
