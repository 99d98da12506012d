//! What the signalling side (rooms, engine) and the WebRTC side (`webrtc`, `media`) both
//! say about a peer connection: its ICE candidates, its state, and the text channel a
//! room's messages travel on. A module of its own so that neither layer imports the
//! other for them: the signalling side drives a [`TextChannel`], the WebRTC side builds it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::base::lossy;

/// An ICE candidate in SDP form (`candidate:…`), with its m-line index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceCandidate {
    pub sdp_m_line_index: u32,
    pub candidate: String,
}

/// Where a peer connection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerState {
    New,
    Connecting,
    Connected,
    /// Connectivity failed; the peer is useless now.
    Failed(String),
    /// The media behind the peer failed (its source or encoder); the peer is useless now.
    MediaFailed(String),
    /// Connectivity failed and no TURN relay of `network.turn_servers` gave the box an
    /// address (wrong credentials, or the relay cannot be reached).
    RelayFailed(String),
    Closed,
}

impl PeerState {
    /// Why the peer failed, if it did.
    pub fn failure(&self) -> Option<&str> {
        match self {
            PeerState::Failed(reason)
            | PeerState::MediaFailed(reason)
            | PeerState::RelayFailed(reason) => Some(reason),
            _ => None,
        }
    }

    /// Failed or closed: the state will not change again.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            PeerState::Failed(_)
                | PeerState::MediaFailed(_)
                | PeerState::RelayFailed(_)
                | PeerState::Closed
        )
    }
}

/// Why a text channel could not be opened or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// Connectivity failed and no TURN relay of `network.turn_servers` gave the box an
    /// address.
    #[error("{0}")]
    RelayFailed(String),
    #[error("{0}")]
    Failed(String),
}

/// A peer connection that carries one data channel: a room's text messages (Janus's
/// TextRoom). The SFU offers, the box answers.
#[async_trait::async_trait]
pub trait TextChannel: Send + Sync {
    /// Answers the SFU's SDP offer; returns the answer.
    async fn answer_offer(&self, sdp: &str) -> Result<String, ChannelError>;
    /// Waits (at most `timeout`) until the channel is open.
    async fn wait_open(&self, timeout: Duration) -> Result<(), ChannelError>;
    fn send(&self, text: &str) -> Result<(), ChannelError>;
    /// The texts received, once.
    fn take_incoming(&self) -> Option<lossy::Receiver<String>>;
    /// The local ICE candidates as they are gathered, once.
    fn take_local_candidates(&self) -> Option<mpsc::UnboundedReceiver<IceCandidate>>;
    fn add_remote_candidate(&self, candidate: &IceCandidate);
    fn state(&self) -> watch::Receiver<PeerState>;
    fn close(&self);
}

/// Opens text channels, one per room (`name` names it in logs and pipelines).
pub trait TextChannels: Send + Sync {
    fn open(&self, name: &str) -> Result<Arc<dyn TextChannel>, ChannelError>;
}
