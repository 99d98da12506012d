//! Commands from the control surface: each checked against the room rules, then carried
//! out or refused with its code.

use super::*;

impl Engine {
    pub(super) fn on_command(&mut self, command: Command) {
        match command {
            Command::Login {
                room,
                server,
                user,
                token,
                reply,
            } => match self.check_login(&room, server.as_ref(), &user) {
                Ok(resolved) => self.login(room, resolved, server, user, token, reply),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::Logout { room, reply } => self.logout(room, reply),
            Command::StartPublishing {
                stream,
                room,
                channel,
                reply,
            } => {
                let checked = self.check_publish(&stream, room, channel);
                match checked {
                    Ok(room) => self.add_stream(
                        stream,
                        room,
                        Role::Publish { channel },
                        Lifecycle::Starting {
                            waiter: Waiter::publish(reply),
                        },
                    ),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::StopPublishing { stream, reply } => {
                self.stop_stream((Direction::Publish, stream), reply)
            }
            Command::StartPlaying {
                stream,
                room,
                output,
                reply,
            } => match self.check_play(&stream, room) {
                Ok(room) => self.add_stream(
                    stream,
                    room,
                    Role::Play { output },
                    Lifecycle::Starting {
                        waiter: Waiter::play(reply),
                    },
                ),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::StopPlaying { stream, reply } => {
                self.stop_stream((Direction::Play, stream), reply)
            }
            Command::Broadcast { room, text, reply } => {
                if !self.rooms.contains_key(&room) {
                    let _ = reply.send(Err(EngineError::MessageRoomNotLoggedIn(room)));
                    return;
                }
                let sent = self.backend.send_broadcast_message(&room, &text);
                self.ops.spawn(async move {
                    let _ = reply.send(sent.await.map_err(EngineError::from));
                    Outcome::Done
                });
            }
            Command::Custom {
                room,
                to,
                text,
                reply,
            } => {
                if !self.rooms.contains_key(&room) {
                    let _ = reply.send(Err(EngineError::MessageRoomNotLoggedIn(room)));
                    return;
                }
                let sent = self.backend.send_custom_command(&room, &to, &text);
                self.ops.spawn(async move {
                    let _ = reply.send(sent.await.map_err(EngineError::from));
                    Outcome::Done
                });
            }
            Command::SetRoomMode { mode, reply } => {
                let result = if mode == self.settings.mode {
                    Ok(())
                } else {
                    Err(EngineError::RoomModeFixed {
                        current: self.settings.mode,
                        requested: mode,
                    })
                };
                let _ = reply.send(result);
            }
            Command::Snapshot { reply } => {
                let _ = reply.send(self.snapshot());
            }
            Command::Restore { state, reply } => {
                let _ = reply.send(self.restore(state));
            }
            Command::Reroute {
                servers,
                changed,
                reply,
            } => {
                let _ = reply.send(self.reroute(servers, changed));
            }
            // Handled in `run` (it has to hold the task up).
            Command::FaultStall { .. } => {}
        }
    }

    /// The login rules, in the order the reference SDK applies them (the allow-list and
    /// the server first: they are the box's own); resolves the room's server.
    pub(super) fn check_login(
        &self,
        room: &RoomId,
        server: Option<&ServerName>,
        user: &User,
    ) -> Result<ServerName, EngineError> {
        if !self.settings.allowed_rooms.allows(room) {
            return Err(EngineError::RoomNotAllowed {
                room: room.clone(),
                allowed: self.settings.allowed_rooms.to_string(),
            });
        }
        let server = self.settings.servers.resolve(room, server)?;
        let multi = self.settings.mode == RoomMode::Multi;
        if multi && !self.settings.multi_room_enabled {
            return Err(EngineError::MultiRoomNotEnabled);
        }
        if self.rooms.contains_key(room) {
            return Err(EngineError::AlreadyLoggedIn(room.clone()));
        }
        if !multi {
            if let Some(current) = self.rooms.keys().next() {
                return Err(EngineError::SingleRoomOccupied {
                    current: current.clone(),
                });
            }
            return Ok(server);
        }
        if let Some(current) = &self.user
            && current != user
        {
            return Err(EngineError::UserDiffers {
                current: current.clone(),
                requested: user.clone(),
            });
        }
        if self.rooms.len() >= self.settings.max_rooms {
            return Err(EngineError::TooManyRooms {
                max: self.settings.max_rooms,
            });
        }
        Ok(server)
    }

    pub(super) fn login(
        &mut self,
        room_id: RoomId,
        server: ServerName,
        named_server: Option<ServerName>,
        user: User,
        token: Option<Secret>,
        reply: Reply<()>,
    ) {
        let generation = self.generation();
        info!(room = %room_id, server = %server, user = %user.user_id, "logging in");
        let login = self.backend.login(&room_id, &server, &user, token.as_ref());
        self.user = Some(user.clone());
        let had_token = token.is_some();
        self.rooms.insert(
            room_id.clone(),
            Room {
                connection: Connection::LoggingIn { restored_at: None },
                server,
                named_server,
                user,
                token,
                generation,
                login_waiters: vec![reply],
                users: BTreeMap::new(),
                streams: BTreeMap::new(),
                accepted: false,
                had_token,
            },
        );
        self.emit_room(&room_id, RoomStateReason::Logining, None);
        self.ops.spawn(async move {
            Outcome::Login {
                room: room_id,
                generation,
                result: login.await,
            }
        });
    }

    pub(super) fn logout(&mut self, room: Option<RoomId>, reply: Reply<Vec<RoomId>>) {
        let rooms: Vec<RoomId> = match room {
            Some(room) if self.rooms.contains_key(&room) => vec![room],
            Some(room) => {
                let _ = reply.send(Err(EngineError::RoomNotLoggedIn(room)));
                return;
            }
            None => self.rooms.keys().cloned().collect(),
        };
        if rooms.is_empty() {
            let _ = reply.send(Ok(Vec::new()));
            return;
        }
        let mut leaving = Vec::new();
        for room in &rooms {
            info!(room = %room, "logging out");
            let server = self
                .remove_room(room, EngineError::RoomNotLoggedIn(room.clone()), None)
                .unwrap_or_default();
            leaving.push((room.clone(), server, self.backend.logout(room)));
        }
        self.ops.spawn(async move {
            let mut results = Vec::new();
            for (room, server, left) in leaving {
                results.push((room, server, left.await));
            }
            Outcome::Logout {
                results,
                reply: Some(reply),
            }
        });
    }

    pub(super) fn resolve_room(
        &self,
        room: Option<RoomId>,
        missing: EngineError,
    ) -> Result<RoomId, EngineError> {
        match room {
            Some(room) if self.rooms.contains_key(&room) => Ok(room),
            Some(room) => Err(EngineError::RoomNotLoggedIn(room)),
            None if self.settings.mode == RoomMode::Multi => Err(missing),
            None => self
                .rooms
                .keys()
                .next()
                .cloned()
                .ok_or(EngineError::NoRoomLoggedIn),
        }
    }

    pub(super) fn check_publish(
        &self,
        stream: &StreamId,
        room: Option<RoomId>,
        channel: Channel,
    ) -> Result<RoomId, EngineError> {
        let room = self.resolve_room(room, EngineError::PublishRoomRequired(stream.clone()))?;
        if let Some(entry) = self.streams.get(&(Direction::Publish, stream.clone())) {
            return Err(EngineError::StreamIdInUse {
                stream: stream.clone(),
                room: entry.room.clone(),
            });
        }
        self.check_stream_count()?;
        let busy = self.streams.iter().find(|((kind, _), entry)| {
            *kind == Direction::Publish
                && entry.room == room
                && matches!(entry.role, Role::Publish { channel: c } if c == channel)
        });
        if let Some(((_, other), _)) = busy {
            return Err(EngineError::ChannelBusy {
                channel,
                room,
                stream: other.clone(),
            });
        }
        Ok(room)
    }

    pub(super) fn check_play(
        &self,
        stream: &StreamId,
        room: Option<RoomId>,
    ) -> Result<RoomId, EngineError> {
        let room = self.resolve_room(room, EngineError::PlayRoomRequired(stream.clone()))?;
        if let Some(entry) = self.streams.get(&(Direction::Play, stream.clone())) {
            return Err(EngineError::AlreadyPlaying {
                stream: stream.clone(),
                room: entry.room.clone(),
            });
        }
        self.check_stream_count()?;
        Ok(room)
    }

    /// One stream more must still fit in the state file (`limits.rs`).
    pub(super) fn check_stream_count(&self) -> Result<(), EngineError> {
        if self.streams.len() >= MAX_STREAMS {
            return Err(EngineError::TooManyStreams { max: MAX_STREAMS });
        }
        Ok(())
    }

    /// Adds a stream (a new start, or a restored one: `lifecycle` says which) and
    /// starts it once its room is logged in. Its key's direction comes from its role.
    pub(super) fn add_stream(
        &mut self,
        stream: StreamId,
        room: RoomId,
        role: Role,
        lifecycle: Lifecycle,
    ) {
        let key = (role.direction(), stream);
        if matches!(lifecycle, Lifecycle::Starting { .. }) {
            info!(room = %room, stream = %key.1, kind = ?key.0, "stream requested");
        }
        let room_ready = self
            .rooms
            .get(&room)
            .is_some_and(|r| r.connection == Connection::Logined);
        self.streams
            .insert(key.clone(), StreamEntry::new(room.clone(), role, lifecycle));
        self.emit_stream(&key, &room, Some(Phase::Requesting), None);
        if room_ready {
            self.begin_stream(&key);
        }
    }

    pub(super) fn stop_stream(&mut self, key: StreamKey, reply: Reply<()>) {
        let Some(mut entry) = self.streams.remove(&key) else {
            let stream = key.1;
            let _ = reply.send(Err(match key.0 {
                Direction::Publish => EngineError::NotPublishing(stream),
                Direction::Play => EngineError::NotPlaying(stream),
            }));
            return;
        };
        info!(room = %entry.room, stream = %key.1, kind = ?key.0, "stream stopped");
        let peer = entry.peer.take();
        let room = entry.room.clone();
        if let Some(waiter) = entry.into_waiter() {
            waiter.resolve(Err(EngineError::InvalidParameter(format!(
                "starting stream `{}` was cancelled by a stop request",
                key.1
            ))));
        }
        self.emit_stream(&key, &room, None, None);
        let released = self.release_remote(&key, &room);
        self.ops.spawn(async move {
            let result = released.await;
            if let Some(peer) = peer {
                peer.close().await;
            }
            let _ = reply.send(result.map_err(EngineError::from));
            Outcome::Done
        });
    }

    /// Registers the SFU-side teardown of one stream.
    pub(super) fn release_remote(
        &self,
        key: &StreamKey,
        room: &RoomId,
    ) -> crate::engine::backend::OpFuture<()> {
        match key.0 {
            Direction::Publish => self.backend.unpublish(room, &key.1),
            Direction::Play => self.backend.stop_playing(room, &key.1),
        }
    }
}
