//! The desired state (what is kept across restarts) and restoring it after a start.

use super::*;

impl Engine {
    /// The rooms and streams that are part of the desired state (see `desired.rs`).
    pub(super) fn desired_now(&self) -> DesiredState {
        let rooms: Vec<DesiredRoom> = self
            .rooms
            .iter()
            .filter(|(_, room)| room.accepted)
            .map(|(id, room)| DesiredRoom {
                room_id: id.clone(),
                user: room.user.clone(),
                server: room.named_server.clone(),
                had_token: room.had_token,
            })
            .collect();
        let in_desired_room = |room: &RoomId| rooms.iter().any(|r| &r.room_id == room);
        let mut publishing = Vec::new();
        let mut playing = Vec::new();
        for ((_, stream), entry) in &self.streams {
            if !entry.is_desired() || !in_desired_room(&entry.room) {
                continue;
            }
            match entry.role {
                Role::Publish { channel } => publishing.push(DesiredPublish {
                    stream_id: stream.clone(),
                    room_id: entry.room.clone(),
                    channel,
                }),
                Role::Play { output } => playing.push(DesiredPlay {
                    stream_id: stream.clone(),
                    room_id: entry.room.clone(),
                    output,
                }),
            }
        }
        DesiredState {
            rooms,
            publishing,
            playing,
        }
    }

    pub(super) fn publish_desired(&self) {
        let now = self.desired_now();
        self.desired.send_if_modified(|current| {
            if *current == now {
                return false;
            }
            *current = now;
            true
        });
    }

    /// Takes up a desired state saved before a restart: every room is logged in again
    /// and every stream started again once its room is in, under the same rules as the
    /// commands (the configuration may have changed since). Restored rooms retry
    /// transient failures; restored streams retry failures with backoff, as streams that
    /// were up do (a camera still unplugged at boot keeps being retried).
    pub(super) fn restore(&mut self, state: DesiredState) -> RestoreReport {
        let mut report = RestoreReport::default();
        let now = Instant::now();
        for DesiredRoom {
            room_id,
            user,
            server: named_server,
            had_token,
        } in state.rooms
        {
            let checked = self.check_login(&room_id, named_server.as_ref(), &user);
            let server = match checked {
                Ok(server) => server,
                Err(e) => {
                    let error = BackendError::new(
                        e.code(),
                        format!("room `{room_id}` was not restored after the restart: {e}"),
                    );
                    warn!(room = %room_id, code = %error.code, "{}", error.message);
                    self.emit_room_on(
                        &room_id,
                        named_server.as_ref(),
                        RoomStateReason::LoginFailed,
                        Some(&error),
                    );
                    report
                        .refused
                        .push(format!("room {room_id}: {} ({})", e, e.code()));
                    continue;
                }
            };
            let generation = self.generation();
            info!(room = %room_id, server = %server, user = %user.user_id, "restoring the room: logging in");
            let login = self.backend.login(&room_id, &server, &user, None);
            self.user = Some(user.clone());
            self.rooms.insert(
                room_id.clone(),
                Room {
                    connection: Connection::LoggingIn {
                        restored_at: Some(now),
                    },
                    server: server.clone(),
                    named_server,
                    user,
                    token: None,
                    generation,
                    login_waiters: Vec::new(),
                    users: BTreeMap::new(),
                    streams: BTreeMap::new(),
                    accepted: true,
                    had_token,
                },
            );
            let publishing = state
                .publishing
                .iter()
                .filter(|p| p.room_id == room_id)
                .map(|p| p.stream_id.clone())
                .collect();
            let playing = state
                .playing
                .iter()
                .filter(|p| p.room_id == room_id)
                .map(|p| p.stream_id.clone())
                .collect();
            self.emit(Event::RoomRestored {
                room_id: room_id.clone(),
                server,
                publishing,
                playing,
            });
            self.emit_room(&room_id, RoomStateReason::Logining, None);
            report.rooms.push(room_id.clone());
            self.ops.spawn(async move {
                Outcome::Login {
                    room: room_id,
                    generation,
                    result: login.await,
                }
            });
        }
        // Checked one by one: each restored stream is seen by the next one's check.
        let publishing = state
            .publishing
            .into_iter()
            .map(|p| (p.stream_id, p.room_id, Role::Publish { channel: p.channel }));
        let playing = state
            .playing
            .into_iter()
            .map(|p| (p.stream_id, p.room_id, Role::Play { output: p.output }));
        let streams: Vec<(StreamId, RoomId, Role)> = publishing.chain(playing).collect();
        for (stream, room, role) in streams {
            let checked = match role {
                Role::Publish { channel } => {
                    self.check_publish(&stream, Some(room.clone()), channel)
                }
                Role::Play { .. } => self.check_play(&stream, Some(room.clone())),
            };
            let key = (role.direction(), stream);
            if let Err(e) = checked {
                let error = BackendError::new(
                    e.code(),
                    format!("stream `{}` was not restored after the restart: {e}", key.1),
                );
                warn!(room = %room, stream = %key.1, code = %error.code, "{}", error.message);
                self.emit_stream(&key, &room, None, Some(&error));
                report
                    .refused
                    .push(format!("stream {}: {} ({})", key.1, e, e.code()));
                continue;
            }
            info!(room = %room, stream = %key.1, kind = ?key.0, "restoring the stream");
            match key.0 {
                Direction::Publish => report.publishing.push(key.1.clone()),
                Direction::Play => report.playing.push(key.1.clone()),
            }
            // Restored: part of the desired state, so a failure is retried.
            self.add_stream(key.1, room, role, Lifecycle::Recovering { attempt: 0 });
        }
        report
    }

    /// The box lost a network address: the SFU connection and every peer connection
    /// may be built on it, dead without an error yet (TCP would notice in minutes, ICE
    /// in tens of seconds). The backend connects again at once; each room then comes
    /// back as after any lost connection (`Reconnecting` → `Reconnected`, never left),
    /// and its streams start again on new peer connections, gathering candidates on the
    /// new address: the recovery path every lost room already takes, rather than an
    /// ICE restart of each peer, which would leave the signalling socket dead.
    pub(super) fn on_address_lost(&mut self) {
        if self.rooms.is_empty() {
            return;
        }
        info!(
            rooms = self.rooms.len(),
            "network address lost: reconnecting to the SFU and restarting the streams"
        );
        self.backend.network_changed();
    }

    /// One quality event per stream that is up and has figures (`quality_interval`).
    pub(super) fn emit_quality(&self) {
        for ((_, stream), entry) in &self.streams {
            if !entry.is_up() {
                continue;
            }
            let Some(quality) = entry.peer.as_ref().and_then(|p| p.quality()) else {
                continue;
            };
            let (stream_id, room_id) = (stream.clone(), entry.room.clone());
            self.emit(match quality {
                StreamQuality::Publisher(quality) => Event::PublisherQualityUpdate {
                    stream_id,
                    room_id,
                    quality,
                },
                StreamQuality::Player(quality) => Event::PlayerQualityUpdate {
                    stream_id,
                    room_id,
                    quality,
                },
            });
        }
    }
}
