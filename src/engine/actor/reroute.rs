//! A reload that changed the SFU servers: rooms whose server changed log in again on
//! the new one.

use super::*;

impl Engine {
    pub(super) fn reroute(
        &mut self,
        servers: ServerRoutes,
        changed: Vec<ServerName>,
    ) -> Vec<RoomId> {
        self.settings.servers = servers;
        let affected: Vec<RoomId> = self
            .rooms
            .iter()
            .filter(|(_, room)| changed.contains(&room.server))
            .map(|(id, _)| id.clone())
            .collect();
        let mut moved = Vec::new();
        for room_id in affected {
            let Some(room) = self.rooms.get(&room_id) else {
                continue;
            };
            let named = room.named_server.clone();
            match self.settings.servers.resolve(&room_id, named.as_ref()) {
                Ok(server) => {
                    self.rehome(&room_id, server);
                    moved.push(room_id);
                }
                Err(e) => {
                    let error = BackendError::new(
                        e.code(),
                        format!(
                            "room `{room_id}` was left: the server it was logged in to is no longer configured ({e})"
                        ),
                    );
                    warn!(room = %room_id, code = %error.code, "{}", error.message);
                    let server = self.remove_room(&room_id, error.clone().into(), Some(&error));
                    self.emit_room_on(
                        &room_id,
                        server.as_ref(),
                        RoomStateReason::ReconnectFailed,
                        Some(&error),
                    );
                    let left = self.backend.logout(&room_id);
                    self.ops.spawn(async move {
                        let _ = left.await;
                        Outcome::Done
                    });
                }
            }
        }
        moved
    }

    /// Logs `room_id` out of its server and in again on `server` (the same one, with
    /// new settings, or another), as after a lost connection: `Reconnecting`, its
    /// streams suspended and started again once it is back.
    pub(super) fn rehome(&mut self, room_id: &RoomId, server: ServerName) {
        let generation = self.generation();
        let left = self.backend.logout(room_id);
        self.ops.spawn(async move {
            let _ = left.await;
            Outcome::Done
        });
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        info!(room = %room_id, from = %room.server, to = %server, "the room's server changed: logging in again");
        room.connection = Connection::lost(false);
        room.generation = generation;
        room.users.clear();
        room.streams.clear();
        room.server = server;
        self.emit_room(room_id, RoomStateReason::Reconnecting, None);
        let error = BackendError::new(
            ErrorCode::SFU_UNREACHABLE,
            format!("room `{room_id}` moves to another Janus session (reload)"),
        );
        for key in self.room_streams(room_id) {
            self.suspend_stream(&key, &error);
            self.stop_awaiting_remote(&key);
        }
        let room = room_id.clone();
        self.ops
            .spawn(async move { Outcome::RetryLogin { room, generation } });
    }
}
