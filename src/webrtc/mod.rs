//! WebRTC on GStreamer's `webrtcbin`: the offer/answer and ICE plumbing shared by the
//! media peers (publishers, players) and the TextRoom data channels.
//!
//! GStreamer calls our closures on its own threads: they only send into channels and
//! hold weak references to elements.

mod datachannel;
pub use datachannel::{INCOMING_BUFFER, MAX_INCOMING_TEXT};
pub mod srtp_crypto;
pub mod turn_tls;

use std::sync::{Arc, Mutex, OnceLock, RwLock};

use gst::glib;
use gst::prelude::*;
use tokio::sync::{mpsc, oneshot, watch};

pub use datachannel::{DataChannelPeer, DataChannels};

use crate::config::network::IceServers;
use crate::peer::{IceCandidate, PeerState};

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
    #[error("{RELAY_FAILED}")]
    RelayFailed,
}

/// Initialises GStreamer once per process.
pub fn init() -> Result<(), WebRtcError> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| gst::init().map_err(|e| e.to_string()))
        .clone()
        .map_err(WebRtcError::Init)
}

fn srtp_primitives() -> &'static OnceLock<Result<(), srtp_crypto::SrtpCryptoError>> {
    static INSTALLED: OnceLock<Result<(), srtp_crypto::SrtpCryptoError>> = OnceLock::new();
    &INSTALLED
}

/// Gives libsrtp the faster SRTP primitives of [`srtp_crypto`], once per process (the
/// `srtp_primitives` fast path, `media::workarounds`): before any peer connection.
pub fn install_srtp_primitives() -> Result<(), srtp_crypto::SrtpCryptoError> {
    srtp_primitives()
        .get_or_init(|| {
            let result = srtp_crypto::install().map(|_| ());
            if let Err(e) = &result
                && !matches!(
                    e,
                    srtp_crypto::SrtpCryptoError::NoAesInstructions { .. }
                        | srtp_crypto::SrtpCryptoError::UntestedVersion { .. }
                )
            {
                // Expected on a Pi 4 or a 32-bit board are the two above: not a fault.
                tracing::warn!(
                    "SRTP stays on libsrtp's own AES-ICM and HMAC-SHA1, which cost more per packet \
                     and so per room: {e}"
                );
            }
            result
        })
        .clone()
}

/// Whether [`install_srtp_primitives`] ran in this process, and how it went.
pub fn srtp_primitives_installed() -> Option<Result<(), srtp_crypto::SrtpCryptoError>> {
    srtp_primitives().get().cloned()
}

/// Why a peer that needed a relay has no path.
const RELAY_FAILED: &str = "no TURN relay gave this stream an address: the relay refused \
     the credentials or could not be reached; check network.turn_servers";

/// The STUN and TURN servers and the ICE policy every new peer gets (`[network]`).
fn ice_servers() -> &'static RwLock<Arc<IceServers>> {
    static SERVERS: OnceLock<RwLock<Arc<IceServers>>> = OnceLock::new();
    SERVERS.get_or_init(|| RwLock::new(Arc::new(IceServers::default())))
}

/// Sets the STUN/TURN servers and the ICE policy of every peer made from now on:
/// publishers, players and the TextRoom data channels alike. The agent calls it when
/// it (re)builds its media from the configuration; peers already up keep theirs.
pub fn configure_ice(servers: IceServers) {
    if let Ok(mut current) = ice_servers().write() {
        *current = Arc::new(servers);
    }
}

/// Gives `webrtcbin` the configured servers and policy; returns whether its streams
/// retransmit.
fn apply_ice_servers(webrtcbin: &gst::Element) -> bool {
    let servers = match ice_servers().read() {
        Ok(servers) => servers.clone(),
        Err(_) => return true,
    };
    if let Some(stun) = &servers.stun {
        webrtcbin.set_property("stun-server", stun);
    }
    for turn in &servers.turn {
        if !webrtcbin.emit_by_name::<bool>("add-turn-server", &[&turn.expose_url()]) {
            tracing::warn!(relay = %turn, "webrtcbin refused the TURN server");
        }
    }
    webrtcbin.set_property_from_str("ice-transport-policy", servers.policy.nick());
    if servers.stun.is_some() || !servers.turn.is_empty() {
        give_up_on_silent_pairs_sooner(webrtcbin);
    }
    servers.retransmissions
}

/// libnice's `stun-max-retransmissions` counts every transmission of a check, the first
/// included (its STUN timer starts at one): 1 is a single check, given up when its timer
/// runs out, 500 ms (libnice 0.1.21's floor for a check's timer), where the default of 3
/// takes 2 s.
const CHECK_RETRANSMISSIONS: u32 = 1;

/// Behind a firewall or NAT (STUN or TURN configured), the box's valid pair is often not
/// host to host (a relayed one when UDP is blocked), and the SFU lists addresses the box
/// cannot reach (its other interfaces): their checks go unanswered. libnice, controlling
/// with regular nomination, nominates a lone non-host pair only once every other pair has
/// failed — with its defaults about 2 s after the relayed pair was valid, and the
/// stream's first frame waits for it. With a single check a silent pair fails after
/// 500 ms; a pair whose check was lost is checked again when the SFU's own check arrives
/// on it (a triggered check), so a lossy path still finds it.
fn give_up_on_silent_pairs_sooner(webrtcbin: &gst::Element) {
    let writable = |agent: &glib::Object| {
        agent
            .find_property("stun-max-retransmissions")
            .is_some_and(|spec| {
                spec.value_type() == glib::Type::U32
                    && spec.flags().contains(glib::ParamFlags::WRITABLE)
            })
    };
    match nice_agent(webrtcbin) {
        Some(agent) if writable(&agent) => {
            agent.set_property("stun-max-retransmissions", CHECK_RETRANSMISSIONS);
        }
        _ => tracing::debug!(
            peer = %webrtcbin.name(),
            "no libnice agent to shorten its checks on: relayed streams start later"
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
    /// TURN relays are configured and gathering ended without a relayed candidate.
    relay_missing: Arc<std::sync::atomic::AtomicBool>,
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
        let retransmissions = apply_ice_servers(&webrtcbin);
        // Retransmissions on every stream: NACKs from the SFU answered (senders), lost
        // packets asked for again (receivers). A classroom's Wi-Fi loses packets.
        webrtcbin.connect("on-new-transceiver", false, move |values| {
            if let Some(transceiver) = values
                .get(1)
                .and_then(|v| v.get::<gst_webrtc::WebRTCRTPTransceiver>().ok())
            {
                transceiver.set_property("do-nack", retransmissions);
            }
            None
        });
        let (state, _) = watch::channel(PeerState::New);
        let (candidates_tx, candidates_rx) = mpsc::unbounded_channel();
        let candidates_tx = std::sync::Arc::new(Mutex::new(Some(candidates_tx)));

        // With TURN relays configured: how many relayed candidates the box got. None
        // means every relay refused or could not be reached.
        let relays = ice_servers().read().map(|s| s.clone()).ok();
        let relays_wanted = relays.as_ref().is_some_and(|s| !s.turn.is_empty());
        let relay_only = relays
            .as_ref()
            .is_some_and(|s| s.policy == crate::config::network::IcePolicy::Relay);
        let relayed = Arc::new(std::sync::atomic::AtomicUsize::new(0));

        let sender = candidates_tx.clone();
        let counted = relayed.clone();
        webrtcbin.connect("on-ice-candidate", false, move |values| {
            let index = values.get(1).and_then(|v| v.get::<u32>().ok());
            let candidate = values.get(2).and_then(|v| v.get::<String>().ok());
            if candidate
                .as_deref()
                .is_some_and(|c| c.contains(" typ relay"))
            {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
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

        let relay_missing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (state_tx, counted, missing) = (state.clone(), relayed.clone(), relay_missing.clone());
        let sender = candidates_tx;
        webrtcbin.connect_notify(Some("ice-gathering-state"), move |bin, _| {
            let gathering =
                bin.property::<gst_webrtc::WebRTCICEGatheringState>("ice-gathering-state");
            if gathering != gst_webrtc::WebRTCICEGatheringState::Complete {
                return;
            }
            if let Ok(mut guard) = sender.lock() {
                // Closing the channel tells the signalling side to send end-of-candidates.
                guard.take();
            }
            if relays_wanted && counted.load(std::sync::atomic::Ordering::Relaxed) == 0 {
                missing.store(true, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(peer = %bin.name(), "{RELAY_FAILED}");
                if relay_only {
                    // Nothing else may be used: no point waiting for ICE to time out.
                    let failed = PeerState::RelayFailed(RELAY_FAILED.into());
                    state_tx.send_if_modified(|current| {
                        if current.is_final() {
                            return false;
                        }
                        *current = failed.clone();
                        true
                    });
                }
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
                S::Failed
                    if relays_wanted && relayed.load(std::sync::atomic::Ordering::Relaxed) == 0 =>
                {
                    PeerState::RelayFailed(RELAY_FAILED.into())
                }
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
            relay_missing,
            webrtcbin,
            state,
            candidates: Mutex::new(Some(candidates_rx)),
        })
    }

    /// Whether the configured TURN relays all failed to give this peer an address.
    pub fn relay_missing(&self) -> bool {
        self.relay_missing
            .load(std::sync::atomic::Ordering::Relaxed)
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

/// `webrtcbin`'s statistics (W3C webrtc-stats, one field per stats object), or `None`
/// when it does not answer within a second.
pub async fn stats_of(webrtcbin: &gst::Element) -> Option<gst::Structure> {
    let (promise, reply) = promise("get-stats");
    webrtcbin.emit_by_name::<()>("get-stats", &[&None::<gst::Pad>, &promise]);
    tokio::time::timeout(std::time::Duration::from_secs(1), reply)
        .await
        .ok()?
        .ok()?
}

/// Which path `webrtcbin`'s media takes, from ICE's selected candidate pair: `udp` or
/// `tcp` (direct), `relay-udp`, `relay-tcp` or `relay-tls` (through a TURN relay), or
/// `None` before a pair is selected.
pub fn selected_path(webrtcbin: &gst::Element) -> Option<String> {
    use gst_webrtc::prelude::*;
    let transceiver = webrtcbin
        .emit_by_name::<Option<gst_webrtc::WebRTCRTPTransceiver>>("get-transceiver", &[&0i32])?;
    let dtls = transceiver
        .sender()
        .and_then(|s| s.transport())
        .or_else(|| transceiver.receiver().and_then(|r| r.transport()))?;
    let ice_transport = dtls.transport()?;
    let stream = object_property(ice_transport.upcast_ref(), "stream")?
        .downcast::<gst_webrtc::WebRTCICEStream>()
        .ok()?;
    let ice = webrtcbin.property::<gst_webrtc::WebRTCICE>("ice-agent");
    let (local, _) = ice.selected_pair(&stream)?;
    Some(path_label(
        local.type_()?,
        local.proto().unwrap_or("udp"),
        local.relay_proto(),
        local.url(),
    ))
}

/// The label of a local candidate: its type, its protocol, and for a relayed one how
/// the box reaches the relay (from libnice's relay protocol, or the relay's URL).
fn path_label(kind: &str, proto: &str, relay_proto: Option<&str>, url: Option<&str>) -> String {
    if kind != "relay" {
        return proto.to_owned();
    }
    let reached = match (relay_proto, url) {
        (Some(p @ ("udp" | "tcp" | "tls")), _) => p,
        (_, Some(url)) if url.starts_with("turns:") => "tls",
        (_, Some(url)) if url.contains("transport=tcp") => "tcp",
        (_, Some(url)) if url.starts_with("turn:") => "udp",
        // libnice 0.1.21 reports neither: the configured relays say, when they agree.
        _ => match configured_relay_transport() {
            Some(transport) => return transport.label().to_owned(),
            None => "unknown",
        },
    };
    format!("relay-{reached}")
}

/// The one way the configured TURN relays are reached, when all are reached one way.
fn configured_relay_transport() -> Option<crate::config::network::RelayTransport> {
    let servers = ice_servers().read().ok()?.clone();
    let first = servers.turn.first()?.transport;
    servers
        .turn
        .iter()
        .all(|t| t.transport == first)
        .then_some(first)
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
/// webrtcbin's libnice agent (GStreamer 1.22 and later expose it).
fn nice_agent(webrtcbin: &gst::Element) -> Option<glib::Object> {
    let ice = object_property(webrtcbin.upcast_ref(), "ice-agent")?;
    object_property(&ice, "agent")
}

fn disable_upnp(webrtcbin: &gst::Element) {
    let Some(agent) = nice_agent(webrtcbin) else {
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

    #[test]
    fn silent_pairs_are_given_up_sooner_only_behind_stun_or_turn() {
        init().unwrap();
        let retransmissions = |negotiator: &Negotiator| {
            nice_agent(&negotiator.webrtcbin)
                .expect("a libnice agent")
                .property::<u32>("stun-max-retransmissions")
        };
        let open = Negotiator::new("checks-open").unwrap();
        assert_eq!(retransmissions(&open), 3, "libnice's default");
        let element = gst::ElementFactory::make("webrtcbin").build().unwrap();
        give_up_on_silent_pairs_sooner(&element);
        assert_eq!(
            nice_agent(&element)
                .unwrap()
                .property::<u32>("stun-max-retransmissions"),
            CHECK_RETRANSMISSIONS
        );
    }
}
