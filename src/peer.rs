//! What the signalling side (rooms, engine) and the WebRTC side (`webrtc`, `media`) both
//! say about a peer connection: its ICE candidates and its state. A module of its own so
//! that neither layer imports the other for them.

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
