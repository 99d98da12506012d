//! The `STATUS=` line `systemctl status roomcast` shows, from the engine's snapshot:
//! `2 rooms (bigclass, group-3), publishing main ×2, playing 1`.

use std::collections::BTreeMap;

use crate::engine::snapshot::EngineSnapshot;
use crate::engine::{PlayerState, PublisherState, RoomState};

/// Rooms named in the line; more are counted only.
const NAMED_ROOMS: usize = 5;

pub fn status_line(state: &EngineSnapshot) -> String {
    let mut parts = Vec::new();
    let names: Vec<String> = state
        .rooms
        .iter()
        .take(NAMED_ROOMS)
        .map(|room| match room.state {
            RoomState::Logined => room.room_id.to_string(),
            RoomState::Logining => format!("{} logging in", room.room_id),
            RoomState::Reconnecting => format!("{} reconnecting", room.room_id),
        })
        .collect();
    let more = state.rooms.len().saturating_sub(NAMED_ROOMS);
    let list = if more > 0 {
        format!("{}, +{more}", names.join(", "))
    } else {
        names.join(", ")
    };
    parts.push(match state.rooms.len() {
        0 => "no rooms".to_owned(),
        1 => format!("1 room ({list})"),
        n => format!("{n} rooms ({list})"),
    });

    if !state.publishing.is_empty() {
        let mut channels: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for stream in &state.publishing {
            let entry = channels.entry(stream.channel.to_string()).or_default();
            match stream.state {
                PublisherState::Publishing => entry.0 += 1,
                _ => entry.1 += 1,
            }
        }
        let list: Vec<String> = channels
            .iter()
            .map(|(channel, (up, waiting))| match (up, waiting) {
                (0, w) => format!("{channel} ×0 ({w} starting)"),
                (u, 0) => format!("{channel} ×{u}"),
                (u, w) => format!("{channel} ×{u} ({w} starting)"),
            })
            .collect();
        parts.push(format!("publishing {}", list.join(", ")));
    }

    if !state.playing.is_empty() {
        let up = state
            .playing
            .iter()
            .filter(|p| p.state == PlayerState::Playing)
            .count();
        let waiting = state.playing.len() - up;
        parts.push(if waiting > 0 {
            format!("playing {up} ({waiting} waiting)")
        } else {
            format!("playing {up}")
        });
    }

    for source in &state.media.sources {
        if let (false, Some(error)) = (source.running, &source.error) {
            let short: String = error.chars().take(80).collect();
            parts.push(format!("source {} failed: {short}", source.channel));
        }
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::backend::{MediaSnapshot, PeerStats, SourceSnapshot};
    use crate::engine::snapshot::{PlaySnapshot, PublishSnapshot, RoomSnapshot};
    use crate::engine::{Channel, PlayOutput, RoomId, RoomMode, StreamId};

    fn room(id: &str, state: RoomState) -> RoomSnapshot {
        RoomSnapshot {
            room_id: RoomId::parse(id).unwrap(),
            server: Default::default(),
            state,
            users: vec![],
            streams: vec![],
        }
    }

    fn publish(
        stream: &str,
        room: &str,
        channel: Channel,
        state: PublisherState,
    ) -> PublishSnapshot {
        PublishSnapshot {
            stream_id: StreamId::parse(stream).unwrap(),
            room_id: RoomId::parse(room).unwrap(),
            channel,
            state,
            fanout: None,
            stats: PeerStats::default(),
            quality: None,
        }
    }

    fn empty() -> EngineSnapshot {
        EngineSnapshot {
            room_mode: RoomMode::Multi,
            multi_room_enabled: true,
            max_rooms: 5,
            user: None,
            rooms: vec![],
            publishing: vec![],
            playing: vec![],
            media: MediaSnapshot::default(),
        }
    }

    #[test]
    fn lines_people_read() {
        assert_eq!(status_line(&empty()), "no rooms");

        let mut state = empty();
        state.rooms = vec![
            room("bigclass", RoomState::Logined),
            room("group-3", RoomState::Logined),
        ];
        state.publishing = vec![
            publish("m1", "bigclass", Channel::Main, PublisherState::Publishing),
            publish("m2", "group-3", Channel::Main, PublisherState::Publishing),
        ];
        state.playing = vec![PlaySnapshot {
            stream_id: StreamId::parse("teacher").unwrap(),
            room_id: RoomId::parse("bigclass").unwrap(),
            output: PlayOutput::Display,
            state: PlayerState::Playing,
            stats: PeerStats::default(),
            quality: None,
        }];
        assert_eq!(
            status_line(&state),
            "2 rooms (bigclass, group-3), publishing main ×2, playing 1"
        );

        state.rooms[1].state = RoomState::Reconnecting;
        state.publishing[1].state = PublisherState::PublishRequesting;
        state.publishing.push(publish(
            "d",
            "bigclass",
            Channel::Aux,
            PublisherState::PublishRequesting,
        ));
        state.playing[0].state = PlayerState::PlayRequesting;
        state.media.sources = vec![SourceSnapshot {
            channel: Channel::Aux,
            video: "/dev/video2".into(),
            audio: "none".into(),
            running: false,
            bitrate_kbps: None,
            error: Some("cannot open /dev/video2".into()),
        }];
        assert_eq!(
            status_line(&state),
            "2 rooms (bigclass, group-3 reconnecting), publishing aux ×0 (1 starting), main ×1 (1 starting), playing 0 (1 waiting), source aux failed: cannot open /dev/video2"
        );

        let mut many = empty();
        many.rooms = (1..=7)
            .map(|n| room(&format!("r{n}"), RoomState::Logined))
            .collect();
        assert_eq!(status_line(&many), "7 rooms (r1, r2, r3, r4, r5, +2)");
    }
}
