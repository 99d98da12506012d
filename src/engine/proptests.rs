//! Property tests of the room rules: any sequence of operations, injected backend and
//! media failures and backend events, on the in-memory doubles, keeps the invariants.
//!
//! After every step (once the engine has settled):
//! - at most `max_rooms` rooms (1 in single mode; none when multi mode is not enabled);
//! - one identity: `state.user` is set exactly while a room is present, and the SFU has
//!   us in exactly the engine's rooms, all as that user;
//! - no stream publishing or playing in a room that was left: every stream is in a
//!   present room, every stream the SFU has is one the engine has, every open media peer
//!   belongs to one of the engine's streams; one stream per channel and room;
//! - every operation is answered; every error carries a known code; every refusal by a
//!   rule changes nothing: the same state before and after, no SFU call, no event;
//! - a successful logout leaves nothing of the room behind;
//! - shutting down leaves every room and closes every peer;
//! - the desired state stays within the limits (`limits.rs`) and the state file holds it
//!   whole: `parse_state(render_state(desired)) == desired` (issue 18: the engine once
//!   accepted more streams than the file could hold, and a restart lost everything).
//!
//! 256 cases by default (`cargo test` stays fast); `PROPTEST_CASES=5000 cargo test
//! engine::proptests` for more. Time is paused: reconnect backoffs cost nothing.

use std::collections::BTreeSet;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError};

use super::backend::BackendEvent;
use super::double::Harness;
use super::event::{StreamInfo, UserInfo};
use super::limits::{MAX_STATE_BYTES, MAX_STREAMS};
use super::snapshot::EngineSnapshot;
use super::types::Direction;
use super::*;
use crate::service::state::{parse_state, render_state};

const ROOMS: [&str; 6] = ["r0", "r1", "r2", "r3", "r4", "r5"];
/// Our own stream ids.
const OWN: [&str; 4] = ["s0", "s1", "s2", "s3"];
/// Streams other participants publish.
const REMOTE: [&str; 3] = ["t0", "t1", "t2"];
/// Identities: the box, the box renamed (another identity), someone else.
const USERS: [(&str, &str); 3] = [
    ("box-17", "Room 101"),
    ("box-17", "Renamed"),
    ("other", "Other"),
];

/// Codes of refusals by a rule: decided by the engine before anything is done.
const RULE_CODES: &[u32] = &[
    1000014, 1000015, 1000016, 1000017, 1000903, 1001020, 1002001, 1002002, 1002005, 1002906,
    1002006, 1002007, 1002008, 1002009, 1002010, 1002011, 1002012, 1002013, 1002018, 1002036,
    1002037, 1003023, 1003028, 1003070, 1004070, 1009001, 1009002, 1009005,
];
/// Codes of failures reported by the SFU or the media (the engine acted, then failed).
const BACKEND_CODES: &[u32] = &[
    1000001, 1002033, 1002901, 1002902, 1002903, 1002904, 1002905, 1003901, 1003902, 1004901,
    1004902,
];
/// The login failures the double can be told to inject.
const LOGIN_FAILURES: [u32; 4] = [1002033, 1002901, 1002903, 1002904];

#[derive(Debug, Clone)]
enum Step {
    Login {
        room: usize,
        user: usize,
    },
    Logout {
        room: Option<usize>,
    },
    Publish {
        stream: usize,
        room: Option<usize>,
        aux: bool,
    },
    StopPublishing {
        stream: usize,
    },
    Play {
        stream: usize,
        room: Option<usize>,
    },
    StopPlaying {
        stream: usize,
    },
    /// `count` start_playing of distinct streams into one room, up to past the limit.
    PlayMany {
        room: usize,
        count: usize,
    },
    Broadcast {
        room: usize,
        len: usize,
    },
    Custom {
        room: usize,
        to_someone: bool,
    },
    SetRoomMode {
        multi: bool,
    },
    // Faults the doubles inject from now on.
    FailLogin {
        room: usize,
        code: Option<u32>,
    },
    FailPublish(bool),
    FailLogout(bool),
    BreakChannel(Option<bool>),
    // What the SFU and the media report on their own.
    RemoteStream {
        room: usize,
        stream: usize,
        add: bool,
    },
    Users {
        room: usize,
        add: bool,
    },
    RoomLost {
        room: usize,
    },
    KickedOut {
        room: usize,
    },
    StreamLost {
        room: usize,
        stream: usize,
        publishing: bool,
    },
    PeerFails {
        index: usize,
    },
    /// Lets time pass: backoffs and retries run.
    Wait {
        ms: u64,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let room = 0..ROOMS.len();
    let maybe_room = proptest::option::weighted(0.8, 0..ROOMS.len());
    prop_oneof![
        4 => (room.clone(), 0..USERS.len()).prop_map(|(room, user)| Step::Login { room, user }),
        2 => proptest::option::weighted(0.7, 0..ROOMS.len()).prop_map(|room| Step::Logout { room }),
        4 => (0..OWN.len(), maybe_room.clone(), any::<bool>())
            .prop_map(|(stream, room, aux)| Step::Publish { stream, room, aux }),
        1 => (0..OWN.len()).prop_map(|stream| Step::StopPublishing { stream }),
        3 => (0..REMOTE.len(), maybe_room).prop_map(|(stream, room)| Step::Play { stream, room }),
        1 => (0..REMOTE.len()).prop_map(|stream| Step::StopPlaying { stream }),
        1 => (room.clone(), prop_oneof![Just(3usize), Just(120), Just(MAX_STREAMS + 20)])
            .prop_map(|(room, count)| Step::PlayMany { room, count }),
        2 => (room.clone(), prop_oneof![Just(0), Just(5), Just(1024), Just(1025)])
            .prop_map(|(room, len)| Step::Broadcast { room, len }),
        1 => (room.clone(), any::<bool>()).prop_map(|(room, to_someone)| Step::Custom { room, to_someone }),
        1 => any::<bool>().prop_map(|multi| Step::SetRoomMode { multi }),
        1 => (room.clone(), proptest::option::of(proptest::sample::select(&LOGIN_FAILURES[..])))
            .prop_map(|(room, code)| Step::FailLogin { room, code }),
        1 => any::<bool>().prop_map(Step::FailPublish),
        1 => any::<bool>().prop_map(Step::FailLogout),
        1 => proptest::option::of(any::<bool>()).prop_map(Step::BreakChannel),
        2 => (room.clone(), 0..REMOTE.len(), any::<bool>())
            .prop_map(|(room, stream, add)| Step::RemoteStream { room, stream, add }),
        1 => (room.clone(), any::<bool>()).prop_map(|(room, add)| Step::Users { room, add }),
        2 => room.clone().prop_map(|room| Step::RoomLost { room }),
        1 => room.clone().prop_map(|room| Step::KickedOut { room }),
        1 => (room, 0..OWN.len(), any::<bool>())
            .prop_map(|(room, stream, publishing)| Step::StreamLost { room, stream, publishing }),
        1 => (0..8usize).prop_map(|index| Step::PeerFails { index }),
        2 => prop_oneof![Just(50u64), Just(500), Just(3_000), Just(20_000)]
            .prop_map(|ms| Step::Wait { ms }),
    ]
}

fn settings() -> impl Strategy<Value = EngineSettings> {
    (
        any::<bool>(),
        1..=5usize,
        proptest::bool::weighted(0.85),
        proptest::bool::weighted(0.2),
    )
        .prop_map(
            |(multi, max_rooms, multi_room_enabled, allow_list)| EngineSettings {
                mode: if multi {
                    RoomMode::Multi
                } else {
                    RoomMode::Single
                },
                max_rooms,
                multi_room_enabled,
                servers: ServerRoutes::default(),
                // r0 and r1 only: logins to r2..r5 are refused (1002906).
                allowed_rooms: if allow_list {
                    RoomAllowList::new(vec!["r0".into(), "r1*".into(), "x?".into()])
                } else {
                    RoomAllowList::any()
                },
                quality_interval: None,
                reconnect: ReconnectPolicy {
                    window: Duration::from_secs(5),
                    backoff: crate::base::backoff::Backoff::new(
                        Duration::from_millis(100),
                        Duration::from_secs(1),
                    ),
                },
                fanout: FanoutPolicy::Device,
            },
        )
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn any_sequence_keeps_the_room_rules(
        settings in settings(),
        steps in proptest::collection::vec(step(), 1..40),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a runtime");
        runtime.block_on(run(settings, steps))?;
    }
}

fn room(i: usize) -> RoomId {
    RoomId::parse(ROOMS[i]).expect("a valid room id")
}

fn teacher() -> UserInfo {
    UserInfo {
        user_id: "teacher".into(),
        user_name: "Teacher".into(),
    }
}

fn sfu_error(code: u32) -> BackendError {
    BackendError::new(ErrorCode(code), "injected")
}

async fn run(settings: EngineSettings, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut h = Harness::start(settings.clone());
    for (n, step) in steps.iter().enumerate() {
        let before = settle(&h).await;
        let calls_before = h.rooms.calls().len();
        h.drain_events();
        let answer = tokio::time::timeout(Duration::from_secs(3600), apply(&h, step)).await;
        let Ok(result) = answer else {
            return Err(TestCaseError::fail(format!(
                "step {n} {step:?} was never answered"
            )));
        };
        let after = settle(&h).await;
        let context = format!("after step {n} {step:?} ({result:?})");
        check_invariants(&h, &settings, &after, &context)?;
        if let Some(Err(e)) = &result {
            let code = e.code().as_u32();
            prop_assert!(
                RULE_CODES.contains(&code) || BACKEND_CODES.contains(&code),
                "{context}: unknown code {code}"
            );
            if RULE_CODES.contains(&code) {
                prop_assert_eq!(&before, &after, "{}: a refusal changed the state", context);
                prop_assert_eq!(
                    h.rooms.calls().len(),
                    calls_before,
                    "{}: a refusal reached the SFU",
                    context
                );
                let events = h.drain_events();
                prop_assert!(events.is_empty(), "{context}: a refusal emitted {events:?}");
            }
        }
        match (step, &result) {
            (Step::Logout { room: Some(r) }, Some(Ok(()))) => {
                left(&h, &after, ROOMS[*r], &context)?
            }
            (Step::Logout { room: None }, Some(Ok(()))) => {
                prop_assert!(after.rooms.is_empty(), "{context}: rooms remain");
                for r in ROOMS {
                    left(&h, &after, r, &context)?;
                }
            }
            // An unconfirmed logout is still a logout here (the SFU side is dropped).
            (Step::Logout { room: Some(r) }, Some(Err(e)))
                if !RULE_CODES.contains(&e.code().as_u32()) =>
            {
                left(&h, &after, ROOMS[*r], &context)?;
            }
            _ => {}
        }
    }
    h.shutdown.cancel();
    let _ = h.task.await;
    let joined = h.rooms.state.lock().expect("double").joined.clone();
    prop_assert!(joined.is_empty(), "shutdown left rooms joined: {joined:?}");
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    let open = h.media.open_peers();
    prop_assert!(open.is_empty(), "shutdown left peers open: {open:?}");
    Ok(())
}

/// Runs one step; `Some` with the answer when it is an engine call.
async fn apply(h: &Harness, step: &Step) -> Option<Result<(), EngineError>> {
    let e = &h.engine;
    match step {
        Step::Login { room, user } => {
            let (id, name) = USERS[*user];
            let user = User::parse(id, name).expect("a valid user");
            ok(e.login_room(ROOMS[*room], user, None).await)
        }
        Step::Logout { room } => ok(e.logout_room(room.map(|r| ROOMS[r])).await),
        Step::Publish { stream, room, aux } => {
            let config = PublisherConfig {
                room_id: room.map(|r| ROOMS[r].to_owned()),
            };
            let channel = if *aux { Channel::Aux } else { Channel::Main };
            ok(e.start_publishing(OWN[*stream], config, channel).await)
        }
        Step::StopPublishing { stream } => ok(e.stop_publishing(OWN[*stream]).await),
        Step::Play { stream, room } => {
            let config = PlayerConfig {
                room_id: room.map(|r| ROOMS[r].to_owned()),
                output: PlayOutput::None,
            };
            ok(e.start_playing(REMOTE[*stream], config).await)
        }
        Step::StopPlaying { stream } => ok(e.stop_playing(REMOTE[*stream]).await),
        Step::PlayMany { room, count } => {
            // Answered as one: ok when any was accepted (then the others may only be
            // refused for the stream limit), else the first refusal.
            let mut answers = Vec::new();
            for i in 0..*count {
                let config = PlayerConfig {
                    room_id: Some(ROOMS[*room].to_owned()),
                    output: PlayOutput::None,
                };
                answers.push(e.start_playing(&format!("many-{i}"), config).await);
            }
            let unexpected = answers.iter().find_map(|a| match a {
                Err(e) if e.code() != ErrorCode::TOO_MANY_STREAMS => Some(e.clone()),
                _ => None,
            });
            match (answers.iter().any(Result::is_ok), unexpected) {
                (true, Some(e)) if !matches!(e, EngineError::AlreadyPlaying { .. }) => {
                    Some(Err(EngineError::Backend(BackendError::new(
                        ErrorCode(0),
                        format!("a refusal other than the stream limit after an acceptance: {e}"),
                    ))))
                }
                (true, _) => Some(Ok(())),
                (false, _) => answers.into_iter().find_map(Result::err).map(Err),
            }
        }
        Step::Broadcast { room, len } => ok(e
            .send_broadcast_message(ROOMS[*room], &"m".repeat(*len))
            .await),
        Step::Custom { room, to_someone } => {
            let to = if *to_someone {
                vec!["teacher".to_owned()]
            } else {
                Vec::new()
            };
            ok(e.send_custom_command(ROOMS[*room], &to, "raise-hand").await)
        }
        Step::SetRoomMode { multi } => {
            let mode = if *multi {
                RoomMode::Multi
            } else {
                RoomMode::Single
            };
            ok(e.set_room_mode(mode).await)
        }
        Step::FailLogin { room, code } => {
            h.rooms.fail_login(ROOMS[*room], code.map(sfu_error));
            None
        }
        Step::FailPublish(fail) => {
            h.rooms.fail_publish(fail.then(|| sfu_error(1003902)));
            None
        }
        Step::FailLogout(fail) => {
            h.rooms.fail_logout(fail.then(|| sfu_error(1002902)));
            None
        }
        Step::BreakChannel(channel) => {
            h.media.break_channel(channel.map(
                |aux| {
                    if aux { Channel::Aux } else { Channel::Main }
                },
            ));
            None
        }
        Step::RemoteStream {
            room: r,
            stream,
            add,
        } => {
            let id = REMOTE[*stream];
            let update = if *add {
                h.rooms.add_remote_stream(ROOMS[*r], id);
                UpdateType::Add
            } else {
                h.rooms.remove_remote_stream(ROOMS[*r], id);
                UpdateType::Delete
            };
            let streams = vec![StreamInfo {
                stream_id: id.into(),
                user: teacher(),
            }];
            send(
                h,
                BackendEvent::Streams {
                    room: room(*r),
                    update,
                    streams,
                },
            )
            .await;
            None
        }
        Step::Users { room: r, add } => {
            let update = if *add {
                UpdateType::Add
            } else {
                UpdateType::Delete
            };
            send(
                h,
                BackendEvent::Users {
                    room: room(*r),
                    update,
                    users: vec![teacher()],
                },
            )
            .await;
            None
        }
        Step::RoomLost { room: r } => {
            send(
                h,
                BackendEvent::RoomLost {
                    room: room(*r),
                    reason: "injected".into(),
                },
            )
            .await;
            None
        }
        Step::KickedOut { room: r } => {
            send(
                h,
                BackendEvent::KickedOut {
                    room: room(*r),
                    error: sfu_error(1002904),
                },
            )
            .await;
            None
        }
        Step::StreamLost {
            room: r,
            stream,
            publishing,
        } => {
            let id = if *publishing {
                OWN[*stream]
            } else {
                REMOTE[*stream % REMOTE.len()]
            };
            send(
                h,
                BackendEvent::StreamLost {
                    room: room(*r),
                    stream: StreamId::parse(id).expect("a valid stream id"),
                    direction: if *publishing {
                        Direction::Publish
                    } else {
                        Direction::Play
                    },
                    reason: "injected".into(),
                },
            )
            .await;
            None
        }
        Step::PeerFails { index } => {
            let open = h.media.open_peers();
            if !open.is_empty()
                && let Some(peer) = h.media.peer(&open[index % open.len()])
            {
                peer.fail("injected");
            }
            None
        }
        Step::Wait { ms } => {
            tokio::time::sleep(Duration::from_millis(*ms)).await;
            None
        }
    }
}

/// An engine call's answer, without its value.
fn ok<T>(result: Result<T, EngineError>) -> Option<Result<(), EngineError>> {
    Some(result.map(|_| ()))
}

async fn send(h: &Harness, event: BackendEvent) {
    h.backend_events
        .send(event)
        .await
        .expect("the engine takes backend events");
}

/// Lets every ready task run until the state stops changing. Timers do not fire here
/// (time only moves while everything waits), so this is the state the step left.
async fn settle(h: &Harness) -> EngineSnapshot {
    let mut last = h.engine.state().await.expect("the engine runs");
    let mut stable = 0;
    while stable < 3 {
        for _ in 0..16 {
            tokio::task::yield_now().await;
        }
        let now = h.engine.state().await.expect("the engine runs");
        if now == last {
            stable += 1;
        } else {
            stable = 0;
            last = now;
        }
    }
    last
}

fn check_invariants(
    h: &Harness,
    settings: &EngineSettings,
    s: &EngineSnapshot,
    context: &str,
) -> Result<(), TestCaseError> {
    let multi = settings.mode == RoomMode::Multi;
    let limit = if multi { settings.max_rooms } else { 1 };
    prop_assert!(s.rooms.len() <= limit, "{context}: {} rooms", s.rooms.len());
    if multi && !settings.multi_room_enabled {
        prop_assert!(s.rooms.is_empty(), "{context}: rooms while not enabled");
    }
    prop_assert_eq!(
        s.user.is_some(),
        !s.rooms.is_empty(),
        "{}: user {:?}",
        context,
        s.user
    );
    let rooms: BTreeSet<&str> = s.rooms.iter().map(|r| r.room_id.as_str()).collect();
    for room in &s.rooms {
        prop_assert!(
            settings.allowed_rooms.allows(&room.room_id),
            "{context}: in {}, which is not allowed",
            room.room_id
        );
    }
    let (joined, published, played) = {
        let double = h.rooms.state.lock().expect("double");
        (
            double.joined.clone(),
            double.published.clone(),
            double.played.clone(),
        )
    };
    let sfu_rooms: BTreeSet<&str> = joined.keys().map(String::as_str).collect();
    prop_assert_eq!(&sfu_rooms, &rooms, "{}: SFU rooms differ", context);
    if let Some(user) = &s.user {
        for (room, id) in &joined {
            prop_assert_eq!(
                id.as_str(),
                user.user_id.as_str(),
                "{}: {} joined as another user",
                context,
                room
            );
        }
    }
    let mut channels = BTreeSet::new();
    let mut peers = BTreeSet::new();
    for p in &s.publishing {
        prop_assert!(
            rooms.contains(p.room_id.as_str()),
            "{context}: {} publishes in {}, not a present room",
            p.stream_id,
            p.room_id
        );
        prop_assert!(
            channels.insert((p.room_id.clone(), p.channel)),
            "{context}: channel {} twice in {}",
            p.channel,
            p.room_id
        );
        peers.insert(format!("publish {}/{}", p.room_id, p.stream_id));
    }
    for p in &s.playing {
        prop_assert!(
            rooms.contains(p.room_id.as_str()),
            "{context}: {} plays from {}, not a present room",
            p.stream_id,
            p.room_id
        );
        peers.insert(format!("play {}/{}", p.room_id, p.stream_id));
    }
    for (room, stream) in &published {
        prop_assert!(
            s.publishing
                .iter()
                .any(|p| p.room_id.as_str() == room && p.stream_id.as_str() == stream),
            "{context}: the SFU still has {stream} published in {room}"
        );
    }
    for (room, stream) in &played {
        prop_assert!(
            s.playing
                .iter()
                .any(|p| p.room_id.as_str() == room && p.stream_id.as_str() == stream),
            "{context}: the SFU still plays {stream} from {room}"
        );
    }
    for label in h.media.open_peers() {
        prop_assert!(
            peers.contains(&label),
            "{context}: peer {label} is open for no stream"
        );
    }
    prop_assert!(
        s.publishing.len() + s.playing.len() <= MAX_STREAMS,
        "{context}: {} streams",
        s.publishing.len() + s.playing.len()
    );
    let desired = h.engine.desired().borrow().clone();
    let bytes = render_state(&desired);
    prop_assert!(
        bytes.len() <= MAX_STATE_BYTES,
        "{context}: {} bytes",
        bytes.len()
    );
    match parse_state(&bytes) {
        Ok(parsed) => prop_assert_eq!(parsed, desired, "{}: not the same state", context),
        Err(e) => prop_assert!(false, "{context}: the state file cannot hold it: {e}"),
    }
    Ok(())
}

/// Nothing of `room` is left: not in the state, not on the SFU, no stream.
fn left(h: &Harness, s: &EngineSnapshot, room: &str, context: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        s.rooms.iter().all(|r| r.room_id.as_str() != room),
        "{context}: {room} still present"
    );
    prop_assert!(
        s.publishing.iter().all(|p| p.room_id.as_str() != room),
        "{context}: publishing in {room}"
    );
    prop_assert!(
        s.playing.iter().all(|p| p.room_id.as_str() != room),
        "{context}: playing from {room}"
    );
    let double = h.rooms.state.lock().expect("double");
    prop_assert!(
        !double.joined.contains_key(room)
            && double.published.iter().all(|(r, _)| r != room)
            && double.played.iter().all(|(r, _)| r != room),
        "{context}: the SFU still has {room}"
    );
    Ok(())
}
