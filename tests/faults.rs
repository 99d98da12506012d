//! Faults against the real services, in the private network namespace: Janus killed
//! and restarted, the broker killed and restarted, the camera failing mid-stream, one
//! room's Janus handle failing alone, and the agent itself killed with SIGKILL over and
//! over. Each test prints its recovery times. Together they take about two minutes.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use roomcast::config::Config;
use roomcast::control::Control;
use roomcast::control::client::CommandClient;
use roomcast::engine::{
    Channel, ErrorCode, Event, PublisherConfig, PublisherState, RoomStateReason, User,
};
use roomcast::media::SourceFault;
use serde_json::{Value, json};
use support::agent::TestAgent;
use support::dashboard::{dashboard, ok, topics, wait_online};
use support::janus::Janus;
use support::mosquitto::Mosquitto;
use support::mqtt::Observer;
use support::peers::Subscriber;
use support::process::{AgentProcess, Options, config_text};

fn user() -> User {
    User::parse("box-17", "Room 101 camera").unwrap()
}

fn in_room(room: &str) -> PublisherConfig {
    PublisherConfig {
        room_id: Some(room.into()),
    }
}

/// A command with a short timeout: `None` when the agent did not answer in time.
async fn try_call(dash: &CommandClient, op: &str, args: Value) -> Option<Value> {
    match tokio::time::timeout(Duration::from_secs(3), dash.request(op, args)).await {
        Ok(Ok(reply)) => Some(reply),
        _ => None,
    }
}

fn all_up(state: &Value, rooms: &[&str], publishing: &[&str]) -> bool {
    let Some(list) = state["rooms"].as_array() else {
        return false;
    };
    let Some(streams) = state["publishing"].as_array() else {
        return false;
    };
    list.len() == rooms.len()
        && rooms.iter().all(|r| {
            list.iter()
                .any(|x| x["room_id"] == *r && x["state"] == "Logined")
        })
        && publishing.iter().all(|s| {
            streams
                .iter()
                .any(|x| x["stream_id"] == *s && x["state"] == "Publishing")
        })
}

/// Polls get_state until every room is Logined and every stream Publishing.
async fn wait_up(
    dash: &CommandClient,
    rooms: &[&str],
    publishing: &[&str],
    within: Duration,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        if let Some(reply) = try_call(dash, "get_state", json!({})).await
            && all_up(&reply["result"], rooms, publishing)
        {
            return reply["result"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "rooms {rooms:?} and streams {publishing:?} not all up within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `(VmRSS in KiB, threads, open fds)` of a process.
fn resources(pid: i32) -> (u64, u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    (field("VmRSS:"), field("Threads:"), fds)
}

/// Janus is killed (SIGKILL) and restarted ten times while the agent is in five rooms,
/// publishing into each: every time, all five rooms come back to Logined and
/// Publishing, and the agent does not grow (no leaked pipelines, peers or handles).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn janus_killed_and_restarted_ten_times_with_five_rooms_live() {
    let mut janus = Janus::start();
    let broker = Mosquitto::start();
    let text = config_text(&broker.url(), &janus.ws_url(), Path::new("@STATE@"), "");
    let agent = AgentProcess::start(&text, Options::default());
    wait_online(broker.port).await;
    let dash = dashboard(&broker.url()).await;
    let rooms = ["bigclass", "group-1", "group-2", "group-3", "group-4"];
    let streams: Vec<String> = rooms.iter().map(|r| format!("cam-{r}")).collect();
    let streams: Vec<&str> = streams.iter().map(String::as_str).collect();
    for (room, stream) in rooms.iter().zip(&streams) {
        ok(&dash, "login_room", json!({"room_id": room})).await;
        ok(
            &dash,
            "start_publishing",
            json!({"stream_id": stream, "room_id": room}),
        )
        .await;
    }
    wait_up(&dash, &rooms, &streams, Duration::from_secs(20)).await;
    // Recovery is watched through the events topic, not by polling get_state: every
    // command's reply is remembered for deduplication, and polling would grow the very
    // memory this test measures.
    let mut events = Observer::connect(broker.port, "janus-fault-events").await;
    events.subscribe(&topics().events).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    events.drain();
    let state_file = std::fs::read(agent.state_dir.join("state.json")).unwrap();
    let before = resources(agent.pid());
    println!(
        "before: RSS {} KiB, {} threads, {} fds",
        before.0, before.1, before.2
    );

    // ROOMCAST_JANUS_CYCLES=50 makes it a soak test.
    let cycles: usize = std::env::var("ROOMCAST_JANUS_CYCLES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10)
        .max(2);
    let mut recoveries = Vec::new();
    let mut after = Vec::new();
    for cycle in 1..=cycles {
        let killed = Instant::now();
        janus.restart();
        let listening = killed.elapsed();
        let mut room_state = std::collections::BTreeMap::new();
        let mut stream_state = std::collections::BTreeMap::new();
        let recovered = loop {
            let message = events
                .next_where(Duration::from_secs(60), |_| true)
                .await
                .unwrap_or_else(|| panic!("cycle {cycle}: no recovery within 60 s"));
            let event = message.json();
            let room = event["room_id"].as_str().unwrap_or_default().to_owned();
            match event["event"].as_str() {
                Some("room_state_changed") => {
                    room_state.insert(
                        room,
                        event["reason"].as_str().unwrap_or_default().to_owned(),
                    );
                }
                Some("publisher_state_update") => {
                    let stream = event["stream_id"].as_str().unwrap_or_default().to_owned();
                    stream_state.insert(
                        stream,
                        event["state"].as_str().unwrap_or_default().to_owned(),
                    );
                }
                _ => {}
            }
            let rooms_back =
                room_state.len() == rooms.len() && room_state.values().all(|r| r == "Reconnected");
            let streams_back = stream_state.len() == streams.len()
                && stream_state.values().all(|s| s == "Publishing");
            if rooms_back && streams_back {
                break killed.elapsed();
            }
        };
        // Confirmed by one state read.
        wait_up(&dash, &rooms, &streams, Duration::from_secs(5)).await;
        recoveries.push(recovered);
        // Let closed branches finish tearing down before measuring.
        // Closed branches finish tearing down, and the agent's memory housekeeping runs
        // once things are quiet (service::memory): 4 s.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let used = resources(agent.pid());
        println!(
            "Janus restart {cycle:2}: Janus listening after {:4} ms, 5 rooms Logined and Publishing after {:5} ms; RSS {} KiB, {} threads, {} fds",
            listening.as_millis(),
            recovered.as_millis(),
            used.0,
            used.1,
            used.2
        );
        after.push(used);
    }
    let mut sorted = recoveries.clone();
    sorted.sort();
    println!(
        "recovery after a Janus restart, 5 rooms: min {} ms, median {} ms, max {} ms",
        sorted[0].as_millis(),
        sorted[sorted.len() / 2].as_millis(),
        sorted[sorted.len() - 1].as_millis()
    );
    let (first, last) = (after[0], after[cycles - 1]);
    let growth = last.0 as f64 / first.0 as f64 - 1.0;
    println!(
        "RSS after the 1st restart {} KiB, after the {cycles}th {} KiB ({:+.1} %); threads {} -> {}; fds {} -> {}",
        first.0,
        last.0,
        growth * 100.0,
        first.1,
        last.1,
        first.2,
        last.2
    );
    // What a leak looks like, next to what the allocator does. A leaked publisher branch
    // costs ~1.5 MiB and a room's TextRoom peer ~0.85 MiB (benches/media.rs, section 4),
    // each with its threads and sockets, which the checks below count. What RSS does
    // instead is glibc fragmentation across its per-thread arenas: the heap glibc holds
    // grows while the live heap barely does (`./scripts/bench.sh churn 30 5 3 restart`
    // prints both; heaptrack on it: live heap +70 KiB per restart, buffers in flight and
    // per-thread crypto state of libnice and NSS), fast over the first restarts and then
    // slower. So the check is the mean growth per restart over the second half, not the
    // total from the first.
    let half = cycles / 2;
    let per_restart_kib = (last.0 as f64 - after[half - 1].0 as f64) / (cycles - half) as f64;
    println!(
        "RSS growth per restart over restarts {half}..{cycles}: {per_restart_kib:.0} KiB (one leaked publisher branch per restart: ~1.5 MiB)"
    );
    assert!(
        per_restart_kib <= 1024.0,
        "RSS grew {per_restart_kib:.0} KiB per restart over the second half: something is kept per reconnect"
    );
    assert!(last.1 <= first.1 + 4, "threads {} -> {}", first.1, last.1);
    assert!(last.2 <= first.2 + 8, "fds {} -> {}", first.2, last.2);
    // Media really flows after the tenth restart, and nothing was written meanwhile
    // (reconnecting changes no desired state: the SD card is not worn by outages).
    let subscriber = Subscriber::start(&janus.ws_url(), "group-3", "cam-group-3").await;
    subscriber.wait_frames(15, Duration::from_secs(10)).await;
    assert_eq!(
        std::fs::read(agent.state_dir.join("state.json")).unwrap(),
        state_file
    );
    dash.close().await;
}

/// The broker is killed and comes back after a few seconds: control comes back, and no
/// room notices (no room or stream event, the same participants in Janus, media
/// flowing throughout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_and_restarted_disturbs_no_room() {
    let janus = Janus::start();
    let mut broker = Mosquitto::start();
    let dir = support::TempDir::new("broker-fault");
    let text = config_text(&broker.url(), &janus.ws_url(), dir.path(), "");
    let config = Config::parse(&text, Path::new("broker-fault.toml")).expect("config");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let agent = roomcast::Agent::start(&config, shutdown.clone()).expect("agent");
    let control = Control::new(&config)
        .expect("control")
        .start(agent.engine.clone());
    wait_online(broker.port).await;
    let dash = dashboard(&broker.url()).await;
    let rooms = ["bigclass", "group-3"];
    support::dashboard::publish_in_rooms(&dash, &rooms).await;
    dash.close().await;
    let participants = async || {
        let mut ids = Vec::new();
        for room in rooms {
            for p in janus.videoroom_participants(room).await {
                ids.push(format!("{room}/{}", p["id"]));
            }
        }
        ids.sort();
        ids
    };
    let ids_before = participants().await;
    let packets_before = janus
        .video_packets_in("bigclass", "cam-bigclass")
        .await
        .unwrap();
    let mut events = agent.engine.subscribe();

    let killed = Instant::now();
    broker.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let packets_during = janus
        .video_packets_in("bigclass", "cam-bigclass")
        .await
        .unwrap();
    broker.restart();
    wait_online(broker.port).await;
    let back = killed.elapsed();
    let dash = dashboard(&broker.url()).await;
    let state = ok(&dash, "get_state", json!({})).await;
    assert!(
        all_up(&state, &rooms, &["cam-bigclass", "cam-group-3"]),
        "{state}"
    );
    println!(
        "broker down 3 s: control online again {} ms after the kill; Janus got {} video packets from bigclass meanwhile",
        back.as_millis(),
        packets_during - packets_before
    );
    assert!(packets_during > packets_before + 20, "media kept flowing");
    let mut disturbed = Vec::new();
    while let Ok(event) = events.try_recv() {
        if matches!(
            event,
            Event::RoomStateChanged { .. }
                | Event::PublisherStateUpdate { .. }
                | Event::PlayerStateUpdate { .. }
        ) {
            disturbed.push(event);
        }
    }
    assert!(disturbed.is_empty(), "rooms disturbed: {disturbed:?}");
    assert_eq!(participants().await, ids_before, "the same participants");
    dash.close().await;
    shutdown.cancel();
    agent.stopped(std::time::Duration::from_secs(4)).await;
    control.stop(Duration::from_secs(3)).await;
}

/// The camera fails mid-stream and stays away for 3 s: the rooms stay logged in,
/// publisher_state_update reports 1003901, the pipeline is rebuilt with backoff, and
/// publishing resumes (frames reach a subscriber again) once the camera is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_camera_is_rebuilt_with_backoff_and_publishing_resumes() {
    let janus = Janus::start();
    let mut agent = TestAgent::start(
        &janus.ws_url(),
        "width = 320\nheight = 240\nframerate = 15\n",
    );
    for room in ["bigclass", "group-3"] {
        agent.engine.login_room(room, user(), None).await.unwrap();
        agent
            .engine
            .start_publishing(&format!("cam-{room}"), in_room(room), Channel::Main)
            .await
            .unwrap();
    }
    let media = agent.agent.as_ref().unwrap().media.clone();

    // A short failure: the source posts an error and is rebuilt at once.
    while agent.events.try_recv().is_ok() {}
    let failed = Instant::now();
    media.inject_source_error(Channel::Main).unwrap();
    let mut up = std::collections::BTreeSet::new();
    while up.len() < 2 {
        let event = agent
            .wait_event("publishing again", Duration::from_secs(20), |e| {
                matches!(
                    e,
                    Event::PublisherStateUpdate {
                        state: PublisherState::Publishing,
                        ..
                    }
                )
            })
            .await;
        if let Event::PublisherStateUpdate { stream_id, .. } = event {
            up.insert(stream_id.to_string());
        }
    }
    println!(
        "capture error: both streams Publishing again {} ms after it",
        failed.elapsed().as_millis()
    );

    // The camera is unplugged for 3 s.
    while agent.events.try_recv().is_ok() {}
    let subscriber = Subscriber::start(&janus.ws_url(), "bigclass", "cam-bigclass").await;
    subscriber.wait_frames(10, Duration::from_secs(10)).await;
    let unplugged = Instant::now();
    media
        .inject_source_fault(
            Channel::Main,
            SourceFault::Unavailable(Duration::from_secs(3)),
        )
        .unwrap();
    let mut failures: Vec<(Instant, u32, String)> = Vec::new();
    let mut room_events = Vec::new();
    let mut up = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while up.len() < 2 {
        let event = tokio::time::timeout_at(deadline.into(), agent.events.recv())
            .await
            .expect("publishing resumes within 30 s")
            .expect("events");
        match event {
            Event::PublisherStateUpdate {
                stream_id,
                state,
                error_code,
                error_message,
                ..
            } => match state {
                PublisherState::Publishing => {
                    up.insert(stream_id.to_string());
                }
                _ if error_code != ErrorCode::NONE => failures.push((
                    Instant::now(),
                    error_code.as_u32(),
                    format!("{stream_id}: {}", error_message.unwrap_or_default()),
                )),
                _ => {}
            },
            Event::RoomStateChanged { .. } => room_events.push(event),
            _ => {}
        }
    }
    let resumed = unplugged.elapsed();
    assert!(
        room_events.is_empty(),
        "rooms stayed logged in: {room_events:?}"
    );
    assert!(!failures.is_empty());
    assert!(
        failures.iter().all(|(_, code, _)| *code == 1003901),
        "every failure is 1003901: {failures:?}"
    );
    let first_stream: Vec<Instant> = failures
        .iter()
        .filter(|(_, _, m)| m.starts_with("cam-bigclass:"))
        .map(|(t, _, _)| *t)
        .collect();
    let gaps: Vec<u128> = first_stream
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    println!(
        "camera away 3 s: {} failure events (all 1003901), cam-bigclass retried after gaps of {gaps:?} ms, both streams Publishing again {} ms after the unplug",
        failures.len(),
        resumed.as_millis()
    );
    for (_, _, message) in failures.iter().take(3) {
        println!("  {message}");
    }
    assert!(
        first_stream.len() >= 3,
        "several attempts while away: {failures:?}"
    );
    assert!(
        gaps.windows(2).any(|g| g[1] > g[0]),
        "the retries back off: {gaps:?}"
    );
    assert!(resumed >= Duration::from_secs(3));
    let state = agent.engine.state().await.unwrap();
    assert!(
        state
            .rooms
            .iter()
            .all(|r| r.state == roomcast::engine::RoomState::Logined)
    );
    // Frames reach the room again.
    let again = Subscriber::start(&janus.ws_url(), "bigclass", "cam-bigclass").await;
    again.wait_frames(15, Duration::from_secs(10)).await;
    drop(subscriber);
    agent.stop().await;
}

/// One room's VideoRoom presence handle is detached by Janus (Admin API
/// `detach_handle`): that room alone reconnects; the other rooms and their streams see
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_rooms_handle_failing_reconnects_only_that_room() {
    let janus = Janus::start();
    let mut agent = TestAgent::start(
        &janus.ws_url(),
        "width = 320\nheight = 240\nframerate = 15\n",
    );
    let rooms = ["bigclass", "group-3", "group-4"];
    for room in rooms {
        agent.engine.login_room(room, user(), None).await.unwrap();
        agent
            .engine
            .start_publishing(&format!("cam-{room}"), in_room(room), Channel::Main)
            .await
            .unwrap();
    }
    let handles = janus.handles().await;
    // The presence participant: in group-3, not the published stream.
    let presence = handles
        .iter()
        .find(|(_, _, info)| {
            let plugin = &info["plugin_specific"];
            info["plugin"] == "janus.plugin.videoroom"
                && plugin["room"] == "group-3"
                && plugin["type"] == "publisher"
                && plugin["id"] != "cam-group-3"
        })
        .map(|(s, h, _)| (*s, *h))
        .unwrap_or_else(|| {
            panic!(
                "no presence handle in group-3: {:#?}",
                handles
                    .iter()
                    .map(|(_, _, i)| (&i["plugin"], &i["plugin_specific"]))
                    .collect::<Vec<_>>()
            )
        });
    while agent.events.try_recv().is_ok() {}
    let failed = Instant::now();
    let answer = janus
        .admin(
            &format!("/{}/{}", presence.0, presence.1),
            json!({"janus": "detach_handle"}),
        )
        .await;
    assert_eq!(answer["janus"], "success", "{answer}");
    let mut seen = Vec::new();
    let mut back = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while back.is_none() || Instant::now() < back.unwrap() + Duration::from_secs(2) {
        let wait = match back {
            Some(t) => t + Duration::from_secs(2),
            None => deadline,
        };
        match tokio::time::timeout_at(wait.into(), agent.events.recv()).await {
            Ok(Ok(event)) => {
                if back.is_none()
                    && matches!(
                        &event,
                        Event::PublisherStateUpdate { room_id, state: PublisherState::Publishing, .. }
                            if room_id.as_str() == "group-3"
                    )
                {
                    back = Some(Instant::now());
                }
                seen.push(event);
            }
            Ok(Err(e)) => panic!("events: {e}"),
            Err(_) if back.is_some() => break,
            Err(_) => panic!("group-3 did not come back within 30 s: {seen:?}"),
        }
    }
    let recovered = back.unwrap() - failed;
    let others: Vec<&Event> = seen
        .iter()
        .filter(|e| {
            e.room_id().as_str() != "group-3"
                && matches!(
                    e,
                    Event::RoomStateChanged { .. } | Event::PublisherStateUpdate { .. }
                )
        })
        .collect();
    assert!(others.is_empty(), "other rooms disturbed: {others:?}");
    let reasons: Vec<RoomStateReason> = seen
        .iter()
        .filter_map(|e| match e {
            Event::RoomStateChanged { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        [RoomStateReason::Reconnecting, RoomStateReason::Reconnected],
        "{seen:?}"
    );
    println!(
        "group-3's presence handle detached: group-3 Reconnected and publishing again after {} ms; bigclass and group-4 untouched",
        recovered.as_millis()
    );

    // A published stream's own handle: only that stream is restarted, its room stays.
    let publisher = janus
        .handles()
        .await
        .into_iter()
        .find(|(_, _, info)| info["plugin_specific"]["id"] == "cam-group-4")
        .map(|(s, h, _)| (s, h))
        .expect("the cam-group-4 publisher handle");
    while agent.events.try_recv().is_ok() {}
    let failed = Instant::now();
    let answer = janus
        .admin(
            &format!("/{}/{}", publisher.0, publisher.1),
            json!({"janus": "detach_handle"}),
        )
        .await;
    assert_eq!(answer["janus"], "success", "{answer}");
    let mut seen = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(30), agent.events.recv())
            .await
            .expect("cam-group-4 back within 30 s")
            .expect("events");
        let done = matches!(
            &event,
            Event::PublisherStateUpdate { stream_id, state: PublisherState::Publishing, .. }
                if stream_id.as_str() == "cam-group-4"
        );
        seen.push(event);
        if done {
            break;
        }
    }
    let recovered = failed.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    while let Ok(event) = agent.events.try_recv() {
        seen.push(event);
    }
    let unrelated: Vec<&Event> = seen
        .iter()
        .filter(|e| match e {
            Event::PublisherStateUpdate { stream_id, .. } => stream_id.as_str() != "cam-group-4",
            Event::RoomStateChanged { .. } => true,
            _ => false,
        })
        .collect();
    assert!(
        unrelated.is_empty(),
        "only cam-group-4 moved: {unrelated:?}"
    );
    println!(
        "cam-group-4's publisher handle detached: publishing again after {} ms; no room state changed",
        recovered.as_millis()
    );
    agent.stop().await;
}

/// The agent is killed with SIGKILL 20 times at random moments while a dashboard keeps
/// it busy — half of the kills land while it is still restoring its rooms. Every time,
/// the state file is readable and names the same three rooms, and every restart that is
/// given the time comes back to those rooms, Logined and publishing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_twenty_times_under_activity_comes_back_to_the_same_rooms() {
    use rand::RngExt;
    let janus = Janus::start();
    let broker = Mosquitto::start();
    let text = config_text(&broker.url(), &janus.ws_url(), Path::new("@STATE@"), "");
    let mut agent = AgentProcess::start(&text, Options::default());
    wait_online(broker.port).await;
    let dash = dashboard(&broker.url()).await;
    let rooms = ["bigclass", "group-3", "group-4"];
    for room in rooms {
        ok(&dash, "login_room", json!({"room_id": room})).await;
    }
    ok(
        &dash,
        "start_publishing",
        json!({"stream_id": "cam", "room_id": "bigclass"}),
    )
    .await;
    wait_up(&dash, &rooms, &["cam"], Duration::from_secs(20)).await;

    // Activity: a stream started and stopped in group-3, messages, state reads.
    let busy = dashboard(&broker.url()).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let activity = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut commands = 0u32;
            while !stop.is_cancelled() {
                let _ = try_call(
                    &busy,
                    "start_publishing",
                    json!({"stream_id": "extra", "room_id": "group-3"}),
                )
                .await;
                let _ = try_call(
                    &busy,
                    "send_broadcast_message",
                    json!({"room_id": "group-4", "message": format!("tick {commands}")}),
                )
                .await;
                let _ = try_call(&busy, "get_state", json!({})).await;
                let _ = try_call(&busy, "stop_publishing", json!({"stream_id": "extra"})).await;
                commands += 4;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            busy.close().await;
            commands
        })
    };

    let mut back_times = Vec::new();
    let mut early_kills = 0;
    for kill in 1..=20 {
        let early = kill % 2 == 1;
        if early {
            // Mid-restore: a moment after the start.
            let wait = rand::rng().random_range(50..800);
            tokio::time::sleep(Duration::from_millis(wait)).await;
            early_kills += 1;
        } else {
            let (_, took) = (
                wait_up(&dash, &rooms, &["cam"], Duration::from_secs(30)).await,
                agent.started.elapsed(),
            );
            back_times.push(took);
            let wait = rand::rng().random_range(100..2000);
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
        agent.kill9();
        let saved = agent.state_file();
        let saved_rooms: Vec<&str> = saved.rooms.iter().map(|r| r.room_id.as_str()).collect();
        assert_eq!(
            saved_rooms, rooms,
            "kill {kill}: the state file names the same rooms"
        );
        assert!(
            saved
                .publishing
                .iter()
                .any(|p| p.stream_id.as_str() == "cam"),
            "kill {kill}: {saved:?}"
        );
        agent.spawn();
    }
    let (_, last) = (
        wait_up(&dash, &rooms, &["cam"], Duration::from_secs(30)).await,
        agent.started.elapsed(),
    );
    back_times.push(last);
    stop.cancel();
    let commands = activity.await.unwrap();
    let mut sorted = back_times.clone();
    sorted.sort();
    println!(
        "20 × SIGKILL ({early_kills} while restoring), {commands} commands sent meanwhile: the state file was readable with the same 3 rooms every time; {} restarts waited for came back to all 3 rooms Logined and publishing in min {} ms, median {} ms, max {} ms after the process started",
        sorted.len(),
        sorted[0].as_millis(),
        sorted[sorted.len() / 2].as_millis(),
        sorted[sorted.len() - 1].as_millis()
    );
    for room in rooms {
        let users = janus.textroom_participants(room).await;
        assert_eq!(users.len(), 1, "{room}: one box-17, no ghosts: {users:?}");
    }
    dash.close().await;
}
