//! Takes a room's packets straight past the pads inside webrtcbin that only hand them on.
//!
//! Between the tee and the ICE sink a room's packet crosses bin after bin: webrtcbin,
//! rtpbin, rtpbin's retransmission bin, webrtcbin's transport bin, dtlssrtpenc. Every
//! crossing is a ghost pad, and every ghost pad is a whole extra push (probes, the peer
//! looked up and referenced, the parent referenced, the object lock taken) that does
//! nothing but hand the data on: seven of them per packet (per frame, for video) in
//! every room, and after srtpenc a clocksync that does not sync and a funnel that
//! merges RTP with RTCP and DTLS for the ICE sink. With five rooms that is work on cold
//! memory the encode-once design cannot share, and it showed in the per-room profile
//! (docs/workarounds.md). `[media] sending_path_shortcut = false` keeps every pad.
//!
//! A [`Run`] is such a stretch: the pad where the data enters it, the pads it would
//! pass, and the element pad after them. Once the path is set up (the answer applied),
//! a probe on the entry hands the data straight to that pad. Events and queries keep the
//! normal path, so caps, segments and EOS reach every element as before. The data takes
//! the normal path again, packet by packet, whenever a skipped pad would have done
//! something with it: a blocking probe on it (transportsendbin holds data until DTLS
//! has its keys), sticky events waiting to be sent with the next data (GStreamer sends
//! those on a push, which the shortcut would skip), flushing or EOS. If any pad of the
//! run is unlinked (teardown, or webrtcbin rewiring a stream), the run is taken out of
//! use for good.
//!
//! The probe sits on the ghost pad where a run begins, or, for a run leaving a bin, on
//! the source pad of the element before it (see [`Run::after`]). Either way it runs
//! inside the tee's push into that room, so an IDLE probe on the tee pad still means
//! what it says: nothing of that room is in flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use gst::glib::translate::ToGlibPtr;
use gst::prelude::*;

/// A path longer than this is not webrtcbin's sending path (it has about a dozen
/// elements): the walk stops.
const MAX_ELEMENTS: usize = 32;

/// The flags of a skipped source pad that make it matter to the data (see the module
/// docs).
const BUSY_FLAGS: u32 = gst::ffi::GST_PAD_FLAG_BLOCKED
    | gst::ffi::GST_PAD_FLAG_FLUSHING
    | gst::ffi::GST_PAD_FLAG_EOS
    | gst::ffi::GST_PAD_FLAG_PENDING_EVENTS;

/// A stretch of pads that only hand data on.
pub(crate) struct Run {
    /// Where the probe goes: the first pad of the run, or the source pad before it.
    pub entry: gst::Pad,
    /// What the data would pass between `entry` and `exit`.
    pub skipped: Vec<gst::Pad>,
    /// The pad the data is handed to.
    pub exit: gst::Pad,
}

impl Run {
    /// The ghost pads after `out`, a source pad, up to the first pad of an element that
    /// is not a bin's ghost pad. `None` if `out` leads to no ghost pad (nothing to skip).
    ///
    /// The probe goes on the ghost pad `out` is linked to, or, where that is the inner
    /// pad of a source ghost pad (the way out of a bin), on `out` itself: the inner pad
    /// belongs to the ghost pad, and a probe on it holding the ghost pad would keep both
    /// alive for ever.
    pub fn after(out: &gst::Pad) -> Option<Self> {
        let first = out.peer()?;
        let mut skipped = Vec::new();
        let mut pad = first.clone();
        while let Some((passed, next)) = hand_on(&pad) {
            skipped.push(pad);
            skipped.push(passed);
            pad = next;
        }
        if pad == first {
            return None;
        }
        let entry = if first.is::<gst::GhostPad>() {
            skipped.remove(0)
        } else {
            out.clone()
        };
        Some(Self {
            entry,
            skipped,
            exit: pad,
        })
    }

    /// Installs the probe. While `open()` is false the data takes the normal path.
    pub fn shorten(self, open: impl Fn() -> bool + Send + Sync + 'static) {
        let broken = Arc::new(AtomicBool::new(false));
        for pad in self.skipped.iter().chain([&self.entry, &self.exit]) {
            let broken = broken.clone();
            pad.connect_unlinked(move |_, _| broken.store(true, Ordering::Release));
        }
        // Only a source pad holds data back (a blocking probe, sticky events waiting for
        // the next push); the sink pads of the run are each behind one of them.
        let watched: Vec<gst::Pad> = self
            .skipped
            .into_iter()
            .filter(|pad| pad.direction() == gst::PadDirection::Src)
            .collect();
        let exit = self.exit;
        let kinds = gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST;
        self.entry.add_probe(kinds, move |_, info| {
            if broken.load(Ordering::Acquire) || !open() || watched.iter().any(is_busy) {
                return gst::PadProbeReturn::Ok;
            }
            // Taken and Handled, not Drop: see `fec_bypass`'s tests.
            let flow = match info.data.take() {
                Some(gst::PadProbeData::BufferList(list)) => exit.chain_list(list),
                Some(gst::PadProbeData::Buffer(buffer)) => exit.chain(buffer),
                other => {
                    info.data = other;
                    return gst::PadProbeReturn::Ok;
                }
            };
            info.flow_res = flow;
            gst::PadProbeReturn::Handled
        });
    }
}

/// Shortens the sending path after `from`, a sink pad of an element inside webrtcbin
/// (the pad after its FEC stage), up to the ICE sink: every run of ghost pads, and
/// dtlssrtpenc's clocksync and funnel (see [`past_clocksync_and_funnel`]). Returns how
/// many runs it shortened.
pub(crate) fn shorten_sending_path(from: &gst::Pad) -> usize {
    let mut pad = from.clone();
    let mut shortened = 0;
    for _ in 0..MAX_ELEMENTS {
        if let Some((run, syncing)) = past_clocksync_and_funnel(&pad) {
            pad = run.exit.clone();
            run.shorten(move || !syncing.load(Ordering::Acquire));
            shortened += 1;
            continue;
        }
        let Some(out) = output_of(&pad) else {
            break;
        };
        match Run::after(&out) {
            Some(run) => {
                pad = run.exit.clone();
                run.shorten(|| true);
                shortened += 1;
            }
            None => match out.peer() {
                Some(next) => pad = next,
                None => break,
            },
        }
    }
    shortened
}

/// dtlssrtpenc sends srtpenc's packets through a `clocksync`, which only waits for the
/// clock when its `sync` is on (dtlssrtpenc's `rtp-sync`, off by default), and a
/// `funnel` that merges them with RTCP and DTLS for the ICE sink, which serialises
/// what it is handed anyway (its stream lock). Neither changes a packet: from the
/// clocksync's sink pad (`sink`) the run goes to the pad after the funnel's ghost pads.
/// The flag says whether the clocksync syncs (then the data takes the normal path).
fn past_clocksync_and_funnel(sink: &gst::Pad) -> Option<(Run, Arc<AtomicBool>)> {
    let clocksync = sink
        .parent_element()
        .filter(|e| factory_is(e, "clocksync"))?;
    let clocksync_src = clocksync.static_pad("src")?;
    let funnel_sink = clocksync_src.peer()?;
    let funnel = funnel_sink
        .parent_element()
        .filter(|e| factory_is(e, "funnel"))?;
    let funnel_src = funnel.static_pad("src")?;
    let after = Run::after(&funnel_src)?;
    let syncing = Arc::new(AtomicBool::new(clocksync.property::<bool>("sync")));
    let watch = Arc::downgrade(&syncing);
    clocksync.connect_notify(Some("sync"), move |e, _| {
        if let Some(syncing) = watch.upgrade() {
            syncing.store(e.property::<bool>("sync"), Ordering::Release);
        }
    });
    let mut skipped = vec![clocksync_src, funnel_sink, funnel_src.clone()];
    if after.entry != funnel_src {
        skipped.push(after.entry);
    }
    skipped.extend(after.skipped);
    let run = Run {
        entry: sink.clone(),
        skipped,
        exit: after.exit,
    };
    Some((run, syncing))
}

/// Whether `element` was made by the factory `name`.
pub(crate) fn factory_is(element: &gst::Element, name: &str) -> bool {
    element.factory().is_some_and(|f| f.name() == name)
}

/// One step through a ghost pad: the pad passed on the way and the pad after it. `None`
/// if `pad` is an element's own pad.
fn hand_on(pad: &gst::Pad) -> Option<(gst::Pad, gst::Pad)> {
    if pad.direction() != gst::PadDirection::Sink {
        return None;
    }
    if let Some(ghost) = pad.downcast_ref::<gst::GhostPad>() {
        // Into a bin: the ghost's inner pad pushes to the ghost's target.
        let inner = ghost.internal()?.upcast::<gst::Pad>();
        let target = inner.peer()?;
        return Some((inner, target));
    }
    // Out of a bin: the inner pad of a source ghost pad, which pushes on the ghost.
    let ghost = pad.downcast_ref::<gst::ProxyPad>()?.internal()?;
    let peer = ghost.peer()?;
    Some((ghost.upcast(), peer))
}

/// The source pad by which the element of `sink` passes that pad's data on: the pad named
/// like it (`send_rtp_sink` → `send_rtp_src`, `rtp_sink_0` → `rtp_src_0`), else `src`.
fn output_of(sink: &gst::Pad) -> Option<gst::Pad> {
    let element = sink.parent_element()?;
    let name = sink.name();
    element
        .static_pad(&name.replacen("sink", "src", 1))
        .filter(|p| p.direction() == gst::PadDirection::Src)
        .or_else(|| element.static_pad("src"))
}

/// Whether the normal path would do something with the data at `pad`, a source pad.
/// (Sink pads carry the pending-events flag too, meaning nothing: they never push.)
fn is_busy(pad: &gst::Pad) -> bool {
    let object: *const gst::ffi::GstObject = pad.upcast_ref::<gst::Object>().to_glib_none().0;
    // SAFETY: `pad` is a live GstObject (we hold a reference). The flags are one aligned
    // word, read without the object lock as GStreamer's own GST_PAD_IS_* checks do in
    // places: a flag set a moment later is seen at the next packet.
    let flags = unsafe { std::ptr::read_volatile(&(*object).flags) };
    flags & BUSY_FLAGS != 0
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// `our pad → [outer bin → [inner bin → identity] ] → fakesink`: two ghost pads on
    /// the way in and two on the way out, and counters on the fakesink and on the outer
    /// bin's source ghost pad (which a shortened run skips).
    struct Nested {
        pipeline: gst::Pipeline,
        src: gst::Pad,
        identity: gst::Element,
        outer_src: gst::Pad,
        at_sink: Arc<AtomicUsize>,
        at_outer_src: Arc<AtomicUsize>,
    }

    /// Counts the packets passing `pad`, single or in lists.
    fn counter(pad: &gst::Pad) -> Arc<AtomicUsize> {
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        let kinds = gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST;
        pad.add_probe(kinds, move |_, info| {
            let packets = match &info.data {
                Some(gst::PadProbeData::BufferList(list)) => list.len(),
                _ => 1,
            };
            seen.fetch_add(packets, Ordering::SeqCst);
            gst::PadProbeReturn::Ok
        });
        count
    }

    impl Nested {
        fn start() -> Self {
            gst::init().unwrap();
            let pipeline = gst::Pipeline::new();
            let identity = gst::ElementFactory::make("identity").build().unwrap();
            let inner = gst::Bin::new();
            inner.add(&identity).unwrap();
            let ghost = |pad: &gst::Pad| gst::GhostPad::with_target(pad).unwrap();
            let inner_sink = ghost(&identity.static_pad("sink").unwrap());
            let inner_src = ghost(&identity.static_pad("src").unwrap());
            inner.add_pad(&inner_sink).unwrap();
            inner.add_pad(&inner_src).unwrap();
            let outer = gst::Bin::new();
            outer.add(&inner).unwrap();
            let outer_sink = ghost(inner_sink.upcast_ref());
            let outer_src = ghost(inner_src.upcast_ref());
            outer.add_pad(&outer_sink).unwrap();
            outer.add_pad(&outer_src).unwrap();
            let sink = gst::ElementFactory::make("fakesink")
                .property("async", false)
                .property("sync", false)
                .build()
                .unwrap();
            pipeline.add_many([outer.upcast_ref(), &sink]).unwrap();
            outer.link(&sink).unwrap();
            let src = gst::Pad::builder(gst::PadDirection::Src).build();
            src.link(&outer_sink).unwrap();
            pipeline.set_state(gst::State::Playing).unwrap();
            src.set_active(true).unwrap();
            assert!(src.push_event(gst::event::StreamStart::new("hops")));
            assert!(
                src.push_event(gst::event::Caps::new(&gst::Caps::new_empty_simple(
                    "application/x-test"
                )))
            );
            let segment = gst::FormattedSegment::<gst::ClockTime>::new();
            assert!(src.push_event(gst::event::Segment::new(&segment)));
            let at_sink = counter(&sink.static_pad("sink").unwrap());
            let at_outer_src = counter(outer_src.upcast_ref());
            Self {
                pipeline,
                src,
                identity,
                outer_src: outer_src.upcast(),
                at_sink,
                at_outer_src,
            }
        }

        /// The run from the identity's source pad to the fakesink.
        fn run_out(&self) -> Run {
            Run::after(&self.identity.static_pad("src").unwrap()).unwrap()
        }

        /// Pushes one buffer: (reached the sink, passed the outer ghost).
        fn push(&self) -> (usize, usize) {
            let before = self.counts();
            assert_eq!(
                self.src.push(gst::Buffer::with_size(100).unwrap()),
                Ok(gst::FlowSuccess::Ok)
            );
            let after = self.counts();
            (after.0 - before.0, after.1 - before.1)
        }

        fn counts(&self) -> (usize, usize) {
            (
                self.at_sink.load(Ordering::SeqCst),
                self.at_outer_src.load(Ordering::SeqCst),
            )
        }
    }

    impl Drop for Nested {
        fn drop(&mut self) {
            let _ = self.pipeline.set_state(gst::State::Null);
        }
    }

    #[test]
    fn a_run_goes_through_nested_ghost_pads_to_the_element_pad() {
        let nested = Nested::start();
        let into = Run::after(&nested.src).unwrap();
        assert_eq!(into.entry, nested.src.peer().unwrap());
        assert_eq!(into.exit, nested.identity.static_pad("sink").unwrap());
        // Both ghosts' inner pads, and the inner bin's ghost after the entry.
        assert_eq!(into.skipped.len(), 3, "{:?}", into.skipped);

        // Out of the bins: entered at the element's own pad (see `Run::after`).
        let out = nested.run_out();
        assert_eq!(out.entry, nested.identity.static_pad("src").unwrap());
        let exit = out.exit.parent_element().unwrap();
        assert_eq!(exit.factory().unwrap().name(), "fakesink");
        // Two ghost pads and their inner pads.
        assert_eq!(out.skipped.len(), 4, "{:?}", out.skipped);
    }

    #[test]
    fn a_shortened_run_hands_the_data_straight_to_its_exit() {
        let nested = Nested::start();
        assert_eq!(nested.push(), (1, 1));
        let run = nested.run_out();
        run.shorten(|| true);
        assert_eq!(nested.push(), (1, 0));
        assert_eq!(nested.push(), (1, 0));
    }

    #[test]
    fn a_closed_run_takes_the_normal_path() {
        let nested = Nested::start();
        let open = Arc::new(AtomicBool::new(false));
        let switch = open.clone();
        nested
            .run_out()
            .shorten(move || switch.load(Ordering::SeqCst));
        assert_eq!(nested.push(), (1, 1));
        open.store(true, Ordering::SeqCst);
        assert_eq!(nested.push(), (1, 0));
    }

    /// A blocking probe on a skipped pad holds the data, as it would without the run.
    #[test]
    fn data_takes_the_normal_path_while_a_skipped_pad_is_blocked() {
        let nested = Nested::start();
        nested.run_out().shorten(|| true);
        let held = Arc::new(AtomicUsize::new(0));
        let seen = held.clone();
        let block = nested
            .outer_src
            .add_probe(
                gst::PadProbeType::BLOCK | gst::PadProbeType::BUFFER,
                move |_, _| {
                    seen.fetch_add(1, Ordering::SeqCst);
                    // Let it through: the test only needs to see that the data came here.
                    gst::PadProbeReturn::Pass
                },
            )
            .unwrap();
        assert!(is_busy(&nested.outer_src));
        assert_eq!(nested.push(), (1, 1));
        assert_eq!(held.load(Ordering::SeqCst), 1);
        nested.outer_src.remove_probe(block);
        assert!(!is_busy(&nested.outer_src));
        assert_eq!(nested.push(), (1, 0));
    }

    /// The probes hold pads of other elements, never their own pad's owner: a pipeline
    /// with shortened runs is freed whole.
    #[test]
    fn shortened_runs_keep_no_pad_alive() {
        let nested = Nested::start();
        let ghosts: Vec<gst::glib::WeakRef<gst::Pad>> =
            [Run::after(&nested.src), Some(nested.run_out())]
                .into_iter()
                .flatten()
                .flat_map(|run| {
                    let pads: Vec<_> = run
                        .skipped
                        .iter()
                        .chain([&run.entry])
                        .map(|p| p.downgrade())
                        .collect();
                    run.shorten(|| true);
                    pads
                })
                .collect();
        assert_eq!(nested.push(), (1, 0));
        drop(nested);
        for pad in ghosts {
            assert!(
                pad.upgrade().is_none(),
                "{:?} is still alive",
                pad.upgrade()
            );
        }
    }

    /// Unlinking any pad of the run (a rewiring) ends it: the data follows the links.
    #[test]
    fn an_unlinked_run_is_not_used_again() {
        let nested = Nested::start();
        let run = nested.run_out();
        let exit = run.exit.clone();
        run.shorten(|| true);
        assert_eq!(nested.push(), (1, 0));
        let peer = exit.peer().unwrap();
        peer.unlink(&exit).unwrap();
        peer.link(&exit).unwrap();
        assert_eq!(nested.push(), (1, 1));
    }

    #[test]
    fn a_pad_holding_events_back_is_busy() {
        let nested = Nested::start();
        let pad = nested.identity.static_pad("src").unwrap();
        assert!(!is_busy(&pad));
        // Not linked, the pad keeps a new sticky event for the next push.
        let peer = pad.peer().unwrap();
        pad.unlink(&peer).unwrap();
        let segment = gst::FormattedSegment::<gst::ClockTime>::new();
        nested.src.push_event(gst::event::Segment::new(&segment));
        pad.link(&peer).unwrap();
        assert!(is_busy(&pad), "the new segment waits for the next push");
        assert_eq!(nested.push(), (1, 1));
        assert!(!is_busy(&pad));
    }

    /// A packet with sequence number `seq` (srtpenc refuses a repeated one).
    fn numbered_packet(seq: u16, timestamp: u32) -> gst::Buffer {
        let mut bytes = vec![0x80, 96 | 0x80];
        bytes.extend_from_slice(&seq.to_be_bytes());
        bytes.extend_from_slice(&timestamp.to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 0, 7]);
        bytes.resize(12 + 500, 0xab);
        gst::Buffer::from_mut_slice(bytes)
    }

    /// Two webrtcbins in this process, connected through ICE and DTLS: the sender's path,
    /// shortened, still delivers every packet through SRTP to the receiver, and the
    /// pads the runs skip see none of them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connected_webrtcbin_sends_past_its_ghost_pads() {
        use std::time::Duration;

        use crate::engine::backend::PeerState;
        use crate::media::testing::{rtp_video_appsrc, sendonly_pad};
        use crate::webrtc::Negotiator;

        crate::webrtc::init().unwrap();
        let pipeline = gst::Pipeline::new();
        let appsrc = rtp_video_appsrc();
        let sender = Negotiator::new("hops-sender").unwrap();
        let receiver = Negotiator::new("hops-receiver").unwrap();
        pipeline
            .add_many([&appsrc, sender.element(), receiver.element()])
            .unwrap();
        // The received stream goes somewhere: a pad left unlinked would stop the
        // receiver's streaming thread (not-linked) after its jitter buffer's latency.
        let weak = pipeline.downgrade();
        receiver.element().connect_pad_added(move |_, pad| {
            let (Some(pipeline), gst::PadDirection::Src) = (weak.upgrade(), pad.direction()) else {
                return;
            };
            let sink = gst::ElementFactory::make("fakesink")
                .property("async", false)
                .build()
                .unwrap();
            pipeline.add(&sink).unwrap();
            sink.sync_state_with_parent().unwrap();
            pad.link(&sink.static_pad("sink").unwrap()).unwrap();
        });
        let webrtc_sink = sendonly_pad(sender.element());
        appsrc
            .static_pad("src")
            .unwrap()
            .link(&webrtc_sink)
            .unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let push = |seq: u16| {
            let flow = appsrc.emit_by_name::<gst::FlowReturn>(
                "push-buffer",
                &[&numbered_packet(seq, u32::from(seq) * 3000)],
            );
            assert_eq!(flow, gst::FlowReturn::Ok);
        };
        push(0);
        for _ in 0..200 {
            if webrtc_sink.current_caps().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let offer = sender.create_offer().await.unwrap();
        let answer = receiver.answer_offer(&offer).await.unwrap();
        sender.apply_answer(&answer).await.unwrap();
        for (from, to) in [(&sender, &receiver), (&receiver, &sender)] {
            let mut candidates = from.take_local_candidates().unwrap();
            let to = to.element().clone();
            tokio::spawn(async move {
                while let Some(c) = candidates.recv().await {
                    to.emit_by_name::<()>(
                        "add-ice-candidate",
                        &[&c.sdp_m_line_index, &c.candidate],
                    );
                }
            });
        }
        let mut state = sender.state();
        let connected = tokio::time::timeout(
            Duration::from_secs(10),
            state.wait_for(|s| *s == PeerState::Connected),
        )
        .await;
        assert!(
            connected.is_ok_and(|c| c.is_ok()),
            "ICE/DTLS between the two"
        );

        super::super::fec_bypass::install(&webrtc_sink).unwrap();
        let start = super::super::fec_bypass::pad_after(&webrtc_sink).unwrap();
        assert_eq!(shorten_sending_path(&start), 4);

        // Counted: after SRTP at the receiver, and at a pad the runs skip (rtpbin's way
        // out to the transport).
        let bin = |n: &Negotiator| {
            n.element()
                .downcast_ref::<gst::Bin>()
                .unwrap()
                .by_name("rtpbin")
                .unwrap()
        };
        let received = counter(&bin(&receiver).static_pad("recv_rtp_sink_0").unwrap());
        let skipped = counter(&bin(&sender).static_pad("send_rtp_src_0").unwrap());

        for seq in 1..=40 {
            push(seq);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for _ in 0..200 {
            if received.load(Ordering::SeqCst) >= 40 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // (Packet 0, held until DTLS was up, may arrive after the count started.)
        let received = received.load(Ordering::SeqCst);
        assert!((40..=41).contains(&received), "{received} packets arrived");
        // A packet may take the normal way where events wait for it (transportsendbin
        // drops them while it blocks and GStreamer sends them with the next push).
        assert!(skipped.load(Ordering::SeqCst) <= 2, "{skipped:?}");
        pipeline.set_state(gst::State::Null).unwrap();
    }
}
