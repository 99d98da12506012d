//! A PeerConnection that carries only a data channel (the TextRoom's transport).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use gst::prelude::*;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{Negotiator, WebRtcError};
use crate::base::lossy;
use crate::peer::{ChannelError, IceCandidate, PeerState, TextChannel, TextChannels};

/// The label Janus's TextRoom expects.
const LABEL: &str = "JanusDataChannel";
/// Received texts queued before the oldest are dropped (and counted): what other
/// participants send cannot grow the box's memory without end.
pub const INCOMING_BUFFER: usize = 128;
/// Received texts larger than this are dropped (and counted). TextRoom's own messages
/// are small (a broadcast from roomcast is at most 1024 bytes plus its envelope); the
/// largest is a join's participant list (~60 bytes a participant with usual names, so
/// rooms of several hundred). SCTP itself carries at most 64 KiB here.
pub const MAX_INCOMING_TEXT: usize = 32 * 1024;

/// A `webrtcbin` in a pipeline of its own, answering the SFU's offer and opening one
/// data channel. Text received on any channel arrives on [`DataChannelPeer::take_incoming`].
pub struct DataChannelPeer {
    pipeline: gst::Pipeline,
    negotiator: Negotiator,
    channel: Mutex<Option<gst_webrtc::WebRTCDataChannel>>,
    open: watch::Sender<bool>,
    incoming_tx: lossy::Sender<String>,
    incoming: Mutex<Option<lossy::Receiver<String>>>,
    /// Received texts dropped for their size.
    too_large: Arc<std::sync::atomic::AtomicU64>,
    stop: CancellationToken,
}

impl DataChannelPeer {
    pub fn new(name: &str) -> Result<Arc<Self>, WebRtcError> {
        super::init()?;
        let pipeline = gst::Pipeline::with_name(name);
        let negotiator = Negotiator::new(&format!("{name}-webrtcbin"))?;
        pipeline
            .add(negotiator.element())
            .map_err(|e| WebRtcError::Pipeline(e.to_string()))?;
        let (open, _) = watch::channel(false);
        let (incoming_tx, incoming) = lossy::channel(INCOMING_BUFFER, "TextRoom messages");
        let peer = Arc::new(Self {
            pipeline,
            negotiator,
            channel: Mutex::new(None),
            open,
            incoming_tx,
            incoming: Mutex::new(Some(incoming)),
            too_large: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            stop: CancellationToken::new(),
        });

        // Channels the SFU opens deliver into the same stream.
        let weak = Arc::downgrade(&peer);
        peer.negotiator
            .element()
            .connect("on-data-channel", false, move |values| {
                if let (Some(peer), Some(channel)) = (
                    weak.upgrade(),
                    values
                        .get(1)
                        .and_then(|v| v.get::<gst_webrtc::WebRTCDataChannel>().ok()),
                ) {
                    peer.watch_channel(&channel);
                }
                None
            });

        peer.pipeline.set_state(gst::State::Playing).map_err(|e| {
            WebRtcError::Pipeline(format!("data channel pipeline won't start: {e}"))
        })?;
        peer.watch_bus();
        Ok(peer)
    }

    fn watch_bus(self: &Arc<Self>) {
        let Some(bus) = self.pipeline.bus() else {
            return;
        };
        let weak = Arc::downgrade(self);
        let stop = self.stop.clone();
        let mut messages = bus.stream();
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    _ = stop.cancelled() => return,
                    message = messages.next() => match message {
                        Some(message) => message,
                        None => return,
                    },
                };
                if let gst::MessageView::Error(error) = message.view()
                    && let Some(peer) = weak.upgrade()
                {
                    peer.negotiator
                        .fail(format!("data channel pipeline error: {}", error.error()));
                }
            }
        });
    }

    fn watch_channel(&self, channel: &gst_webrtc::WebRTCDataChannel) {
        let incoming = self.incoming_tx.clone();
        let too_large = self.too_large.clone();
        channel.connect_on_message_string(move |_, text| {
            let Some(text) = text else { return };
            if text.len() > MAX_INCOMING_TEXT {
                let dropped = too_large.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if dropped.is_power_of_two() {
                    tracing::warn!(
                        "a TextRoom message of {} bytes was dropped (at most {MAX_INCOMING_TEXT}); {dropped} so far",
                        text.len()
                    );
                }
                return;
            }
            let _ = incoming.send(text.to_owned());
        });
    }

    /// Answers the SFU's offer and opens our data channel.
    pub async fn answer_offer(&self, sdp: &str) -> Result<String, WebRtcError> {
        let answer = self.negotiator.answer_offer(sdp).await?;
        let channel = self
            .negotiator
            .element()
            .emit_by_name::<Option<gst_webrtc::WebRTCDataChannel>>(
                "create-data-channel",
                &[&LABEL, &None::<gst::Structure>],
            )
            .ok_or(WebRtcError::Negotiation {
                what: "create-data-channel",
                detail: "webrtcbin refused to create the data channel".into(),
            })?;
        self.watch_channel(&channel);
        let open = self.open.clone();
        channel.connect_on_open(move |_| {
            open.send_replace(true);
        });
        let weak_state = self.negotiator.state.clone();
        channel.connect_on_close(move |_| {
            weak_state.send_if_modified(|current| {
                if current.is_final() {
                    return false;
                }
                *current = PeerState::Failed("the data channel closed".into());
                true
            });
        });
        if let Ok(mut slot) = self.channel.lock() {
            *slot = Some(channel);
        }
        Ok(answer)
    }

    /// Waits until the data channel is open.
    pub async fn wait_open(&self, timeout: Duration) -> Result<(), WebRtcError> {
        let mut open = self.open.subscribe();
        let mut state = self.negotiator.state();
        let wait = async {
            loop {
                if *open.borrow_and_update() {
                    return Ok(());
                }
                match &*state.borrow_and_update() {
                    PeerState::RelayFailed(_) => return Err(WebRtcError::RelayFailed),
                    PeerState::Failed(reason) => {
                        return Err(WebRtcError::Negotiation {
                            what: "data channel",
                            detail: reason.clone(),
                        });
                    }
                    _ => {}
                }
                tokio::select! {
                    changed = open.changed() => if changed.is_err() { break },
                    changed = state.changed() => if changed.is_err() { break },
                }
            }
            Err(WebRtcError::Negotiation {
                what: "data channel",
                detail: "closed before it opened".into(),
            })
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or_else(|_| {
                if self.negotiator.relay_missing() {
                    return Err(WebRtcError::RelayFailed);
                }
                Err(WebRtcError::Negotiation {
                    what: "data channel",
                    detail: format!("not open after {timeout:?} (ICE or SCTP did not connect)"),
                })
            })
    }

    /// Sends text on our data channel.
    pub fn send(&self, text: &str) -> Result<(), WebRtcError> {
        let guard = self
            .channel
            .lock()
            .map_err(|_| WebRtcError::Pipeline("data channel lock poisoned".into()))?;
        let channel = guard.as_ref().ok_or(WebRtcError::Negotiation {
            what: "send",
            detail: "the data channel is not open".into(),
        })?;
        channel
            .send_string_full(Some(text))
            .map_err(|e| WebRtcError::Negotiation {
                what: "send",
                detail: e.to_string(),
            })
    }

    pub fn take_incoming(&self) -> Option<lossy::Receiver<String>> {
        self.incoming.lock().ok()?.take()
    }

    pub fn take_local_candidates(&self) -> Option<mpsc::UnboundedReceiver<IceCandidate>> {
        self.negotiator.take_local_candidates()
    }

    pub fn add_remote_candidate(&self, candidate: &IceCandidate) {
        self.negotiator.add_remote_candidate(candidate);
    }

    pub fn state(&self) -> watch::Receiver<PeerState> {
        self.negotiator.state()
    }

    /// Stops the pipeline. Idempotent.
    pub fn close(&self) {
        self.stop.cancel();
        let channel = self.channel.lock().ok().and_then(|mut slot| slot.take());
        if let Some(channel) = &channel {
            channel.close();
        }
        let _ = self.pipeline.set_state(gst::State::Null);
        // Our reference to the channel goes only now: webrtcbin finishes a channel's close
        // on its own thread (notifying the channel's state), and that thread has stopped
        // once the pipeline is in NULL. As `Drop` does: pipeline first, channel after.
        drop(channel);
        self.negotiator.mark_closed();
    }
}

impl Drop for DataChannelPeer {
    fn drop(&mut self) {
        // Synchronous and idempotent: a pipeline must reach NULL before it is freed.
        self.stop.cancel();
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

impl From<WebRtcError> for ChannelError {
    fn from(e: WebRtcError) -> Self {
        match e {
            WebRtcError::RelayFailed => ChannelError::RelayFailed(e.to_string()),
            e => ChannelError::Failed(e.to_string()),
        }
    }
}

#[async_trait::async_trait]
impl TextChannel for DataChannelPeer {
    async fn answer_offer(&self, sdp: &str) -> Result<String, ChannelError> {
        Ok(DataChannelPeer::answer_offer(self, sdp).await?)
    }

    async fn wait_open(&self, timeout: Duration) -> Result<(), ChannelError> {
        Ok(DataChannelPeer::wait_open(self, timeout).await?)
    }

    fn send(&self, text: &str) -> Result<(), ChannelError> {
        Ok(DataChannelPeer::send(self, text)?)
    }

    fn take_incoming(&self) -> Option<lossy::Receiver<String>> {
        DataChannelPeer::take_incoming(self)
    }

    fn take_local_candidates(&self) -> Option<mpsc::UnboundedReceiver<IceCandidate>> {
        DataChannelPeer::take_local_candidates(self)
    }

    fn add_remote_candidate(&self, candidate: &IceCandidate) {
        DataChannelPeer::add_remote_candidate(self, candidate)
    }

    fn state(&self) -> watch::Receiver<PeerState> {
        DataChannelPeer::state(self)
    }

    fn close(&self) {
        DataChannelPeer::close(self)
    }
}

/// Text channels on `webrtcbin`, each a pipeline of its own ([`DataChannelPeer`]).
pub struct DataChannels;

impl TextChannels for DataChannels {
    fn open(&self, name: &str) -> Result<Arc<dyn TextChannel>, ChannelError> {
        let peer: Arc<dyn TextChannel> = DataChannelPeer::new(name)?;
        Ok(peer)
    }
}
