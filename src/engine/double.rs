//! In-memory stand-ins for the two boundaries, to prove the engine's rules in unit tests.
//! They are not evidence that rooms or media work: the Janus and GStreamer tests are.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::{mpsc, watch};

use super::backend::{
    BackendEvent, IceCandidate, MediaEngine, MediaSnapshot, OpFuture, PeerHandle, PeerState,
    PeerStats, RoomBackend, WebRtcPeer,
};
use super::error::{BackendError, ErrorCode};
use super::servers::ServerName;
use super::types::{Channel, PlayOutput, RoomId, StreamId, User, UserId};
use crate::base::secret::Secret;

fn ready<T: Send + 'static>(result: Result<T, BackendError>) -> OpFuture<T> {
    Box::pin(async move { result })
}

#[derive(Default)]
pub struct RoomsState {
    /// Every call, in the order it was registered: `"login r"`, `"publish r s"`, …
    pub calls: Vec<String>,
    /// The rooms the SFU has us in, with the user id each was joined as.
    pub joined: BTreeMap<String, String>,
    /// `(room, stream)` publishing on the SFU: added by a successful publish, removed by
    /// unpublish or by leaving the room.
    pub published: BTreeSet<(String, String)>,
    /// `(room, stream)` played from the SFU, likewise.
    pub played: BTreeSet<(String, String)>,
    /// Logins to these rooms fail with the given error.
    pub login_failures: HashMap<String, BackendError>,
    /// Streams others publish, per room: playing them succeeds.
    pub remote_streams: HashMap<String, BTreeSet<String>>,
    pub publish_failure: Option<BackendError>,
    /// Plays of published streams fail with this error.
    pub play_failure: Option<BackendError>,
    /// Logouts fail with this error (the SFU did not confirm).
    pub logout_failure: Option<BackendError>,
}

/// A rooms backend that answers at once and records what it was asked.
#[derive(Clone, Default)]
pub struct MemoryRooms {
    pub state: Arc<Mutex<RoomsState>>,
}

impl MemoryRooms {
    fn with<T>(&self, f: impl FnOnce(&mut RoomsState) -> T) -> T {
        f(&mut self.state.lock().expect("double poisoned"))
    }

    pub fn calls(&self) -> Vec<String> {
        self.with(|s| s.calls.clone())
    }

    pub fn fail_login(&self, room: &str, error: Option<BackendError>) {
        self.with(|s| match error {
            Some(e) => {
                s.login_failures.insert(room.to_owned(), e);
            }
            None => {
                s.login_failures.remove(room);
            }
        });
    }

    pub fn fail_publish(&self, error: Option<BackendError>) {
        self.with(|s| s.publish_failure = error);
    }

    pub fn fail_play(&self, error: Option<BackendError>) {
        self.with(|s| s.play_failure = error);
    }

    pub fn fail_logout(&self, error: Option<BackendError>) {
        self.with(|s| s.logout_failure = error);
    }

    pub fn remove_remote_stream(&self, room: &str, stream: &str) {
        self.with(|s| {
            if let Some(set) = s.remote_streams.get_mut(room) {
                set.remove(stream);
            }
        });
    }

    pub fn add_remote_stream(&self, room: &str, stream: &str) {
        self.with(|s| {
            s.remote_streams
                .entry(room.to_owned())
                .or_default()
                .insert(stream.to_owned());
        });
    }
}

impl RoomBackend for MemoryRooms {
    fn login(
        &self,
        room: &RoomId,
        server: &ServerName,
        user: &User,
        _token: Option<&Secret>,
    ) -> OpFuture<()> {
        ready(self.with(|s| {
            if server.is_default() {
                s.calls.push(format!("login {room} {}", user.user_id));
            } else {
                s.calls
                    .push(format!("login {room} {} @{server}", user.user_id));
            }
            match s.login_failures.get(room.as_str()) {
                Some(e) => Err(e.clone()),
                None => {
                    s.joined.insert(room.to_string(), user.user_id.to_string());
                    Ok(())
                }
            }
        }))
    }

    fn logout(&self, room: &RoomId) -> OpFuture<()> {
        ready(self.with(|s| {
            s.calls.push(format!("logout {room}"));
            s.joined.remove(room.as_str());
            s.published.retain(|(r, _)| r != room.as_str());
            s.played.retain(|(r, _)| r != room.as_str());
            match &s.logout_failure {
                Some(e) => Err(e.clone()),
                None => Ok(()),
            }
        }))
    }

    fn publish(&self, room: &RoomId, stream: &StreamId, _peer: PeerHandle) -> OpFuture<()> {
        ready(self.with(|s| {
            s.calls.push(format!("publish {room} {stream}"));
            match &s.publish_failure {
                Some(e) => Err(e.clone()),
                None => {
                    s.published.insert((room.to_string(), stream.to_string()));
                    Ok(())
                }
            }
        }))
    }

    fn unpublish(&self, room: &RoomId, stream: &StreamId) -> OpFuture<()> {
        ready(self.with(|s| {
            s.calls.push(format!("unpublish {room} {stream}"));
            s.published.remove(&(room.to_string(), stream.to_string()));
            Ok(())
        }))
    }

    fn play(&self, room: &RoomId, stream: &StreamId, _peer: PeerHandle) -> OpFuture<()> {
        ready(self.with(|s| {
            s.calls.push(format!("play {room} {stream}"));
            let published = s
                .remote_streams
                .get(room.as_str())
                .is_some_and(|set| set.contains(stream.as_str()));
            if let (true, Some(e)) = (published, &s.play_failure) {
                Err(e.clone())
            } else if published {
                s.played.insert((room.to_string(), stream.to_string()));
                Ok(())
            } else {
                Err(BackendError::new(
                    ErrorCode::PLAY_STREAM_NOT_FOUND,
                    format!("no stream {stream} in {room}"),
                ))
            }
        }))
    }

    fn stop_playing(&self, room: &RoomId, stream: &StreamId) -> OpFuture<()> {
        ready(self.with(|s| {
            s.calls.push(format!("stop_playing {room} {stream}"));
            s.played.remove(&(room.to_string(), stream.to_string()));
            Ok(())
        }))
    }

    fn send_broadcast_message(&self, room: &RoomId, text: &str) -> OpFuture<u64> {
        ready(self.with(|s| {
            s.calls.push(format!("broadcast {room} {text}"));
            Ok(s.calls.len() as u64)
        }))
    }

    fn send_custom_command(&self, room: &RoomId, to: &[UserId], text: &str) -> OpFuture<()> {
        ready(self.with(|s| {
            let to: Vec<&str> = to.iter().map(UserId::as_str).collect();
            s.calls
                .push(format!("custom {room} [{}] {text}", to.join(",")));
            Ok(())
        }))
    }
}

/// A peer whose state the test controls.
pub struct FakePeer {
    label: String,
    state: watch::Sender<PeerState>,
}

impl FakePeer {
    pub fn fail(&self, reason: &str) {
        self.state
            .send_replace(PeerState::Failed(reason.to_owned()));
    }
}

#[async_trait]
impl WebRtcPeer for FakePeer {
    fn label(&self) -> &str {
        &self.label
    }
    async fn create_offer(&self) -> Result<String, BackendError> {
        Ok("v=0".into())
    }
    async fn apply_answer(&self, _sdp: &str) -> Result<(), BackendError> {
        Ok(())
    }
    async fn answer_offer(&self, _sdp: &str) -> Result<String, BackendError> {
        Ok("v=0".into())
    }
    fn take_local_candidates(&self) -> Option<mpsc::UnboundedReceiver<IceCandidate>> {
        None
    }
    fn add_remote_candidate(&self, _candidate: &IceCandidate) -> Result<(), BackendError> {
        Ok(())
    }
    fn state(&self) -> watch::Receiver<PeerState> {
        self.state.subscribe()
    }
    fn stats(&self) -> PeerStats {
        PeerStats::default()
    }
    async fn close(&self) {
        // send_replace: `send` changes nothing when no one watches the peer yet.
        self.state.send_replace(PeerState::Closed);
    }
}

#[derive(Default)]
pub struct MediaState {
    /// Every peer opened, by label, newest last.
    pub peers: Vec<Arc<FakePeer>>,
    /// Opening a peer for this channel fails (a missing or broken source).
    pub broken_channel: Option<Channel>,
}

#[derive(Clone, Default)]
pub struct MemoryMedia {
    pub state: Arc<Mutex<MediaState>>,
}

impl MemoryMedia {
    fn with<T>(&self, f: impl FnOnce(&mut MediaState) -> T) -> T {
        f(&mut self.state.lock().expect("double poisoned"))
    }

    pub fn peer(&self, label: &str) -> Option<Arc<FakePeer>> {
        self.with(|s| s.peers.iter().rev().find(|p| p.label == label).cloned())
    }

    pub fn open_peers(&self) -> Vec<String> {
        self.with(|s| {
            s.peers
                .iter()
                .filter(|p| *p.state.borrow() != PeerState::Closed)
                .map(|p| p.label.clone())
                .collect()
        })
    }

    pub fn break_channel(&self, channel: Option<Channel>) {
        self.with(|s| s.broken_channel = channel);
    }

    fn open(&self, label: String) -> PeerHandle {
        let (state, _) = watch::channel(PeerState::New);
        let peer = Arc::new(FakePeer { label, state });
        self.with(|s| s.peers.push(peer.clone()));
        peer
    }
}

#[async_trait]
impl MediaEngine for MemoryMedia {
    async fn open_publisher(
        &self,
        room: &RoomId,
        stream: &StreamId,
        channel: Channel,
    ) -> Result<PeerHandle, BackendError> {
        if self.with(|s| s.broken_channel) == Some(channel) {
            return Err(BackendError::new(
                ErrorCode::PUBLISH_MEDIA_FAILED,
                format!("source `{channel}` failed"),
            ));
        }
        Ok(self.open(format!("publish {room}/{stream}")))
    }

    async fn open_player(
        &self,
        room: &RoomId,
        stream: &StreamId,
        _output: PlayOutput,
    ) -> Result<PeerHandle, BackendError> {
        Ok(self.open(format!("play {room}/{stream}")))
    }

    fn snapshot(&self) -> MediaSnapshot {
        MediaSnapshot::default()
    }
}

/// Builds an engine on the doubles.
pub struct Harness {
    pub engine: super::EngineHandle,
    pub rooms: MemoryRooms,
    pub media: MemoryMedia,
    pub backend_events: mpsc::Sender<BackendEvent>,
    pub events: tokio::sync::broadcast::Receiver<super::Event>,
    pub shutdown: tokio_util::sync::CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

impl Harness {
    pub fn start(settings: super::EngineSettings) -> Self {
        let rooms = MemoryRooms::default();
        let media = MemoryMedia::default();
        let (backend_events, backend_rx) = mpsc::channel(64);
        let shutdown = tokio_util::sync::CancellationToken::new();
        let (engine, task) = super::EngineBuilder::new(settings).start(
            Arc::new(rooms.clone()),
            backend_rx,
            Arc::new(media.clone()),
            shutdown.clone(),
        );
        let events = engine.subscribe();
        Self {
            engine,
            rooms,
            media,
            backend_events,
            events,
            shutdown,
            task,
        }
    }

    /// Every event received so far.
    pub fn drain_events(&mut self) -> Vec<super::Event> {
        let mut out = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            out.push(event);
        }
        out
    }
}
