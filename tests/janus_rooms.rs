//! Rooms on a real Janus: login/logout, presence, per-room messages, reconnection.
//! Media is not under test here (see tests/media_*.rs); publishing is refused.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use roomcast::engine::backend::{MediaEngine, MediaSnapshot, PeerHandle};
use roomcast::engine::{
    BackendError, EngineBuilder, EngineHandle, EngineSettings, ErrorCode, Event, RoomMode,
    RoomState, RoomStateReason, User,
};
use roomcast::engine::{Channel, PlayOutput, RoomId, StreamId};
use roomcast::rooms::janus::client::{ClientConfig, JanusClient};
use roomcast::rooms::janus::protocol::Auth;
use roomcast::rooms::janus::{JanusRooms, JanusSettings};
use support::janus::Janus;
use support::textroom::TextRoomClient;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Rooms without media: this file tests the rooms.
struct NoMedia;

#[async_trait]
impl MediaEngine for NoMedia {
    async fn open_publisher(
        &self,
        _: &RoomId,
        _: &StreamId,
        _: Channel,
    ) -> Result<PeerHandle, BackendError> {
        Err(BackendError::new(
            ErrorCode::PUBLISH_MEDIA_FAILED,
            "no media in this test",
        ))
    }
    async fn open_player(
        &self,
        _: &RoomId,
        _: &StreamId,
        _: PlayOutput,
    ) -> Result<PeerHandle, BackendError> {
        Err(BackendError::new(
            ErrorCode::PLAY_WEBRTC_FAILED,
            "no media in this test",
        ))
    }
    fn snapshot(&self) -> MediaSnapshot {
        MediaSnapshot::default()
    }
}

struct Agent {
    engine: EngineHandle,
    events: broadcast::Receiver<Event>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn user() -> User {
    User::parse("box-17", "Room 101 camera").unwrap()
}

fn start_agent(janus: &Janus, create_rooms: bool) -> Agent {
    start_agent_at(&janus.ws_url(), None, create_rooms)
}

/// An agent on Janus at `url`, trusting only `ca_file` for wss:// when given.
fn start_agent_at(url: &str, ca_file: Option<std::path::PathBuf>, create_rooms: bool) -> Agent {
    let shutdown = CancellationToken::new();
    let client = JanusClient::start(
        ClientConfig {
            url: url.to_owned(),
            auth: Auth::default(),
            ca_file,
            request_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(20),
            reconnect: roomcast::base::backoff::Backoff::new(
                Duration::from_millis(100),
                Duration::from_secs(1),
            ),
        },
        shutdown.clone(),
    );
    let settings = JanusSettings {
        create_rooms,
        admin_key: None,
        publishers: 16,
        bitrate_bps: 2_000_000,
    };
    let (rooms, rooms_events) = JanusRooms::with_client(
        client,
        settings,
        std::sync::Arc::new(roomcast::webrtc::DataChannels),
    );
    let engine_settings = EngineSettings {
        mode: RoomMode::Multi,
        max_rooms: 5,
        multi_room_enabled: true,
        ..Default::default()
    };
    let (engine, task) = EngineBuilder::new(engine_settings).start(
        rooms,
        rooms_events,
        Arc::new(NoMedia),
        shutdown.clone(),
    );
    let events = engine.subscribe();
    Agent {
        engine,
        events,
        shutdown,
        task,
    }
}

impl Agent {
    async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }

    /// Waits for an event matching `want`, skipping others.
    async fn wait_event(
        &mut self,
        what: &str,
        within: Duration,
        want: impl Fn(&Event) -> bool,
    ) -> Event {
        support::agent::wait_event(&mut self.events, what, within, want).await
    }
}

fn usernames(participants: &[serde_json::Value]) -> Vec<String> {
    let mut names: Vec<String> = participants
        .iter()
        .filter_map(|p| p["username"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rooms_at_once_with_one_identity() {
    let janus = Janus::start();
    let agent = start_agent(&janus, true);
    for room in ["bigclass", "group-3"] {
        let started = Instant::now();
        agent
            .engine
            .login_room(room, user(), None)
            .await
            .expect("login");
        println!("login to {room}: {} ms", started.elapsed().as_millis());
    }
    for room in ["bigclass", "group-3"] {
        let text = janus.textroom_participants(room).await;
        assert_eq!(usernames(&text), ["box-17"], "TextRoom {room}: {text:?}");
        let video = janus.videoroom_participants(room).await;
        assert_eq!(video.len(), 1, "VideoRoom {room}: {video:?}");
        let display: serde_json::Value =
            serde_json::from_str(video[0]["display"].as_str().unwrap()).unwrap();
        assert_eq!(display["user_id"], "box-17");
    }
    let state = agent.engine.state().await.unwrap();
    assert!(state.rooms.iter().all(|r| r.state == RoomState::Logined));
    agent.stop().await;
    // A clean stop leaves both rooms.
    for room in ["bigclass", "group-3"] {
        assert!(
            janus.textroom_participants(room).await.is_empty(),
            "{room} left on shutdown"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_isolated_per_room_both_ways() {
    let janus = Janus::start();
    let mut agent = start_agent(&janus, true);
    agent
        .engine
        .login_room("bigclass", user(), None)
        .await
        .unwrap();
    agent
        .engine
        .login_room("group-3", user(), None)
        .await
        .unwrap();
    let mut student = TextRoomClient::join(&janus.ws_url(), "group-3", "student-1").await;

    // The student appears as a user of group-3 only.
    let event = agent
        .wait_event("student joins", Duration::from_secs(5), |e| {
            matches!(e, Event::RoomUserUpdate { .. })
        })
        .await;
    assert_eq!(event.room_id().as_str(), "group-3");

    student.say("page 12, exercise 3").await;
    let event = agent
        .wait_event("the student's message", Duration::from_secs(5), |e| {
            matches!(e, Event::BroadcastMessage { .. })
        })
        .await;
    let Event::BroadcastMessage { room_id, messages } = event else {
        unreachable!()
    };
    assert_eq!(room_id.as_str(), "group-3");
    assert_eq!(messages[0].message, "page 12, exercise 3");
    assert_eq!(messages[0].from_user.user_id, "student-1");

    // roomcast's messages reach the student; its own echo is not reported as received.
    agent
        .engine
        .send_broadcast_message("group-3", "camera is on")
        .await
        .unwrap();
    let received = student
        .next_message_from("box-17", Duration::from_secs(5))
        .await;
    assert_eq!(received.as_deref(), Some("camera is on"));
    // A message to the other room does not reach group-3.
    agent
        .engine
        .send_broadcast_message("bigclass", "hello bigclass")
        .await
        .unwrap();
    assert_eq!(
        student
            .next_message_from("box-17", Duration::from_millis(700))
            .await,
        None
    );
    // A custom command to the student arrives as the envelope.
    agent
        .engine
        .send_custom_command("group-3", &["student-1".into()], "mute")
        .await
        .unwrap();
    let command = student
        .next_message_from("box-17", Duration::from_secs(5))
        .await;
    assert_eq!(command.as_deref(), Some(r#"{"custom_command":"mute"}"#));

    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Ok(event) = agent.events.try_recv() {
        assert!(
            !matches!(event, Event::BroadcastMessage { .. }),
            "no echo and nothing from bigclass: {event:?}"
        );
    }
    student.close();
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_of_one_room_leaves_the_other_in_janus() {
    let janus = Janus::start();
    let agent = start_agent(&janus, true);
    agent
        .engine
        .login_room("bigclass", user(), None)
        .await
        .unwrap();
    agent
        .engine
        .login_room("group-3", user(), None)
        .await
        .unwrap();
    agent.engine.logout_room(Some("group-3")).await.unwrap();
    assert!(janus.textroom_participants("group-3").await.is_empty());
    assert!(janus.videoroom_participants("group-3").await.is_empty());
    assert_eq!(
        usernames(&janus.textroom_participants("bigclass").await),
        ["box-17"]
    );
    assert_eq!(janus.videoroom_participants("bigclass").await.len(), 1);
    // The remaining room still works.
    agent
        .engine
        .send_broadcast_message("bigclass", "still here")
        .await
        .unwrap();
    agent.engine.logout_room(None).await.unwrap();
    assert!(janus.textroom_participants("bigclass").await.is_empty());
    agent.stop().await;
}

/// Issue 18: login/logout loops must not fill a shared Janus. A room the box created is
/// destroyed when the box leaves it last; a room someone else is still in is kept (and
/// destroyed when the box that created it is the last to leave a later login); a room
/// made by someone else is never destroyed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_the_box_created_are_destroyed_when_it_leaves_them_last() {
    let janus = Janus::start();
    let agent = start_agent(&janus, true);
    for n in 0..5 {
        let room = format!("loop-{n}");
        agent.engine.login_room(&room, user(), None).await.unwrap();
        assert_eq!(janus.rooms_exist(&room).await, (true, true), "{room}");
        agent.engine.logout_room(Some(&room)).await.unwrap();
        assert_eq!(
            janus.rooms_exist(&room).await,
            (false, false),
            "{room} destroyed"
        );
    }

    // Someone else is still in it: kept.
    agent
        .engine
        .login_room("shared", user(), None)
        .await
        .unwrap();
    let other = start_agent(&janus, true);
    let someone = User::parse("box-18", "Room 102").unwrap();
    other
        .engine
        .login_room("shared", someone, None)
        .await
        .unwrap();
    agent.engine.logout_room(Some("shared")).await.unwrap();
    assert_eq!(janus.rooms_exist("shared").await, (true, true), "kept");
    // The other box did not create it: leaving last, it does not destroy it.
    other.engine.logout_room(Some("shared")).await.unwrap();
    assert_eq!(
        janus.rooms_exist("shared").await,
        (true, true),
        "not its room"
    );
    // Its creator comes back and leaves last: destroyed.
    agent
        .engine
        .login_room("shared", user(), None)
        .await
        .unwrap();
    agent.engine.logout_room(Some("shared")).await.unwrap();
    assert_eq!(
        janus.rooms_exist("shared").await,
        (false, false),
        "destroyed"
    );
    other.stop().await;
    agent.stop().await;
}

/// Issue 18, incoming room traffic: a chatty participant cannot grow the box. A message
/// over the TextRoom size limit is dropped where it arrives (no event), a burst of
/// messages goes through bounded queues, and the box still serves the room after both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chatty_participant_is_bounded_and_the_room_keeps_working() {
    let janus = Janus::start();
    let mut agent = start_agent(&janus, true);
    agent
        .engine
        .login_room("bigclass", user(), None)
        .await
        .unwrap();
    let mut student = TextRoomClient::join(&janus.ws_url(), "bigclass", "student-1").await;
    let limit = roomcast::webrtc::MAX_INCOMING_TEXT;
    student.say(&"x".repeat(limit + 8 * 1024)).await;
    student.say("after the large one").await;
    let event = agent
        .wait_event("the small message", Duration::from_secs(5), |e| {
            matches!(e, Event::BroadcastMessage { .. })
        })
        .await;
    let Event::BroadcastMessage { messages, .. } = event else {
        unreachable!()
    };
    assert_eq!(
        messages[0].message, "after the large one",
        "the large message was not passed on"
    );
    for n in 0..500 {
        student.say(&format!("chatter {n}")).await;
    }
    agent
        .wait_event("the last chatter", Duration::from_secs(10), |e| {
            matches!(e, Event::BroadcastMessage { messages, .. } if messages[0].message == "chatter 499")
        })
        .await;
    agent
        .engine
        .send_broadcast_message("bigclass", "still here")
        .await
        .unwrap();
    assert_eq!(
        student
            .next_message_from("box-17", Duration::from_secs(5))
            .await
            .as_deref(),
        Some("still here")
    );
    agent.stop().await;
}

/// Issue 18, janus.ca_file: Janus over wss:// with a certificate from the school's own
/// CA. With that CA as janus.ca_file the box logs in; with another CA the TLS handshake
/// fails and so does the login (the SFU is unreachable).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_with_the_schools_own_ca() {
    let certs = support::TempDir::new("janus-wss");
    support::certs::make_certs(certs.path(), "other");
    // The second set overwrites server.pem: Janus's certificate is signed by "school".
    support::certs::make_certs(certs.path(), "school");
    let janus = Janus::start_wss(
        &certs.path().join("server.pem"),
        &certs.path().join("server.key"),
    );
    let agent = start_agent_at(
        &janus.wss_url(),
        Some(certs.path().join("school-ca.pem")),
        true,
    );
    agent
        .engine
        .login_room("bigclass", user(), None)
        .await
        .expect("logged in over wss:// with the school's CA");
    assert_eq!(
        usernames(&janus.textroom_participants("bigclass").await),
        ["box-17"]
    );
    agent.stop().await;

    let agent = start_agent_at(
        &janus.wss_url(),
        Some(certs.path().join("other-ca.pem")),
        true,
    );
    let err = agent
        .engine
        .login_room("bigclass", user(), None)
        .await
        .expect_err("another CA is not trusted");
    assert!(
        matches!(err.code().as_u32(), 1002901 | 1002902),
        "{err} ({})",
        err.code()
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_room_without_create_rooms_fails_with_a_code() {
    let janus = Janus::start();
    let mut agent = start_agent(&janus, false);
    let err = agent
        .engine
        .login_room("nowhere", user(), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::SFU_ROOM_NOT_FOUND, "{err}");
    assert!(err.to_string().contains("create_rooms"), "{err}");
    let event = agent
        .wait_event("LoginFailed", Duration::from_secs(2), |e| {
            matches!(
                e,
                Event::RoomStateChanged {
                    reason: RoomStateReason::LoginFailed,
                    ..
                }
            )
        })
        .await;
    assert_eq!(event.room_id().as_str(), "nowhere");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_pin_is_1002033() {
    let janus = Janus::start();
    let owner = start_agent(&janus, true);
    // The first login creates the room with the token as its pin.
    owner
        .engine
        .login_room(
            "locked",
            user(),
            Some(roomcast::base::secret::Secret::new("1234")),
        )
        .await
        .unwrap();
    let other = start_agent(&janus, true);
    let someone = User::parse("box-18", "Room 102").unwrap();
    let err = other
        .engine
        .login_room(
            "locked",
            someone,
            Some(roomcast::base::secret::Secret::new("9999")),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code().as_u32(), 1002033, "{err}");
    owner.stop().await;
    other.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn janus_restart_brings_every_room_back() {
    let mut janus = Janus::start();
    let mut agent = start_agent(&janus, true);
    let rooms = ["bigclass", "group-3", "group-4"];
    for room in rooms {
        agent.engine.login_room(room, user(), None).await.unwrap();
    }
    let killed = Instant::now();
    janus.restart();
    let restarted = killed.elapsed();
    let mut back = std::collections::BTreeSet::new();
    while back.len() < rooms.len() {
        let event = agent
            .wait_event("rooms Reconnected", Duration::from_secs(20), |e| {
                matches!(
                    e,
                    Event::RoomStateChanged {
                        reason: RoomStateReason::Reconnected,
                        ..
                    }
                )
            })
            .await;
        back.insert(event.room_id().to_string());
    }
    let recovered = killed.elapsed();
    println!(
        "Janus restart: Janus listening again after {} ms; all {} rooms Reconnected after {} ms",
        restarted.as_millis(),
        rooms.len(),
        recovered.as_millis()
    );
    for room in rooms {
        assert_eq!(
            usernames(&janus.textroom_participants(room).await),
            ["box-17"],
            "{room} rejoined"
        );
    }
    let state = agent.engine.state().await.unwrap();
    assert!(
        state.rooms.iter().all(|r| r.state == RoomState::Logined),
        "{:?}",
        state.rooms
    );
    agent.stop().await;
}
