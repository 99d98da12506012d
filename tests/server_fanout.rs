//! Server-side fan-out (`rooms.fanout`) on a real Janus 1.1.2 with real GStreamer: the box
//! uploads a channel once, into its private carrier room, and Janus relays it into every
//! room as a remote publisher.

mod support;

use std::time::{Duration, Instant};

use roomcast::engine::{Channel, ErrorCode, Fanout, PublisherConfig, PublisherState, User};
use support::agent::TestAgent;
use support::janus::Janus;
use support::janus_ws::RawJanus;
use support::peers::Subscriber;

/// The carrier room's name starts so (then this run's tag).
const CARRIER_PREFIX: &str = "roomcast-carrier-box-17-";
const UPLOAD: &str = "carrier-main";

/// The carrier room `upload` is in now, from Janus's handles (it is private: not listed).
async fn carrier_of(janus: &Janus, upload: &str) -> Option<String> {
    janus.handles().await.into_iter().find_map(|(_, _, info)| {
        let plugin = &info["plugin_specific"];
        let room = plugin["room"].as_str()?;
        (room.starts_with(CARRIER_PREFIX) && plugin["id"] == upload).then(|| room.to_owned())
    })
}

fn user() -> User {
    User::parse("box-17", "Room 101 camera").unwrap()
}

fn in_room(room: &str) -> PublisherConfig {
    PublisherConfig {
        room_id: Some(room.into()),
    }
}

/// Three rooms, one upload: every room's own subscriber decodes the stream under its
/// usual id; Janus receives one copy from the box (in the carrier room, none in the
/// classroom rooms) and sends it on to each room; logging out of the first room (the one
/// whose publish set the upload up) leaves the others flowing; logging out of all takes
/// the relays, the upload and the carrier room away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_upload_is_relayed_into_every_room() {
    let janus = Janus::start();
    let agent = TestAgent::start_with(&janus.ws_url(), "fanout = \"server\"", "");
    let rooms = ["room-a", "room-b", "room-c"];
    for room in rooms {
        agent.engine.login_room(room, user(), None).await.unwrap();
    }
    let state = agent
        .engine
        .start_publishing("cam-room-a", in_room("room-a"), Channel::Main)
        .await
        .unwrap();
    assert_eq!(state, PublisherState::Publishing);
    let a = Subscriber::start(&janus.ws_url(), "room-a", "cam-room-a").await;
    a.wait_frames(30, Duration::from_secs(10)).await;
    let one_room = agent.send_rate("cam-room-a", Duration::from_secs(3)).await;

    for room in &rooms[1..] {
        agent
            .engine
            .start_publishing(&format!("cam-{room}"), in_room(room), Channel::Main)
            .await
            .unwrap();
    }
    let b = Subscriber::start(&janus.ws_url(), "room-b", "cam-room-b").await;
    let c = Subscriber::start(&janus.ws_url(), "room-c", "cam-room-c").await;
    for subscriber in [&a, &b, &c] {
        subscriber.wait_frames(60, Duration::from_secs(10)).await;
    }
    // A viewer joining a relayed stream gets a keyframe at once: its request (PLI) goes
    // through the relay back to the box's encoder, not waiting for the next periodic one.
    for (room, viewer) in [("room-b", &b), ("room-c", &c)] {
        let started = viewer.seen.started.lock().unwrap().expect("subscribed");
        let first = viewer.seen.first_frame().expect("a frame") - started;
        println!(
            "{room}: first frame {} ms after subscribing",
            first.as_millis()
        );
        assert!(first < Duration::from_millis(1000), "{room}: {first:?}");
    }
    assert_eq!(*b.seen.size.lock().unwrap(), Some((1280, 720)));
    assert!(
        !c.seen.latencies_ms.lock().unwrap().is_empty(),
        "relayed frames carry a readable BLK1 stamp"
    );

    // Every stream says how it is published, and shows the one upload's counters.
    let snapshot = agent.engine.state().await.unwrap();
    assert_eq!(snapshot.publishing.len(), 3);
    for p in &snapshot.publishing {
        assert_eq!(p.state, PublisherState::Publishing, "{p:?}");
        assert_eq!(p.fanout, Some(Fanout::Server), "{p:?}");
        // The one upload's quality, sampled by the time room-a's stream has run a while.
        if p.stream_id.as_str() == "cam-room-a" {
            let quality = p.quality.as_ref().expect("room-a's quality figures");
            assert!(quality.kbps_sent > 500, "{quality:?}");
        }
    }
    // In the classroom rooms the streams look as usual: listed under their ids, with the
    // box's display.
    for room in rooms {
        let participants = janus.videoroom_participants(room).await;
        let ours = participants
            .iter()
            .find(|p| p["id"] == format!("cam-{room}"))
            .unwrap_or_else(|| panic!("cam-{room} listed in {room}: {participants:?}"));
        assert_eq!(ours["publisher"], true, "{ours}");
        assert!(
            ours["display"]
                .as_str()
                .unwrap_or("")
                .contains("Room 101 camera"),
            "{ours}"
        );
    }

    // One copy on the box's uplink: the upload's rate did not grow with the rooms, and
    // Janus has one WebRTC publisher from the box (in the carrier room) and none in the
    // classroom rooms.
    let three_rooms = agent.send_rate("cam-room-a", Duration::from_secs(3)).await;
    let carrier = carrier_of(&janus, UPLOAD).await.expect("the carrier room");
    // Private to the box: listed nowhere, and no one can watch the upload without its pin
    // (the rooms it is relayed into may have pins of their own).
    let mut raw = RawJanus::connect(&janus.ws_url()).await;
    let peek = raw.attach("janus.plugin.videoroom").await;
    let refused = raw
        .message(
            peek,
            serde_json::json!({"request": "join", "ptype": "subscriber", "room": carrier,
                "streams": [{"feed": UPLOAD}]}),
            None,
        )
        .await;
    assert!(
        refused["plugindata"]["data"]["error_code"].is_i64(),
        "subscribing to the upload without the pin: {refused}"
    );
    let sample = async || {
        let upload = janus
            .packets_in(&carrier, UPLOAD, None)
            .await
            .expect("the upload in the carrier room");
        let mut out = Vec::new();
        for room in rooms {
            let sent = janus.packets_out_to_subscribers(room).await;
            assert_eq!(sent.len(), 1, "one subscriber in {room}: {sent:?}");
            out.push(sent[0]);
        }
        (upload, out)
    };
    let before = sample().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = sample().await;
    let upload = after.0 - before.0;
    let relayed: Vec<u64> = after.1.iter().zip(&before.1).map(|(a, b)| a - b).collect();
    println!(
        "server fan-out: box upload {:.0} kbit/s with 1 room, {:.0} kbit/s with 3 rooms ({:.2}x); over 3 s Janus received {upload} packets from the box and sent {relayed:?} to the rooms' subscribers",
        one_room * 8.0 / 1000.0,
        three_rooms * 8.0 / 1000.0,
        three_rooms / one_room
    );
    assert!(
        three_rooms < one_room * 1.3,
        "the upload grew with the rooms: {one_room:.0} -> {three_rooms:.0} B/s"
    );
    assert!(upload > 300, "the upload carries media: {upload} packets");
    for (room, sent) in rooms.iter().zip(&relayed) {
        assert!(
            *sent as f64 > upload as f64 * 0.9,
            "{room} got {sent} packets of the {upload} uploaded"
        );
        assert_eq!(
            janus.packets_in(room, &format!("cam-{room}"), None).await,
            None,
            "no WebRTC upload from the box into {room}"
        );
    }

    // Logging out of room-a, whose publish set the upload up: the others keep flowing.
    let logout = Instant::now();
    agent.engine.logout_room(Some("room-a")).await.unwrap();
    let before = (b.seen.frames(), c.seen.frames());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(b.seen.frames() > before.0 + 60, "room-b kept flowing");
    assert!(c.seen.frames() > before.1 + 60, "room-c kept flowing");
    let gaps = (b.seen.max_gap_after(logout), c.seen.max_gap_after(logout));
    println!(
        "largest gap after logging out of room-a: room-b {} ms, room-c {} ms",
        gaps.0.as_millis(),
        gaps.1.as_millis()
    );
    assert!(gaps.0 < Duration::from_millis(500), "room-b: {gaps:?}");
    assert!(gaps.1 < Duration::from_millis(500), "room-c: {gaps:?}");
    let stopped_at = a.seen.frames();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(a.seen.frames() <= stopped_at + 2, "room-a's copy stopped");
    let in_a = janus.videoroom_participants("room-a").await;
    assert!(
        !in_a.iter().any(|p| p["id"] == "cam-room-a"),
        "room-a's remote publisher removed: {in_a:?}"
    );
    assert!(janus.videoroom_exists(&carrier).await);

    // Logging out of every room takes everything on Janus away.
    agent.engine.logout_room(None).await.unwrap();
    support::eventually(
        "the carrier room destroyed and no remote publisher left",
        Duration::from_secs(10),
        async || {
            let mut left = Vec::new();
            for room in rooms {
                left.extend(janus.videoroom_participants(room).await);
            }
            (!janus.videoroom_exists(&carrier).await && left.is_empty()).then_some(())
        },
    )
    .await;
    assert_eq!(janus.packets_in(&carrier, UPLOAD, None).await, None);
    agent.stop().await;
}

/// A room Janus will not relay into (it has an edit secret roomcast does not know):
/// `server` refuses the publish with 1003903, `auto` publishes from the box instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_cannot_relay_gives_a_code_or_falls_back() {
    let janus = Janus::start();
    let mut raw = RawJanus::connect(&janus.ws_url()).await;
    let handle = raw.attach("janus.plugin.videoroom").await;
    let created = raw
        .message(
            handle,
            serde_json::json!({"request": "create", "room": "locked", "secret": "not-ours",
                "publishers": 16, "videocodec": "h264", "audiocodec": "opus"}),
            None,
        )
        .await;
    assert_eq!(
        created["plugindata"]["data"]["videoroom"], "created",
        "{created}"
    );

    let agent = TestAgent::start_with(&janus.ws_url(), "fanout = \"server\"", "");
    agent
        .engine
        .login_room("locked", user(), None)
        .await
        .unwrap();
    let err = agent
        .engine
        .start_publishing("cam", in_room("locked"), Channel::Main)
        .await
        .unwrap_err();
    println!("server fan-out into a locked room: {err}");
    assert_eq!(err.code(), ErrorCode::PUBLISH_FANOUT_UNSUPPORTED, "{err}");
    assert!(err.to_string().contains("rooms.fanout"), "{err}");
    assert!(agent.engine.state().await.unwrap().publishing.is_empty());
    support::eventually(
        "the upload set up for it taken down",
        Duration::from_secs(5),
        async || carrier_of(&janus, UPLOAD).await.is_none().then_some(()),
    )
    .await;
    agent.stop().await;

    let agent = TestAgent::start_with(&janus.ws_url(), "fanout = \"auto\"", "");
    agent
        .engine
        .login_room("locked", user(), None)
        .await
        .unwrap();
    let state = agent
        .engine
        .start_publishing("cam", in_room("locked"), Channel::Main)
        .await
        .unwrap();
    assert_eq!(state, PublisherState::Publishing);
    let snapshot = agent.engine.state().await.unwrap();
    assert_eq!(snapshot.publishing[0].fanout, Some(Fanout::Device));
    let viewer = Subscriber::start(&janus.ws_url(), "locked", "cam").await;
    viewer.wait_frames(30, Duration::from_secs(10)).await;
    agent.stop().await;
}

/// A box that loses Janus while relaying (here: its connection cut, then stopped) leaves
/// its remote publishers in the rooms, since they belong to no session. When it logs in
/// to a room again it removes them, and relays afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_left_behind_by_a_lost_box_are_removed_when_it_comes_back() {
    let janus = Janus::start();
    let proxy = support::proxy::Proxy::start(janus.ws_port).await;
    let via_proxy = format!("ws://127.0.0.1:{}", proxy.port);
    let agent = TestAgent::start_with(&via_proxy, "fanout = \"server\"", "");
    for room in ["room-a", "room-b"] {
        agent.engine.login_room(room, user(), None).await.unwrap();
        agent
            .engine
            .start_publishing(&format!("cam-{room}"), in_room(room), Channel::Main)
            .await
            .unwrap();
    }
    proxy.cut();
    agent.stop().await;
    let listed = async |room: &str| {
        janus
            .videoroom_participants(room)
            .await
            .into_iter()
            .any(|p| p["id"] == format!("cam-{room}") && p["remote"] == true)
    };
    support::eventually(
        "the lost box's upload gone from the carrier room",
        Duration::from_secs(5),
        async || carrier_of(&janus, UPLOAD).await.is_none().then_some(()),
    )
    .await;
    assert!(listed("room-a").await, "left behind in room-a");
    assert!(listed("room-b").await, "left behind in room-b");

    let agent = TestAgent::start_with(&janus.ws_url(), "fanout = \"server\"", "");
    agent
        .engine
        .login_room("room-a", user(), None)
        .await
        .unwrap();
    assert!(!listed("room-a").await, "removed on login");
    let snapshot = agent.engine.state().await.unwrap();
    assert!(
        snapshot.rooms[0].streams.is_empty(),
        "not reported as someone else's stream: {:?}",
        snapshot.rooms[0].streams
    );
    agent
        .engine
        .login_room("room-b", user(), None)
        .await
        .unwrap();
    agent
        .engine
        .start_publishing("cam-room-b", in_room("room-b"), Channel::Main)
        .await
        .unwrap();
    let viewer = Subscriber::start(&janus.ws_url(), "room-b", "cam-room-b").await;
    viewer.wait_frames(30, Duration::from_secs(10)).await;
    agent.stop().await;
}

/// The upload failing (Janus hangs up the box's PeerConnection to the carrier room) is a
/// failure of every stream relayed from it: each is restarted, on a new upload, and every
/// room's stream can be watched again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upload_is_replaced_and_every_room_relayed_again() {
    let janus = Janus::start();
    let mut agent = TestAgent::start_with(&janus.ws_url(), "fanout = \"server\"", "");
    let rooms = ["room-a", "room-b"];
    for room in rooms {
        agent.engine.login_room(room, user(), None).await.unwrap();
        agent
            .engine
            .start_publishing(&format!("cam-{room}"), in_room(room), Channel::Main)
            .await
            .unwrap();
    }
    let (session, handle) = janus
        .handles()
        .await
        .into_iter()
        .find(|(_, _, info)| {
            info["plugin_specific"]["room"]
                .as_str()
                .is_some_and(|room| room.starts_with(CARRIER_PREFIX))
                && info["plugin_specific"]["id"] == UPLOAD
        })
        .map(|(session, handle, _)| (session, handle))
        .expect("the upload's handle");
    let hangup = janus
        .admin(
            &format!("/{session}/{handle}"),
            serde_json::json!({"janus": "hangup_webrtc"}),
        )
        .await;
    assert_eq!(hangup["janus"], "success", "{hangup}");
    agent
        .wait_event("a relayed stream failing", Duration::from_secs(5), |e| {
            matches!(
                e,
                roomcast::engine::Event::PublisherStateUpdate {
                    state: PublisherState::PublishRequesting,
                    error_code,
                    ..
                } if *error_code == ErrorCode::PUBLISH_WEBRTC_FAILED
            )
        })
        .await;
    support::eventually(
        "every stream publishing again",
        Duration::from_secs(15),
        async || {
            let snapshot = agent.engine.state().await.unwrap();
            snapshot
                .publishing
                .iter()
                .all(|p| p.state == PublisherState::Publishing)
                .then_some(())
        },
    )
    .await;
    for room in rooms {
        let viewer = Subscriber::start(&janus.ws_url(), room, &format!("cam-{room}")).await;
        viewer.wait_frames(30, Duration::from_secs(10)).await;
    }
    agent.stop().await;
}

/// Relaying costs no noticeable latency: over the same 5 s, the capture→decoded p50 of a
/// relayed stream is within 10 ms of a stream uploaded into its room directly (two boxes
/// on one Janus, one in each fan-out mode).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_stream_is_as_fresh_as_a_direct_one() {
    let janus = Janus::start();
    let direct = TestAgent::start_with(&janus.ws_url(), "fanout = \"device\"", "");
    let relayed = TestAgent::start_with(&janus.ws_url(), "fanout = \"server\"", "");
    for (agent, room) in [(&direct, "direct"), (&relayed, "relayed")] {
        agent.engine.login_room(room, user(), None).await.unwrap();
        agent
            .engine
            .start_publishing(&format!("cam-{room}"), in_room(room), Channel::Main)
            .await
            .unwrap();
    }
    let d = Subscriber::start(&janus.ws_url(), "direct", "cam-direct").await;
    let r = Subscriber::start(&janus.ws_url(), "relayed", "cam-relayed").await;
    d.wait_frames(60, Duration::from_secs(10)).await;
    r.wait_frames(60, Duration::from_secs(10)).await;
    let marks = (d.seen.stamped(), r.seen.stamped());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let p50 = (
        d.seen
            .latency_percentile(marks.0, 50.0)
            .expect("direct stamps"),
        r.seen
            .latency_percentile(marks.1, 50.0)
            .expect("relayed stamps"),
    );
    let p95 = (
        d.seen.latency_percentile(marks.0, 95.0).unwrap_or_default(),
        r.seen.latency_percentile(marks.1, 95.0).unwrap_or_default(),
    );
    println!(
        "capture->decoded: direct upload p50 {:.1} ms p95 {:.1} ms; relayed p50 {:.1} ms p95 {:.1} ms",
        p50.0, p95.0, p50.1, p95.1
    );
    assert!(
        p50.1 < p50.0 + 10.0,
        "relayed p50 {:.1} ms against direct {:.1} ms",
        p50.1,
        p50.0
    );
    direct.stop().await;
    relayed.stop().await;
}

/// The box's Janus session lost and back (its connection cut, then allowed again): every
/// room is joined again, the relays it left behind are replaced, and each room's stream
/// is relayed from a new upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_losing_janus_every_room_is_relayed_again() {
    let janus = Janus::start();
    let proxy = support::proxy::Proxy::start(janus.ws_port).await;
    let via_proxy = format!("ws://127.0.0.1:{}", proxy.port);
    let mut agent = TestAgent::start_with(&via_proxy, "fanout = \"server\"", "");
    let rooms = ["room-a", "room-b"];
    for room in rooms {
        agent.engine.login_room(room, user(), None).await.unwrap();
        agent
            .engine
            .start_publishing(&format!("cam-{room}"), in_room(room), Channel::Main)
            .await
            .unwrap();
    }
    proxy.cut();
    agent
        .wait_event("a room reconnecting", Duration::from_secs(10), |e| {
            matches!(
                e,
                roomcast::engine::Event::RoomStateChanged {
                    reason: roomcast::engine::RoomStateReason::Reconnecting,
                    ..
                }
            )
        })
        .await;
    proxy.open();
    support::eventually(
        "every stream publishing again",
        Duration::from_secs(20),
        async || {
            let snapshot = agent.engine.state().await.unwrap();
            (snapshot.publishing.len() == 2
                && snapshot
                    .publishing
                    .iter()
                    .all(|p| p.state == PublisherState::Publishing))
            .then_some(())
        },
    )
    .await;
    for room in rooms {
        let viewer = Subscriber::start(&janus.ws_url(), room, &format!("cam-{room}")).await;
        viewer.wait_frames(30, Duration::from_secs(10)).await;
        let ours: Vec<_> = janus
            .videoroom_participants(room)
            .await
            .into_iter()
            .filter(|p| p["id"] == format!("cam-{room}"))
            .collect();
        assert_eq!(ours.len(), 1, "one relay in {room}: {ours:?}");
    }
    agent.stop().await;
}

/// Both channels relayed at once: one upload each in the one carrier room (the aux
/// channel video only), each relayed into two rooms; the carrier room goes with the
/// last upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_channel_has_its_own_upload_in_the_one_carrier_room() {
    let janus = Janus::start();
    let agent = TestAgent::start_with(
        &janus.ws_url(),
        "fanout = \"server\"",
        "width = 640\nheight = 360\n[sources.aux]\nvideo = \"test\"\nwidth = 320\nheight = 240\naudio = \"none\"\n",
    );
    let rooms = ["room-a", "room-b"];
    for room in rooms {
        agent.engine.login_room(room, user(), None).await.unwrap();
        for channel in [Channel::Main, Channel::Aux] {
            agent
                .engine
                .start_publishing(&format!("{channel}-{room}"), in_room(room), channel)
                .await
                .unwrap();
        }
    }
    let main = Subscriber::start(&janus.ws_url(), "room-a", "main-room-a").await;
    let aux = Subscriber::start(&janus.ws_url(), "room-b", "aux-room-b").await;
    main.wait_frames(30, Duration::from_secs(10)).await;
    aux.wait_frames(30, Duration::from_secs(10)).await;
    assert_eq!(*main.seen.size.lock().unwrap(), Some((640, 360)));
    assert_eq!(*aux.seen.size.lock().unwrap(), Some((320, 240)));
    let carrier = carrier_of(&janus, "carrier-main")
        .await
        .expect("the carrier room");
    for upload in ["carrier-main", "carrier-aux"] {
        assert!(
            janus
                .packets_in(&carrier, upload, None)
                .await
                .is_some_and(|n| n > 0),
            "{upload} in the carrier room"
        );
    }

    for room in rooms {
        agent
            .engine
            .stop_publishing(&format!("aux-{room}"))
            .await
            .unwrap();
    }
    support::eventually(
        "the aux upload taken down, the main one still relayed",
        Duration::from_secs(5),
        async || {
            janus
                .packets_in(&carrier, "carrier-aux", None)
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;
    let before = main.seen.frames();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(main.seen.frames() > before + 20, "main still flows");
    for room in rooms {
        agent
            .engine
            .stop_publishing(&format!("main-{room}"))
            .await
            .unwrap();
    }
    support::eventually(
        "the carrier room destroyed",
        Duration::from_secs(5),
        async || (!janus.videoroom_exists(&carrier).await).then_some(()),
    )
    .await;
    agent.stop().await;
}

/// Someone else publishing under the stream's id in the room: the relay is refused with
/// 1003028, as a direct upload would be, and the other publisher is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_id_taken_in_the_room_is_1003028_and_left_alone() {
    let janus = Janus::start();
    let agent = TestAgent::start_with(&janus.ws_url(), "fanout = \"server\"", "");
    agent
        .engine
        .login_room("room-a", user(), None)
        .await
        .unwrap();
    let _teacher =
        support::peers::TestPublisher::start(&janus.ws_url(), "room-a", "cam", "Teacher").await;
    let err = agent
        .engine
        .start_publishing("cam", in_room("room-a"), Channel::Main)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::PUBLISH_STREAM_ID_IN_USE, "{err}");
    let viewer = Subscriber::start(&janus.ws_url(), "room-a", "cam").await;
    viewer.wait_frames(30, Duration::from_secs(10)).await;
    agent.stop().await;
}

/// A clean stop (the service stopped, no logout first) leaves nothing of the box's on
/// Janus: no relay in the rooms, no upload, no carrier room (a new one is made each run,
/// so one left per stop would pile up until Janus restarts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_leaves_nothing_on_janus() {
    let janus = Janus::start();
    let agent = TestAgent::start_with(&janus.ws_url(), "fanout = \"server\"", "");
    let rooms = ["room-a", "room-b"];
    for room in rooms {
        agent.engine.login_room(room, user(), None).await.unwrap();
        agent
            .engine
            .start_publishing(&format!("cam-{room}"), in_room(room), Channel::Main)
            .await
            .unwrap();
    }
    let carrier = carrier_of(&janus, UPLOAD).await.expect("the carrier room");
    agent.stop().await;
    let mut left = Vec::new();
    for room in rooms {
        left.extend(janus.videoroom_participants(room).await);
    }
    assert!(left.is_empty(), "left in the rooms: {left:?}");
    assert!(
        !janus.videoroom_exists(&carrier).await,
        "the carrier room is destroyed before the session closes"
    );
}

/// Janus 1.1.2 answers `add_remote_publisher` before the relayed stream is in the room
/// (a thread of its own adds it): `start_publishing` answers only once Janus lists it, so
/// a viewer subscribing the moment it answers finds the stream ("No such feed" before).
/// The window is short, so the round is repeated, the viewer's handle made beforehand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_stream_can_be_subscribed_the_moment_publishing_answers() {
    let janus = Janus::start();
    let agent = TestAgent::start_with(&janus.ws_url(), "fanout = \"server\"", "");
    for room in ["room-a", "room-b"] {
        agent.engine.login_room(room, user(), None).await.unwrap();
    }
    // The upload is up: each round below only adds and removes room-b's relay.
    agent
        .engine
        .start_publishing("cam-room-a", in_room("room-a"), Channel::Main)
        .await
        .unwrap();
    let mut viewer = RawJanus::connect(&janus.ws_url()).await;
    for round in 0..12 {
        let handle = viewer.attach("janus.plugin.videoroom").await;
        let state = agent
            .engine
            .start_publishing("cam-room-b", in_room("room-b"), Channel::Main)
            .await
            .unwrap();
        assert_eq!(state, PublisherState::Publishing);
        let joined = viewer
            .message(
                handle,
                serde_json::json!({"request": "join", "ptype": "subscriber", "room": "room-b",
                                   "streams": [{"feed": "cam-room-b"}]}),
                None,
            )
            .await;
        assert!(
            joined["jsep"]["sdp"].is_string(),
            "round {round}: subscribing right after start_publishing answered: {joined}"
        );
        agent.engine.stop_publishing("cam-room-b").await.unwrap();
    }
    agent.stop().await;
}
