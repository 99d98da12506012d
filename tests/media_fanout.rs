//! Media on a real Janus: one encode published into several rooms, rooms joining and
//! leaving while the others keep flowing, playing, and sources that fail.

mod support;

use std::time::{Duration, Instant};

use roomcast::engine::{
    Channel, ErrorCode, PlayOutput, PlayerConfig, PlayerState, PublisherConfig, PublisherState,
    User,
};
use support::agent::TestAgent;
use support::janus::Janus;
use support::peers::{Subscriber, TestPublisher};

// Each test runs an agent, Janus and decoding subscribers, and most measure flow
// (frames per room, gaps, send rates): six side by side on two cores starved them (a
// room under 20 fps for 3 s, a 792 ms gap at load 13). One at a time.
use support::ONE_AT_A_TIME;

fn user() -> User {
    User::parse("box-17", "Room 101 camera").unwrap()
}

fn in_room(room: &str) -> PublisherConfig {
    PublisherConfig {
        room_id: Some(room.into()),
    }
}

/// Video packets Janus received from the publisher `feed` in `room` (Admin API).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_encode_published_into_two_rooms() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let janus = Janus::start();
    let agent = TestAgent::start(&janus.ws_url(), "");
    for room in ["bigclass", "group-3"] {
        agent.engine.login_room(room, user(), None).await.unwrap();
    }
    let state = agent
        .engine
        .start_publishing("box-main-big", in_room("bigclass"), Channel::Main)
        .await
        .unwrap();
    assert_eq!(state, PublisherState::Publishing);
    agent
        .engine
        .start_publishing("box-main-g3", in_room("group-3"), Channel::Main)
        .await
        .unwrap();

    let teacher = Subscriber::start(&janus.ws_url(), "bigclass", "box-main-big").await;
    let student = Subscriber::start(&janus.ws_url(), "group-3", "box-main-g3").await;
    teacher.wait_frames(60, Duration::from_secs(10)).await;
    student.wait_frames(60, Duration::from_secs(10)).await;
    assert_eq!(*teacher.seen.size.lock().unwrap(), Some((1280, 720)));
    assert!(
        !teacher.seen.latencies_ms.lock().unwrap().is_empty(),
        "frames carry a readable BLK1 stamp"
    );

    // Janus receives the same encoded stream in both rooms: over the same 3 s, the same
    // number of video packets arrive in each (the rooms started a moment apart, so the
    // totals differ by that moment).
    let sample = async || {
        let big = janus
            .video_packets_in("bigclass", "box-main-big")
            .await
            .expect("bigclass stats");
        let g3 = janus
            .video_packets_in("group-3", "box-main-g3")
            .await
            .expect("group-3 stats");
        (big, g3)
    };
    let before = sample().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = sample().await;
    let (big, g3) = (after.0 - before.0, after.1 - before.1);
    println!("Janus video packets in over 3 s: bigclass {big}, group-3 {g3} (totals {after:?})");
    assert!(big > 100 && g3 > 100, "{big} {g3}");
    let diff = big.abs_diff(g3) as f64 / big.max(g3) as f64;
    assert!(
        diff < 0.03,
        "packet counts differ by {:.1} %: {big} vs {g3}",
        diff * 100.0
    );

    // One encoder: frames_encoded is the same counter for both streams.
    let snapshot = agent.engine.state().await.unwrap();
    assert_eq!(snapshot.media.encoder.as_deref(), Some("x264enc"));
    let encoded: Vec<u64> = snapshot
        .publishing
        .iter()
        .map(|p| p.stats.frames_encoded.unwrap())
        .collect();
    assert_eq!(encoded.len(), 2);
    assert!(encoded[0].abs_diff(encoded[1]) <= 2, "{encoded:?}");
    assert!(
        snapshot
            .publishing
            .iter()
            .all(|p| p.stats.packets_sent.unwrap() > 100)
    );

    // The stream's packet count is what Janus receives: every packet of every frame
    // (video reaches the branch as one list per frame), audio and video.
    let sent = async || {
        let snapshot = agent.engine.state().await.unwrap();
        let stream = snapshot
            .publishing
            .iter()
            .find(|p| p.stream_id.as_str() == "box-main-big")
            .expect("the bigclass stream");
        let janus_in = janus
            .packets_in("bigclass", "box-main-big", None)
            .await
            .expect("bigclass stats");
        (stream.stats.packets_sent.unwrap(), janus_in)
    };
    let before = sent().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = sent().await;
    let (ours, theirs) = (after.0 - before.0, after.1 - before.1);
    println!("packets over 3 s: roomcast counted {ours} sent, Janus counted {theirs} in");
    let diff = ours.abs_diff(theirs) as f64 / theirs.max(1) as f64;
    assert!(
        theirs > 500 && diff < 0.05,
        "sent {ours}, Janus received {theirs}"
    );
    agent.stop().await;
}

/// The video bitrate of the main source as the engine reports it.
async fn encoder_kbps(agent: &TestAgent) -> Option<u32> {
    let snapshot = agent.engine.state().await.unwrap();
    snapshot.media.sources.first().and_then(|s| s.bitrate_kbps)
}

/// Waits until the encoder runs at `kbps`; returns how long that took.
async fn wait_kbps(agent: &TestAgent, kbps: u32, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if encoder_kbps(agent).await == Some(kbps) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "the encoder did not go to {kbps} kbit/s within {within:?} (at {:?})",
            encoder_kbps(agent).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Janus asks every publisher for at most its room's bitrate (REMB). One encode feeds
/// every room, so it follows the narrowest: publishing into a 500 kbit/s room brings the
/// stream down in the other room too, and leaving that room brings it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_encoder_follows_the_narrowest_room() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let janus = Janus::start();
    let mut raw = support::janus_ws::RawJanus::connect(&janus.ws_url()).await;
    let handle = raw.attach("janus.plugin.videoroom").await;
    raw.create_videoroom_capped(handle, "narrow", 500_000).await;
    let agent = TestAgent::start(&janus.ws_url(), "");
    // "wide" is created by the agent with the configured 4 Mbit/s; the encoder's own
    // ceiling is its bitrate_kbps, 2000.
    for room in ["wide", "narrow"] {
        agent.engine.login_room(room, user(), None).await.unwrap();
    }
    agent
        .engine
        .start_publishing("cam-wide", in_room("wide"), Channel::Main)
        .await
        .unwrap();
    // Past Janus's ramp (a quarter of the cap first): still the configured bitrate.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(encoder_kbps(&agent).await, Some(2000));
    let full = agent.send_rate("cam-wide", Duration::from_secs(3)).await;

    let joined = Instant::now();
    agent
        .engine
        .start_publishing("cam-narrow", in_room("narrow"), Channel::Main)
        .await
        .unwrap();
    wait_kbps(&agent, 500, Duration::from_secs(20)).await;
    let followed = joined.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let narrow = agent.send_rate("cam-wide", Duration::from_secs(3)).await;

    agent.engine.logout_room(Some("narrow")).await.unwrap();
    let back = wait_kbps(&agent, 2000, Duration::from_secs(5)).await;
    println!(
        "bitrate: published into the 500 kbit/s room -> encoder at 500 after {} ms; the wide room received {:.0} kbit/s before, {:.0} kbit/s after; back to 2000 {} ms after leaving",
        followed.as_millis(),
        full * 8.0 / 1000.0,
        narrow * 8.0 / 1000.0,
        back.as_millis()
    );
    assert!(
        narrow < full * 0.5,
        "the wide room still gets {narrow:.0} B/s against {full:.0} B/s before"
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_join_and_leave_without_disturbing_the_others() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let janus = Janus::start();
    let agent = TestAgent::start(&janus.ws_url(), "");
    for room in ["room-a", "room-b", "room-c"] {
        agent.engine.login_room(room, user(), None).await.unwrap();
    }
    for room in ["room-a", "room-b"] {
        agent
            .engine
            .start_publishing(&format!("cam-{room}"), in_room(room), Channel::Main)
            .await
            .unwrap();
    }
    let a = Subscriber::start(&janus.ws_url(), "room-a", "cam-room-a").await;
    let b = Subscriber::start(&janus.ws_url(), "room-b", "cam-room-b").await;
    a.wait_frames(30, Duration::from_secs(10)).await;
    b.wait_frames(30, Duration::from_secs(10)).await;

    let changes = Instant::now();
    // Add a third room, then remove the first, while publishing.
    agent
        .engine
        .start_publishing("cam-room-c", in_room("room-c"), Channel::Main)
        .await
        .unwrap();
    let c = Subscriber::start(&janus.ws_url(), "room-c", "cam-room-c").await;
    agent.engine.logout_room(Some("room-a")).await.unwrap();
    let before = (b.seen.frames(), c.seen.frames());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(b.seen.frames() > before.0 + 60, "room-b kept flowing");
    assert!(c.seen.frames() > before.1 + 60, "room-c flows");
    let gap = b.seen.max_gap_after(changes);
    println!(
        "largest gap in room-b while room-c joined and room-a left: {} ms",
        gap.as_millis()
    );
    assert!(gap < Duration::from_millis(500), "room-b had a {gap:?} gap");
    let gap = c.seen.max_gap_after(c.seen.first_frame().unwrap());
    assert!(gap < Duration::from_millis(500), "room-c had a {gap:?} gap");
    // room-a's subscriber stopped receiving.
    let stopped_at = a.seen.frames();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(a.seen.frames() <= stopped_at + 2, "room-a stopped");
    let state = agent.engine.state().await.unwrap();
    let rooms: Vec<&str> = state
        .publishing
        .iter()
        .map(|p| p.room_id.as_str())
        .collect();
    assert_eq!(rooms, ["room-b", "room-c"]);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roomcast_plays_a_stream_published_by_someone_else() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let janus = Janus::start();
    let agent = TestAgent::start(&janus.ws_url(), "");
    agent
        .engine
        .login_room("bigclass", user(), None)
        .await
        .unwrap();
    let _teacher =
        TestPublisher::start(&janus.ws_url(), "bigclass", "teacher-cam", "Teacher").await;
    let config = PlayerConfig {
        room_id: Some("bigclass".into()),
        output: PlayOutput::None,
    };
    // Playing or, if the stream is not listed in the room yet, waiting for it.
    let state = agent
        .engine
        .start_playing("teacher-cam", config)
        .await
        .unwrap();
    assert!(matches!(
        state,
        PlayerState::Playing | PlayerState::PlayRequesting
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut decoded = 0;
    let mut last = None;
    while Instant::now() < deadline {
        let snapshot = agent.engine.state().await.unwrap();
        let player = snapshot.playing[0].clone();
        decoded = player.stats.frames_decoded.unwrap_or(0);
        let done = player.state == PlayerState::Playing && decoded >= 30;
        last = Some(player);
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(decoded >= 30, "roomcast decoded {decoded} frames: {last:?}");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playing_to_the_speaker_mixes_through_alsa() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let janus = Janus::start();
    let agent = TestAgent::start(&janus.ws_url(), "");
    agent
        .engine
        .login_room("bigclass", user(), None)
        .await
        .unwrap();
    let _one = TestPublisher::start(&janus.ws_url(), "bigclass", "teacher-cam", "Teacher").await;
    let _two =
        TestPublisher::start(&janus.ws_url(), "bigclass", "assistant-cam", "Assistant").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for stream in ["teacher-cam", "assistant-cam"] {
        let config = PlayerConfig {
            room_id: Some("bigclass".into()),
            output: PlayOutput::Speaker,
        };
        agent.engine.start_playing(stream, config).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let snapshot = agent.engine.state().await.unwrap();
    assert_eq!(snapshot.playing.len(), 2);
    for player in &snapshot.playing {
        assert_eq!(player.state, PlayerState::Playing, "{player:?}");
        assert!(player.stats.bytes_received.unwrap() > 10_000, "{player:?}");
    }
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_failing_sources_give_coded_errors() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let janus = Janus::start();
    // aux is a camera that is not there.
    let agent = TestAgent::start(
        &janus.ws_url(),
        "[sources.aux]\nvideo = \"/dev/video-missing\"\naudio = \"none\"\n",
    );
    agent
        .engine
        .login_room("bigclass", user(), None)
        .await
        .unwrap();
    let err = agent
        .engine
        .start_publishing("doc-cam", in_room("bigclass"), Channel::Aux)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::PUBLISH_MEDIA_FAILED, "{err}");
    assert!(err.to_string().contains("aux"), "{err}");
    // The main channel is unaffected.
    agent
        .engine
        .start_publishing("cam", in_room("bigclass"), Channel::Main)
        .await
        .unwrap();
    agent.stop().await;

    // A channel that is not configured at all.
    let agent = TestAgent::start(&janus.ws_url(), "");
    agent
        .engine
        .login_room("bigclass", user(), None)
        .await
        .unwrap();
    let err = agent
        .engine
        .start_publishing("doc-cam", in_room("bigclass"), Channel::Aux)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::PUBLISH_MEDIA_FAILED);
    assert!(err.to_string().contains("[sources.aux]"), "{err}");
    agent.stop().await;
}
