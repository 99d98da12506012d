//! Media: capture, the shared encoders, one WebRTC peer per published or played stream.
//!
//! Being built (issue 4): until it lands, opening a publisher or player fails with a
//! coded error, so rooms and control work without media.

use async_trait::async_trait;

use crate::config::Config;
use crate::engine::backend::{MediaEngine, MediaSnapshot, PeerHandle};
use crate::engine::error::{BackendError, ErrorCode};
use crate::engine::types::{Channel, PlayOutput, RoomId, StreamId};

/// Why media could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("{0}")]
    Setup(String),
}

/// The GStreamer media engine.
pub struct GstMedia {
    _config: Config,
}

impl GstMedia {
    pub fn new(config: &Config) -> Result<Self, MediaError> {
        crate::webrtc::init().map_err(|e| MediaError::Setup(e.to_string()))?;
        Ok(Self {
            _config: config.clone(),
        })
    }
}

#[async_trait]
impl MediaEngine for GstMedia {
    async fn open_publisher(
        &self,
        _room: &RoomId,
        _stream: &StreamId,
        channel: Channel,
    ) -> Result<PeerHandle, BackendError> {
        Err(BackendError::new(
            ErrorCode::PUBLISH_MEDIA_FAILED,
            format!("publishing channel `{channel}` is not available in this build yet"),
        ))
    }

    async fn open_player(
        &self,
        _room: &RoomId,
        stream: &StreamId,
        _output: PlayOutput,
    ) -> Result<PeerHandle, BackendError> {
        Err(BackendError::new(
            ErrorCode::PLAY_WEBRTC_FAILED,
            format!("playing `{stream}` is not available in this build yet"),
        ))
    }

    fn snapshot(&self) -> MediaSnapshot {
        MediaSnapshot::default()
    }
}
