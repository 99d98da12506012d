//! Events from the room backends: rooms and streams lost, users, streams and messages
//! of a room.

use super::*;

impl Engine {
    pub(super) fn on_backend_event(&mut self, event: BackendEvent) {
        match event {
            BackendEvent::Users {
                room,
                update,
                users,
            } => {
                let Some(entry) = self.rooms.get_mut(&room) else {
                    return;
                };
                for user in &users {
                    match update {
                        UpdateType::Add => {
                            entry.users.insert(user.user_id.clone(), user.clone());
                        }
                        UpdateType::Delete => {
                            entry.users.remove(&user.user_id);
                        }
                    }
                }
                self.emit(Event::RoomUserUpdate {
                    room_id: room,
                    update_type: update,
                    users,
                });
            }
            BackendEvent::Streams {
                room,
                update,
                streams,
            } => self.on_remote_streams(room, update, streams),
            BackendEvent::BroadcastMessage { room, message } => {
                if self.rooms.contains_key(&room) {
                    self.emit(Event::BroadcastMessage {
                        room_id: room,
                        messages: vec![message],
                    });
                }
            }
            BackendEvent::CustomCommand {
                room,
                from_user,
                command,
            } => {
                if self.rooms.contains_key(&room) {
                    self.emit(Event::CustomCommand {
                        room_id: room,
                        from_user,
                        command,
                    });
                }
            }
            BackendEvent::RoomLost { room, reason } => self.on_room_lost(room, reason),
            BackendEvent::StreamLost {
                room,
                stream,
                direction,
                reason,
            } => {
                let code = match direction {
                    Direction::Publish => ErrorCode::PUBLISH_WEBRTC_FAILED,
                    Direction::Play => ErrorCode::PLAY_WEBRTC_FAILED,
                };
                let key = (direction, stream);
                // Only an active stream in that room: a report about an older attempt
                // must not end the one in progress.
                let active = self
                    .streams
                    .get(&key)
                    .is_some_and(|e| e.room == room && e.is_up());
                if active {
                    self.stream_failed(&key, BackendError::new(code, reason));
                }
            }
            BackendEvent::ServerConnected { server } => self.on_server_connected(&server),
            BackendEvent::KickedOut { room, error } => {
                if !self.rooms.contains_key(&room) {
                    return;
                }
                warn!(room = %room, code = %error.code, "removed from the room: {}", error.message);
                let server = self.remove_room(&room, error.clone().into(), Some(&error));
                self.emit_room_on(
                    &room,
                    server.as_ref(),
                    RoomStateReason::KickOut,
                    Some(&error),
                );
                let left = self.backend.logout(&room);
                self.ops.spawn(async move {
                    let _ = left.await;
                    Outcome::Done
                });
            }
        }
    }

    pub(super) fn on_remote_streams(
        &mut self,
        room_id: RoomId,
        update: UpdateType,
        streams: Vec<StreamInfo>,
    ) {
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        for stream in &streams {
            match update {
                UpdateType::Add => {
                    room.streams
                        .insert(stream.stream_id.clone(), stream.clone());
                }
                UpdateType::Delete => {
                    room.streams.remove(&stream.stream_id);
                }
            }
        }
        let room_ready = room.connection == Connection::Logined;
        self.emit(Event::RoomStreamUpdate {
            room_id: room_id.clone(),
            update_type: update,
            streams: streams.clone(),
        });
        for stream in streams {
            let Ok(stream_id) = StreamId::parse(stream.stream_id) else {
                continue;
            };
            let key = (Direction::Play, stream_id);
            let Some(entry) = self.streams.get(&key) else {
                continue;
            };
            if entry.room != room_id {
                continue;
            }
            match update {
                UpdateType::Add if entry.is_awaiting_remote() && room_ready => {
                    self.begin_stream(&key)
                }
                UpdateType::Delete => {
                    let gone = BackendError::new(
                        ErrorCode::PLAY_STREAM_NOT_FOUND,
                        format!(
                            "stream `{}` is no longer published in room `{room_id}`; it plays again when it is",
                            key.1
                        ),
                    );
                    self.suspend_stream(&key, &gone);
                    self.await_remote(&key);
                    let released = self.backend.stop_playing(&room_id, &key.1);
                    self.ops.spawn(async move {
                        let _ = released.await;
                        Outcome::Done
                    });
                }
                UpdateType::Add => {}
            }
        }
    }

    /// A session to `server` is up: rooms on it waiting out a backoff log in now (a new
    /// generation: the sleeping retry is dropped when it wakes).
    pub(super) fn on_server_connected(&mut self, server: &ServerName) {
        let waiting: Vec<RoomId> = self
            .rooms
            .iter()
            .filter(|(_, r)| {
                &r.server == server
                    && matches!(r.connection, Connection::Reconnecting { backoff: true, .. })
            })
            .map(|(id, _)| id.clone())
            .collect();
        for room_id in waiting {
            let generation = self.generation();
            if let Some(room) = self.rooms.get_mut(&room_id) {
                room.generation = generation;
                room.connection.end_backoff();
            }
            debug!(room = %room_id, server = %server, "the server is reachable again: logging in now");
            self.ops.spawn(async move {
                Outcome::RetryLogin {
                    room: room_id,
                    generation,
                }
            });
        }
    }

    pub(super) fn on_room_lost(&mut self, room_id: RoomId, reason: String) {
        let generation = self.generation();
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        if room.connection != Connection::Logined {
            // A login in flight reports its own failure; a reconnect is already running.
            return;
        }
        room.connection = Connection::lost(true);
        room.generation = generation;
        room.users.clear();
        room.streams.clear();
        let error = BackendError::new(ErrorCode::SFU_UNREACHABLE, reason);
        warn!(room = %room_id, "connection to the room lost, reconnecting: {}", error.message);
        self.emit_room(&room_id, RoomStateReason::Reconnecting, Some(&error));
        for key in self.room_streams(&room_id) {
            self.suspend_stream(&key, &error);
            self.stop_awaiting_remote(&key);
        }
        let delay = self.settings.reconnect.backoff.delay(0);
        self.ops.spawn(async move {
            tokio::time::sleep(delay).await;
            Outcome::RetryLogin {
                room: room_id,
                generation,
            }
        });
    }
}
