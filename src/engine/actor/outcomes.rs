//! What finished work (logins, negotiations, backoffs) reports back to the actor.

use super::*;

impl Engine {
    pub(super) fn on_outcome(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Login {
                room,
                generation,
                result,
            } => self.on_login(room, generation, result),
            Outcome::RetryLogin { room, generation } => {
                let Some(entry) = self.rooms.get(&room) else {
                    return;
                };
                if entry.generation != generation || !entry.connection.is_reconnecting() {
                    return;
                }
                if let Some(room) = self.rooms.get_mut(&room) {
                    room.connection.end_backoff();
                }
                let Some(entry) = self.rooms.get(&room) else {
                    return;
                };
                debug!(room = %room, server = %entry.server, attempt = entry.connection.attempt(), "logging in again");
                let login =
                    self.backend
                        .login(&room, &entry.server, &entry.user, entry.token.as_ref());
                self.ops.spawn(async move {
                    Outcome::Login {
                        room,
                        generation,
                        result: login.await,
                    }
                });
            }
            Outcome::Logout { results, reply } => {
                let mut first_error = None;
                let mut left = Vec::new();
                for (room, server, result) in results {
                    match result {
                        Ok(()) => {
                            info!(room = %room, "logged out");
                            self.emit_room_on(&room, Some(&server), RoomStateReason::Logout, None);
                        }
                        Err(e) => {
                            warn!(room = %room, code = %e.code, "the SFU did not confirm the logout (the room is left here regardless): {}", e.message);
                            self.emit_room_on(
                                &room,
                                Some(&server),
                                RoomStateReason::LogoutFailed,
                                Some(&e),
                            );
                            first_error.get_or_insert(e);
                        }
                    }
                    left.push(room);
                }
                if let Some(reply) = reply {
                    let _ = reply.send(match first_error {
                        Some(e) => Err(e.into()),
                        None => Ok(left),
                    });
                }
            }
            Outcome::PeerOpened {
                key,
                generation,
                result,
            } => self.on_peer_opened(key, generation, result),
            Outcome::Relayed {
                key,
                generation,
                result,
            } => self.on_relayed(key, generation, result),
            Outcome::Negotiated {
                key,
                generation,
                result,
            } => self.on_negotiated(key, generation, result),
            Outcome::PeerFailed {
                key,
                generation,
                reason,
                cause,
            } => {
                if self.current(&key, generation) {
                    let code = match (key.0, cause) {
                        (Direction::Publish, FailureCause::Media) => {
                            ErrorCode::PUBLISH_MEDIA_FAILED
                        }
                        (Direction::Publish, FailureCause::Relay) => {
                            ErrorCode::PUBLISH_RELAY_FAILED
                        }
                        (Direction::Publish, FailureCause::Connection) => {
                            ErrorCode::PUBLISH_WEBRTC_FAILED
                        }
                        (Direction::Play, FailureCause::Relay) => ErrorCode::PLAY_RELAY_FAILED,
                        (Direction::Play, _) => ErrorCode::PLAY_WEBRTC_FAILED,
                    };
                    self.stream_failed(&key, BackendError::new(code, reason));
                }
            }
            Outcome::RetryStream { key, generation } => {
                if !self.current(&key, generation) {
                    return;
                }
                let ready = self.streams.get(&key).is_some_and(|e| {
                    self.rooms
                        .get(&e.room)
                        .is_some_and(|r| r.connection == Connection::Logined)
                });
                if ready {
                    self.begin_stream(&key);
                }
            }
            Outcome::Done => {}
        }
    }

    pub(super) fn on_login(
        &mut self,
        room_id: RoomId,
        generation: u64,
        result: Result<(), BackendError>,
    ) {
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        if room.generation != generation {
            return;
        }
        let reconnecting = room.connection.is_reconnecting();
        match result {
            Ok(()) => {
                room.connection = Connection::Logined;
                room.accepted = true;
                let waiters = std::mem::take(&mut room.login_waiters);
                let reason = if reconnecting {
                    info!(room = %room_id, "reconnected");
                    RoomStateReason::Reconnected
                } else {
                    info!(room = %room_id, "logged in");
                    RoomStateReason::Logined
                };
                self.emit_room(&room_id, reason, None);
                for waiter in waiters {
                    let _ = waiter.send(Ok(()));
                }
                for key in self.room_streams(&room_id) {
                    let idle = self
                        .streams
                        .get(&key)
                        .is_some_and(|e| e.peer.is_none() && !e.is_awaiting_remote());
                    if idle {
                        self.begin_stream(&key);
                    }
                }
            }
            Err(e) if room.connection.restored_at().is_some() && !ends_restore(&e) => {
                let since = room.connection.restored_at().unwrap_or_else(Instant::now);
                // The SFU is not reachable yet after a restart (the box booted before the
                // network, or Janus still holds our previous session): keep trying, as
                // for a lost room, within the reconnect window.
                room.connection = Connection::Reconnecting {
                    since,
                    attempt: 1,
                    backoff: true,
                };
                let delay = self.settings.reconnect.backoff.delay(0);
                warn!(room = %room_id, code = %e.code, ?delay, "the restored room cannot be joined yet, retrying: {}", e.message);
                self.emit_room(&room_id, RoomStateReason::Reconnecting, Some(&e));
                self.ops.spawn(async move {
                    tokio::time::sleep(delay).await;
                    Outcome::RetryLogin {
                        room: room_id,
                        generation,
                    }
                });
            }
            Err(e) if !reconnecting => {
                let e = if room.connection.restored_at().is_some()
                    && room.had_token
                    && e.code == ErrorCode::ROOM_AUTH_FAILED
                {
                    BackendError::new(
                        e.code,
                        format!(
                            "{} — room `{room_id}` was joined with a token (room pin), which roomcast never stores: send login_room with the token again",
                            e.message
                        ),
                    )
                } else {
                    e
                };
                warn!(room = %room_id, code = %e.code, "login failed: {}", e.message);
                let server = self.remove_room(&room_id, e.clone().into(), Some(&e));
                self.emit_room_on(
                    &room_id,
                    server.as_ref(),
                    RoomStateReason::LoginFailed,
                    Some(&e),
                );
            }
            Err(e) => {
                let lost_for = room.connection.lost_for();
                let window = self
                    .settings
                    .servers
                    .reconnect_window(&room.server)
                    .unwrap_or(self.settings.reconnect.window);
                if lost_for >= window {
                    let failed = BackendError::new(
                        ErrorCode::SFU_RECONNECT_FAILED,
                        format!(
                            "could not reconnect to room `{room_id}` within {} s (last error {}: {}); the room was left",
                            window.as_secs(),
                            e.code,
                            e.message
                        ),
                    );
                    warn!(room = %room_id, "{}", failed.message);
                    let server = self.remove_room(&room_id, failed.clone().into(), Some(&failed));
                    self.emit_room_on(
                        &room_id,
                        server.as_ref(),
                        RoomStateReason::ReconnectFailed,
                        Some(&failed),
                    );
                    let left = self.backend.logout(&room_id);
                    self.ops.spawn(async move {
                        let _ = left.await;
                        Outcome::Done
                    });
                } else {
                    let delay = self
                        .settings
                        .reconnect
                        .backoff
                        .delay(room.connection.back_off());
                    debug!(room = %room_id, code = %e.code, ?delay, "login again failed: {}", e.message);
                    self.ops.spawn(async move {
                        tokio::time::sleep(delay).await;
                        Outcome::RetryLogin {
                            room: room_id,
                            generation,
                        }
                    });
                }
            }
        }
    }
}
