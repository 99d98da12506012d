//! The engine's state as the control surface shows it, and shutdown.

use super::*;

impl Engine {
    pub(super) fn snapshot(&self) -> EngineSnapshot {
        let mut publishing = Vec::new();
        let mut playing = Vec::new();
        for ((_, stream), entry) in &self.streams {
            let stats = entry.peer.as_ref().map(|p| p.stats()).unwrap_or_default();
            let quality = entry.peer.as_ref().and_then(|p| p.quality());
            match entry.role {
                Role::Publish { channel } => publishing.push(PublishSnapshot {
                    stream_id: stream.clone(),
                    room_id: entry.room.clone(),
                    channel,
                    state: publisher_state(entry.phase()),
                    fanout: entry.fanout,
                    stats,
                    quality: match quality {
                        Some(StreamQuality::Publisher(q)) => Some(q),
                        _ => None,
                    },
                }),
                Role::Play { output } => playing.push(PlaySnapshot {
                    stream_id: stream.clone(),
                    room_id: entry.room.clone(),
                    output,
                    state: player_state(entry.phase()),
                    stats,
                    quality: match quality {
                        Some(StreamQuality::Player(q)) => Some(q),
                        _ => None,
                    },
                }),
            }
        }
        EngineSnapshot {
            room_mode: self.settings.mode,
            multi_room_enabled: self.settings.multi_room_enabled,
            max_rooms: self.settings.max_rooms,
            user: self.user.clone(),
            rooms: self
                .rooms
                .iter()
                .map(|(id, room)| RoomSnapshot {
                    room_id: id.clone(),
                    server: room.server.clone(),
                    state: room.connection.state(),
                    users: room.users.values().cloned().collect(),
                    streams: room.streams.values().cloned().collect(),
                })
                .collect(),
            publishing,
            playing,
            media: self.media.snapshot(),
        }
    }

    /// Shutdown: leave every room, close every peer, bounded by [`SHUTDOWN_GRACE`].
    pub(super) async fn leave_everything(&mut self) {
        let rooms: Vec<RoomId> = self.rooms.keys().cloned().collect();
        let mut peers = Vec::new();
        let mut leaving = Vec::new();
        let mut servers = Vec::new();
        for room in &rooms {
            for key in self.room_streams(room) {
                if let Some(entry) = self.streams.get_mut(&key)
                    && let Some(peer) = entry.peer.take()
                {
                    peers.push(peer);
                }
            }
            let server = self.remove_room(room, EngineError::EngineStopped, None);
            servers.push(server);
            leaving.push(self.backend.logout(room));
        }
        self.ops.abort_all();
        let closing = join_all(peers.iter().map(|p| p.close()));
        let left = join_all(leaving);
        match tokio::time::timeout(SHUTDOWN_GRACE, futures::future::join(left, closing)).await {
            Ok((results, _)) => {
                for ((room, server), result) in rooms.iter().zip(&servers).zip(results) {
                    match result {
                        Ok(()) => {
                            self.emit_room_on(room, server.as_ref(), RoomStateReason::Logout, None)
                        }
                        Err(e) => self.emit_room_on(
                            room,
                            server.as_ref(),
                            RoomStateReason::LogoutFailed,
                            Some(&e),
                        ),
                    }
                }
            }
            Err(_) => {
                warn!("leaving the rooms took longer than {SHUTDOWN_GRACE:?}; stopping anyway")
            }
        }
    }
}
