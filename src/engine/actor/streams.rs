//! A stream's lifecycle: its peer opened, negotiated through the room's backend, up,
//! stopped, failed or retried.

use super::*;

impl Engine {
    /// Opens a media peer for the stream; negotiation follows in `on_peer_opened`.
    pub(super) fn begin_stream(&mut self, key: &StreamKey) {
        let generation = self.generation();
        let Some(entry) = self.streams.get_mut(key) else {
            return;
        };
        entry.generation = generation;
        if let Lifecycle::AwaitingRemote { attempt } = entry.lifecycle {
            entry.lifecycle = Lifecycle::Recovering { attempt };
        }
        if let Role::Publish { channel } = entry.role {
            let fanout = match (self.settings.fanout, entry.fanout) {
                (FanoutPolicy::Device, _) | (FanoutPolicy::Auto, Some(Fanout::Device)) => {
                    Fanout::Device
                }
                (FanoutPolicy::Server | FanoutPolicy::Auto, _) => Fanout::Server,
            };
            entry.fanout = Some(fanout);
            if fanout == Fanout::Server {
                let relayed =
                    self.backend
                        .publish_relayed(&entry.room, &key.1, channel, self.media.clone());
                let key = key.clone();
                self.ops.spawn(async move {
                    Outcome::Relayed {
                        key,
                        generation,
                        result: relayed.await,
                    }
                });
                return;
            }
        }
        let (media, room, role, key) = (
            self.media.clone(),
            entry.room.clone(),
            entry.role,
            key.clone(),
        );
        self.ops.spawn(async move {
            let result = match role {
                Role::Publish { channel } => media.open_publisher(&room, &key.1, channel).await,
                Role::Play { output } => media.open_player(&room, &key.1, output).await,
            };
            Outcome::PeerOpened {
                key,
                generation,
                result,
            }
        });
    }

    pub(super) fn current(&self, key: &StreamKey, generation: u64) -> bool {
        self.streams
            .get(key)
            .is_some_and(|e| e.generation == generation)
    }

    pub(super) fn on_peer_opened(
        &mut self,
        key: StreamKey,
        generation: u64,
        result: Result<PeerHandle, BackendError>,
    ) {
        if !self.current(&key, generation) {
            if let Ok(peer) = result {
                self.close_peer(peer);
            }
            return;
        }
        let peer = match result {
            Ok(peer) => peer,
            Err(e) => return self.stream_failed(&key, e),
        };
        let Some(entry) = self.streams.get_mut(&key) else {
            return;
        };
        entry.peer = Some(peer.clone());
        let negotiated = match key.0 {
            Direction::Publish => self.backend.publish(&entry.room, &key.1, peer),
            Direction::Play => self.backend.play(&entry.room, &key.1, peer),
        };
        self.ops.spawn(async move {
            Outcome::Negotiated {
                key,
                generation,
                result: negotiated.await,
            }
        });
    }

    /// Server-side fan-out: the relay is up (the peer is a view of the shared upload), or
    /// it failed; under `auto`, a server that cannot relay means `device` for the stream.
    pub(super) fn on_relayed(
        &mut self,
        key: StreamKey,
        generation: u64,
        result: Result<PeerHandle, BackendError>,
    ) {
        if !self.current(&key, generation) {
            return;
        }
        match result {
            Ok(peer) => {
                if let Some(entry) = self.streams.get_mut(&key) {
                    entry.peer = Some(peer);
                }
                self.on_negotiated(key, generation, Ok(()));
            }
            Err(e)
                if e.code == ErrorCode::PUBLISH_FANOUT_UNSUPPORTED
                    && self.settings.fanout == FanoutPolicy::Auto =>
            {
                info!(stream = %key.1, "server fan-out not possible, publishing from the box: {}", e.message);
                if let Some(entry) = self.streams.get_mut(&key) {
                    entry.fanout = Some(Fanout::Device);
                }
                self.begin_stream(&key);
            }
            Err(e) => self.stream_failed(&key, e),
        }
    }

    pub(super) fn on_negotiated(
        &mut self,
        key: StreamKey,
        generation: u64,
        result: Result<(), BackendError>,
    ) {
        if !self.current(&key, generation) {
            return;
        }
        if let Err(e) = result {
            return self.stream_failed(&key, e);
        }
        let Some(entry) = self.streams.get_mut(&key) else {
            return;
        };
        let waiter = entry.enter(Lifecycle::Up);
        let room = entry.room.clone();
        let peer = entry.peer.clone();
        info!(room = %room, stream = %key.1, kind = ?key.0, "stream up");
        self.emit_stream(&key, &room, Some(Phase::Active), None);
        if let Some(waiter) = waiter {
            waiter.resolve(Ok(Phase::Active));
        }
        if let Some(peer) = peer {
            self.watch_peer(key, generation, peer);
        }
    }

    /// Turns a peer's failure into an outcome on the engine task.
    pub(super) fn watch_peer(&mut self, key: StreamKey, generation: u64, peer: PeerHandle) {
        let mut state = peer.state();
        self.ops.spawn(async move {
            loop {
                let current = state.borrow_and_update().clone();
                match current {
                    PeerState::Failed(reason) => {
                        return Outcome::PeerFailed {
                            key,
                            generation,
                            reason,
                            cause: FailureCause::Connection,
                        };
                    }
                    PeerState::MediaFailed(reason) => {
                        return Outcome::PeerFailed {
                            key,
                            generation,
                            reason,
                            cause: FailureCause::Media,
                        };
                    }
                    PeerState::RelayFailed(reason) => {
                        return Outcome::PeerFailed {
                            key,
                            generation,
                            reason,
                            cause: FailureCause::Relay,
                        };
                    }
                    PeerState::Closed => return Outcome::Done,
                    // Still coming up, or up: keep watching.
                    PeerState::New | PeerState::Connecting | PeerState::Connected => {}
                }
                if state.changed().await.is_err() {
                    return Outcome::Done;
                }
            }
        });
    }

    pub(super) fn close_peer(&mut self, peer: PeerHandle) {
        self.ops.spawn(async move {
            peer.close().await;
            Outcome::Done
        });
    }

    /// A stream's start or its running peer failed: end it, or retry it if it was up
    /// before (a source that failed mid-stream, a lost connection).
    pub(super) fn stream_failed(&mut self, key: &StreamKey, error: BackendError) {
        let generation = self.generation();
        let released = match self.streams.get(key) {
            Some(entry) => self.release_remote(key, &entry.room),
            None => return,
        };
        let Some(entry) = self.streams.get_mut(key) else {
            return;
        };
        entry.generation = generation;
        let peer = entry.peer.take();
        let room = entry.room.clone();
        warn!(room = %room, stream = %key.1, kind = ?key.0, code = %error.code, "stream failed: {}", error.message);
        self.ops.spawn(async move {
            let _ = released.await;
            if let Some(peer) = peer {
                peer.close().await;
            }
            Outcome::Done
        });

        let not_published =
            key.0 == Direction::Play && error.code == ErrorCode::PLAY_STREAM_NOT_FOUND;
        let Some(entry) = self.streams.get_mut(key) else {
            return;
        };
        if not_published {
            // Play it as soon as it is published (the reference SDK does the same).
            let attempt = entry.attempt();
            let waiter = entry.enter(Lifecycle::AwaitingRemote { attempt });
            let listed = self
                .rooms
                .get(&room)
                .is_some_and(|r| r.streams.contains_key(key.1.as_str()));
            self.emit_stream(key, &room, Some(Phase::Requesting), Some(&error));
            if let Some(waiter) = waiter {
                waiter.resolve(Ok(Phase::Requesting));
            }
            if listed {
                self.schedule_stream_retry(key);
            }
        } else if entry.is_desired() {
            // Up before, restored, or answered as waiting for its publisher: part of
            // the desired state, so it comes back on its own.
            let attempt = entry.attempt();
            entry.lifecycle = Lifecycle::Recovering { attempt };
            self.emit_stream(key, &room, Some(Phase::Requesting), Some(&error));
            self.schedule_stream_retry(key);
        } else if let Some(entry) = self.streams.remove(key) {
            // A start that never came up: its command hears why.
            self.emit_stream(key, &room, None, Some(&error));
            if let Some(waiter) = entry.into_waiter() {
                waiter.resolve(Err(error.into()));
            }
        }
    }

    pub(super) fn schedule_stream_retry(&mut self, key: &StreamKey) {
        let Some(entry) = self.streams.get_mut(key) else {
            return;
        };
        let attempt = entry.attempt();
        let delay = self.settings.reconnect.backoff.delay(attempt);
        let next = attempt.saturating_add(1);
        entry.lifecycle = match entry.lifecycle {
            // Still waiting for its publisher (the room lists it, the SFU did not
            // have it yet): the retry plays it, or finds it missing again.
            Lifecycle::AwaitingRemote { .. } => Lifecycle::AwaitingRemote { attempt: next },
            _ => Lifecycle::Recovering { attempt: next },
        };
        let (key, generation) = (key.clone(), entry.generation);
        debug!(stream = %key.1, ?delay, "stream retry scheduled");
        self.ops.spawn(async move {
            tokio::time::sleep(delay).await;
            Outcome::RetryStream { key, generation }
        });
    }

    /// Stops a stream's peer without ending the stream (its room is reconnecting).
    pub(super) fn suspend_stream(&mut self, key: &StreamKey, error: &BackendError) {
        let generation = self.generation();
        let Some(entry) = self.streams.get_mut(key) else {
            return;
        };
        entry.generation = generation;
        let was_active = entry.is_up();
        if was_active {
            entry.lifecycle = Lifecycle::Recovering { attempt: 0 };
        }
        let peer = entry.peer.take();
        let room = entry.room.clone();
        if let Some(peer) = peer {
            self.close_peer(peer);
        }
        if was_active {
            self.emit_stream(key, &room, Some(Phase::Requesting), Some(error));
        }
    }

    /// A suspended played stream whose publisher left: it plays again when the
    /// publisher is back. A start still unanswered hears that it waits for it.
    pub(super) fn await_remote(&mut self, key: &StreamKey) {
        let Some(entry) = self.streams.get_mut(key) else {
            return;
        };
        let attempt = entry.attempt();
        if let Some(waiter) = entry.enter(Lifecycle::AwaitingRemote { attempt }) {
            waiter.resolve(Ok(Phase::Requesting));
        }
    }

    /// The room's list of streams is gone (it reconnects): a stream waiting for its
    /// publisher is tried again once the room is back, like the others.
    pub(super) fn stop_awaiting_remote(&mut self, key: &StreamKey) {
        if let Some(entry) = self.streams.get_mut(key)
            && let Lifecycle::AwaitingRemote { attempt } = entry.lifecycle
        {
            entry.lifecycle = Lifecycle::Recovering { attempt };
        }
    }

    pub(super) fn room_streams(&self, room: &RoomId) -> Vec<StreamKey> {
        self.streams
            .iter()
            .filter(|(_, e)| &e.room == room)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Removes a room and ends its streams; returns the server it was on. The SFU side
    /// is the caller's business.
    pub(super) fn remove_room(
        &mut self,
        room_id: &RoomId,
        cancelled: EngineError,
        error: Option<&BackendError>,
    ) -> Option<ServerName> {
        let room = self.rooms.remove(room_id)?;
        for waiter in room.login_waiters {
            let _ = waiter.send(Err(match error {
                Some(e) => e.clone().into(),
                None => EngineError::LoginCancelled(room_id.clone()),
            }));
        }
        for key in self.room_streams(room_id) {
            if let Some(mut entry) = self.streams.remove(&key) {
                if let Some(peer) = entry.peer.take() {
                    self.close_peer(peer);
                }
                if let Some(waiter) = entry.into_waiter() {
                    waiter.resolve(Err(cancelled.clone()));
                }
                self.emit_stream(&key, room_id, None, error);
            }
        }
        if self.rooms.is_empty() {
            self.user = None;
        }
        Some(room.server)
    }
}
