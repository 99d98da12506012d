//! WebRTC on GStreamer's `webrtcbin`: the offer/answer and ICE plumbing shared by the
//! media peers (publishers, players) and the TextRoom data channels.
//!
//! GStreamer calls our closures on its own threads: they only send into channels and
//! hold weak references to elements.

mod datachannel;
pub use datachannel::{INCOMING_BUFFER, MAX_INCOMING_TEXT};
pub mod srtp_crypto;

use std::sync::{Mutex, OnceLock};

use gst::glib;
use gst::prelude::*;
use tokio::sync::{mpsc, oneshot, watch};

pub use datachannel::DataChannelPeer;

use crate::engine::backend::{IceCandidate, PeerState};

/// Why a WebRTC operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WebRtcError {
    #[error("GStreamer could not be initialised: {0}")]
    Init(String),
    #[error("the GStreamer element `{element}` is missing (install {package})")]
    MissingElement {
        element: &'static str,
        package: &'static str,
    },
    #[error("{what} failed: {detail}")]
    Negotiation { what: &'static str, detail: String },
    #[error("the SDP from the SFU does not parse: {0}")]
    BadSdp(String),
    #[error("{0}")]
    Pipeline(String),
}

/// Initialises GStreamer once per process, and gives libsrtp the faster SRTP primitives
/// of [`srtp_crypto`] (unless `ROOMCAST_SRTP_CRYPTO=libsrtp`).
pub fn init() -> Result<(), WebRtcError> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| {
        gst::init().map_err(|e| e.to_string())?;
        install_srtp_crypto();
        Ok(())
    })
    .clone()
    .map_err(WebRtcError::Init)
}

fn install_srtp_crypto() {
    if std::env::var(srtp_crypto::OPT_OUT_ENV).is_ok_and(|v| v == "libsrtp") {
        tracing::info!(
            "SRTP: libsrtp's own AES-ICM and HMAC-SHA1 ({}=libsrtp)",
            srtp_crypto::OPT_OUT_ENV
        );
        return;
    }
    match srtp_crypto::install() {
        Ok(_) => tracing::debug!("SRTP: AES-ICM and HMAC-SHA1 handed to libsrtp"),
        // Expected on a Pi 4 or a 32-bit board: not a fault.
        Err(
            e @ (srtp_crypto::SrtpCryptoError::NoAesInstructions { .. }
            | srtp_crypto::SrtpCryptoError::UntestedVersion { .. }),
        ) => {
            tracing::info!("SRTP: {e}")
        }
        Err(e) => tracing::warn!(
            "SRTP stays on libsrtp's own AES-ICM and HMAC-SHA1, which cost more per packet \
             and so per room: {e}"
        ),
    }
}

/// Makes an element, with an error that says which package provides it.
pub fn make_element(
    factory: &'static str,
    package: &'static str,
) -> Result<gst::Element, WebRtcError> {
    gst::ElementFactory::make(factory)
        .build()
        .map_err(|_| WebRtcError::MissingElement {
            element: factory,
            package,
        })
}

/// A `webrtcbin` with its signals turned into channels.
pub struct Negotiator {
    webrtcbin: gst::Element,
    state: watch::Sender<PeerState>,
    candidates: Mutex<Option<mpsc::UnboundedReceiver<IceCandidate>>>,
}

impl Negotiator {
    /// Makes a `webrtcbin` (max-bundle, no STUN: Janus and the box share a network).
    pub fn new(name: &str) -> Result<Self, WebRtcError> {
        let webrtcbin = gst::ElementFactory::make("webrtcbin")
            .name(name)
            .property_from_str("bundle-policy", "max-bundle")
            .build()
            .map_err(|_| WebRtcError::MissingElement {
                element: "webrtcbin",
                package: "gstreamer1.0-plugins-bad and gstreamer1.0-nice",
            })?;
        disable_upnp(&webrtcbin);
        let (state, _) = watch::channel(PeerState::New);
        let (candidates_tx, candidates_rx) = mpsc::unbounded_channel();
        let candidates_tx = std::sync::Arc::new(Mutex::new(Some(candidates_tx)));

        let sender = candidates_tx.clone();
        webrtcbin.connect("on-ice-candidate", false, move |values| {
            let index = values.get(1).and_then(|v| v.get::<u32>().ok());
            let candidate = values.get(2).and_then(|v| v.get::<String>().ok());
            if let (Some(sdp_m_line_index), Some(candidate)) = (index, candidate)
                && let Ok(guard) = sender.lock()
                && let Some(tx) = guard.as_ref()
            {
                let _ = tx.send(IceCandidate {
                    sdp_m_line_index,
                    candidate,
                });
            }
            None
        });

        let sender = candidates_tx;
        webrtcbin.connect_notify(Some("ice-gathering-state"), move |bin, _| {
            let gathering =
                bin.property::<gst_webrtc::WebRTCICEGatheringState>("ice-gathering-state");
            if gathering == gst_webrtc::WebRTCICEGatheringState::Complete
                && let Ok(mut guard) = sender.lock()
            {
                // Closing the channel tells the signalling side to send end-of-candidates.
                guard.take();
            }
        });

        let state_tx = state.clone();
        webrtcbin.connect_notify(Some("connection-state"), move |bin, _| {
            use gst_webrtc::WebRTCPeerConnectionState as S;
            let next = match bin.property::<S>("connection-state") {
                S::New => PeerState::New,
                S::Connecting => PeerState::Connecting,
                S::Connected => PeerState::Connected,
                // ICE may recover from Disconnected; Failed is final.
                S::Disconnected => return,
                S::Failed => PeerState::Failed("ICE/DTLS connectivity failed".into()),
                S::Closed => PeerState::Closed,
                _ => return,
            };
            state_tx.send_if_modified(|current| {
                if current.is_final() || *current == next {
                    return false;
                }
                *current = next.clone();
                true
            });
        });

        Ok(Self {
            webrtcbin,
            state,
            candidates: Mutex::new(Some(candidates_rx)),
        })
    }

    pub fn element(&self) -> &gst::Element {
        &self.webrtcbin
    }

    pub fn state(&self) -> watch::Receiver<PeerState> {
        self.state.subscribe()
    }

    /// Reports a failure noticed elsewhere (the pipeline's bus).
    pub fn fail(&self, reason: impl Into<String>) {
        self.finish(PeerState::Failed(reason.into()));
    }

    /// Reports that the media behind the peer failed (its source or encoder).
    pub fn fail_media(&self, reason: impl Into<String>) {
        self.finish(PeerState::MediaFailed(reason.into()));
    }

    fn finish(&self, state: PeerState) {
        self.state.send_if_modified(|current| {
            if current.is_final() {
                return false;
            }
            *current = state;
            true
        });
    }

    pub fn mark_closed(&self) {
        self.state.send_replace(PeerState::Closed);
    }

    pub fn take_local_candidates(&self) -> Option<mpsc::UnboundedReceiver<IceCandidate>> {
        self.candidates.lock().ok()?.take()
    }

    pub fn add_remote_candidate(&self, candidate: &IceCandidate) {
        self.webrtcbin.emit_by_name::<()>(
            "add-ice-candidate",
            &[&candidate.sdp_m_line_index, &candidate.candidate],
        );
    }

    /// Creates an offer and sets it as the local description.
    pub async fn create_offer(&self) -> Result<String, WebRtcError> {
        let (promise, reply) = promise("create-offer");
        self.webrtcbin
            .emit_by_name::<()>("create-offer", &[&None::<gst::Structure>, &promise]);
        let offer = description_from(reply.await?, "offer", "create-offer")?;
        self.set_description("set-local-description", &offer)
            .await?;
        sdp_text(&offer)
    }

    /// Applies the remote answer to our offer.
    pub async fn apply_answer(&self, sdp: &str) -> Result<(), WebRtcError> {
        let answer = parse_description(gst_webrtc::WebRTCSDPType::Answer, sdp)?;
        self.set_description("set-remote-description", &answer)
            .await
    }

    /// Applies a remote offer, creates our answer and sets it locally.
    ///
    /// The answer takes the DTLS server role (`a=setup:passive`). As the client, our
    /// first ClientHello can leave before the SFU's ICE side is ready; it is then lost and
    /// OpenSSL retransmits only after 1 s, which made every answered connection (TextRoom,
    /// players) take a second longer about one time in three. As the server we wait for
    /// the SFU's hello, which it sends once its ICE is connected.
    pub async fn answer_offer(&self, sdp: &str) -> Result<String, WebRtcError> {
        let offer = parse_description(gst_webrtc::WebRTCSDPType::Offer, sdp)?;
        self.set_description("set-remote-description", &offer)
            .await?;
        let (promise, reply) = promise("create-answer");
        self.webrtcbin
            .emit_by_name::<()>("create-answer", &[&None::<gst::Structure>, &promise]);
        let answer = description_from(reply.await?, "answer", "create-answer")?;
        let text = sdp_text(&answer)?.replace("a=setup:active", "a=setup:passive");
        let answer = parse_description(gst_webrtc::WebRTCSDPType::Answer, &text)?;
        self.set_description("set-local-description", &answer)
            .await?;
        Ok(text)
    }

    async fn set_description(
        &self,
        signal: &'static str,
        description: &gst_webrtc::WebRTCSessionDescription,
    ) -> Result<(), WebRtcError> {
        let (promise, reply) = promise(signal);
        self.webrtcbin
            .emit_by_name::<()>(signal, &[description, &promise]);
        let reply = reply.await?;
        if let Some(error) = reply
            .as_ref()
            .and_then(|s| s.get::<glib::Error>("error").ok())
        {
            return Err(WebRtcError::Negotiation {
                what: signal,
                detail: error.to_string(),
            });
        }
        Ok(())
    }
}

/// A promise for a webrtcbin signal and the future of its reply.
fn promise(
    what: &'static str,
) -> (
    gst::Promise,
    impl std::future::Future<Output = Result<Option<gst::Structure>, WebRtcError>>,
) {
    let (tx, rx) = oneshot::channel();
    let promise = gst::Promise::with_change_func(move |reply| {
        let _ = tx.send(match reply {
            Ok(structure) => Ok(structure.map(|s| s.to_owned())),
            Err(e) => Err(format!("{e:?}")),
        });
    });
    let reply = async move {
        match rx.await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(detail)) => Err(WebRtcError::Negotiation { what, detail }),
            Err(_) => Err(WebRtcError::Negotiation {
                what,
                detail: "webrtcbin dropped the promise".into(),
            }),
        }
    };
    (promise, reply)
}

fn description_from(
    reply: Option<gst::Structure>,
    field: &str,
    what: &'static str,
) -> Result<gst_webrtc::WebRTCSessionDescription, WebRtcError> {
    let reply = reply.ok_or(WebRtcError::Negotiation {
        what,
        detail: "no reply".into(),
    })?;
    if let Ok(error) = reply.get::<glib::Error>("error") {
        return Err(WebRtcError::Negotiation {
            what,
            detail: error.to_string(),
        });
    }
    reply
        .get::<gst_webrtc::WebRTCSessionDescription>(field)
        .map_err(|e| WebRtcError::Negotiation {
            what,
            detail: e.to_string(),
        })
}

/// libnice looks for a UPnP router with every agent it makes (GUPnP-IGD): SSDP multicast
/// and an HTTP server on every interface, some 13 sockets and a network monitor for each
/// peer, all for a port mapping that a box talking to its SFU never needs. The soak run
/// found them: 140 of box-17's 260 sockets, gupnp warnings about ports in use, and SSDP
/// searches on the school network for every room joined. Turned off before the agent
/// gathers; where an ICE implementation has no such agent or property, nothing happens.
fn disable_upnp(webrtcbin: &gst::Element) {
    let Some(ice) = object_property(webrtcbin.upcast_ref(), "ice-agent") else {
        return;
    };
    let Some(agent) = object_property(&ice, "agent") else {
        return;
    };
    let writable = agent.find_property("upnp").is_some_and(|spec| {
        spec.value_type() == glib::Type::BOOL && spec.flags().contains(glib::ParamFlags::WRITABLE)
    });
    if writable {
        agent.set_property("upnp", false);
    }
}

/// The object in `name`, when `object` has such a readable object property.
fn object_property(object: &glib::Object, name: &str) -> Option<glib::Object> {
    let spec = object.find_property(name)?;
    if !spec.flags().contains(glib::ParamFlags::READABLE)
        || !spec.value_type().is_a(glib::Object::static_type())
    {
        return None;
    }
    object
        .property_value(name)
        .get::<Option<glib::Object>>()
        .ok()
        .flatten()
}

fn parse_description(
    kind: gst_webrtc::WebRTCSDPType,
    sdp: &str,
) -> Result<gst_webrtc::WebRTCSessionDescription, WebRtcError> {
    let message = gst_sdp::SDPMessage::parse_buffer(sdp.as_bytes())
        .map_err(|e| WebRtcError::BadSdp(e.to_string()))?;
    Ok(gst_webrtc::WebRTCSessionDescription::new(kind, message))
}

fn sdp_text(description: &gst_webrtc::WebRTCSessionDescription) -> Result<String, WebRtcError> {
    description
        .sdp()
        .as_text()
        .map_err(|e| WebRtcError::Negotiation {
            what: "SDP to text",
            detail: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_do_not_look_for_upnp_routers() {
        init().unwrap();
        let negotiator = Negotiator::new("upnp-test").unwrap();
        let ice = object_property(negotiator.webrtcbin.upcast_ref(), "ice-agent")
            .expect("webrtcbin has an ICE agent");
        let agent = object_property(&ice, "agent").expect("a libnice agent");
        assert!(!agent.property::<bool>("upnp"));
    }
}
