//! Every room rule and its code, proven on the in-memory doubles.

use std::time::Duration;

use super::backend::BackendEvent;
use super::double::Harness;
use super::event::{BroadcastMessage, StreamInfo, UserInfo};
use super::snapshot::EngineSnapshot;
use super::*;

fn settings(mode: RoomMode) -> EngineSettings {
    EngineSettings {
        mode,
        max_rooms: 5,
        multi_room_enabled: true,
        quality_interval: None,
        allowed_rooms: RoomAllowList::any(),
        reconnect: ReconnectPolicy {
            window: Duration::from_secs(30),
            backoff: crate::base::backoff::Backoff::new(
                Duration::from_millis(100),
                Duration::from_secs(2),
            ),
        },
        fanout: FanoutPolicy::Device,
        servers: ServerRoutes::default(),
    }
}

fn user() -> User {
    User::parse("box-17", "Room 101 camera").unwrap()
}

fn code<T: std::fmt::Debug>(result: Result<T, EngineError>) -> u32 {
    result.expect_err("should be refused").code().as_u32()
}

fn in_room(room: &str) -> PublisherConfig {
    PublisherConfig {
        room_id: Some(room.into()),
    }
}

fn play_in(room: &str) -> PlayerConfig {
    PlayerConfig {
        room_id: Some(room.into()),
        output: PlayOutput::None,
    }
}

fn remote(stream: &str) -> StreamInfo {
    StreamInfo {
        stream_id: stream.into(),
        user: UserInfo {
            user_id: "teacher".into(),
            user_name: "Teacher".into(),
        },
    }
}

/// Polls the engine's state until `done` holds (time is paused in these tests).
async fn wait_until(
    h: &Harness,
    what: &str,
    done: impl Fn(&EngineSnapshot) -> bool,
) -> EngineSnapshot {
    for _ in 0..1000 {
        let state = h.engine.state().await.unwrap();
        if done(&state) {
            return state;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

fn room_ids(state: &EngineSnapshot) -> Vec<&str> {
    state.rooms.iter().map(|r| r.room_id.as_str()).collect()
}

fn publishing(state: &EngineSnapshot) -> Vec<(&str, &str, PublisherState)> {
    state
        .publishing
        .iter()
        .map(|p| (p.stream_id.as_str(), p.room_id.as_str(), p.state))
        .collect()
}

#[tokio::test]
async fn room_mode_is_fixed_once_started_1001020() {
    let mut builder = EngineBuilder::new(settings(RoomMode::Single));
    builder.set_room_mode(RoomMode::Multi);
    let h = Harness::start(settings(RoomMode::Multi));
    assert_eq!(
        code(h.engine.set_room_mode(RoomMode::Single).await),
        1001020
    );
    // Asking for the mode already in force changes nothing and is accepted.
    h.engine.set_room_mode(RoomMode::Multi).await.unwrap();
    assert_eq!(h.engine.state().await.unwrap().room_mode, RoomMode::Multi);
}

#[tokio::test]
async fn single_mode_allows_one_room_1002001() {
    let h = Harness::start(settings(RoomMode::Single));
    h.engine.login_room("bigclass", user(), None).await.unwrap();
    assert_eq!(
        code(h.engine.login_room("group-3", user(), None).await),
        1002001
    );
    assert_eq!(
        code(h.engine.login_room("bigclass", user(), None).await),
        1002001
    );
    let state = h.engine.state().await.unwrap();
    assert_eq!(room_ids(&state), ["bigclass"]);
    // After leaving, another room is fine.
    h.engine.logout_room(None).await.unwrap();
    h.engine.login_room("group-3", user(), None).await.unwrap();
}

#[tokio::test]
async fn multi_mode_joins_several_rooms_as_one_user_1002018() {
    let h = Harness::start(settings(RoomMode::Multi));
    h.engine.login_room("bigclass", user(), None).await.unwrap();
    h.engine.login_room("group-3", user(), None).await.unwrap();
    let other = User::parse("someone-else", "Other").unwrap();
    assert_eq!(
        code(h.engine.login_room("group-4", other.clone(), None).await),
        1002018
    );
    // The same id with another name is another identity too.
    let renamed = User::parse("box-17", "Renamed").unwrap();
    assert_eq!(
        code(h.engine.login_room("group-4", renamed, None).await),
        1002018
    );
    assert_eq!(
        code(h.engine.login_room("group-3", user(), None).await),
        1002001
    );
    let state = h.engine.state().await.unwrap();
    assert_eq!(room_ids(&state), ["bigclass", "group-3"]);
    assert_eq!(state.user, Some(user()));
    // Once every room is left, the identity is free again.
    h.engine.logout_room(None).await.unwrap();
    h.engine.login_room("group-4", other, None).await.unwrap();
}

#[tokio::test]
async fn multi_mode_room_limit_defaults_to_five_1002037() {
    let h = Harness::start(settings(RoomMode::Multi));
    for i in 0..5 {
        h.engine
            .login_room(&format!("room-{i}"), user(), None)
            .await
            .unwrap();
    }
    assert_eq!(
        code(h.engine.login_room("room-5", user(), None).await),
        1002037
    );
    assert_eq!(h.engine.state().await.unwrap().rooms.len(), 5);
}

#[tokio::test]
async fn multi_mode_room_limit_is_configurable_1002037() {
    let mut s = settings(RoomMode::Multi);
    s.max_rooms = 2;
    let h = Harness::start(s);
    h.engine.login_room("a", user(), None).await.unwrap();
    h.engine.login_room("b", user(), None).await.unwrap();
    assert_eq!(code(h.engine.login_room("c", user(), None).await), 1002037);
    h.engine.logout_room(Some("a")).await.unwrap();
    h.engine.login_room("c", user(), None).await.unwrap();
}

#[tokio::test]
async fn multi_mode_not_enabled_fails_login_1002036() {
    let mut s = settings(RoomMode::Multi);
    s.multi_room_enabled = false;
    let h = Harness::start(s);
    assert_eq!(
        code(h.engine.login_room("bigclass", user(), None).await),
        1002036
    );
    assert!(h.engine.state().await.unwrap().rooms.is_empty());
    assert!(h.rooms.calls().is_empty(), "nothing reached the SFU");
}

#[tokio::test]
async fn multi_mode_publish_and_play_must_name_the_room_1003070_1004070() {
    let h = Harness::start(settings(RoomMode::Multi));
    h.engine.login_room("bigclass", user(), None).await.unwrap();
    let no_room = PublisherConfig { room_id: None };
    assert_eq!(
        code(
            h.engine
                .start_publishing("s1", no_room, Channel::Main)
                .await
        ),
        1003070
    );
    let no_room = PlayerConfig {
        room_id: None,
        output: PlayOutput::None,
    };
    assert_eq!(code(h.engine.start_playing("t1", no_room).await), 1004070);
    let state = h.engine.state().await.unwrap();
    assert!(state.publishing.is_empty() && state.playing.is_empty());
}

#[tokio::test]
async fn single_mode_publish_without_room_uses_the_room() {
    let h = Harness::start(settings(RoomMode::Single));
    let no_room = || PublisherConfig { room_id: None };
    assert_eq!(
        code(
            h.engine
                .start_publishing("s1", no_room(), Channel::Main)
                .await
        ),
        1002002
    );
    h.engine.login_room("bigclass", user(), None).await.unwrap();
    let state = h
        .engine
        .start_publishing("s1", no_room(), Channel::Main)
        .await
        .unwrap();
    assert_eq!(state, PublisherState::Publishing);
    let snapshot = h.engine.state().await.unwrap();
    assert_eq!(
        publishing(&snapshot),
        [("s1", "bigclass", PublisherState::Publishing)]
    );
    // A room may be named in single mode too, but it must be the logged-in one.
    assert_eq!(
        code(
            h.engine
                .start_publishing("s2", in_room("other"), Channel::Aux)
                .await
        ),
        1002002
    );
}

#[tokio::test]
async fn channel_busy_in_a_room_1003023_but_fans_out_to_other_rooms() {
    let h = Harness::start(settings(RoomMode::Multi));
    h.engine.login_room("bigclass", user(), None).await.unwrap();
    h.engine.login_room("group-3", user(), None).await.unwrap();
    h.engine
        .start_publishing("main-big", in_room("bigclass"), Channel::Main)
        .await
        .unwrap();
    assert_eq!(
        code(
            h.engine
                .start_publishing("main-big-2", in_room("bigclass"), Channel::Main)
                .await
        ),
        1003023
    );
    // The same channel under another stream id in another room: allowed (encode once).
    h.engine
        .start_publishing("main-g3", in_room("group-3"), Channel::Main)
        .await
        .unwrap();
    // Another channel in the same room: allowed.
    h.engine
        .start_publishing("aux-big", in_room("bigclass"), Channel::Aux)
        .await
        .unwrap();
    let state = h.engine.state().await.unwrap();
    assert_eq!(state.publishing.len(), 3);
}

/// A backend that cannot relay (the double, like a Janus before 1.1.0): `server` fan-out
/// refuses the publish with 1003903 and keeps nothing; `auto` publishes from the box.
#[tokio::test]
async fn fanout_server_refused_1003903_auto_falls_back_to_device() {
    let mut s = settings(RoomMode::Multi);
    s.fanout = FanoutPolicy::Server;
    let h = Harness::start(s);
    h.engine.login_room("bigclass", user(), None).await.unwrap();
    assert_eq!(
        code(
            h.engine
                .start_publishing("main-big", in_room("bigclass"), Channel::Main)
                .await
        ),
        1003903
    );
    assert!(h.engine.state().await.unwrap().publishing.is_empty());

    let mut s = settings(RoomMode::Multi);
    s.fanout = FanoutPolicy::Auto;
    let h = Harness::start(s);
    h.engine.login_room("bigclass", user(), None).await.unwrap();
    let state = h
        .engine
        .start_publishing("main-big", in_room("bigclass"), Channel::Main)
        .await
        .unwrap();
    assert_eq!(state, PublisherState::Publishing);
    let snapshot = h.engine.state().await.unwrap();
    assert_eq!(snapshot.publishing[0].fanout, Some(Fanout::Device));
}

#[tokio::test]
async fn stream_id_in_use_1003028() {
    let h = Harness::start(settings(RoomMode::Multi));
    h.engine.login_room("bigclass", user(), None).await.unwrap();
    h.engine.login_room("group-3", user(), None).await.unwrap();
    h.engine
        .start_publishing("cam", in_room("bigclass"), Channel::Main)
        .await
        .unwrap();
    assert_eq!(
        code(
            h.engine
                .start_publishing("cam", in_room("group-3"), Channel::Main)
                .await
        ),
        1003028
    );
    assert_eq!(
        code(
            h.engine
                .start_publishing("cam", in_room("bigclass"), Channel::Aux)
                .await
        ),
        1003028
    );
}

/// Issue 18: `rooms.allowed` keeps the camera out of rooms someone made up, for commands
/// and for a restore alike; an empty list allows every room.
#[tokio::test]
async fn rooms_off_the_allow_list_are_refused_1002906() {
    let mut settings = settings(RoomMode::Multi);
    settings.allowed_rooms = RoomAllowList::new(vec!["bigclass".into(), "group-*".into()]);
    let h = Harness::start(settings);
    let refused = h
        .engine
        .login_room("attacker-room", user(), None)
        .await
        .expect_err("not allowed");
    assert_eq!(refused.code().as_u32(), 1002906);
    assert!(refused.to_string().contains("rooms.allowed"), "{refused}");
    assert!(h.rooms.calls().is_empty(), "nothing reached the SFU");
    h.engine.login_room("bigclass", user(), None).await.unwrap();
    h.engine.login_room("group-3", user(), None).await.unwrap();
    let saved = DesiredState {
        rooms: vec![DesiredRoom {
            room_id: RoomId::parse("elsewhere").unwrap(),
            server: None,
            user: user(),
            had_token: false,
        }],
        ..Default::default()
    };
    let report = h.engine.restore(saved).await.unwrap();
    assert!(report.rooms.is_empty());
    assert!(
        report.refused[0].contains("1002906"),
        "{:?}",
        report.refused
    );
}

/// Issue 18: the engine accepted 300 played streams the state file could not hold, and
/// a restart lost every room. The limit is now enforced when the command arrives.
#[tokio::test]
async fn one_stream_past_the_limit_is_refused_1000903_and_changes_nothing() {
    use super::limits::MAX_STREAMS;
    let h = Harness::start(settings(RoomMode::Multi));
    h.engine.login_room("bigclass", user(), None).await.unwrap();
    h.engine
        .start_publishing("cam", in_room("bigclass"), Channel::Main)
        .await
        .unwrap();
    for n in 1..MAX_STREAMS {
        h.engine
            .start_playing(&format!("s{n}"), play_in("bigclass"))
            .await
            .unwrap();
    }
    let before = h.engine.state().await.unwrap();
    assert_eq!(before.publishing.len() + before.playing.len(), MAX_STREAMS);
    let refused = h
        .engine
        .start_playing("one-more", play_in("bigclass"))
        .await
        .expect_err("past the limit");
    assert_eq!(refused.code().as_u32(), 1000903);
    assert!(refused.to_string().contains("256 streams"), "{refused}");
    assert_eq!(
        code(
            h.engine
                .start_publishing("cam-aux", in_room("bigclass"), Channel::Aux)
                .await
        ),
        1000903
    );
    assert_eq!(h.engine.state().await.unwrap(), before);
    // One stopped, one fits again.
    h.engine.stop_playing("s1").await.unwrap();
    h.engine
        .start_playing("one-more", play_in("bigclass"))
        .await
        .unwrap();
}

#[tokio::test]
async fn identifiers_are_checked_with_their_codes() {
    let h = Harness::start(settings(RoomMode::Multi));
    let e = &h.engine;
    assert_eq!(code(e.login_room("", user(), None).await), 1002011);
    assert_eq!(code(e.login_room("big class", user(), None).await), 1002012);
    assert_eq!(
        code(e.login_room(&"r".repeat(128), user(), None).await),
        1002013
    );
    assert_eq!(code(User::parse("", "n")), 1002005);
    assert_eq!(code(User::parse("a b", "n")), 1002006);
    assert_eq!(code(User::parse("u".repeat(64), "n")), 1002007);
    assert_eq!(code(User::parse("u", "")), 1002008);
    assert_eq!(code(User::parse("u", "tab\there")), 1002009);
    assert_eq!(code(User::parse("u", "n".repeat(256))), 1002010);
    e.login_room("bigclass", user(), None).await.unwrap();
    assert_eq!(
        code(
            e.start_publishing(&"s".repeat(257), in_room("bigclass"), Channel::Main)
                .await
        ),
        1000014
    );
    assert_eq!(
        code(
            e.start_publishing("", in_room("bigclass"), Channel::Main)
                .await
        ),
        1000015
    );
    assert_eq!(
        code(
            e.start_publishing("a.b", in_room("bigclass"), Channel::Main)
                .await
        ),
        1000016
    );
    assert_eq!(
        code(e.start_playing("a b", play_in("bigclass")).await),
        1000016
    );
    assert_eq!(
        code(
            e.send_custom_command("bigclass", &["a/b".into()], "hi")
                .await
        ),
        1002006
    );
    assert_eq!(code(e.stop_publishing("never-started").await), 1000017);
    assert_eq!(code(e.stop_playing("never-started").await), 1000017);
    // Nothing was changed by any refusal.
    let state = e.state().await.unwrap();
    assert_eq!(room_ids(&state), ["bigclass"]);
    assert!(state.publishing.is_empty() && state.playing.is_empty());
}

#[tokio::test]
async fn rooms_not_logged_in_1002002_and_1009005() {
    let h = Harness::start(settings(RoomMode::Multi));
    let e = &h.engine;
    assert_eq!(code(e.logout_room(Some("bigclass")).await), 1002002);
    assert_eq!(
        code(
            e.start_publishing("s", in_room("bigclass"), Channel::Main)
                .await
        ),
        1002002
    );
    assert_eq!(
        code(e.start_playing("s", play_in("bigclass")).await),
        1002002
    );
    assert_eq!(
        code(e.send_broadcast_message("bigclass", "hello").await),
        1009005
    );
    assert_eq!(
        code(e.send_custom_command("bigclass", &[], "hello").await),
        1009005
    );
    // Logging out of nothing when no room is given is not an error.
    assert_eq!(e.logout_room(None).await.unwrap(), Vec::<RoomId>::new());
}

#[tokio::test]
async fn message_limits_1009001_1009002() {
    let h = Harness::start(settings(RoomMode::Multi));
    h.engine.login_room("bigclass", user(), None).await.unwrap();
    assert_eq!(
        code(h.engine.send_broadcast_message("bigclass", "").await),
        1009001
    );
    assert_eq!(
        code(
            h.engine
                .send_broadcast_message("bigclass", &"m".repeat(1025))
                .await
        ),
        1009002
    );
    assert_eq!(
        code(h.engine.send_custom_command("bigclass", &[], "").await),
        1009001
    );
    assert_eq!(
        code(
            h.engine
                .send_custom_command("bigclass", &[], &"m".repeat(1025))
                .await
        ),
        1009002
    );
    h.engine
        .send_broadcast_message("bigclass", &"m".repeat(1024))
        .await
        .unwrap();
    h.engine
        .send_custom_command("bigclass", &["teacher".into()], "raise-hand")
        .await
        .unwrap();
    let calls = h.rooms.calls();
    assert!(
        calls
            .iter()
            .any(|c| c == "custom bigclass [teacher] raise-hand"),
        "{calls:?}"
    );
}

#[tokio::test]
async fn logout_of_one_room_stops_exactly_its_streams() {
    let h = Harness::start(settings(RoomMode::Multi));
    let e = &h.engine;
    h.rooms.add_remote_stream("bigclass", "teacher-cam");
    h.rooms.add_remote_stream("group-3", "student-cam");
    e.login_room("bigclass", user(), None).await.unwrap();
    e.login_room("group-3", user(), None).await.unwrap();
    e.start_publishing("main-big", in_room("bigclass"), Channel::Main)
        .await
        .unwrap();
    e.start_publishing("main-g3", in_room("group-3"), Channel::Main)
        .await
        .unwrap();
    e.start_playing("teacher-cam", play_in("bigclass"))
        .await
        .unwrap();
    e.start_playing("student-cam", play_in("group-3"))
        .await
        .unwrap();

    let left = e.logout_room(Some("group-3")).await.unwrap();
    assert_eq!(left, [RoomId::parse("group-3").unwrap()]);
    let state = e.state().await.unwrap();
    assert_eq!(room_ids(&state), ["bigclass"]);
    assert_eq!(
        publishing(&state),
        [("main-big", "bigclass", PublisherState::Publishing)]
    );
    assert_eq!(state.playing.len(), 1);
    assert_eq!(state.playing[0].stream_id.as_str(), "teacher-cam");
    let open = wait_open_peers(&h, 2).await;
    assert_eq!(
        open,
        ["publish bigclass/main-big", "play bigclass/teacher-cam"]
    );
    assert!(h.rooms.calls().contains(&"logout group-3".to_string()));

    // No room given: every room is left and nothing keeps publishing or playing.
    e.logout_room(None).await.unwrap();
    let state = e.state().await.unwrap();
    assert!(state.rooms.is_empty() && state.publishing.is_empty() && state.playing.is_empty());
    assert!(wait_open_peers(&h, 0).await.is_empty());
}

async fn wait_open_peers(h: &Harness, count: usize) -> Vec<String> {
    for _ in 0..100 {
        let open = h.media.open_peers();
        if open.len() == count {
            return open;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.media.open_peers()
}

#[tokio::test]
async fn logout_events_are_per_room() {
    let mut h = Harness::start(settings(RoomMode::Multi));
    h.engine.login_room("bigclass", user(), None).await.unwrap();
    h.engine.login_room("group-3", user(), None).await.unwrap();
    h.engine
        .start_publishing("main-g3", in_room("group-3"), Channel::Main)
        .await
        .unwrap();
    h.drain_events();
    h.engine.logout_room(Some("group-3")).await.unwrap();
    let events = h.drain_events();
    assert!(
        events.iter().all(|e| e.room_id().as_str() == "group-3"),
        "{events:?}"
    );
    assert!(events.iter().any(|e| matches!(
        e,
        Event::RoomStateChanged {
            reason: RoomStateReason::Logout,
            ..
        }
    )));
    assert!(events.iter().any(|e| matches!(
        e,
        Event::PublisherStateUpdate {
            state: PublisherState::NoPublish,
            ..
        }
    )));
}

#[tokio::test]
async fn login_reports_logining_then_logined_or_login_failed() {
    let mut h = Harness::start(settings(RoomMode::Multi));
    h.engine.login_room("bigclass", user(), None).await.unwrap();
    h.rooms.fail_login(
        "locked",
        Some(BackendError::new(ErrorCode::ROOM_AUTH_FAILED, "wrong pin")),
    );
    assert_eq!(
        code(h.engine.login_room("locked", user(), None).await),
        1002033
    );
    let reasons: Vec<(String, RoomStateReason, u32)> = h
        .drain_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::RoomStateChanged {
                room_id,
                reason,
                error_code,
                ..
            } => Some((room_id.to_string(), reason, error_code.as_u32())),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        [
            ("bigclass".into(), RoomStateReason::Logining, 0),
            ("bigclass".into(), RoomStateReason::Logined, 0),
            ("locked".into(), RoomStateReason::Logining, 0),
            ("locked".into(), RoomStateReason::LoginFailed, 1002033),
        ]
    );
    assert_eq!(room_ids(&h.engine.state().await.unwrap()), ["bigclass"]);
}

#[tokio::test]
async fn messages_and_callbacks_are_isolated_per_room() {
    let mut h = Harness::start(settings(RoomMode::Multi));
    h.engine.login_room("bigclass", user(), None).await.unwrap();
    h.engine.login_room("group-3", user(), None).await.unwrap();
    h.drain_events();
    let teacher = UserInfo {
        user_id: "teacher".into(),
        user_name: "Teacher".into(),
    };
    let message = BroadcastMessage {
        message: "open page 12".into(),
        message_id: 7,
        send_time: 1,
        from_user: teacher.clone(),
    };
    for room in ["group-3", "not-joined"] {
        h.backend_events
            .send(BackendEvent::BroadcastMessage {
                room: RoomId::parse(room).unwrap(),
                message: message.clone(),
            })
            .await
            .unwrap();
        h.backend_events
            .send(BackendEvent::Users {
                room: RoomId::parse(room).unwrap(),
                update: UpdateType::Add,
                users: vec![teacher.clone()],
            })
            .await
            .unwrap();
    }
    let state = h.engine.state().await.unwrap();
    let events = h.drain_events();
    assert_eq!(events.len(), 2, "only group-3's events pass: {events:?}");
    assert!(events.iter().all(|e| e.room_id().as_str() == "group-3"));
    let group3 = state
        .rooms
        .iter()
        .find(|r| r.room_id.as_str() == "group-3")
        .unwrap();
    assert_eq!(group3.users, [teacher]);
    let big = state
        .rooms
        .iter()
        .find(|r| r.room_id.as_str() == "bigclass")
        .unwrap();
    assert!(big.users.is_empty());
}

#[tokio::test(start_paused = true)]
async fn lost_room_reconnects_and_restores_its_streams() {
    let mut h = Harness::start(settings(RoomMode::Multi));
    h.rooms.add_remote_stream("bigclass", "teacher-cam");
    h.engine.login_room("bigclass", user(), None).await.unwrap();
    h.engine.login_room("group-3", user(), None).await.unwrap();
    h.engine
        .start_publishing("main-big", in_room("bigclass"), Channel::Main)
        .await
        .unwrap();
    h.engine
        .start_playing("teacher-cam", play_in("bigclass"))
        .await
        .unwrap();
    h.engine
        .start_publishing("main-g3", in_room("group-3"), Channel::Main)
        .await
        .unwrap();
    h.drain_events();

    h.backend_events
        .send(BackendEvent::RoomLost {
            room: RoomId::parse("bigclass").unwrap(),
            reason: "handle hung up".into(),
        })
        .await
        .unwrap();
    let state = wait_until(&h, "bigclass is back with its streams", |s| {
        s.rooms.iter().all(|r| r.state == RoomState::Logined)
            && s.publishing
                .iter()
                .all(|p| p.state == PublisherState::Publishing)
            && s.playing.iter().all(|p| p.state == PlayerState::Playing)
    })
    .await;
    assert_eq!(state.publishing.len(), 2);
    let events = h.drain_events();
    assert!(
        events.iter().all(|e| e.room_id().as_str() == "bigclass"),
        "group-3 undisturbed: {events:?}"
    );
    let reasons: Vec<RoomStateReason> = events
        .iter()
        .filter_map(|e| match e {
            Event::RoomStateChanged { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        [RoomStateReason::Reconnecting, RoomStateReason::Reconnected]
    );
    let calls = h.rooms.calls();
    assert_eq!(
        calls
            .iter()
            .filter(|c| *c == "publish bigclass main-big")
            .count(),
        2
    );
    assert_eq!(
        calls
            .iter()
            .filter(|c| *c == "publish group-3 main-g3")
            .count(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn reconnect_gives_up_after_the_window() {
    let mut h = Harness::start(settings(RoomMode::Multi));
    h.engine.login_room("bigclass", user(), None).await.unwrap();
    h.engine
        .start_publishing("main-big", in_room("bigclass"), Channel::Main)
        .await
        .unwrap();
    h.rooms.fail_login(
        "bigclass",
        Some(BackendError::new(
            ErrorCode::SFU_UNREACHABLE,
            "connection refused",
        )),
    );
    h.drain_events();
    h.backend_events
        .send(BackendEvent::RoomLost {
            room: RoomId::parse("bigclass").unwrap(),
            reason: "websocket closed".into(),
        })
        .await
        .unwrap();
    let state = wait_until(&h, "the room is given up", |s| s.rooms.is_empty()).await;
    assert!(state.publishing.is_empty());
    let events = h.drain_events();
    let last_room_event = events
        .iter()
        .rev()
        .find_map(|e| match e {
            Event::RoomStateChanged {
                reason, error_code, ..
            } => Some((*reason, error_code.as_u32())),
            _ => None,
        })
        .unwrap();
    assert_eq!(last_room_event, (RoomStateReason::ReconnectFailed, 1002905));
    let attempts = h
        .rooms
        .calls()
        .iter()
        .filter(|c| c.starts_with("login bigclass"))
        .count();
    assert!(
        (4..40).contains(&attempts),
        "backoff, no tight loop: {attempts} attempts in 30 s"
    );
}

#[tokio::test]
async fn kicked_out_ends_the_rooms_streams() {
    let mut h = Harness::start(settings(RoomMode::Multi));
    h.engine.login_room("bigclass", user(), None).await.unwrap();
    h.engine
        .start_publishing("main-big", in_room("bigclass"), Channel::Main)
        .await
        .unwrap();
    h.drain_events();
    h.backend_events
        .send(BackendEvent::KickedOut {
            room: RoomId::parse("bigclass").unwrap(),
            error: BackendError::new(ErrorCode::SFU_REFUSED, "room destroyed"),
        })
        .await
        .unwrap();
    let state = h.engine.state().await.unwrap();
    assert!(state.rooms.is_empty() && state.publishing.is_empty());
    let events = h.drain_events();
    assert!(events.iter().any(|e| matches!(
        e,
        Event::RoomStateChanged {
            reason: RoomStateReason::KickOut,
            ..
        }
    )));
    assert!(events.iter().any(|e| matches!(
        e,
        Event::PublisherStateUpdate {
            state: PublisherState::NoPublish,
            ..
        }
    )));
}

#[tokio::test(start_paused = true)]
async fn playing_waits_for_a_stream_that_is_not_published_yet() {
    let h = Harness::start(settings(RoomMode::Multi));
    h.engine.login_room("bigclass", user(), None).await.unwrap();
    let state = h
        .engine
        .start_playing("teacher-cam", play_in("bigclass"))
        .await
        .unwrap();
    assert_eq!(state, PlayerState::PlayRequesting);
    h.rooms.add_remote_stream("bigclass", "teacher-cam");
    h.backend_events
        .send(BackendEvent::Streams {
            room: RoomId::parse("bigclass").unwrap(),
            update: UpdateType::Add,
            streams: vec![remote("teacher-cam")],
        })
        .await
        .unwrap();
    wait_until(&h, "the stream plays", |s| {
        s.playing
            .first()
            .is_some_and(|p| p.state == PlayerState::Playing)
    })
    .await;
    // It stops being published: back to waiting, the peer closed.
    h.backend_events
        .send(BackendEvent::Streams {
            room: RoomId::parse("bigclass").unwrap(),
            update: UpdateType::Delete,
            streams: vec![remote("teacher-cam")],
        })
        .await
        .unwrap();
    let state = h.engine.state().await.unwrap();
    assert_eq!(state.playing[0].state, PlayerState::PlayRequesting);
}

/// A play answered "waiting for its publisher" is part of the desired state: when the
/// publisher appears and that first play fails, it is retried, not dropped.
#[tokio::test(start_paused = true)]
async fn a_waiting_play_whose_first_attempt_fails_is_retried() {
    let h = Harness::start(settings(RoomMode::Multi));
    h.engine.login_room("bigclass", user(), None).await.unwrap();
    let state = h
        .engine
        .start_playing("teacher-cam", play_in("bigclass"))
        .await
        .unwrap();
    assert_eq!(state, PlayerState::PlayRequesting);
    h.rooms.fail_play(Some(BackendError::new(
        ErrorCode::PLAY_WEBRTC_FAILED,
        "ICE failed",
    )));
    h.rooms.add_remote_stream("bigclass", "teacher-cam");
    h.backend_events
        .send(BackendEvent::Streams {
            room: RoomId::parse("bigclass").unwrap(),
            update: UpdateType::Add,
            streams: vec![remote("teacher-cam")],
        })
        .await
        .unwrap();
    let plays = |h: &Harness| {
        h.rooms
            .calls()
            .iter()
            .filter(|c| *c == "play bigclass teacher-cam")
            .count()
    };
    wait_until(&h, "the play fails", |_| plays(&h) >= 2).await;
    let state = h.engine.state().await.unwrap();
    assert_eq!(state.playing.len(), 1, "still wanted: {state:?}");
    assert_eq!(state.playing[0].state, PlayerState::PlayRequesting);
    h.rooms.fail_play(None);
    wait_until(&h, "the retry plays it", |s| {
        s.playing
            .first()
            .is_some_and(|p| p.state == PlayerState::Playing)
    })
    .await;
}

#[tokio::test]
async fn a_failing_source_refuses_the_publish_with_a_code() {
    let mut h = Harness::start(settings(RoomMode::Multi));
    h.engine.login_room("bigclass", user(), None).await.unwrap();
    h.media.break_channel(Some(Channel::Aux));
    h.drain_events();
    assert_eq!(
        code(
            h.engine
                .start_publishing("aux", in_room("bigclass"), Channel::Aux)
                .await
        ),
        1003901
    );
    let events = h.drain_events();
    assert!(events.iter().any(|e| matches!(e,
        Event::PublisherStateUpdate { state: PublisherState::NoPublish, error_code, .. } if error_code.as_u32() == 1003901)));
    assert!(h.engine.state().await.unwrap().publishing.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_peer_failing_after_it_was_up_is_restarted() {
    let h = Harness::start(settings(RoomMode::Multi));
    h.engine.login_room("bigclass", user(), None).await.unwrap();
    h.engine
        .start_publishing("main-big", in_room("bigclass"), Channel::Main)
        .await
        .unwrap();
    let first = h.media.peer("publish bigclass/main-big").unwrap();
    first.fail("ICE failed");
    wait_until(&h, "a new peer publishes", |_| {
        h.rooms
            .calls()
            .iter()
            .filter(|c| *c == "publish bigclass main-big")
            .count()
            == 2
    })
    .await;
    let state = wait_until(&h, "publishing again", |s| {
        s.publishing
            .first()
            .is_some_and(|p| p.state == PublisherState::Publishing)
    })
    .await;
    assert_eq!(state.rooms.len(), 1, "the room stayed logged in");
    let calls = h.rooms.calls();
    let unpublish = calls
        .iter()
        .position(|c| c == "unpublish bigclass main-big")
        .unwrap();
    let second_publish = calls
        .iter()
        .rposition(|c| c == "publish bigclass main-big")
        .unwrap();
    assert!(
        unpublish < second_publish,
        "old publisher released first: {calls:?}"
    );
}

#[tokio::test]
async fn login_in_flight_then_publish_starts_after_login() {
    let h = Harness::start(settings(RoomMode::Multi));
    let (a, b) = tokio::join!(
        h.engine.login_room("bigclass", user(), None),
        h.engine
            .start_publishing("main-big", in_room("bigclass"), Channel::Main),
    );
    a.unwrap();
    assert_eq!(b.unwrap(), PublisherState::Publishing);
    let calls = h.rooms.calls();
    assert_eq!(
        calls,
        ["login bigclass box-17", "publish bigclass main-big"]
    );
}

#[tokio::test]
async fn shutdown_leaves_every_room() {
    let h = Harness::start(settings(RoomMode::Multi));
    h.engine.login_room("bigclass", user(), None).await.unwrap();
    h.engine.login_room("group-3", user(), None).await.unwrap();
    h.engine
        .start_publishing("main-big", in_room("bigclass"), Channel::Main)
        .await
        .unwrap();
    h.shutdown.cancel();
    h.task.await.unwrap();
    let calls = h.rooms.calls();
    assert!(calls.contains(&"logout bigclass".to_string()));
    assert!(calls.contains(&"logout group-3".to_string()));
    assert!(h.media.open_peers().is_empty());
    assert_eq!(code(h.engine.state().await), 1000001);
}

// ---- desired state and restore ------------------------------------------------------

fn desired_rooms(h: &Harness) -> Vec<String> {
    h.engine
        .desired()
        .borrow()
        .rooms
        .iter()
        .map(|r| r.room_id.to_string())
        .collect()
}

fn saved() -> DesiredState {
    let room = |id: &str, had_token| DesiredRoom {
        room_id: RoomId::parse(id).unwrap(),
        server: None,
        user: user(),
        had_token,
    };
    DesiredState {
        rooms: vec![
            room("bigclass", false),
            room("group-3", false),
            room("staff", true),
        ],
        publishing: vec![
            DesiredPublish {
                stream_id: StreamId::parse("main-big").unwrap(),
                room_id: RoomId::parse("bigclass").unwrap(),
                channel: Channel::Main,
            },
            DesiredPublish {
                stream_id: StreamId::parse("main-g3").unwrap(),
                room_id: RoomId::parse("group-3").unwrap(),
                channel: Channel::Main,
            },
        ],
        playing: vec![DesiredPlay {
            stream_id: StreamId::parse("teacher-cam").unwrap(),
            room_id: RoomId::parse("bigclass").unwrap(),
            output: PlayOutput::None,
        }],
    }
}

#[tokio::test]
async fn the_desired_state_follows_accepted_commands_only() {
    let h = Harness::start(settings(RoomMode::Multi));
    let desired = h.engine.desired();
    assert!(desired.borrow().is_empty());
    h.engine
        .login_room("bigclass", user(), Some(Secret::new("pin-1234")))
        .await
        .unwrap();
    h.engine.login_room("group-3", user(), None).await.unwrap();
    // A refused login and a failed one never make it in.
    h.rooms.fail_login(
        "missing",
        Some(BackendError::new(
            ErrorCode::SFU_ROOM_NOT_FOUND,
            "no such room",
        )),
    );
    assert!(h.engine.login_room("missing", user(), None).await.is_err());
    h.engine
        .start_publishing("main-big", in_room("bigclass"), Channel::Main)
        .await
        .unwrap();
    // Playing a stream nobody publishes yet is accepted (PlayRequesting): it counts.
    h.engine
        .start_playing("teacher-cam", play_in("group-3"))
        .await
        .unwrap();
    h.media.break_channel(Some(Channel::Aux));
    assert!(
        h.engine
            .start_publishing("doc", in_room("group-3"), Channel::Aux)
            .await
            .is_err()
    );
    h.engine.state().await.unwrap();
    let state = h.engine.desired().borrow().clone();
    assert_eq!(desired_rooms(&h), ["bigclass", "group-3"]);
    assert!(state.rooms[0].had_token && !state.rooms[1].had_token);
    let published: Vec<&str> = state
        .publishing
        .iter()
        .map(|p| p.stream_id.as_str())
        .collect();
    assert_eq!(published, ["main-big"]);
    assert_eq!(state.playing.len(), 1);
    assert!(
        !format!("{state:?}").contains("pin-1234"),
        "no token: {state:?}"
    );

    h.engine.stop_playing("teacher-cam").await.unwrap();
    h.engine.logout_room(Some("bigclass")).await.unwrap();
    h.engine.state().await.unwrap();
    let state = h.engine.desired().borrow().clone();
    assert_eq!(desired_rooms(&h), ["group-3"]);
    assert!(state.publishing.is_empty() && state.playing.is_empty());

    // Shutting down leaves the rooms but does not give them up.
    h.shutdown.cancel();
    h.task.await.unwrap();
    assert_eq!(desired.borrow().rooms.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn restore_rejoins_rooms_and_restarts_their_streams() {
    let mut h = Harness::start(settings(RoomMode::Multi));
    h.rooms.add_remote_stream("bigclass", "teacher-cam");
    h.rooms.fail_login(
        "staff",
        Some(BackendError::new(
            ErrorCode::ROOM_AUTH_FAILED,
            "wrong pin (error 433)",
        )),
    );
    let report = h.engine.restore(saved()).await.unwrap();
    let names = |ids: &[RoomId]| ids.iter().map(|r| r.to_string()).collect::<Vec<_>>();
    assert_eq!(names(&report.rooms), ["bigclass", "group-3", "staff"]);
    assert_eq!(report.publishing.len(), 2);
    assert_eq!(report.playing.len(), 1);
    assert!(report.refused.is_empty());
    let state = wait_until(&h, "restored rooms and streams are up", |s| {
        s.rooms.len() == 2
            && s.rooms.iter().all(|r| r.state == RoomState::Logined)
            && s.publishing
                .iter()
                .all(|p| p.state == PublisherState::Publishing)
            && s.playing.iter().all(|p| p.state == PlayerState::Playing)
    })
    .await;
    assert_eq!(room_ids(&state), ["bigclass", "group-3"]);
    let events = h.drain_events();
    let restored: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::RoomRestored {
                room_id,
                publishing,
                ..
            } => Some(format!("{room_id}:{}", publishing.len())),
            _ => None,
        })
        .collect();
    assert_eq!(restored, ["bigclass:1", "group-3:1", "staff:0"]);
    // The pin room: no token was kept, so its login fails with 1002033 and says why.
    let failed = events
        .iter()
        .find_map(|e| match e {
            Event::RoomStateChanged {
                room_id,
                reason: RoomStateReason::LoginFailed,
                error_code,
                error_message,
                ..
            } if room_id.as_str() == "staff" => Some((*error_code, error_message.clone())),
            _ => None,
        })
        .expect("staff LoginFailed");
    assert_eq!(failed.0, ErrorCode::ROOM_AUTH_FAILED);
    assert!(failed.1.unwrap().contains("never stores"), "says why");
    assert_eq!(desired_rooms(&h), ["bigclass", "group-3"], "staff given up");
}

#[tokio::test(start_paused = true)]
async fn restored_rooms_and_streams_keep_retrying_what_is_not_there_yet() {
    let mut h = Harness::start(settings(RoomMode::Multi));
    // Janus unreachable at boot, and the camera not plugged in.
    h.rooms.fail_login(
        "bigclass",
        Some(BackendError::new(
            ErrorCode::SFU_UNREACHABLE,
            "connection refused",
        )),
    );
    h.media.break_channel(Some(Channel::Main));
    let mut state = saved();
    state.rooms.truncate(1);
    state.publishing.truncate(1);
    state.playing.clear();
    h.engine.restore(state).await.unwrap();
    wait_until(&h, "the room is reconnecting", |s| {
        s.rooms
            .first()
            .is_some_and(|r| r.state == RoomState::Reconnecting)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(desired_rooms(&h), ["bigclass"], "kept while retrying");
    // Janus is back: the room is in, the stream keeps retrying the camera.
    h.rooms.fail_login("bigclass", None);
    wait_until(&h, "the room is back", |s| {
        s.rooms
            .first()
            .is_some_and(|r| r.state == RoomState::Logined)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let state = h.engine.state().await.unwrap();
    assert_eq!(
        publishing(&state),
        [("main-big", "bigclass", PublisherState::PublishRequesting)]
    );
    // The camera is back: publishing resumes.
    h.media.break_channel(None);
    wait_until(&h, "publishing", |s| {
        s.publishing
            .first()
            .is_some_and(|p| p.state == PublisherState::Publishing)
    })
    .await;
    let reasons: Vec<RoomStateReason> = h
        .drain_events()
        .iter()
        .filter_map(|e| match e {
            Event::RoomStateChanged { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        [
            RoomStateReason::Logining,
            RoomStateReason::Reconnecting,
            RoomStateReason::Reconnected
        ]
    );
    assert_eq!(h.engine.desired().borrow().publishing.len(), 1);
}

#[tokio::test]
async fn restore_applies_the_current_rules() {
    // The box was in three rooms; its configuration now allows one (single mode).
    let mut h = Harness::start(settings(RoomMode::Single));
    let report = h.engine.restore(saved()).await.unwrap();
    assert_eq!(report.rooms.len(), 1);
    assert_eq!(report.publishing.len(), 1);
    assert_eq!(report.playing.len(), 1);
    assert_eq!(report.refused.len(), 3, "{:?}", report.refused);
    assert!(
        report.refused[0].contains("1002001"),
        "{:?}",
        report.refused
    );
    assert!(
        report.refused[2].contains("1002002"),
        "{:?}",
        report.refused
    );
    h.engine.state().await.unwrap();
    let codes: Vec<u32> = h
        .drain_events()
        .iter()
        .filter_map(|e| match e {
            Event::RoomStateChanged {
                reason: RoomStateReason::LoginFailed,
                error_code,
                ..
            } => Some(error_code.as_u32()),
            Event::PublisherStateUpdate {
                state: PublisherState::NoPublish,
                error_code,
                ..
            } => Some(error_code.as_u32()),
            _ => None,
        })
        .collect();
    assert_eq!(codes, [1002001, 1002001, 1002002]);
    assert_eq!(desired_rooms(&h), ["bigclass"]);
}

// ---- several SFU servers --------------------------------------------------------------

fn two_servers() -> EngineSettings {
    let district = ServerName::parse("district").unwrap();
    EngineSettings {
        max_rooms: 2,
        servers: ServerRoutes::new(
            [district.clone()],
            vec![Route {
                rooms: "group-*".into(),
                server: district,
            }],
        ),
        ..settings(RoomMode::Multi)
    }
}

#[tokio::test]
async fn rooms_go_to_the_named_server_else_by_route_else_default() {
    let mut h = Harness::start(two_servers());
    h.engine.login_room("group-3", user(), None).await.unwrap();
    h.engine
        .login_room_on("bigclass", Some("district"), user(), None)
        .await
        .unwrap();
    assert_eq!(
        h.rooms.calls(),
        [
            "login group-3 box-17 @district",
            "login bigclass box-17 @district"
        ]
    );
    let state = h.engine.state().await.unwrap();
    let servers: Vec<(&str, &str)> = state
        .rooms
        .iter()
        .map(|r| (r.room_id.as_str(), r.server.as_str()))
        .collect();
    assert_eq!(servers, [("bigclass", "district"), ("group-3", "district")]);
    // max_rooms counts the rooms of every server together.
    assert_eq!(
        code(h.engine.login_room("other", user(), None).await),
        1002037
    );
    h.engine.logout_room(Some("bigclass")).await.unwrap();
    h.engine.login_room("bigclass", user(), None).await.unwrap();
    assert_eq!(
        h.rooms.calls().last().map(String::as_str),
        Some("login bigclass box-17")
    );
    // Events carry the server.
    let servers: Vec<(String, Option<String>)> = h
        .drain_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::RoomStateChanged {
                room_id,
                server,
                reason: RoomStateReason::Logined,
                ..
            } => Some((room_id.to_string(), server.map(|s| s.to_string()))),
            _ => None,
        })
        .collect();
    assert_eq!(
        servers,
        [
            ("group-3".into(), Some("district".into())),
            ("bigclass".into(), Some("district".into())),
            ("bigclass".into(), Some("default".into())),
        ]
    );
}

#[tokio::test]
async fn an_unknown_server_is_refused_with_1002908_before_the_sfu_hears_of_it() {
    let h = Harness::start(two_servers());
    let e = h
        .engine
        .login_room_on("bigclass", Some("nowhere"), user(), None)
        .await
        .unwrap_err();
    assert_eq!(e.code().as_u32(), 1002908);
    assert!(e.to_string().contains("default, district"), "{e}");
    // A malformed name is simply not configured.
    assert_eq!(
        code(
            h.engine
                .login_room_on("bigclass", Some("no such/server"), user(), None)
                .await
        ),
        1002908
    );
    assert!(h.rooms.calls().is_empty());
}

#[tokio::test]
async fn one_user_across_servers() {
    let h = Harness::start(two_servers());
    h.engine.login_room("group-3", user(), None).await.unwrap();
    let other = User::parse("someone-else", "Other").unwrap();
    assert_eq!(
        code(h.engine.login_room("bigclass", other, None).await),
        1002018
    );
}

#[tokio::test]
async fn a_named_server_is_kept_in_the_desired_state_and_restored_there() {
    let h = Harness::start(two_servers());
    h.engine
        .login_room_on("bigclass", Some("district"), user(), None)
        .await
        .unwrap();
    h.engine.login_room("group-3", user(), None).await.unwrap();
    let saved = h.engine.desired().borrow().clone();
    let named: Vec<Option<&str>> = saved
        .rooms
        .iter()
        .map(|r| r.server.as_ref().map(ServerName::as_str))
        .collect();
    // bigclass was named; group-3 went by route and is routed again when restored.
    assert_eq!(named, [Some("district"), None]);
    let json = serde_json::to_string(&saved).unwrap();
    let back: DesiredState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, saved);

    let h2 = Harness::start(two_servers());
    h2.engine.restore(saved).await.unwrap();
    wait_until(&h2, "both rooms back", |s| {
        s.rooms.iter().all(|r| r.state == RoomState::Logined) && s.rooms.len() == 2
    })
    .await;
    let calls = h2.rooms.calls();
    assert!(
        calls.contains(&"login bigclass box-17 @district".to_string()),
        "{calls:?}"
    );
    assert!(
        calls.contains(&"login group-3 box-17 @district".to_string()),
        "{calls:?}"
    );
}

#[tokio::test]
async fn a_reload_logs_in_again_only_the_rooms_on_changed_servers() {
    let mut h = Harness::start(EngineSettings {
        max_rooms: 3,
        ..two_servers()
    });
    h.engine.login_room("group-3", user(), None).await.unwrap();
    h.engine.login_room("bigclass", user(), None).await.unwrap();
    h.engine
        .login_room_on("lab", Some("district"), user(), None)
        .await
        .unwrap();
    h.engine
        .start_publishing("main-group", in_room("group-3"), Channel::Main)
        .await
        .unwrap();
    h.drain_events();
    let before = h.rooms.calls().len();
    // district's settings changed; the new file has no route and no district for lab:
    // group-3 now goes to default; lab (named district) is still configured.
    let district = ServerName::parse("district").unwrap();
    let moved = h
        .engine
        .reroute(
            ServerRoutes::new([district.clone()], Vec::new()),
            vec![district.clone()],
        )
        .await
        .unwrap();
    let moved: Vec<&str> = moved.iter().map(RoomId::as_str).collect();
    assert_eq!(moved, ["group-3", "lab"]);
    let state = wait_until(&h, "both back and publishing", |s| {
        s.rooms.iter().all(|r| r.state == RoomState::Logined)
            && s.publishing
                .iter()
                .all(|p| p.state == PublisherState::Publishing)
    })
    .await;
    let servers: Vec<(&str, &str)> = state
        .rooms
        .iter()
        .map(|r| (r.room_id.as_str(), r.server.as_str()))
        .collect();
    assert_eq!(
        servers,
        [
            ("bigclass", "default"),
            ("group-3", "default"),
            ("lab", "district")
        ]
    );
    let calls = h.rooms.calls()[before..].to_vec();
    assert!(
        calls.iter().all(|c| !c.contains("bigclass")),
        "bigclass not touched: {calls:?}"
    );
    assert!(calls.contains(&"logout group-3".to_string()), "{calls:?}");
    assert!(
        calls.contains(&"login group-3 box-17".to_string()),
        "{calls:?}"
    );
    assert!(
        calls.contains(&"login lab box-17 @district".to_string()),
        "{calls:?}"
    );
    let reasons: Vec<(String, RoomStateReason)> = h
        .drain_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::RoomStateChanged {
                room_id, reason, ..
            } => Some((room_id.to_string(), reason)),
            _ => None,
        })
        .collect();
    assert!(
        reasons.iter().all(|(room, _)| room != "bigclass"),
        "{reasons:?}"
    );

    // district removed: lab, named there, is left with 1002908.
    h.engine
        .reroute(ServerRoutes::default(), vec![district])
        .await
        .unwrap();
    let state = h.engine.state().await.unwrap();
    let rooms: Vec<&str> = state.rooms.iter().map(|r| r.room_id.as_str()).collect();
    assert_eq!(rooms, ["bigclass", "group-3"]);
    assert!(h.drain_events().iter().any(|e| matches!(
        e,
        Event::RoomStateChanged {
            reason: RoomStateReason::ReconnectFailed,
            error_code,
            ..
        } if error_code.as_u32() == 1002908
    )));
}

#[tokio::test]
async fn a_server_back_ends_the_backoff_of_its_rooms_only() {
    let h = Harness::start(EngineSettings {
        reconnect: ReconnectPolicy {
            window: Duration::from_secs(60),
            // Far longer than the test: only the server's return can bring rooms back.
            backoff: crate::base::backoff::Backoff::new(
                Duration::from_secs(30),
                Duration::from_secs(30),
            ),
        },
        ..two_servers()
    });
    h.engine.login_room("group-3", user(), None).await.unwrap();
    h.engine.login_room("bigclass", user(), None).await.unwrap();
    for room in ["group-3", "bigclass"] {
        h.backend_events
            .send(BackendEvent::RoomLost {
                room: RoomId::parse(room).unwrap(),
                reason: "session lost".into(),
            })
            .await
            .unwrap();
    }
    wait_until(&h, "both reconnecting", |s| {
        s.rooms.iter().all(|r| r.state == RoomState::Reconnecting)
    })
    .await;
    h.backend_events
        .send(BackendEvent::ServerConnected {
            server: ServerName::parse("district").unwrap(),
        })
        .await
        .unwrap();
    let state = wait_until(&h, "group-3 (on district) back", |s| {
        s.rooms
            .iter()
            .any(|r| r.room_id.as_str() == "group-3" && r.state == RoomState::Logined)
    })
    .await;
    let bigclass = state
        .rooms
        .iter()
        .find(|r| r.room_id.as_str() == "bigclass")
        .unwrap();
    assert_eq!(
        bigclass.state,
        RoomState::Reconnecting,
        "bigclass is on default, which did not come back"
    );
}
