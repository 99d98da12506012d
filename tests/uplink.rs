//! A box behind a narrow school uplink (`support::uplink`): real Janus, real mosquitto,
//! the real agent process in its own network namespace with `tc tbf` on its egress.
//! Behaviour only; the figures (fps, latency, settling times) are the uplink benchmark's
//! (`benches/uplink.rs`, docs/performance.md).

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::dashboard::{dashboard, ok, topics, wait_online};
use support::janus::Janus;
use support::mosquitto::Mosquitto;
use support::mqtt::Observer;
use support::peers::Subscriber;
use support::process::{AgentProcess, Options, config_text};
use support::uplink::BoxNet;

/// Encoder settings the uplink cases use: a picture big enough to fill its bitrate.
const PICTURE: &str = "width = 640\nheight = 360\nframerate = 30";

// The three tests each run a 720p30 agent, Janus and up to five decoding subscribers:
// side by side on a 2-core machine the agents' congestion controllers read the
// scheduling delay as a queue (an estimate that dipped to 666 kbit/s on an unshaped
// link, a room that decoded too little). They measure congestion, so one at a time.
use support::ONE_AT_A_TIME;

fn box_config(broker: &Mosquitto, janus: &Janus, net: &BoxNet, extra: &str) -> String {
    config_text(
        &broker.url_at(&net.host_addr),
        &janus.ws_url(),
        Path::new("@STATE@"),
        extra,
    )
    .replace("width = 320\nheight = 240\nframerate = 15", PICTURE)
    .replace("max_rooms = 5", "max_rooms = 5\nquality_interval_s = 1")
}

async fn encoder_kbps(dash: &roomcast::control::client::CommandClient) -> Option<u64> {
    let reply = dash.request("get_state", json!({})).await.ok()?;
    reply["result"]["sources"][0]["bitrate_kbps"].as_u64()
}

/// The encoder at the configured 2000 kbit/s, and two published rooms each reporting
/// an estimate near it and media flowing.
fn keeps_configured_bitrate(state: &serde_json::Value) -> bool {
    let result = &state["result"];
    let publishing = result["publishing"].as_array().cloned().unwrap_or_default();
    result["sources"][0]["bitrate_kbps"].as_u64() == Some(2000)
        && publishing.len() == 2
        && publishing.iter().all(|stream| {
            let quality = &stream["quality"];
            quality["estimate_kbps"].as_u64().is_some_and(|e| e >= 1500)
                && quality["kbps_sent"].as_u64().is_some_and(|k| k >= 300)
        })
}

/// Five rooms over a 4 Mbit/s uplink: each room's congestion controller sees the
/// congestion, the shared encoder comes down until the five copies fit, every room
/// keeps decoding, and each room reports its quality separately.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_rooms_over_a_4_mbit_uplink_settle_under_it() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let net = BoxNet::create();
    let janus = Janus::start_at(&net.host_addr, "");
    let broker = Mosquitto::start_also_on(&net.host_addr);
    net.limit_uplink(4000);
    let agent = AgentProcess::start(
        &box_config(&broker, &janus, &net, ""),
        Options {
            netns_pid: Some(net.pid()),
            ..Options::default()
        },
    );
    wait_online(broker.port).await;
    let mut events = Observer::connect(broker.port, "uplink-events").await;
    events.subscribe(&topics().events).await;
    let dash = dashboard(&broker.url()).await;
    let rooms = ["r1", "r2", "r3", "r4", "r5"];
    support::dashboard::publish_in_rooms(&dash, &rooms).await;
    let mut subscribers = Vec::new();
    for room in rooms {
        // Viewers behind a congested path: their jitter buffers hold packets for
        // the retransmissions, as a browser's grows to when it sees loss.
        subscribers.push(
            Subscriber::wait_for_buffered(
                &janus.ws_url(),
                room,
                &format!("cam-{room}"),
                Duration::from_secs(20),
                200,
            )
            .await,
        );
    }

    // The encoder comes down from 2000 kbit/s until five copies fit 4 Mbit/s.
    let started = Instant::now();
    let mut lowest = u64::MAX;
    while started.elapsed() < Duration::from_secs(30) {
        if let Some(kbps) = encoder_kbps(&dash).await {
            lowest = lowest.min(kbps);
            if kbps <= 800 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        lowest <= 800,
        "the encoder stayed at {lowest} kbit/s over a 4 Mbit/s uplink with 5 rooms; agent log:\n{}",
        agent.log()
    );

    // Every room decodes, and each reports its own quality with its estimate.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before: Vec<u64> = subscribers.iter().map(|s| s.seen.frames()).collect();
    let window = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let decoded: Vec<u64> = subscribers
        .iter()
        .zip(&before)
        .map(|(s, before)| s.seen.frames() - before)
        .collect();
    for (i, subscriber) in subscribers.iter().enumerate() {
        assert!(
            decoded[i] >= 50,
            "room {} decoded {} frames in 5 s behind the uplink (all rooms: {decoded:?}; tbf drops so far: {}); subscribers:\n{}\nagent log:\n{}",
            rooms[i],
            decoded[i],
            net.uplink_drops(),
            subscribers
                .iter()
                .map(|s| s.seen.describe())
                .collect::<Vec<_>>()
                .join("\n"),
            agent.log()
        );
        assert!(subscriber.seen.max_gap_after(window) < Duration::from_secs(1));
    }
    let mut estimates = std::collections::BTreeMap::new();
    for message in events.drain() {
        let event: Value = message.json();
        if event["event"] == "publisher_quality_update"
            && let Some(estimate) = event["quality"]["estimate_kbps"].as_u64()
        {
            assert!(event["quality"]["kbps_sent"].is_u64(), "{event}");
            assert!(event["quality"]["fps"].is_number(), "{event}");
            estimates.insert(event["room_id"].as_str().unwrap_or("").to_owned(), estimate);
        }
    }
    assert_eq!(estimates.len(), 5, "quality events per room: {estimates:?}");
    assert!(
        estimates.values().all(|e| *e < 4000),
        "each room's estimate is under the uplink: {estimates:?}"
    );
    dash.close().await;
    drop(agent);
}

/// The estimator sits on the room's sending path and sees every packet: on an
/// unshaped link its estimate stays up (or climbs back after a dip) and the encoder
/// at its configured bitrate, and what the box put on the wire matches what the
/// rooms' branches sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unconstrained_uplink_keeps_the_configured_bitrate() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let net = BoxNet::create();
    let janus = Janus::start_at(&net.host_addr, "");
    let broker = Mosquitto::start_also_on(&net.host_addr);
    let agent = AgentProcess::start(
        &box_config(&broker, &janus, &net, ""),
        Options {
            netns_pid: Some(net.pid()),
            ..Options::default()
        },
    );
    wait_online(broker.port).await;
    let dash = dashboard(&broker.url()).await;
    support::dashboard::publish_in_rooms(&dash, &["r1", "r2"]).await;
    let subscriber =
        Subscriber::wait_for(&janus.ws_url(), "r1", "cam-r1", Duration::from_secs(20)).await;
    assert!(subscriber.wait_frames(30, Duration::from_secs(10)).await >= 30);
    // Delay-based detection also sees a loaded test machine's scheduling delay as a
    // queue: the estimate may dip and climb back, and the first quality report comes
    // a few seconds after the first frames. What must hold is that, on its own and
    // bounded by the prober's pace, the encoder is at its configured bitrate while
    // every room reports an estimate near it.
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut state = dash.request("get_state", json!({})).await.expect("state");
    while !keeps_configured_bitrate(&state) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        state = dash.request("get_state", json!({})).await.expect("state");
    }
    assert!(keeps_configured_bitrate(&state), "{state}\n{}", agent.log());
    let publishing = state["result"]["publishing"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let sent: u64 = publishing
        .iter()
        .filter_map(|s| s["stats"]["bytes_sent"].as_u64())
        .sum();
    let wire = net.egress_bytes();
    assert!(
        wire >= sent && wire < sent * 13 / 10,
        "the box sent {wire} bytes for {sent} bytes of RTP payloads"
    );
    dash.close().await;
    drop(agent);
}

/// Server fan-out (`rooms.fanout = "server"`) over a 4 Mbit/s uplink: the box uploads
/// one copy however many rooms it publishes into, so five rooms cost the uplink what one
/// does, the encoder keeps its configured bitrate and every room decodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_fanout_puts_one_copy_on_a_4_mbit_uplink() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let net = BoxNet::create();
    let janus = Janus::start_at(&net.host_addr, "");
    let broker = Mosquitto::start_also_on(&net.host_addr);
    net.limit_uplink(4000);
    let config = box_config(&broker, &janus, &net, "")
        .replace("max_rooms = 5", "max_rooms = 5\nfanout = \"server\"");
    let agent = AgentProcess::start(
        &config,
        Options {
            netns_pid: Some(net.pid()),
            ..Options::default()
        },
    );
    wait_online(broker.port).await;
    let dash = dashboard(&broker.url()).await;
    let rooms = ["r1", "r2", "r3", "r4", "r5"];
    let mut subscribers = Vec::new();
    let publish = async |room: &str| {
        ok(&dash, "login_room", json!({"room_id": room})).await;
        ok(
            &dash,
            "start_publishing",
            json!({"stream_id": format!("cam-{room}"), "room_id": room}),
        )
        .await;
        Subscriber::wait_for(
            &janus.ws_url(),
            room,
            &format!("cam-{room}"),
            Duration::from_secs(20),
        )
        .await
    };
    // What the box puts on its uplink per second, over `window`; the frames each
    // subscriber decoded meanwhile; the agent's CPU (% of one core).
    let pid = agent.pid().to_string();
    let measure = async |subscribers: &[Subscriber], window: Duration| {
        let (bytes, frames, cpu): (u64, Vec<u64>, f64) = (
            net.egress_bytes(),
            subscribers.iter().map(|s| s.seen.frames()).collect(),
            support::cpu_seconds(&pid).unwrap_or_default(),
        );
        tokio::time::sleep(window).await;
        let rate = (net.egress_bytes() - bytes) as f64 / window.as_secs_f64();
        let cpu =
            (support::cpu_seconds(&pid).unwrap_or_default() - cpu) * 100.0 / window.as_secs_f64();
        let fps: Vec<f64> = subscribers
            .iter()
            .zip(frames)
            .map(|(s, before)| (s.seen.frames() - before) as f64 / window.as_secs_f64())
            .collect();
        (rate, fps, cpu)
    };
    subscribers.push(publish(rooms[0]).await);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (one, _, cpu_one) = measure(&subscribers, Duration::from_secs(5)).await;
    for room in &rooms[1..] {
        subscribers.push(publish(room).await);
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let window = Instant::now();
    let (five, fps, cpu_five) = measure(&subscribers, Duration::from_secs(5)).await;
    let kbps = encoder_kbps(&dash).await;
    let reply = dash.request("get_state", json!({})).await.expect("state");
    println!(
        "server fan-out over 4 Mbit/s: box egress {:.0} kbit/s with 1 room, {:.0} kbit/s with 5 rooms ({:.2}x); decoded fps per room {fps:.1?}; encoder {kbps:?} kbit/s; tbf drops {}; agent CPU {cpu_one:.1} % of a core with 1 room, {cpu_five:.1} % with 5",
        one * 8.0 / 1000.0,
        five * 8.0 / 1000.0,
        five / one,
        net.uplink_drops()
    );
    for stream in reply["result"]["publishing"]
        .as_array()
        .into_iter()
        .flatten()
    {
        assert_eq!(stream["fanout"], "server", "{stream}");
    }
    assert!(
        five < one * 1.3,
        "five rooms cost the uplink {five:.0} B/s against {one:.0} B/s for one; agent log:\n{}",
        agent.log()
    );
    for (room, (fps, subscriber)) in rooms.iter().zip(fps.iter().zip(&subscribers)) {
        assert!(*fps >= 25.0, "{room} decoded {fps:.1} fps");
        assert!(
            subscriber.seen.max_gap_after(window) < Duration::from_millis(500),
            "{room}"
        );
    }
    assert!(
        kbps.is_some_and(|k| k >= 1800),
        "the encoder came down to {kbps:?} kbit/s with one copy on a 4 Mbit/s uplink"
    );
    dash.close().await;
    drop(agent);
}
