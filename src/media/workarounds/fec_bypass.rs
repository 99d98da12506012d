//! Takes a frame's packets past webrtcbin's FEC stage as one buffer list while that
//! stage has nothing to do.
//!
//! webrtcbin (1.22, and the versions after it) puts `rtpulpfecenc ! rtpredenc` into
//! every stream it sends, also when neither ULPFEC nor RED was negotiated; both then
//! hand every packet on unchanged. Neither element takes buffer lists, so GStreamer
//! splits each frame's list there into single packets, and everything after them —
//! rtpfunnel, the RTP session, rtprtxsend, srtpenc, dtlssrtpenc's funnel, nicesink, all
//! of which take lists — is entered once per packet instead of once per frame: at
//! 720p30 and 2 Mbit/s ~260 times a second instead of 30, in every room.
//!
//! The bypass is a probe on webrtcbin's sink pad (a [`hops::Run`]) that hands each
//! buffer or list straight to the pad the FEC stage feeds, while both encoders are
//! pass-through. It skips the clocksync before the stage too: webrtcbin sets its `sync`,
//! so it takes the clock's lock and makes and frees a clock entry for every push, to
//! wait for nothing — our sources are live and their buffers are late by the time
//! they are sent (they are stamped at capture). The probe watches the encoders'
//! properties: should a negotiation turn ULPFEC or RED on, the data goes through them
//! again. Events and queries keep the normal path, so caps, segments and EOS reach
//! every element as before. If webrtcbin's graph is not the shape described here
//! (another GStreamer version), nothing is installed and the stream is sent as before.
//!
//! With transport-wide congestion control on, rtpfunnel writes transport-wide sequence
//! numbers into the single packets it is given and leaves lists alone; that does not
//! matter, because the RTP session right after it numbers every packet it sends, each
//! packet of a list included, over whatever the funnel wrote (a test checks that the
//! session on this GStreamer does).
//!
//! ```text
//! sink_N ─▶ clocksync ─▶ [ rtpulpfecenc ─▶ rtpredenc ] ─▶ rtpfunnel ─▶ rtpbin ─▶ …
//!    └────────────────── bypass (probe) ─────────────────▶┘
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use gst::prelude::*;

use super::hops::{self, factory_is};

/// rtpulpfecenc's payload type meaning "no ULPFEC": it passes packets on as they are.
const ULPFEC_UNDEFINED_PT: u32 = 255;

/// Why the bypass was not installed (the stream is sent the normal way).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotInstalled {
    #[error("webrtcbin's graph is not the expected shape: {0}")]
    UnexpectedGraph(&'static str),
}

/// Installs the bypass behind `webrtc_sink`, a sink pad of a webrtcbin whose stream is
/// connected inside it (webrtcbin does that once offer and answer are both set). Call
/// once per pad.
pub fn install(webrtc_sink: &gst::Pad) -> Result<(), NotInstalled> {
    let stage = FecStage::find(webrtc_sink)?;
    let idle = Arc::new(Idle::default());
    idle.watch_ulpfec(&stage.ulpfecenc);
    idle.watch_red(&stage.redenc);
    // From webrtcbin's own sink pad, past its clocksync too; with the sending path
    // kept as it is, from the FEC stage's sink pad.
    let run = if super::engaged(super::FastPath::SendingPathShortcut) {
        hops::Run {
            entry: webrtc_sink.clone(),
            skipped: stage.skipped,
            exit: stage.next,
        }
    } else {
        let stage_only = stage.skipped.into_iter().skip(stage.stage_from);
        hops::Run {
            entry: stage.sink,
            skipped: stage_only.collect(),
            exit: stage.next,
        }
    };
    run.shorten(move || idle.both());
    Ok(())
}

/// The pad after the clocksync and FEC stage behind `webrtc_sink` (the RTP funnel's, or
/// the RTP session's without bundling): where the rest of the sending path starts.
pub fn pad_after(webrtc_sink: &gst::Pad) -> Option<gst::Pad> {
    FecStage::find(webrtc_sink).ok().map(|stage| stage.next)
}

/// The FEC stage of one webrtcbin stream: its sink pad, its two encoders, and the pad
/// its output goes to.
struct FecStage {
    sink: gst::Pad,
    /// Every pad between the webrtcbin sink pad and `next`; those of the stage itself
    /// (after `sink`) from `stage_from` on.
    skipped: Vec<gst::Pad>,
    stage_from: usize,
    ulpfecenc: gst::Element,
    redenc: gst::Element,
    next: gst::Pad,
}

impl FecStage {
    fn find(webrtc_sink: &gst::Pad) -> Result<Self, NotInstalled> {
        use NotInstalled::UnexpectedGraph as Unexpected;
        let clocksync = webrtc_sink
            .downcast_ref::<gst::GhostPad>()
            .and_then(|ghost| ghost.target())
            .and_then(|target| target.parent_element())
            .filter(|e| factory_is(e, "clocksync"))
            .ok_or(Unexpected("the sink pad does not lead to a clocksync"))?;
        let sink = clocksync
            .static_pad("src")
            .and_then(|src| src.peer())
            .ok_or(Unexpected("nothing after the clocksync"))?;
        let stage = sink
            .parent_element()
            .and_then(|e| e.downcast::<gst::Bin>().ok())
            .ok_or(Unexpected("no bin after the clocksync"))?;
        let children = stage.children();
        let find = |factory: &str| children.iter().find(|e| factory_is(e, factory)).cloned();
        let (Some(ulpfecenc), Some(redenc), 2) =
            (find("rtpulpfecenc"), find("rtpredenc"), children.len())
        else {
            return Err(Unexpected(
                "the bin after the clocksync is not ulpfecenc + redenc",
            ));
        };
        let stage_src = stage
            .static_pad("src")
            .ok_or(Unexpected("the FEC stage has no output"))?;
        let next = stage_src
            .peer()
            .ok_or(Unexpected("the FEC stage's output is not linked"))?;
        let inner = |pad: &gst::Pad| {
            pad.downcast_ref::<gst::GhostPad>()
                .and_then(|g| g.internal())
                .map(|p| p.upcast::<gst::Pad>())
        };
        let mut skipped: Vec<gst::Pad> = inner(webrtc_sink).into_iter().collect();
        skipped.extend(clocksync.pads());
        skipped.push(sink.clone());
        let stage_from = skipped.len();
        skipped.extend(inner(&sink));
        skipped.extend(children.iter().flat_map(|e| e.pads()));
        skipped.extend(inner(&stage_src));
        skipped.push(stage_src);
        Ok(Self {
            sink,
            skipped,
            stage_from,
            ulpfecenc,
            redenc,
            next,
        })
    }
}

/// Whether each encoder currently passes packets on unchanged.
#[derive(Default)]
struct Idle {
    ulpfec: AtomicBool,
    red: AtomicBool,
}

impl Idle {
    fn both(&self) -> bool {
        self.ulpfec.load(Ordering::Acquire) && self.red.load(Ordering::Acquire)
    }

    /// rtpulpfecenc passes packets on unchanged while its `pt` is undefined.
    fn watch_ulpfec(self: &Arc<Self>, ulpfecenc: &gst::Element) {
        let update = |idle: &Self, e: &gst::Element| {
            let pt = e.property::<u32>("pt");
            idle.ulpfec
                .store(pt == ULPFEC_UNDEFINED_PT, Ordering::Release);
        };
        update(self, ulpfecenc);
        let idle = Arc::downgrade(self);
        ulpfecenc.connect_notify(Some("pt"), move |e, _| {
            if let Some(idle) = idle.upgrade() {
                update(&idle, e);
            }
        });
    }

    /// rtpredenc passes packets on unchanged with no redundancy (`distance` 0) unless
    /// told to wrap them in RED anyway (`allow-no-red-blocks`).
    fn watch_red(self: &Arc<Self>, redenc: &gst::Element) {
        let update = |idle: &Self, e: &gst::Element| {
            let passes =
                e.property::<u32>("distance") == 0 && !e.property::<bool>("allow-no-red-blocks");
            idle.red.store(passes, Ordering::Release);
        };
        update(self, redenc);
        let idle = Arc::downgrade(self);
        redenc.connect_notify(None, move |e, _| {
            if let Some(idle) = idle.upgrade() {
                update(&idle, e);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::media::testing::{rtp_packet, rtp_video_appsrc, sendonly_pad};
    use crate::webrtc::Negotiator;

    /// What reached the pad after the FEC stage: (single buffers, lists, packets).
    #[derive(Debug, Default, Clone, Copy, PartialEq)]
    struct Seen {
        buffers: usize,
        lists: usize,
        packets: usize,
    }

    /// A sending webrtcbin fed by an appsrc, negotiated with a receiving one (its stream
    /// connected inside) and nothing let past the FEC stage: the test watches what
    /// arrives there and drops it, so no data ever waits on a DTLS that never comes.
    struct Sender {
        pipeline: gst::Pipeline,
        appsrc: gst::Element,
        webrtc_sink: gst::Pad,
        stage: FecStage,
        seen: Arc<Mutex<Seen>>,
        _peers: [Negotiator; 2],
    }

    impl Sender {
        async fn start() -> Self {
            gst::init().unwrap();
            let pipeline = gst::Pipeline::new();
            let appsrc = rtp_video_appsrc();
            let negotiator = Negotiator::new("fec-bypass-sender").unwrap();
            let receiver = Negotiator::new("fec-bypass-receiver").unwrap();
            let webrtcbin = negotiator.element().clone();
            pipeline
                .add_many([&appsrc, &webrtcbin, receiver.element()])
                .unwrap();
            let webrtc_sink = sendonly_pad(&webrtcbin);
            // Buffers wait here until the test is watching (caps pass: the offer needs them).
            let open = Arc::new(AtomicBool::new(false));
            let src_pad = appsrc.static_pad("src").unwrap();
            let gate = open.clone();
            src_pad.add_probe(
                gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
                move |_, _| match gate.load(Ordering::Acquire) {
                    true => gst::PadProbeReturn::Ok,
                    false => gst::PadProbeReturn::Drop,
                },
            );
            src_pad.link(&webrtc_sink).unwrap();
            pipeline.set_state(gst::State::Playing).unwrap();
            let flow =
                appsrc.emit_by_name::<gst::FlowReturn>("push-buffer", &[&rtp_packet(0, true, 100)]);
            assert_eq!(flow, gst::FlowReturn::Ok);
            for _ in 0..200 {
                if webrtc_sink.current_caps().is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            // webrtcbin connects the stream inside once the answer is applied.
            let offer = negotiator.create_offer().await.unwrap();
            let answer = receiver.answer_offer(&offer).await.unwrap();
            negotiator.apply_answer(&answer).await.unwrap();

            let stage = FecStage::find(&webrtc_sink).unwrap();
            let seen = Arc::new(Mutex::new(Seen::default()));
            let record = seen.clone();
            stage.next.add_probe(
                gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
                move |_, info| {
                    let mut seen = record.lock().unwrap();
                    // Taken and Handled, not Drop: a buffer dropped on a sink pad makes
                    // GStreamer 1.22 unref the pointer gstreamer-rs already cleared
                    // (a CRITICAL in the log).
                    match info.data.take() {
                        Some(gst::PadProbeData::Buffer(_)) => {
                            seen.buffers += 1;
                            seen.packets += 1;
                        }
                        Some(gst::PadProbeData::BufferList(list)) => {
                            seen.lists += 1;
                            seen.packets += list.len();
                        }
                        other => {
                            info.data = other;
                            return gst::PadProbeReturn::Ok;
                        }
                    }
                    gst::PadProbeReturn::Handled
                },
            );
            open.store(true, Ordering::Release);
            Self {
                pipeline,
                appsrc,
                webrtc_sink,
                stage,
                seen,
                _peers: [negotiator, receiver],
            }
        }

        /// Pushes one frame of `packets` packets as a list; returns what reached the
        /// pad after the FEC stage for it.
        fn send_frame(&self, timestamp: u32, packets: usize) -> Seen {
            let before = *self.seen.lock().unwrap();
            let mut list = gst::BufferList::new();
            for i in 0..packets {
                let marker = i + 1 == packets;
                list.get_mut()
                    .unwrap()
                    .add(rtp_packet(timestamp, marker, 1000));
            }
            let flow = self
                .appsrc
                .emit_by_name::<gst::FlowReturn>("push-buffer-list", &[&list]);
            assert_eq!(flow, gst::FlowReturn::Ok);
            for _ in 0..200 {
                let now = *self.seen.lock().unwrap();
                if now.packets >= before.packets + packets {
                    return Seen {
                        buffers: now.buffers - before.buffers,
                        lists: now.lists - before.lists,
                        packets: now.packets - before.packets,
                    };
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            panic!("the frame did not reach the pad after the FEC stage");
        }
    }

    impl Drop for Sender {
        fn drop(&mut self) {
            let _ = self.pipeline.set_state(gst::State::Null);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_frame_passes_an_idle_fec_stage_as_one_list() {
        let sender = Sender::start().await;
        let without = sender.send_frame(3000, 5);
        assert_eq!((without.buffers, without.lists), (5, 0), "{without:?}");

        install(&sender.webrtc_sink).unwrap();
        let with = sender.send_frame(6000, 5);
        assert_eq!(
            (with.buffers, with.lists, with.packets),
            (0, 1, 5),
            "{with:?}"
        );
    }

    /// Once ULPFEC or RED is on, the encoders see every packet again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn negotiated_fec_or_red_takes_the_packets_through_the_encoders() {
        let sender = Sender::start().await;
        install(&sender.webrtc_sink).unwrap();

        sender.stage.ulpfecenc.set_property("pt", 122u32);
        let protected = sender.send_frame(3000, 4);
        assert_eq!(protected.lists, 0, "{protected:?}");
        assert!(protected.buffers >= 4, "{protected:?}");

        sender
            .stage
            .ulpfecenc
            .set_property("pt", ULPFEC_UNDEFINED_PT);
        sender
            .stage
            .redenc
            .set_property("allow-no-red-blocks", true);
        let red = sender.send_frame(6000, 4);
        assert_eq!(red.lists, 0, "{red:?}");

        sender
            .stage
            .redenc
            .set_property("allow-no-red-blocks", false);
        let idle = sender.send_frame(9000, 4);
        assert_eq!((idle.buffers, idle.lists), (0, 1), "{idle:?}");
    }

    /// With transport-wide congestion control the bypass hands rtpfunnel lists, into
    /// which it writes no transport-wide sequence numbers (it numbers single packets
    /// only). The RTP session after it numbers every packet it sends, those of a list
    /// too, and that is what reaches the wire: a real `rtpsession` given one frame as a
    /// list sends each packet with the next number. This fails, rather than the
    /// feedback silently going wrong, on a GStreamer whose session stops doing so.
    #[test]
    fn the_rtp_session_numbers_every_packet_of_a_list() {
        use gst_app::prelude::*;
        use gst_rtp::prelude::*;

        gst::init().unwrap();
        const TWCC_ID: u8 = 5;
        let caps = gst::Caps::builder("application/x-rtp")
            .field("media", "video")
            .field("encoding-name", "H264")
            .field("payload", 96i32)
            .field("clock-rate", 90_000i32)
            .field("ssrc", 0x1234_5678u32)
            .field(
                format!("extmap-{TWCC_ID}"),
                crate::media::congestion::TWCC_URI,
            )
            .build();
        let appsrc = gst_app::AppSrc::builder()
            .caps(&caps)
            .format(gst::Format::Time)
            .build();
        let session = gst::ElementFactory::make("rtpsession").build().unwrap();
        let appsink = gst_app::AppSink::builder().sync(false).build();
        let pipeline = gst::Pipeline::new();
        pipeline
            .add_many([appsrc.upcast_ref(), &session, appsink.upcast_ref()])
            .unwrap();
        appsrc
            .link_pads(Some("src"), &session, Some("send_rtp_sink"))
            .unwrap();
        session
            .link_pads(Some("send_rtp_src"), &appsink, Some("sink"))
            .unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();

        let mut list = gst::BufferList::new();
        for i in 0..6u16 {
            let mut buffer = gst::Buffer::new_rtp_with_sizes(100, 0, 0).unwrap();
            {
                let buffer = buffer.get_mut().unwrap();
                buffer.set_pts(gst::ClockTime::from_mseconds(10));
                let mut rtp = gst_rtp::RTPBuffer::from_buffer_writable(buffer).unwrap();
                rtp.set_payload_type(96);
                rtp.set_ssrc(0x1234_5678);
                rtp.set_seq(1000 + i);
                rtp.set_timestamp(3000);
                rtp.set_marker(i == 5);
                // What the payloader writes: the extension with a placeholder number.
                rtp.add_extension_onebyte_header(TWCC_ID, &[0, 0]).unwrap();
            }
            list.get_mut().unwrap().add(buffer);
        }
        assert_eq!(appsrc.push_buffer_list(list), Ok(gst::FlowSuccess::Ok));

        let mut numbers = Vec::new();
        while numbers.len() < 6 {
            let sample = appsink
                .try_pull_sample(gst::ClockTime::from_seconds(5))
                .expect("the session sends the packets");
            let buffer = sample.buffer().unwrap();
            let rtp = gst_rtp::RTPBuffer::from_buffer_readable(buffer).unwrap();
            let number = rtp
                .extension_onebyte_header(TWCC_ID, 0)
                .map(|data| u16::from_be_bytes([data[0], data[1]]))
                .expect("the packet still carries the extension");
            numbers.push(number);
        }
        pipeline.set_state(gst::State::Null).unwrap();
        let first = numbers[0];
        let expected: Vec<u16> = (0..6).map(|i| first.wrapping_add(i)).collect();
        assert_eq!(numbers, expected, "one number per packet, in order");
    }

    #[test]
    fn a_pad_that_is_not_webrtcbins_is_left_alone() {
        gst::init().unwrap();
        let identity = gst::ElementFactory::make("identity").build().unwrap();
        let pad = identity.static_pad("sink").unwrap();
        assert!(matches!(
            install(&pad),
            Err(NotInstalled::UnexpectedGraph(_))
        ));
    }
}
