//! Several Janus servers at once: the engine's [`RoomBackend`] when rooms may live on
//! `[janus]` (the server named `default`) and on `[janus.servers.<name>]`.
//!
//! Each server in use is a [`JanusRooms`] of its own — its own WebSocket session, room
//! tasks and server fan-out carrier — so one server's trouble (down, slow, refusing)
//! reaches only the rooms on it. A server's session is opened when the first room on it
//! logs in and closed when the last one leaves (or its first login failed and nothing
//! else is on it); rooms on other servers are never touched by either. A room logging in
//! again (its connection was lost) keeps its server's session even while that fails: the
//! session reconnects by itself, and each time it is up the engine hears of it
//! ([`BackendEvent::ServerConnected`]) so the room need not wait out its backoff.
//!
//! The table below is the only state: which server each room is on (set when a login is
//! registered, so the operations after it follow it there in order) and which servers
//! are open. A server is closed only after the logout that emptied it was carried out,
//! and only if no login came for it meanwhile, so a quick "logout r, login r" keeps its
//! order on one session.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::JanusRooms;
use super::client::{JanusClient, Status};
use super::{BACKEND_EVENT_BUFFER, JanusSettings, client_config};
use crate::base::secret::Secret;
use crate::config::JanusConfig;
use crate::engine::backend::{BackendEvent, MediaEngine, OpFuture, PeerHandle, RoomBackend};
use crate::engine::error::{BackendError, ErrorCode};
use crate::engine::servers::ServerName;
use crate::engine::types::{Channel, RoomId, StreamId, User, UserId};
use crate::peer::TextChannels;

/// How long closing a server waits for its carrier room to be taken down.
const CLOSE_SETTLE: Duration = Duration::from_secs(1);

/// One open server.
struct Open {
    rooms: Arc<JanusRooms>,
    /// Ends the server's session (a child of the backend's shutdown).
    session: CancellationToken,
    /// Which open of this server this is (a closed and reopened server is another).
    generation: u64,
    /// Its configuration changed (a reload): the next login on this server opens a new
    /// session with the new one, and this one is closed once its rooms left.
    stale: bool,
}

#[derive(Default)]
struct Table {
    /// Every configured server (`default` included).
    configs: HashMap<ServerName, JanusConfig>,
    /// The server each room is on, with the registration that put it there.
    rooms: HashMap<RoomId, (ServerName, u64)>,
    open: HashMap<ServerName, Open>,
    next: u64,
}

impl Table {
    fn next(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    fn in_use(&self, server: &ServerName) -> bool {
        self.rooms.values().any(|(s, _)| s == server)
    }
}

/// The engine's backend over every configured Janus server.
pub struct JanusServers {
    events: mpsc::Sender<BackendEvent>,
    /// Builds the rooms' TextRoom channels, on every server.
    channels: Arc<dyn TextChannels>,
    shutdown: CancellationToken,
    table: Arc<Mutex<Table>>,
}

impl JanusServers {
    /// The backend over `[janus]` and its `servers`, with the receiver of every server's
    /// events for the engine. Nothing is connected until a room logs in. `channels`
    /// builds the rooms' TextRoom channels (`webrtc::DataChannels` in the agent).
    pub fn new(
        config: &JanusConfig,
        channels: Arc<dyn TextChannels>,
        shutdown: CancellationToken,
    ) -> (Arc<Self>, mpsc::Receiver<BackendEvent>) {
        let (events, events_rx) = mpsc::channel(BACKEND_EVENT_BUFFER);
        let configs = config
            .all_servers()
            .filter_map(|(name, c)| Some((ServerName::parse(name).ok()?, c.clone())))
            .collect();
        let servers = Arc::new(Self {
            events,
            channels,
            shutdown,
            table: Arc::new(Mutex::new(Table {
                configs,
                ..Table::default()
            })),
        });
        (servers, events_rx)
    }

    /// Servers with a session open now, sorted (for tests and logs).
    pub fn open_servers(&self) -> Vec<ServerName> {
        let mut open: Vec<ServerName> = match self.table.lock() {
            Ok(table) => table.open.keys().cloned().collect(),
            Err(_) => Vec::new(),
        };
        open.sort();
        open
    }

    /// Shutdown, after the engine left every room: each open server's last fan-out
    /// clean-up (see [`JanusRooms::settle`]), all bounded by `within` together.
    pub async fn settle(&self, within: Duration) {
        let open: Vec<Arc<JanusRooms>> = match self.table.lock() {
            Ok(table) => table.open.values().map(|o| o.rooms.clone()).collect(),
            Err(_) => return,
        };
        futures::future::join_all(open.iter().map(|rooms| rooms.settle(within))).await;
    }

    fn lock(&self) -> Option<MutexGuard<'_, Table>> {
        self.table.lock().ok()
    }

    /// Registers `room` on `server`, opening the server if it is not; returns the
    /// server's backend, the registration, which open of the server it is and whether
    /// the room was on this server already (logging in again).
    fn register(&self, room: &RoomId, server: &ServerName) -> Result<Registered, BackendError> {
        let mut table = self.lock().ok_or_else(poisoned)?;
        let Some(config) = table.configs.get(server).cloned() else {
            return Err(BackendError::new(
                ErrorCode::SERVER_UNKNOWN,
                format!("no Janus server `{server}` is configured"),
            ));
        };
        if table.open.get(server).is_some_and(|o| o.stale)
            && let Some(old) = table.open.remove(server)
        {
            retire(server, old);
        }
        let registration = table.next();
        let again = table.rooms.get(room).is_some_and(|(s, _)| s == server);
        let moved_from = table
            .rooms
            .insert(room.clone(), (server.clone(), registration))
            .map(|(s, _)| s)
            .filter(|s| s != server);
        if !table.open.contains_key(server) {
            let generation = table.next();
            let session = self.shutdown.child_token();
            info!(server = %server, url = %config.url, "opening a Janus session: the first room on this server logs in");
            let client = JanusClient::start(client_config(&config), session.clone());
            let rooms = JanusRooms::with_events(
                client,
                JanusSettings::from_config(&config),
                self.events.clone(),
                self.channels.clone(),
            );
            watch_connected(
                server.clone(),
                rooms.client().status(),
                self.events.clone(),
                session.clone(),
            );
            table.open.insert(
                server.clone(),
                Open {
                    rooms,
                    session,
                    generation,
                    stale: false,
                },
            );
        }
        let (rooms, generation) = table
            .open
            .get(server)
            .map(|o| (o.rooms.clone(), o.generation))
            .ok_or_else(poisoned)?;
        if let Some(old) = moved_from {
            // The room was on another server (a login after a failed one, to another
            // server): that one may now be empty.
            drop(table);
            self.close_if_unused(&old, None);
        }
        Ok(Registered {
            rooms,
            registration,
            generation,
            again,
        })
    }

    /// A reload: `config` is the new `[janus]` (with its servers) and `changed` the
    /// servers whose section was added, removed or changed. A changed server with no
    /// room is closed now; one with rooms keeps serving them (their logouts go there)
    /// until the next login on it opens a session with the new settings. Servers not in
    /// `changed` are not touched.
    pub fn reconfigure(&self, config: &JanusConfig, changed: &[ServerName]) {
        let idle: Vec<ServerName> = {
            let Some(mut table) = self.lock() else {
                warn!("the Janus servers' table is unusable; the reloaded servers are not applied");
                return;
            };
            table.configs = config
                .all_servers()
                .filter_map(|(name, c)| Some((ServerName::parse(name).ok()?, c.clone())))
                .collect();
            let mut idle = Vec::new();
            for server in changed {
                let in_use = table.in_use(server);
                if let Some(open) = table.open.get_mut(server) {
                    open.stale = true;
                    if !in_use {
                        idle.push(server.clone());
                    }
                }
            }
            idle
        };
        for server in idle {
            self.close_if_unused(&server, None);
        }
    }

    /// The backend of the server `room` is on, if it is on one.
    fn backend_of(&self, room: &RoomId) -> Option<Arc<JanusRooms>> {
        let table = self.lock()?;
        let (server, _) = table.rooms.get(room)?;
        table.open.get(server).map(|o| o.rooms.clone())
    }

    /// Closes `server` if no room is on it any more (and, with `generation`, only if it
    /// is still that open of it).
    fn close_if_unused(&self, server: &ServerName, generation: Option<u64>) {
        close_if_unused(&self.table, server, generation);
    }

    fn not_logged_in(room: &RoomId) -> OpFuture<()> {
        let room = room.clone();
        Box::pin(async move {
            Err(BackendError::new(
                ErrorCode::SFU_UNREACHABLE,
                format!("room `{room}` is not logged in on any Janus server"),
            ))
        })
    }

    /// Runs `op` on the room's server; a room on none gets `otherwise`.
    fn on_room<T: Send + 'static>(
        &self,
        room: &RoomId,
        op: impl FnOnce(&JanusRooms) -> OpFuture<T>,
        otherwise: impl FnOnce() -> OpFuture<T>,
    ) -> OpFuture<T> {
        match self.backend_of(room) {
            Some(rooms) => op(&rooms),
            None => otherwise(),
        }
    }
}

/// What [`JanusServers::register`] did.
struct Registered {
    rooms: Arc<JanusRooms>,
    registration: u64,
    generation: u64,
    again: bool,
}

/// Tells the engine each time the session to `server` is up.
fn watch_connected(
    server: ServerName,
    mut status: tokio::sync::watch::Receiver<Status>,
    events: mpsc::Sender<BackendEvent>,
    session: CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = session.cancelled() => break,
                changed = status.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let up = matches!(*status.borrow_and_update(), Status::Connected { .. });
                    if up {
                        let event = BackendEvent::ServerConnected { server: server.clone() };
                        if events.send(event).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
    });
}

fn poisoned() -> BackendError {
    BackendError::new(
        ErrorCode::SFU_UNREACHABLE,
        "the Janus servers' table is unusable (a task panicked while holding it)",
    )
}

/// A stale server replaced by a new session: the logouts already registered with it are
/// carried out (they are bounded by its request timeout), then it is closed.
fn retire(server: &ServerName, old: Open) {
    info!(server = %server, "the server's settings changed: a new session replaces the old one once its rooms left");
    let grace = old.rooms.client().request_timeout() + Duration::from_secs(1);
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        old.rooms.settle(CLOSE_SETTLE).await;
        old.session.cancel();
    });
}

/// See [`JanusServers::close_if_unused`]; a free function so spawned tasks can call it.
fn close_if_unused(table: &Mutex<Table>, server: &ServerName, generation: Option<u64>) {
    let Ok(mut table) = table.lock() else {
        return;
    };
    if table.in_use(server) {
        return;
    }
    let same = table
        .open
        .get(server)
        .is_some_and(|o| generation.is_none_or(|g| g == o.generation));
    if !same {
        return;
    }
    let Some(open) = table.open.remove(server) else {
        return;
    };
    drop(table);
    info!(server = %server, "closing the Janus session: no room is on this server any more");
    let server = server.clone();
    tokio::spawn(async move {
        open.rooms.settle(CLOSE_SETTLE).await;
        open.session.cancel();
        debug!(server = %server, "Janus session closed");
    });
}

impl RoomBackend for JanusServers {
    fn login(
        &self,
        room: &RoomId,
        server: &ServerName,
        user: &User,
        token: Option<&Secret>,
    ) -> OpFuture<()> {
        let Registered {
            rooms,
            registration,
            generation,
            again,
        } = match self.register(room, server) {
            Ok(registered) => registered,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let login = rooms.login(room, server, user, token);
        let (table, room, server) = (self.table.clone(), room.clone(), server.clone());
        Box::pin(async move {
            let result = login.await;
            if let Err(e) = &result
                && !again
            {
                // A failed first login leaves nothing behind: not even the session,
                // when nothing else is on its server. (A room logging in again stays on
                // its server until the engine gives it up with a logout.)
                let forgotten = match table.lock() {
                    Ok(mut t) => {
                        let ours = t.rooms.get(&room).is_some_and(|(_, r)| *r == registration);
                        if ours {
                            t.rooms.remove(&room);
                        }
                        ours
                    }
                    Err(_) => false,
                };
                if forgotten {
                    debug!(room = %room, server = %server, code = %e.code, "login failed; the room is on no server now");
                    close_if_unused(&table, &server, Some(generation));
                }
            }
            result
        })
    }

    fn logout(&self, room: &RoomId) -> OpFuture<()> {
        let (rooms, server, generation) = {
            let Some(mut table) = self.lock() else {
                return Box::pin(async { Err(poisoned()) });
            };
            let Some((server, _)) = table.rooms.remove(room) else {
                return Box::pin(async { Ok(()) });
            };
            let Some(open) = table.open.get(&server) else {
                return Box::pin(async { Ok(()) });
            };
            (open.rooms.clone(), server, open.generation)
        };
        let left = rooms.logout(room);
        let table = self.table.clone();
        Box::pin(async move {
            let result = left.await;
            // After the leave was carried out, so that it went over the session.
            close_if_unused(&table, &server, Some(generation));
            result
        })
    }

    fn publish(&self, room: &RoomId, stream: &StreamId, peer: PeerHandle) -> OpFuture<()> {
        self.on_room(
            room,
            |rooms| rooms.publish(room, stream, peer),
            || Self::not_logged_in(room),
        )
    }

    fn publish_relayed(
        &self,
        room: &RoomId,
        stream: &StreamId,
        channel: Channel,
        media: Arc<dyn MediaEngine>,
    ) -> OpFuture<PeerHandle> {
        let missing = room.clone();
        self.on_room(
            room,
            |rooms| rooms.publish_relayed(room, stream, channel, media),
            move || {
                Box::pin(async move {
                    Err(BackendError::new(
                        ErrorCode::SFU_UNREACHABLE,
                        format!("room `{missing}` is not logged in on any Janus server"),
                    ))
                })
            },
        )
    }

    fn unpublish(&self, room: &RoomId, stream: &StreamId) -> OpFuture<()> {
        self.on_room(
            room,
            |rooms| rooms.unpublish(room, stream),
            || Box::pin(async { Ok(()) }),
        )
    }

    fn play(&self, room: &RoomId, stream: &StreamId, peer: PeerHandle) -> OpFuture<()> {
        self.on_room(
            room,
            |rooms| rooms.play(room, stream, peer),
            || Self::not_logged_in(room),
        )
    }

    fn stop_playing(&self, room: &RoomId, stream: &StreamId) -> OpFuture<()> {
        self.on_room(
            room,
            |rooms| rooms.stop_playing(room, stream),
            || Box::pin(async { Ok(()) }),
        )
    }

    fn send_broadcast_message(&self, room: &RoomId, text: &str) -> OpFuture<u64> {
        let missing = room.clone();
        self.on_room(
            room,
            |rooms| rooms.send_broadcast_message(room, text),
            move || {
                Box::pin(async move {
                    Err(BackendError::new(
                        ErrorCode::SFU_UNREACHABLE,
                        format!("room `{missing}` is not logged in on any Janus server"),
                    ))
                })
            },
        )
    }

    fn send_custom_command(&self, room: &RoomId, to: &[UserId], text: &str) -> OpFuture<()> {
        self.on_room(
            room,
            |rooms| rooms.send_custom_command(room, to, text),
            || Self::not_logged_in(room),
        )
    }

    fn network_changed(&self) {
        let open: Vec<Arc<JanusRooms>> = match self.lock() {
            Some(table) => table.open.values().map(|o| o.rooms.clone()).collect(),
            None => {
                warn!(
                    "the Janus servers' table is unusable; cannot reconnect after the address change"
                );
                return;
            }
        };
        for rooms in open {
            rooms.network_changed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> JanusConfig {
        #[derive(serde::Deserialize)]
        struct Wrap {
            janus: JanusConfig,
        }
        toml::from_str::<Wrap>(text).unwrap().janus
    }

    fn room(id: &str) -> RoomId {
        RoomId::parse(id).unwrap()
    }

    fn user() -> User {
        User::parse("box-17", "Box 17").unwrap()
    }

    /// Nothing listens on these ports (1 is reserved): logins fail once the short
    /// request timeout passes, which is all these tests need.
    const TWO_SERVERS: &str = "[janus]\nurl = \"ws://127.0.0.1:1/\"\nrequest_timeout_ms = 100\n[janus.servers.district]\nurl = \"ws://127.0.0.1:1/district\"\nrequest_timeout_ms = 100\n";

    #[tokio::test]
    async fn a_server_opens_with_its_first_room_and_closes_when_nothing_is_on_it() {
        let shutdown = CancellationToken::new();
        let (servers, _events) = JanusServers::new(
            &config(TWO_SERVERS),
            Arc::new(crate::webrtc::DataChannels),
            shutdown.clone(),
        );
        assert!(servers.open_servers().is_empty(), "nothing opened at start");
        let district = ServerName::parse("district").unwrap();
        let login = servers.login(&room("group-3"), &district, &user(), None);
        assert_eq!(servers.open_servers(), std::slice::from_ref(&district));
        let e = login.await.unwrap_err();
        assert_eq!(e.code, ErrorCode::SFU_UNREACHABLE, "{e}");
        assert!(
            servers.open_servers().is_empty(),
            "a failed login leaves no session behind"
        );
        // A logout of a room never joined is fine, and opens nothing.
        servers.logout(&room("group-3")).await.unwrap();
        assert!(servers.open_servers().is_empty());
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_room_logging_in_again_keeps_its_session_until_it_is_logged_out() {
        let (servers, _events) = JanusServers::new(
            &config(TWO_SERVERS),
            Arc::new(crate::webrtc::DataChannels),
            CancellationToken::new(),
        );
        let district = ServerName::parse("district").unwrap();
        // A lost room's login again: registered by a first login the engine accepted
        // (here: registered, then failed while still registered again).
        let first = servers.login(&room("group-3"), &district, &user(), None);
        let again = servers.login(&room("group-3"), &district, &user(), None);
        let _ = first.await;
        assert!(again.await.is_err());
        assert_eq!(
            servers.open_servers(),
            std::slice::from_ref(&district),
            "the session stays while the engine still has the room"
        );
        servers.logout(&room("group-3")).await.unwrap();
        assert!(servers.open_servers().is_empty(), "closed after the logout");
    }

    #[tokio::test]
    async fn an_unknown_server_is_refused_with_its_code() {
        let (servers, _events) = JanusServers::new(
            &config(TWO_SERVERS),
            Arc::new(crate::webrtc::DataChannels),
            CancellationToken::new(),
        );
        let nowhere = ServerName::parse("nowhere").unwrap();
        let e = servers
            .login(&room("group-3"), &nowhere, &user(), None)
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::SERVER_UNKNOWN);
        assert!(servers.open_servers().is_empty());
    }

    #[tokio::test]
    async fn operations_on_a_room_on_no_server_fail_or_are_no_ops() {
        let (servers, _events) = JanusServers::new(
            &config(TWO_SERVERS),
            Arc::new(crate::webrtc::DataChannels),
            CancellationToken::new(),
        );
        let stream = StreamId::parse("s").unwrap();
        servers.unpublish(&room("r"), &stream).await.unwrap();
        servers.stop_playing(&room("r"), &stream).await.unwrap();
        let e = servers
            .send_broadcast_message(&room("r"), "hi")
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::SFU_UNREACHABLE);
    }
}
