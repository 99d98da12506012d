//! Congestion control per room: transport-wide sequence numbers on what the box sends,
//! the SFU's transport-cc feedback, and Google Congestion Control (`rtpgccbwe`, from
//! gst-plugins-rs's RTP plugin) estimating what each room's path can carry.
//!
//! ```text
//! pay (+TWCC ext) ─▶ tee ─▶ gate ─▶ webrtcbin: rtpbin (session numbers TWCC) ─▶ DTLS/ICE
//!                                    ▲ probe ◀── RTPTWCCPackets (upstream) ──┘
//!                                    └─▶ rtpgccbwe (standalone) ─▶ estimate ─▶ source
//! ```
//!
//! The payloaders before the tee add the header extension once (its number is a
//! placeholder): each room's RTP session writes its own transport-wide sequence number
//! into its own copy of the packet (GStreamer's `rtpsession` makes the packet writable
//! and numbers it when its caps carry the TWCC `extmap`), so every room numbers exactly
//! the packets it sends, whatever the other rooms and the gate do. The session turns
//! the SFU's transport-cc feedback into an upstream event listing every packet's send
//! and arrival time; the room's [`Estimator`] (off the data path, see there) estimates
//! from it. Its estimate (bit/s, for the whole transport: video, audio, headers,
//! retransmissions) goes to the source, whose shared encoder follows the narrowest room
//! (`bandwidth.rs`). The encoder's own rate control does the pacing.
//!
//! GCC alone climbs back slowly after congestion: near the rate where it last saw
//! congestion it adds about a packet per round trip, and nothing here sends padding to
//! probe with. Each room's [`Prober`] therefore probes with the media itself, as
//! libwebrtc's probe controller does with padding: after a quiet spell (the estimate has
//! not fallen) it raises the estimate by a quarter; a path that carries it puts GCC back
//! into its multiplicative climb, a path that does not makes GCC cut within a feedback
//! round, and the next probe waits twice as long (up to [`PROBE_WAIT_MAX`]).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use gst::glib::translate::IntoGlib;
use gst::prelude::*;
use gst_rtp::prelude::*;

/// The transport-wide congestion control header extension (draft-holmer-rmcat-
/// transport-wide-cc-extensions-01), as browsers and Janus name it.
pub const TWCC_URI: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// The extension id the box offers for it: the same in every m-line of a bundle.
pub const TWCC_ID: u32 = 1;

/// Why congestion control could not be set up.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CongestionError {
    #[error("the Google Congestion Control element could not be registered: {0}")]
    Register(String),
    #[error(
        "GStreamer has no RTP header extension for transport-wide congestion control \
         (install gstreamer1.0-plugins-good, whose rtpmanager provides it)"
    )]
    NoTwccExtension,
}

/// Registers `rtpgccbwe` in this process (once).
pub fn register() -> Result<(), CongestionError> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| gstrsrtp::plugin_register_static().map_err(|e| e.to_string()))
        .clone()
        .map_err(CongestionError::Register)
}

/// Whether `rtpgccbwe` can be made here.
pub fn available() -> bool {
    register().is_ok() && gst::ElementFactory::find("rtpgccbwe").is_some()
}

/// Makes `payloader` write the TWCC header extension (id [`TWCC_ID`]) into every packet
/// and announce it in its caps (`extmap-1`), which webrtcbin puts into the offer.
pub fn add_twcc_extension(payloader: &gst::Element) -> Result<(), CongestionError> {
    let extension = gst_rtp::RTPHeaderExtension::create_from_uri(TWCC_URI)
        .ok_or(CongestionError::NoTwccExtension)?;
    extension.set_id(TWCC_ID);
    payloader.emit_by_name::<()>("add-extension", &[&extension]);
    Ok(())
}

/// The estimator's bounds, in bit/s of the whole transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EstimatorBounds {
    pub start_bps: u32,
    pub min_bps: u32,
    pub max_bps: u32,
}

impl EstimatorBounds {
    /// From the encoder's settings: it starts at what the room needs at the configured
    /// bitrate (video, audio and [`OVERHEAD`] for headers and retransmissions), may
    /// go up to half again that (room to probe above it), and never below the floor.
    pub fn for_encoder(video_kbps: u32, audio_kbps: u32, floor_kbps: u32) -> Self {
        let needed = transport_kbps(video_kbps, audio_kbps);
        let start = needed.saturating_mul(1000);
        Self {
            start_bps: start,
            min_bps: transport_kbps(floor_kbps, audio_kbps).saturating_mul(1000),
            max_bps: start.saturating_add(start / 2),
        }
    }
}

/// What headers (RTP, SRTP, UDP, IP), RTCP and retransmissions add to the media
/// bitrate on the wire, as a fraction of it.
pub const OVERHEAD: f64 = 0.10;

/// The transport bitrate a room needs to carry `video_kbps` of video and `audio_kbps`
/// of audio.
pub fn transport_kbps(video_kbps: u32, audio_kbps: u32) -> u32 {
    let media = f64::from(video_kbps) + f64::from(audio_kbps);
    (media * (1.0 + OVERHEAD)).round() as u32
}

/// The video bitrate that fits a transport estimate of `estimate_bps` next to the audio.
pub fn video_kbps_for(estimate_bps: u64, audio_kbps: u32) -> u32 {
    let transport_kbps = estimate_bps as f64 / 1000.0;
    let media = transport_kbps / (1.0 + OVERHEAD) - f64::from(audio_kbps);
    media.round().clamp(0.0, f64::from(u32::MAX)) as u32
}

/// A room's Google Congestion Control estimator, kept off the data path.
///
/// `rtpgccbwe` is meant to sit in the sending path as webrtcbin's aux sender, where it
/// also paces: it takes every packet in, queues it, and pushes the packets out one by
/// one from a thread of its own. Its estimate, though, comes only from the upstream
/// `RTPTWCCPackets` event in which the room's RTP session reports, for each packet it
/// numbered and sent, its size and send time and when the SFU received it. So the
/// estimator here stands alone, never linked: a probe on the room's webrtcbin sink
/// pads takes that event (it travels upstream from the session towards the tee) and
/// hands it to the estimator. The room's packets keep going through webrtcbin as one
/// list per frame, without a queue and a pacing thread each (measured in the media
/// bench: in the path, the 5-room CPU ratio went from 1.10x to 1.40x).
pub struct Estimator {
    element: gst::Element,
    /// The last feedback event handed over: with a bundle, the same event reaches the
    /// sink pads of both the video and the audio leg.
    last_event: std::sync::Arc<std::sync::atomic::AtomicU32>,
    prober: std::sync::Arc<std::sync::Mutex<Prober>>,
}

/// The custom upstream event in which an RTP session reports transport-wide feedback.
const TWCC_PACKETS_EVENT: &str = "RTPTWCCPackets";

impl Estimator {
    /// Starts an estimator within `bounds` that calls `on_estimate` with each new
    /// estimate in bit/s (on a GStreamer thread).
    pub fn start(
        bounds: EstimatorBounds,
        on_estimate: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<Self, CongestionError> {
        register()?;
        let element = gst::ElementFactory::make("rtpgccbwe")
            .build()
            .map_err(|e| CongestionError::Register(e.to_string()))?;
        element.set_property("min-bitrate", bounds.min_bps);
        element.set_property("max-bitrate", bounds.max_bps);
        element.set_property("estimated-bitrate", bounds.start_bps);
        element.connect_notify(Some("estimated-bitrate"), move |element, _| {
            on_estimate(u64::from(element.property::<u32>("estimated-bitrate")));
        });
        // Its pads must be active to take events; nothing ever flows through them.
        element
            .set_state(gst::State::Playing)
            .map_err(|e| CongestionError::Register(format!("cannot start rtpgccbwe: {e}")))?;
        // Activating the source pad starts the element's pacing task, which wakes every
        // 5 ms to send what it queued — here never anything: ~230 context switches a
        // second per room for nothing (`docs/performance.md`). The estimate is computed
        // where the feedback event arrives, so the task is paused; the pad stays active
        // and takes the events, and the state change to Null stops the task as usual.
        if let Some(src) = element.static_pad("src")
            && let Err(e) = src.pause_task()
        {
            tracing::debug!("rtpgccbwe's idle pacing task kept running: {e}");
        }
        Ok(Self {
            element,
            last_event: std::sync::Arc::new(std::sync::atomic::AtomicU32::new(u32::MAX)),
            prober: std::sync::Arc::new(std::sync::Mutex::new(Prober::new(
                bounds.start_bps,
                Instant::now(),
            ))),
        })
    }

    /// The current estimate for the whole transport, bit/s.
    pub fn estimate_bps(&self) -> u32 {
        self.element.property::<u32>("estimated-bitrate")
    }

    /// A weak handle, for a task that samples the estimate.
    pub fn downgrade(&self) -> gst::glib::WeakRef<gst::Element> {
        self.element.downgrade()
    }

    /// Hands the transport-wide feedback that passes `pad` (a webrtcbin sink pad of the
    /// room, where the session's reports travel upstream) to this estimator, and stops
    /// it there.
    pub fn listen_on(&self, pad: &gst::Pad) {
        let Some(target) = self.element.static_pad("src") else {
            return;
        };
        let target = target.downgrade();
        let last = self.last_event.clone();
        let prober = self.prober.clone();
        let element = self.element.downgrade();
        pad.add_probe(gst::PadProbeType::EVENT_UPSTREAM, move |_, info| {
            let is_feedback = info
                .event()
                .and_then(|e| e.structure())
                .is_some_and(|s| s.name() == TWCC_PACKETS_EVENT);
            if !is_feedback {
                return gst::PadProbeReturn::Ok;
            }
            // Taken and handled (returning Drop for an upstream event makes GStreamer
            // 1.22 unref it twice).
            let Some(event) = info.take_event() else {
                return gst::PadProbeReturn::Handled;
            };
            let seqnum = event.seqnum().into_glib();
            let first = last.swap(seqnum, std::sync::atomic::Ordering::AcqRel) != seqnum;
            if first && let Some(target) = target.upgrade() {
                let _ = target.send_event(event);
                if let Some(element) = element.upgrade() {
                    probe_when_due(&element, &prober);
                }
            }
            gst::PadProbeReturn::Handled
        });
    }
}

/// After the estimator took a feedback report: raises its estimate when a probe is due
/// (GObject notifies the new value, which the encoder follows like any estimate).
fn probe_when_due(element: &gst::Element, prober: &std::sync::Mutex<Prober>) {
    let now_bps = element.property::<u32>("estimated-bitrate");
    let probe = match prober.lock() {
        Ok(mut prober) => prober.observe(now_bps, Instant::now()),
        Err(_) => None,
    };
    if let Some(bps) = probe {
        tracing::debug!(
            from = now_bps,
            to = bps,
            "probing the room's path above its estimate"
        );
        element.set_property("estimated-bitrate", bps);
    }
}

/// How much a probe raises the estimate.
pub const PROBE_FACTOR: f64 = 1.25;
/// How long the estimate must not have fallen before the first probe, and after a probe
/// the path carried.
pub const PROBE_WAIT: Duration = Duration::from_secs(2);
/// The longest wait: each probe the path could not carry doubles the wait up to this.
pub const PROBE_WAIT_MAX: Duration = Duration::from_secs(16);
/// A fall of the estimate this soon after a probe means the path could not carry it.
pub const PROBE_VERDICT: Duration = Duration::from_secs(2);

/// When to probe a room's path above its estimate (see the module doc). Pure: the
/// estimates and the time are passed in.
#[derive(Debug)]
pub struct Prober {
    /// What the room needs at the configured bitrate: nothing to probe for at or above.
    needed_bps: u32,
    last_bps: u32,
    /// Since when the estimate has not fallen (or the last probe).
    quiet_since: Instant,
    wait: Duration,
    /// When the probe being judged was made.
    probing_since: Option<Instant>,
}

impl Prober {
    pub fn new(needed_bps: u32, now: Instant) -> Self {
        Self {
            needed_bps,
            last_bps: needed_bps,
            quiet_since: now,
            wait: PROBE_WAIT,
            probing_since: None,
        }
    }

    /// The estimate is `bps` at `now`; returns the estimate to set when a probe is due.
    pub fn observe(&mut self, bps: u32, now: Instant) -> Option<u32> {
        let fell = bps < self.last_bps;
        self.last_bps = bps;
        if fell {
            self.quiet_since = now;
            if let Some(since) = self.probing_since.take() {
                self.wait = if now.saturating_duration_since(since) < PROBE_VERDICT {
                    (self.wait * 2).min(PROBE_WAIT_MAX)
                } else {
                    PROBE_WAIT
                };
            }
            return None;
        }
        if let Some(since) = self.probing_since {
            if now.saturating_duration_since(since) < PROBE_VERDICT {
                return None;
            }
            self.probing_since = None;
            self.wait = PROBE_WAIT;
        }
        if bps >= self.needed_bps || now.saturating_duration_since(self.quiet_since) < self.wait {
            return None;
        }
        let to = ((f64::from(bps) * PROBE_FACTOR) as u32).min(self.needed_bps);
        self.probing_since = Some(now);
        self.quiet_since = now;
        self.last_bps = to;
        Some(to)
    }
}

impl Drop for Estimator {
    fn drop(&mut self) {
        // Stops its (paused) pacing task before the element goes.
        let _ = self.element.set_state(gst::State::Null);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_follow_the_encoder_settings() {
        let bounds = EstimatorBounds::for_encoder(2000, 32, 150);
        assert_eq!(bounds.start_bps, 2_235_000);
        assert_eq!(bounds.max_bps, 3_352_500);
        assert_eq!(bounds.min_bps, 200_000);
    }

    #[test]
    fn probes_after_a_quiet_spell_and_backs_off_when_the_path_cannot_carry_it() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut prober = Prober::new(2_000_000, t0);
        // At what the room needs: nothing to probe for.
        assert_eq!(prober.observe(2_000_000, at(5_000)), None);
        // Congestion: the estimate falls, then creeps up; a probe only after 2 s quiet.
        assert_eq!(prober.observe(600_000, at(6_000)), None);
        assert_eq!(prober.observe(610_000, at(7_000)), None);
        assert_eq!(prober.observe(620_000, at(8_000)), Some(775_000));
        // It fell within the verdict: the path could not carry it; the wait doubles.
        assert_eq!(prober.observe(650_000, at(8_300)), None);
        assert_eq!(prober.observe(660_000, at(11_000)), None);
        assert_eq!(prober.observe(660_000, at(12_300)), Some(825_000));
        // This one held: the next probe once the verdict is in, never above the need.
        assert_eq!(prober.observe(830_000, at(13_000)), None);
        assert_eq!(prober.observe(840_000, at(14_300)), Some(1_050_000));
        assert_eq!(prober.observe(1_700_000, at(16_400)), Some(2_000_000));
        // Congestion long after that probe: not its fault, the wait stays short.
        assert_eq!(prober.observe(700_000, at(30_000)), None);
        assert_eq!(prober.observe(700_000, at(32_000)), Some(875_000));
        // Probes the path cannot carry double the wait, up to the longest.
        assert_eq!(prober.observe(600_000, at(32_100)), None);
        assert_eq!(prober.observe(600_000, at(36_100)), Some(750_000));
        assert_eq!(prober.observe(500_000, at(36_200)), None);
        assert_eq!(prober.observe(500_000, at(44_100)), None);
        assert_eq!(prober.observe(500_000, at(44_200)), Some(625_000));
        assert_eq!(prober.observe(400_000, at(44_300)), None);
        assert_eq!(prober.wait, PROBE_WAIT_MAX);
        assert_eq!(prober.observe(400_000, at(60_200)), None);
        assert_eq!(prober.observe(400_000, at(60_300)), Some(500_000));
        assert_eq!(prober.observe(300_000, at(60_400)), None);
        assert_eq!(prober.wait, PROBE_WAIT_MAX);
    }

    #[test]
    fn video_gets_what_the_transport_leaves_after_audio_and_overhead() {
        assert_eq!(video_kbps_for(2_235_000, 32), 2000);
        assert_eq!(video_kbps_for(880_000, 32), 768);
        // Less than the audio needs leaves nothing for video (the floor applies later).
        assert_eq!(video_kbps_for(10_000, 32), 0);
    }

    /// The estimator's pacing task is paused (it would wake every 5 ms for nothing), and
    /// feedback still moves the estimate: half the packets lost brings it down.
    #[test]
    fn a_paused_estimator_still_estimates_from_feedback() {
        gst::init().unwrap();
        let bounds = EstimatorBounds {
            start_bps: 2_000_000,
            min_bps: 100_000,
            max_bps: 3_000_000,
        };
        let estimator = Estimator::start(bounds, |_| {}).unwrap();
        let src = estimator.element.static_pad("src").unwrap();
        assert_eq!(src.task_state(), gst::TaskState::Paused);
        let base = gst::ClockTime::from_seconds(10);
        for round in 0..15u32 {
            let packets: Vec<gst::glib::SendValue> = (0..10u32)
                .map(|n| {
                    let seqnum = round * 10 + n;
                    let sent = base + gst::ClockTime::from_mseconds(u64::from(seqnum) * 5);
                    let lost = seqnum % 2 == 0;
                    let mut packet = gst::Structure::builder("RTPTWCCPacket")
                        .field("seqnum", seqnum)
                        .field("local-ts", sent)
                        .field("payload-type", 96u8)
                        .field("size", 1200u32)
                        .field("lost", lost);
                    if !lost {
                        packet =
                            packet.field("remote-ts", sent + gst::ClockTime::from_mseconds(20));
                    }
                    packet.build().to_send_value()
                })
                .collect();
            // A GValueArray, as the RTP session sends it (not Send in Rust's bindings).
            let array = gst::glib::ValueArray::new(packets).to_value();
            // SAFETY: the value is moved into the structure and only read on this thread.
            let array = unsafe { array.into_send_value() };
            let mut feedback = gst::Structure::new_empty(TWCC_PACKETS_EVENT);
            feedback.set_value("packets", array);
            let event = gst::event::CustomUpstream::new(feedback);
            src.send_event(event);
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(src.task_state(), gst::TaskState::Paused);
        let estimate = estimator.estimate_bps();
        assert!(estimate < 1_500_000, "estimate {estimate} after 50 % loss");
    }

    #[test]
    fn the_estimator_exists_and_payloaded_packets_carry_the_twcc_extension() {
        gst::init().unwrap();
        assert!(available(), "rtpgccbwe registers");
        let pipeline = gst::parse::launch(
            "audiotestsrc num-buffers=3 ! opusenc ! rtpopuspay name=pay ! appsink name=out",
        )
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        add_twcc_extension(&pipeline.by_name("pay").unwrap()).unwrap();
        let out = pipeline
            .by_name("out")
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let sample = out
            .try_pull_sample(gst::ClockTime::from_seconds(5))
            .expect("a packet");
        pipeline.set_state(gst::State::Null).unwrap();
        // Announced in the caps (webrtcbin offers it from there)...
        let caps = sample.caps().unwrap().structure(0).unwrap().to_owned();
        assert_eq!(caps.get::<String>("extmap-1").unwrap(), TWCC_URI, "{caps}");
        // ...and written into the packet, for each room's session to number.
        let buffer = sample.buffer().unwrap();
        let rtp = gst_rtp::RTPBuffer::from_buffer_readable(buffer).unwrap();
        let (data, _) = rtp
            .extension_onebyte_header(TWCC_ID as u8, 0)
            .map(|d| (d.to_vec(), ()))
            .expect("the TWCC extension in the packet");
        assert_eq!(data.len(), 2);
    }
}
