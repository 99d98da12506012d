//! A published stream: a branch from the channel's tees into its own `webrtcbin`.
//!
//! `tee → webrtcbin`, for video and audio: the media arrives already payloaded, once for
//! every room, and each tee pad feeds its room's webrtcbin from the tee's own thread.
//! No queue (and no thread) per room: a room's sending is SRTP and a non-blocking UDP
//! send per packet, and done back to back for every room from a warm cache it costs
//! less than handing each packet to a thread of its own (measured: docs/performance.md).
//! What could stall the tee is webrtcbin itself, which holds data at its
//! transport until that room's DTLS is up: a gate on the tee pad drops the room's
//! packets until its peer connection is connected and again once it failed or closed,
//! so the encoder thread never waits on one room. Removal blocks the tee pads with an
//! IDLE probe, unlinks, and takes the webrtcbin to NULL before it is dropped: the other
//! rooms never see a gap. Once the answer is applied, each leg's packets skip
//! webrtcbin's FEC stage while nothing was negotiated for it (`fec_bypass`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use gst::prelude::*;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::quality::{self, Growth, Latest};
use super::source::{Running, Source};
use super::workarounds::{self, FastPath, fec_bypass, hops};
use super::{bandwidth, congestion};
use crate::engine::backend::{
    IceCandidate, PeerState, PeerStats, PublisherQuality, StreamQuality, WebRtcPeer,
};
use crate::engine::error::{BackendError, ErrorCode};
use crate::webrtc::{Negotiator, WebRtcError};

/// How long to wait for the encoder's caps to reach the branch before offering.
const CAPS_TIMEOUT: Duration = Duration::from_secs(5);

static NEXT_BRANCH: AtomicU64 = AtomicU64::new(1);

fn media_error(e: impl std::fmt::Display) -> BackendError {
    BackendError::new(ErrorCode::PUBLISH_MEDIA_FAILED, e.to_string())
}

fn webrtc_error(e: WebRtcError) -> BackendError {
    BackendError::new(ErrorCode::PUBLISH_WEBRTC_FAILED, e.to_string())
}

/// One media kind's part of the branch: a tee pad linked to a webrtcbin sink pad.
struct Leg {
    tee: gst::Element,
    tee_pad: gst::Pad,
    webrtc_pad: gst::Pad,
}

pub struct Publisher {
    label: String,
    prefix: String,
    source: Arc<Source>,
    running: Running,
    negotiator: Negotiator,
    legs: std::sync::Mutex<Vec<Leg>>,
    packets: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    /// Video frames that passed the gate (one buffer list each).
    frames: Arc<AtomicU64>,
    /// The room's congestion-control estimator (`congestion::Estimator`), when on.
    estimator: Option<congestion::Estimator>,
    quality: Latest<PublisherQuality>,
    /// The path ICE chose (`crate::webrtc::selected_path`), sampled with the quality.
    path: Latest<String>,
    /// Open while the peer connection is connected: media passes the tee pads.
    gate: Arc<AtomicBool>,
    closed: AtomicBool,
    /// Cancelled when the publisher closes.
    closing: tokio_util::sync::CancellationToken,
}

impl Publisher {
    /// Attaches a branch for `label` to the channel's running pipeline.
    pub fn attach(source: Arc<Source>, label: String) -> Result<Arc<Self>, BackendError> {
        let running = source.acquire().map_err(media_error)?;
        let prefix = format!("pub{}-", NEXT_BRANCH.fetch_add(1, Ordering::Relaxed));
        let attached = Self::build(&source, &running, &prefix, label.clone());
        match attached {
            Ok(publisher) => {
                let weak = Arc::downgrade(&publisher);
                running.register_branch(
                    &prefix,
                    Box::new(move |error| {
                        if let Some(publisher) = weak.upgrade() {
                            publisher
                                .negotiator
                                .fail(format!("publishing pipeline error: {error}"));
                        }
                    }),
                );
                // The source stopping (capture or encoder failure) ends this peer too.
                // The watch ends with the publisher: a source that runs for weeks while
                // rooms come and go must not collect one waiting task per publisher.
                let weak = Arc::downgrade(&publisher);
                let stopped = running.stopped.clone();
                let closing = publisher.closing.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = stopped.cancelled() => {}
                        _ = closing.cancelled() => return,
                    }
                    if let Some(publisher) = weak.upgrade()
                        && !publisher.closed.load(Ordering::Relaxed)
                    {
                        let why = publisher
                            .source
                            .last_error()
                            .unwrap_or_else(|| "the source stopped".into());
                        publisher
                            .negotiator
                            .fail_media(format!("source failed: {why}"));
                    }
                });
                publisher.open_gate_when_connected();
                // No keyframe request here: a new publisher has no subscribers yet, and
                // Janus asks for one (PLI) the moment a subscriber attaches. Asking now
                // would spend the shared gate and delay that PLI by up to 500 ms.
                info!(stream = %publisher.label, "publisher attached");
                Ok(publisher)
            }
            Err(e) => {
                source.release(running.generation);
                Err(e)
            }
        }
    }

    fn build(
        source: &Arc<Source>,
        running: &Running,
        prefix: &str,
        label: String,
    ) -> Result<Arc<Self>, BackendError> {
        let negotiator = Negotiator::new(&format!("{prefix}webrtcbin")).map_err(webrtc_error)?;
        let webrtcbin = negotiator.element().clone();
        let estimator = match source.congestion_bounds() {
            Some(bounds) => {
                let weak_source = Arc::downgrade(source);
                let branch = prefix.to_owned();
                let estimator = congestion::Estimator::start(bounds, move |bps| {
                    if let Some(source) = weak_source.upgrade() {
                        source.report_measured(&branch, bps);
                    }
                })
                .map_err(media_error)?;
                Some(estimator)
            }
            None => None,
        };
        running.pipeline.add(&webrtcbin).map_err(media_error)?;
        let packets = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let frames = Arc::new(AtomicU64::new(0));
        let gate = Arc::new(AtomicBool::new(false));

        let mut legs = Vec::new();
        let tees = [
            Some((running.video_tee.clone(), Some(&frames))),
            running.audio_tee.clone().map(|tee| (tee, None)),
        ];
        for (tee, frames) in tees.into_iter().flatten() {
            let counters = Counters {
                packets: &packets,
                bytes: &bytes,
                frames,
            };
            match Self::leg(&webrtcbin, &tee, &gate, counters) {
                Ok(leg) => legs.push(leg),
                Err(e) => {
                    take_down(&running.pipeline, legs, &webrtcbin);
                    return Err(e);
                }
            }
        }
        if let Err(e) = webrtcbin.sync_state_with_parent() {
            take_down(&running.pipeline, legs, &webrtcbin);
            return Err(media_error(e));
        }
        for leg in &legs {
            if let Err(e) = leg.tee_pad.link(&leg.webrtc_pad) {
                let error = media_error(format!("cannot link the branch to the tee: {e:?}"));
                take_down(&running.pipeline, legs, &webrtcbin);
                return Err(error);
            }
        }
        if let Some(estimator) = &estimator {
            for leg in &legs {
                estimator.listen_on(&leg.webrtc_pad);
            }
        }
        Ok(Arc::new(Self {
            label,
            prefix: prefix.to_owned(),
            source: source.clone(),
            running: running.clone(),
            negotiator,
            legs: std::sync::Mutex::new(legs),
            packets,
            bytes,
            frames,
            estimator,
            quality: Latest::default(),
            path: Latest::default(),
            gate,
            closed: AtomicBool::new(false),
            closing: tokio_util::sync::CancellationToken::new(),
        }))
    }

    /// A webrtcbin sink pad and a tee pad for one kind, not yet linked. The tee pad
    /// carries the gate and counts what passes it for the stream's stats.
    fn leg(
        webrtcbin: &gst::Element,
        tee: &gst::Element,
        gate: &Arc<AtomicBool>,
        counters: Counters<'_>,
    ) -> Result<Leg, BackendError> {
        let webrtc_pad = webrtcbin
            .request_pad_simple("sink_%u")
            .ok_or_else(|| media_error("webrtcbin refused a sink pad"))?;
        if let Some(transceiver) =
            webrtc_pad.property::<Option<gst_webrtc::WebRTCRTPTransceiver>>("transceiver")
        {
            transceiver.set_property(
                "direction",
                gst_webrtc::WebRTCRTPTransceiverDirection::Sendonly,
            );
        }
        let Some(tee_pad) = tee.request_pad_simple("src_%u") else {
            webrtcbin.release_request_pad(&webrtc_pad);
            return Err(media_error("the tee refused a pad"));
        };
        // Sticky events (caps, segment) still reach webrtcbin while the gate is shut:
        // GStreamer sends them before it runs the pad's buffer probes, and the offer
        // needs the caps.
        let (gate, p, b) = (
            gate.clone(),
            counters.packets.clone(),
            counters.bytes.clone(),
        );
        let f = counters.frames.cloned();
        let data = gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST;
        tee_pad.add_probe(data, move |_, info| {
            if !gate.load(Ordering::Acquire) {
                return gst::PadProbeReturn::Drop;
            }
            // Video arrives as one list per frame, audio as single packets.
            let (count, size) = match &info.data {
                Some(gst::PadProbeData::Buffer(buffer)) => (1, buffer.size()),
                Some(gst::PadProbeData::BufferList(list)) => (list.len(), list.calculate_size()),
                _ => (0, 0),
            };
            if let Some(frames) = &f {
                frames.fetch_add(1, Ordering::Relaxed);
            }
            p.fetch_add(count as u64, Ordering::Relaxed);
            b.fetch_add(size as u64, Ordering::Relaxed);
            gst::PadProbeReturn::Ok
        });
        Ok(Leg {
            tee: tee.clone(),
            tee_pad,
            webrtc_pad,
        })
    }

    /// Opens the gate when the peer connection is connected (DTLS up: webrtcbin sends
    /// at once) and shuts it when it fails or closes. Ends with the publisher.
    fn open_gate_when_connected(&self) {
        let mut state = self.negotiator.state();
        let gate = self.gate.clone();
        let closing = self.closing.clone();
        let label = self.label.clone();
        tokio::spawn(async move {
            loop {
                let open = matches!(*state.borrow_and_update(), PeerState::Connected);
                if gate.swap(open, Ordering::AcqRel) != open {
                    debug!(stream = %label, open, "media gate");
                }
                tokio::select! {
                    _ = closing.cancelled() => break,
                    changed = state.changed() => if changed.is_err() { break },
                }
            }
            gate.store(false, Ordering::Release);
        });
    }

    /// Hands the REMB estimates the room sends (RTCP feedback, in webrtcbin's RTP
    /// session) to the source, whose encoder follows the lowest room. Called once the
    /// answer is applied: the session exists by then. Not from one of rtpbin's own
    /// signals: asking rtpbin for its session there deadlocks on rtpbin's lock.
    fn listen_for_bandwidth(&self) {
        let session = self
            .negotiator
            .element()
            .downcast_ref::<gst::Bin>()
            .and_then(|bin| bin.by_name("rtpbin"))
            .and_then(|rtpbin| {
                rtpbin.emit_by_name::<Option<gst::glib::Object>>("get-internal-session", &[&0u32])
            });
        let Some(session) = session else {
            debug!(stream = %self.label, "no RTP session to hear bandwidth estimates from");
            return;
        };
        let source = Arc::downgrade(&self.source);
        let branch = self.prefix.clone();
        session.connect("on-feedback-rtcp", false, move |values| {
            // (session, type, fbtype, sender ssrc, media ssrc, fci)
            let payload_specific = values.get(1).and_then(|v| v.get::<u32>().ok()) == Some(206);
            let application = values.get(2).and_then(|v| v.get::<u32>().ok()) == Some(15);
            if payload_specific && application {
                let fci = values.get(5).and_then(|v| v.get::<gst::Buffer>().ok());
                let bps = fci.and_then(|fci| {
                    let map = fci.map_readable().ok()?;
                    bandwidth::parse_remb(map.as_slice())
                });
                if let (Some(bps), Some(source)) = (bps, source.upgrade()) {
                    source.report_bandwidth(&branch, bps);
                }
            }
            None
        });
    }

    /// Samples the stream's quality every [`quality::PERIOD`] until it closes: what
    /// passed the gate, the room's estimate, and the SFU's receiver reports.
    fn sample_quality(&self) {
        let (bytes, frames) = (self.bytes.clone(), self.frames.clone());
        let estimator = self
            .estimator
            .as_ref()
            .map(congestion::Estimator::downgrade);
        let webrtcbin = self.negotiator.element().downgrade();
        let path = self.path.clone();
        let (mut sent, mut shown) = (Growth::default(), Growth::default());
        sent.since_last(bytes.load(Ordering::Relaxed));
        shown.since_last(frames.load(Ordering::Relaxed));
        quality::spawn_sampler(self.closing.clone(), self.quality.clone(), move |elapsed| {
            let kbps_sent = quality::kbps(sent.since_last(bytes.load(Ordering::Relaxed)), elapsed);
            let fps =
                quality::per_second(shown.since_last(frames.load(Ordering::Relaxed)), elapsed);
            let estimate_kbps = estimator
                .as_ref()
                .and_then(|weak| weak.upgrade())
                .map(|element| element.property::<u32>("estimated-bitrate") / 1000);
            let webrtcbin = webrtcbin.upgrade();
            if let (Some(chosen), Ok(mut slot)) = (
                webrtcbin.as_ref().and_then(crate::webrtc::selected_path),
                path.lock(),
            ) {
                *slot = Some(chosen);
            }
            async move {
                let stats = match webrtcbin {
                    Some(webrtcbin) => crate::webrtc::stats_of(&webrtcbin).await,
                    None => None,
                };
                let (loss_percent, rtt_ms) = stats
                    .as_ref()
                    .map(|s| quality::sender_reports(s))
                    .unwrap_or((None, None));
                Some(PublisherQuality {
                    kbps_sent,
                    estimate_kbps,
                    loss_percent,
                    rtt_ms,
                    fps,
                })
            }
        });
    }

    /// Lets each leg's packets skip webrtcbin's FEC stage while it has nothing to do
    /// (see `fec_bypass`). Called once the answer is applied: the streams inside
    /// webrtcbin are connected and their FEC settings negotiated by then.
    fn bypass_idle_fec(&self) {
        let Ok(legs) = self.legs.lock() else { return };
        if workarounds::engaged(FastPath::FecBypass) {
            // Taken by the stream when taken by every leg (audio, video).
            let mut outcome = Ok(());
            for leg in legs.iter() {
                match fec_bypass::install(&leg.webrtc_pad) {
                    Ok(()) => {
                        debug!(stream = %self.label, pad = %leg.webrtc_pad.name(), "FEC stage bypassed")
                    }
                    Err(e) => {
                        debug!(stream = %self.label, "FEC stage kept: {e}");
                        outcome = Err(e.to_string());
                    }
                }
            }
            workarounds::record(FastPath::FecBypass, outcome);
        }
        // Audio and video meet in the RTP funnel: the path after it is shared.
        if !workarounds::engaged(FastPath::SendingPathShortcut) {
            return;
        }
        match legs
            .first()
            .and_then(|leg| fec_bypass::pad_after(&leg.webrtc_pad))
        {
            Some(start) => {
                let runs = hops::shorten_sending_path(&start);
                debug!(stream = %self.label, runs, "ghost pads on the sending path skipped");
                workarounds::record(
                    FastPath::SendingPathShortcut,
                    if runs > 0 {
                        Ok(())
                    } else {
                        Err("no stretch of webrtcbin's sending path had the expected shape".into())
                    },
                );
            }
            None => {
                debug!(stream = %self.label, "sending path left as it is");
                workarounds::record(
                    FastPath::SendingPathShortcut,
                    Err("webrtcbin's FEC stage was not found where expected".into()),
                );
            }
        }
    }

    /// Waits until every webrtcbin sink pad has caps: an offer made before that has no
    /// fmtp/SSRC and Janus drops every packet ("Unknown SSRC").
    async fn wait_caps(&self) -> Result<(), BackendError> {
        let pads: Vec<gst::Pad> = self
            .legs
            .lock()
            .map(|legs| legs.iter().map(|l| l.webrtc_pad.clone()).collect())
            .unwrap_or_default();
        let deadline = tokio::time::Instant::now() + CAPS_TIMEOUT;
        loop {
            if pads.iter().all(|p| p.current_caps().is_some()) {
                return Ok(());
            }
            let failure = self
                .negotiator
                .state()
                .borrow()
                .failure()
                .map(str::to_owned);
            if let Some(reason) = failure {
                return Err(media_error(reason));
            }
            if tokio::time::Instant::now() >= deadline {
                let why = self.source.last_error().unwrap_or_else(|| {
                    "no media reached the branch (is the source producing frames?)".into()
                });
                return Err(media_error(format!(
                    "channel `{}`: {why}",
                    self.source.channel
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The counters a leg's gate adds to: every leg counts packets and bytes, the video
/// leg also frames.
struct Counters<'a> {
    packets: &'a Arc<AtomicU64>,
    bytes: &'a Arc<AtomicU64>,
    frames: Option<&'a Arc<AtomicU64>>,
}

/// Takes `element` out of `pipeline` in NULL. Locked first: the pipeline may be changing
/// state at the same moment (the source failed and is being stopped), and a bin going
/// down to READY would otherwise bring an element already in NULL back up to READY —
/// and it would then be disposed in READY (leaking what webrtcbin holds).
fn retire(pipeline: &gst::Pipeline, element: &gst::Element) {
    element.set_locked_state(true);
    let _ = element.set_state(gst::State::Null);
    let _ = pipeline.remove(element);
}

/// Takes a branch out of the running pipeline: every leg unlinked from its tee (the
/// other rooms' pads keep flowing), then the webrtcbin to NULL and out.
fn take_down(pipeline: &gst::Pipeline, legs: Vec<Leg>, webrtcbin: &gst::Element) {
    for leg in legs {
        unlink_leg(leg);
    }
    retire(pipeline, webrtcbin);
}

/// Unlinks a leg from its tee once the tee pad is idle and gives the pad back.
fn unlink_leg(leg: Leg) {
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let sink = leg.webrtc_pad.clone();
    leg.tee_pad
        .add_probe(gst::PadProbeType::IDLE, move |pad, _| {
            let _ = pad.unlink(&sink);
            let _ = done_tx.send(());
            gst::PadProbeReturn::Remove
        });
    // The probe runs at once when the pad is idle, otherwise after the data in flight
    // (which never waits inside webrtcbin: the gate keeps data out until DTLS is up).
    if done_rx.recv_timeout(Duration::from_secs(1)).is_err() {
        warn!("tee pad did not go idle within 1 s; unlinking anyway");
        let _ = leg.tee_pad.unlink(&leg.webrtc_pad);
    }
    leg.tee.release_request_pad(&leg.tee_pad);
}

#[async_trait]
impl WebRtcPeer for Publisher {
    fn label(&self) -> &str {
        &self.label
    }

    async fn create_offer(&self) -> Result<String, BackendError> {
        self.wait_caps().await?;
        self.negotiator.create_offer().await.map_err(webrtc_error)
    }

    async fn apply_answer(&self, sdp: &str) -> Result<(), BackendError> {
        self.negotiator
            .apply_answer(sdp)
            .await
            .map_err(webrtc_error)?;
        self.listen_for_bandwidth();
        self.bypass_idle_fec();
        self.sample_quality();
        Ok(())
    }

    async fn answer_offer(&self, _sdp: &str) -> Result<String, BackendError> {
        Err(BackendError::new(
            ErrorCode::PUBLISH_WEBRTC_FAILED,
            "a publisher makes offers; it does not answer them",
        ))
    }

    fn take_local_candidates(&self) -> Option<mpsc::UnboundedReceiver<IceCandidate>> {
        self.negotiator.take_local_candidates()
    }

    fn add_remote_candidate(&self, candidate: &IceCandidate) -> Result<(), BackendError> {
        self.negotiator.add_remote_candidate(candidate);
        Ok(())
    }

    fn state(&self) -> watch::Receiver<PeerState> {
        self.negotiator.state()
    }

    fn stats(&self) -> PeerStats {
        PeerStats {
            bytes_sent: Some(self.bytes.load(Ordering::Relaxed)),
            packets_sent: Some(self.packets.load(Ordering::Relaxed)),
            frames_encoded: Some(self.running.frames_encoded.load(Ordering::Relaxed)),
            transport: self.path.lock().ok().and_then(|p| p.clone()),
            ..PeerStats::default()
        }
    }

    fn quality(&self) -> Option<StreamQuality> {
        let latest = self.quality.lock().ok()?.clone()?;
        Some(StreamQuality::Publisher(latest))
    }

    async fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        self.closing.cancel();
        self.running.unregister_branch(&self.prefix);
        let legs = self
            .legs
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default();
        let pipeline = self.running.pipeline.clone();
        let webrtcbin = self.negotiator.element().clone();
        // Pad probes and state changes block: keep them off the async threads.
        let detached =
            tokio::task::spawn_blocking(move || take_down(&pipeline, legs, &webrtcbin)).await;
        if detached.is_err() {
            warn!(stream = %self.label, "detaching the branch panicked");
        }
        self.negotiator.mark_closed();
        self.source.forget_bandwidth(&self.prefix);
        self.source.release(self.running.generation);
        debug!(stream = %self.label, "publisher closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::engine::types::Channel;
    use crate::media::GstMedia;

    fn test_config() -> Config {
        let text = r#"
device_id = "box-17"
state_dir = "/tmp/roomcast-publisher-test"
[identity]
user_id = "box-17"
user_name = "Room 101 camera"
[sources.main]
video = "test"
audio = "test"
[mqtt]
url = "mqtt://127.0.0.1:1"
[janus]
url = "ws://127.0.0.1:1"
[player]
audio_device = "null"
"#;
        Config::parse(text, std::path::Path::new("publisher-test.toml")).unwrap()
    }

    /// Until its peer connection is up, a room gets its caps (the offer needs them) and
    /// no media: the encoder thread never reaches the webrtcbin that would hold it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unconnected_room_gets_caps_but_no_media() {
        let media = GstMedia::new(&test_config()).unwrap();
        let source = media.sources.get(&Channel::Main).unwrap().clone();
        let publisher = Publisher::attach(source, "publish test/cam".into()).unwrap();
        let offer = publisher.create_offer().await.unwrap();
        assert!(offer.contains("H264") && offer.contains("OPUS"), "{offer}");
        // Every room answers NACKs with retransmissions, and numbers its packets for
        // congestion control.
        assert!(offer.contains("nack") && offer.contains("rtx"), "{offer}");
        assert!(
            offer.contains(crate::media::congestion::TWCC_URI),
            "{offer}"
        );

        tokio::time::sleep(Duration::from_millis(1500)).await;
        let stats = publisher.stats();
        assert!(stats.frames_encoded.unwrap() >= 20, "{stats:?}");
        assert_eq!(stats.packets_sent, Some(0), "{stats:?}");
        assert!(!publisher.gate.load(Ordering::Acquire));

        publisher.close().await;
        media.shutdown();
    }

    /// An error posted from deep inside one room's webrtcbin (where DTLS, SRTP and ICE
    /// live) fails that room's peer; the other room and the shared source carry on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_error_inside_one_rooms_webrtcbin_fails_that_room_only() {
        let media = GstMedia::new(&test_config()).unwrap();
        let source = media.sources.get(&Channel::Main).unwrap().clone();
        let failing = Publisher::attach(source.clone(), "publish a/cam".into()).unwrap();
        let other = Publisher::attach(source.clone(), "publish b/cam".into()).unwrap();
        let inner = failing
            .negotiator
            .element()
            .downcast_ref::<gst::Bin>()
            .unwrap()
            .iterate_recurse()
            .into_iter()
            .find_map(Result::ok)
            .expect("webrtcbin has elements inside");
        gst::element_error!(inner, gst::ResourceError::Write, ["test: DTLS failed"]);

        let mut state = failing.state();
        // (The Ref that wait_for returns holds the watch's lock: not kept.)
        let failed = tokio::time::timeout(
            Duration::from_secs(5),
            state.wait_for(|s| s.failure().is_some()),
        )
        .await
        .is_ok_and(|seen| seen.is_ok());
        assert!(failed, "the room's peer did not fail");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(other.state().borrow().failure().is_none());
        assert!(source.is_running() && source.last_error().is_none());

        failing.close().await;
        other.close().await;
        media.shutdown();
    }
}
