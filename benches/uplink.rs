//! The uplink benchmark (issue 17). Run with `./scripts/bench.sh uplink` (it builds, then
//! runs this inside the private network namespace). The release agent runs in a network
//! namespace of its own behind `tc tbf` on its egress (`tests/support/uplink.rs`); Janus,
//! mosquitto and one independent subscriber per room (reading the BLK1 stamps) run in
//! the bench's namespace. Source: 1280x720 30 fps test pattern, encoder at 2000 kbit/s.
//! Prints, in one run:
//!
//! 1. 5 rooms, device fan-out, 4 Mbit/s uplink: per room over 20 s starting 15 s after
//!    start_publishing: decoded fps, capture→decoded p50/p95, longest gap between
//!    decoded frames; the box's egress, the tbf drops and the encoder's bitrate.
//! 2. 3 rooms, uplink 8 → 2 → 8 Mbit/s: seconds until every room decodes ≥ 20 fps again
//!    after the drop, and until the encoder is back at its configured bitrate after the
//!    rise.
//!
//! 3. One room, UDP blocked by the school's firewall, TURN over TCP (coturn; with
//!    `ice_transport_policy` "all" and "relay") against the same box on an open network
//!    (direct UDP), one after the other in one run:
//!    start_publishing → first frame decoded by a subscriber waiting in the room, and
//!    capture→decoded p50/p95 over 10 s; the two relayed cases again with Janus
//!    advertising only its address on the box's link (`nat.ice_enforce_list`).
//!
//! 4. Server fan-out (`rooms.fanout = "server"`): box egress with 5 rooms ÷ with 1 room
//!    over a 4 Mbit/s uplink, every room's fps, the encoder's bitrate; and on an
//!    unshaped link capture→decoded p50 of 5 rooms relayed against 5 rooms device
//!    fan-out.
//!
//! `ROOMCAST_BENCH_ONLY=N` runs section N alone.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use roomcast::control::client::CommandClient;
use serde_json::json;
use support::dashboard::{dashboard, ok, wait_online};
use support::janus::Janus;
use support::mosquitto::Mosquitto;
use support::peers::Subscriber;
use support::process::{AgentProcess, Options, config_text};
use support::turn::Coturn;
use support::uplink::BoxNet;

const WINDOW: Duration = Duration::from_secs(20);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let only = std::env::var("ROOMCAST_BENCH_ONLY").ok();
    let run = |n: &str| only.as_deref().is_none_or(|o| o == n);
    runtime.block_on(async {
        if run("1") {
            section_1().await;
        }
        if run("2") {
            section_2().await;
        }
        if run("3") {
            section_3().await;
        }
        if run("4") {
            section_4().await;
        }
    });
}

/// The box, its services and its rooms.
struct Setup {
    net: BoxNet,
    janus: Janus,
    _broker: Mosquitto,
    agent: AgentProcess,
    dash: CommandClient,
    subscribers: Vec<(String, Subscriber)>,
}

async fn setup(rooms: usize, uplink_kbit: u32, fanout: &str) -> (Setup, Instant) {
    let net = BoxNet::create();
    let janus = Janus::start_at(&net.host_addr, "");
    let broker = Mosquitto::start_also_on(&net.host_addr);
    // 0: an unshaped link.
    if uplink_kbit > 0 {
        net.limit_uplink(uplink_kbit);
    }
    let text = config_text(
        &broker.url_at(&net.host_addr),
        &janus.ws_url(),
        Path::new("@STATE@"),
        "",
    )
    .replace(
        "width = 320\nheight = 240\nframerate = 15",
        "width = 1280\nheight = 720\nframerate = 30",
    )
    .replace(
        "max_rooms = 5",
        &format!("max_rooms = 5\nfanout = \"{fanout}\""),
    );
    let agent = AgentProcess::start(
        &text,
        Options {
            netns_pid: Some(net.pid()),
            ..Options::default()
        },
    );
    wait_online(broker.port).await;
    let dash = dashboard(&broker.url()).await;
    let names: Vec<String> = (1..=rooms).map(|i| format!("room{i}")).collect();
    let started = Instant::now();
    support::dashboard::publish_in_rooms(&dash, &names).await;
    let mut subscribers = Vec::new();
    for room in &names {
        let subscriber = Subscriber::wait_for(
            &janus.ws_url(),
            room,
            &format!("cam-{room}"),
            Duration::from_secs(20),
        )
        .await;
        subscribers.push((room.clone(), subscriber));
    }
    (
        Setup {
            net,
            janus,
            _broker: broker,
            agent,
            dash,
            subscribers,
        },
        started,
    )
}

async fn encoder_kbps_now(dash: &CommandClient) -> Option<u64> {
    let reply = dash.request("get_state", json!({})).await.ok()?;
    reply["result"]["sources"][0]["bitrate_kbps"].as_u64()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// What one room's subscriber saw over a window.
struct RoomFigures {
    fps: f64,
    p50_ms: f64,
    p95_ms: f64,
    longest_gap: Duration,
}

/// What the box and every room's subscriber did over `window`, starting at `from`:
/// box egress kbit/s, tbf drops, the encoder's bitrate sampled every second (sorted),
/// and per room.
struct WindowFigures {
    egress_kbit: f64,
    drops: u64,
    encoder_kbps: Vec<u64>,
    rooms: Vec<RoomFigures>,
}

async fn measure(setup: &Setup, from: Instant, window: Duration) -> WindowFigures {
    tokio::time::sleep_until(from.into()).await;
    let frames0: Vec<u64> = setup
        .subscribers
        .iter()
        .map(|(_, s)| s.seen.frames())
        .collect();
    let lat0: Vec<usize> = setup
        .subscribers
        .iter()
        .map(|(_, s)| s.seen.latencies_ms.lock().unwrap().len())
        .collect();
    let (egress0, drops0) = (setup.net.egress_bytes(), setup.net.uplink_drops());
    let mut encoder_kbps = Vec::new();
    let until = Instant::now() + window;
    while Instant::now() < until {
        if let Some(kbps) = encoder_kbps_now(&setup.dash).await {
            encoder_kbps.push(kbps);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    encoder_kbps.sort_unstable();
    let seconds = window.as_secs_f64();
    let rooms = setup
        .subscribers
        .iter()
        .enumerate()
        .map(|(i, (_, s))| {
            let mut latencies: Vec<f64> = s.seen.latencies_ms.lock().unwrap()[lat0[i]..].to_vec();
            latencies.sort_by(f64::total_cmp);
            RoomFigures {
                fps: (s.seen.frames() - frames0[i]) as f64 / seconds,
                p50_ms: percentile(&latencies, 0.5),
                p95_ms: percentile(&latencies, 0.95),
                longest_gap: s.seen.max_gap_after(from),
            }
        })
        .collect();
    WindowFigures {
        egress_kbit: (setup.net.egress_bytes() - egress0) as f64 * 8.0 / 1000.0 / seconds,
        drops: setup.net.uplink_drops() - drops0,
        encoder_kbps,
        rooms,
    }
}

async fn section_1() {
    println!("== 1. 5 rooms, device fan-out, 4 Mbit/s uplink, 720p30 at 2000 kbit/s ==");
    let (setup, started) = setup(5, 4000, "device").await;
    let figures = measure(&setup, started + Duration::from_secs(15), WINDOW).await;
    println!(
        "{:<8} {:>8} {:>9} {:>9} {:>12}",
        "room", "fps", "p50 ms", "p95 ms", "max gap ms"
    );
    for ((room, _), r) in setup.subscribers.iter().zip(&figures.rooms) {
        println!(
            "{room:<8} {:>8.1} {:>9.0} {:>9.0} {:>12}",
            r.fps,
            r.p50_ms,
            r.p95_ms,
            r.longest_gap.as_millis()
        );
    }
    let encoder = &figures.encoder_kbps;
    println!(
        "box egress {:.0} kbit/s (uplink 4000), tbf drops {} packets in the window, encoder kbit/s min {} median {} max {}",
        figures.egress_kbit,
        figures.drops,
        encoder.first().copied().unwrap_or(0),
        encoder.get(encoder.len() / 2).copied().unwrap_or(0),
        encoder.last().copied().unwrap_or(0),
    );
    drop(setup.agent);
    drop(setup.janus);
}

async fn section_2() {
    println!("== 2. 3 rooms, uplink 8 -> 2 -> 8 Mbit/s, 720p30 at 2000 kbit/s ==");
    let (setup, _) = setup(3, 8000, "device").await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    println!(
        "before the drop: encoder {} kbit/s",
        encoder_kbps_now(&setup.dash).await.unwrap_or(0)
    );
    setup.net.limit_uplink(2000);
    let dropped = Instant::now();
    // Per second: every room's decoded frames in that second.
    let mut last: Vec<u64> = setup
        .subscribers
        .iter()
        .map(|(_, s)| s.seen.frames())
        .collect();
    let mut recovered = None;
    let mut fell = false;
    while dropped.elapsed() < Duration::from_secs(40) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now: Vec<u64> = setup
            .subscribers
            .iter()
            .map(|(_, s)| s.seen.frames())
            .collect();
        let fps: Vec<u64> = now.iter().zip(&last).map(|(n, l)| n - l).collect();
        last = now;
        println!(
            "  +{:>2.0} s after the drop: fps per room {fps:?}, encoder {} kbit/s",
            dropped.elapsed().as_secs_f64(),
            encoder_kbps_now(&setup.dash).await.unwrap_or(0)
        );
        if fps.iter().any(|f| *f < 20) {
            fell = true;
            recovered = None;
        } else if recovered.is_none() {
            recovered = Some(dropped.elapsed());
        }
        if recovered.is_some_and(|r| dropped.elapsed() > r + Duration::from_secs(10)) {
            break;
        }
    }
    match recovered {
        Some(at) if fell => println!(
            "every room >= 20 fps again {:.1} s after the drop to 2 Mbit/s (and stayed so)",
            at.as_secs_f64() - 1.0
        ),
        Some(_) => println!("no room fell under 20 fps after the drop to 2 Mbit/s"),
        None => println!("rooms still under 20 fps 40 s after the drop"),
    }
    setup.net.limit_uplink(8000);
    let rose = Instant::now();
    let mut back = None;
    while rose.elapsed() < Duration::from_secs(90) {
        if encoder_kbps_now(&setup.dash).await == Some(2000) {
            back = Some(rose.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    match back {
        Some(at) => println!(
            "encoder back at 2000 kbit/s {:.1} s after the rise to 8 Mbit/s",
            at.as_secs_f64()
        ),
        None => println!(
            "encoder not back at 2000 kbit/s 90 s after the rise (at {} kbit/s)",
            encoder_kbps_now(&setup.dash).await.unwrap_or(0)
        ),
    }
    drop(setup.agent);
    drop(setup.janus);
}

/// One room, 720p30: the first frame and the latency through TURN over TCP with UDP
/// blocked (`relayed`), or directly.
async fn first_frame_and_latency(
    relayed: bool,
    relay_only: bool,
    enforcing: bool,
) -> (Duration, f64, f64) {
    let net = BoxNet::create();
    let janus = if enforcing {
        // Only the link to the box (10.78.N.1), not the namespace's other addresses.
        Janus::start_at_enforcing(&net.host_addr, &net.host_addr)
    } else {
        Janus::start_at(&net.host_addr, "")
    };
    let broker = Mosquitto::start_also_on(&net.host_addr);
    let relay = Coturn::start(&net.host_addr);
    let network = if relayed {
        net.block_udp();
        format!(
            "[network]\nturn_servers = [\"{}\"]\nice_transport_policy = \"{}\"\n",
            relay.url("tcp"),
            if relay_only { "relay" } else { "all" }
        )
    } else {
        String::new()
    };
    let text = config_text(
        &broker.url_at(&net.host_addr),
        &janus.ws_url(),
        Path::new("@STATE@"),
        &network,
    )
    .replace(
        "width = 320\nheight = 240\nframerate = 15",
        "width = 1280\nheight = 720\nframerate = 30",
    );
    let agent = AgentProcess::start(
        &text,
        Options {
            netns_pid: Some(net.pid()),
            ..Options::default()
        },
    );
    wait_online(broker.port).await;
    let dash = dashboard(&broker.url()).await;
    ok(&dash, "login_room", json!({"room_id": "room1"})).await;
    let waiting = {
        let url = janus.ws_url();
        tokio::spawn(async move {
            Subscriber::wait_for(&url, "room1", "cam-room1", Duration::from_secs(20)).await
        })
    };
    let asked = Instant::now();
    ok(
        &dash,
        "start_publishing",
        json!({"stream_id": "cam-room1", "room_id": "room1"}),
    )
    .await;
    let subscriber = waiting.await.expect("the subscriber task");
    let deadline = Instant::now() + Duration::from_secs(10);
    while subscriber.seen.first_frame().is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let first = subscriber
        .seen
        .first_frame()
        .map_or(Duration::MAX, |at| at.saturating_duration_since(asked));
    let before = subscriber.seen.latencies_ms.lock().unwrap().len();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mut latencies: Vec<f64> = subscriber.seen.latencies_ms.lock().unwrap()[before..].to_vec();
    latencies.sort_by(f64::total_cmp);
    drop(agent);
    (
        first,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.95),
    )
}

async fn section_3() {
    println!("== 3. 1 room, 720p30: TURN over TCP with UDP blocked vs direct UDP ==");
    println!(
        "{:<24} {:>22} {:>9} {:>9}",
        "path", "first frame after ms", "p50 ms", "p95 ms"
    );
    // Janus as the test bed starts it offers every address of its namespace; a server
    // configured for its network (`nat.ice_enforce_list`) offers the ones boxes and
    // relays reach.
    for (label, relayed, relay_only, enforcing) in [
        ("relay-tcp, policy all", true, false, false),
        ("relay-tcp, policy relay", true, true, false),
        ("direct udp", false, false, false),
        ("relay-tcp, all, enforced", true, false, true),
        ("relay-tcp, relay, enforced", true, true, true),
    ] {
        let (first, p50, p95) = first_frame_and_latency(relayed, relay_only, enforcing).await;
        println!(
            "{label:<24} {:>22} {p50:>9.0} {p95:>9.0}",
            first.as_millis()
        );
    }
}

/// Ten seconds from ten seconds after publishing.
async fn steady(setup: &Setup, started: Instant) -> WindowFigures {
    measure(
        setup,
        started + Duration::from_secs(10),
        Duration::from_secs(10),
    )
    .await
}

async fn section_4() {
    println!("== 4. Server fan-out, 720p30 at 2000 kbit/s ==");
    let (one, started) = setup(1, 4000, "server").await;
    let one_room = steady(&one, started).await;
    drop(one);
    let (five, started) = setup(5, 4000, "server").await;
    let five_rooms = steady(&five, started).await;
    drop(five);
    let (egress_1, egress_5) = (one_room.egress_kbit, five_rooms.egress_kbit);
    let fps_1: Vec<f64> = one_room.rooms.iter().map(|r| r.fps).collect();
    let fps_5: Vec<f64> = five_rooms.rooms.iter().map(|r| r.fps).collect();
    let encoder = five_rooms.encoder_kbps.last().copied().unwrap_or(0);
    println!(
        "4 Mbit/s uplink: box egress 1 room {egress_1:.0} kbit/s ({:.1} fps), 5 rooms {egress_5:.0} kbit/s = {:.2}x; fps per room {:?}; encoder {encoder} kbit/s",
        fps_1[0],
        egress_5 / egress_1,
        fps_5
            .iter()
            .map(|f| (f * 10.0).round() / 10.0)
            .collect::<Vec<_>>()
    );
    let (device, started) = setup(5, 0, "device").await;
    let p50_device: Vec<f64> = steady(&device, started)
        .await
        .rooms
        .iter()
        .map(|r| r.p50_ms)
        .collect();
    drop(device);
    let (server, started) = setup(5, 0, "server").await;
    let p50_server: Vec<f64> = steady(&server, started)
        .await
        .rooms
        .iter()
        .map(|r| r.p50_ms)
        .collect();
    drop(server);
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        percentile(v, 0.5)
    };
    println!(
        "unshaped link, 5 rooms: capture->decoded p50 device fan-out {:.1} ms, server fan-out {:.1} ms (median over rooms)",
        median(&mut p50_device.clone()),
        median(&mut p50_server.clone())
    );
}
