//! `roomcastframelist`: gathers the RTP packets of one video frame into one buffer list.
//!
//! rtph264pay pushes each NAL unit on its own (a slice as one list of fragments, small
//! NALs as single buffers): ~2.4 pushes per frame at 720p30 2 Mbit/s with x264's
//! sliced threads. Placed once between the payloader and the tee, this element makes it
//! one push per frame, so the tee and every room's gate and webrtcbin are walked once
//! per frame instead: with the FEC stage bypassed (`fec_bypass.rs`) the list reaches
//! libnice whole, which sends it with one `sendmmsg`. What stays per packet is SRTP and
//! the RTP session's bookkeeping. Measured: docs/performance.md.
//!
//! It adds no delay: the payloader writes a whole access unit in one go and marks its
//! last packet (RTP marker bit), which is when the list leaves. A packet with a new RTP
//! timestamp also closes the frame before it (a payloader that never marks), and so do
//! serialized events (caps, EOS), so nothing is ever held back or reordered.

use std::sync::{Mutex, MutexGuard, OnceLock};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

/// The factory name the source pipelines use.
pub const FACTORY: &str = "roomcastframelist";

/// A frame this large is passed on as it is (~1.4 MB at our MTU: no real frame).
const MAX_PACKETS: usize = 1024;

/// Registers the element for this process, once.
pub fn register() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            gst::Element::register(None, FACTORY, gst::Rank::NONE, FrameList::static_type())
                .map_err(|e| format!("cannot register the `{FACTORY}` element: {e}"))
        })
        .clone()
}

glib::wrapper! {
    /// See the module documentation.
    pub struct FrameList(ObjectSubclass<imp::FrameList>) @extends gst::Element, gst::Object;
}

/// What of an RTP packet the element looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    timestamp: u32,
    marker: bool,
}

/// The marker bit and timestamp of an RTP packet; `None` if it is too short to be one.
fn header(buffer: &gst::BufferRef) -> Option<Header> {
    // (copy_to_slice asserts, rather than fails, when the buffer is shorter.)
    if buffer.size() < 12 {
        return None;
    }
    let mut fixed = [0u8; 8];
    buffer.copy_to_slice(0, &mut fixed).ok()?;
    if fixed[0] >> 6 != 2 {
        return None;
    }
    Some(Header {
        timestamp: u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
        marker: fixed[1] & 0x80 != 0,
    })
}

/// The packets of the frame being gathered.
#[derive(Default)]
struct Frame {
    packets: Vec<gst::Buffer>,
    timestamp: Option<u32>,
}

impl Frame {
    /// Adds a packet; returns the lists that are complete, in order.
    fn accept(&mut self, buffer: gst::Buffer) -> Vec<gst::BufferList> {
        let mut ready = Vec::new();
        let header = header(&buffer);
        let timestamp = header.map(|h| h.timestamp);
        if !self.packets.is_empty() && (timestamp.is_none() || timestamp != self.timestamp) {
            ready.extend(self.take());
        }
        self.timestamp = timestamp;
        self.packets.push(buffer);
        if header.is_none_or(|h| h.marker) || self.packets.len() >= MAX_PACKETS {
            ready.extend(self.take());
        }
        ready
    }

    /// The gathered packets as one list, if any.
    fn take(&mut self) -> Option<gst::BufferList> {
        if self.packets.is_empty() {
            return None;
        }
        let mut list = gst::BufferList::new_sized(self.packets.len());
        let list_mut = list.make_mut();
        for packet in self.packets.drain(..) {
            list_mut.add(packet);
        }
        self.timestamp = None;
        Some(list)
    }
}

mod imp {
    use super::*;

    pub struct FrameList {
        sinkpad: gst::Pad,
        srcpad: gst::Pad,
        frame: Mutex<Frame>,
    }

    impl FrameList {
        fn frame(&self) -> MutexGuard<'_, Frame> {
            // A panic while holding it can only have left a partial frame: keep going.
            self.frame.lock().unwrap_or_else(|e| e.into_inner())
        }

        fn push(&self, ready: Vec<gst::BufferList>) -> Result<gst::FlowSuccess, gst::FlowError> {
            let mut flow = Ok(gst::FlowSuccess::Ok);
            for list in ready {
                flow = self.srcpad.push_list(list);
                if flow.is_err() {
                    break;
                }
            }
            flow
        }

        fn chain(&self, buffer: gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
            let ready = self.frame().accept(buffer);
            self.push(ready)
        }

        fn chain_list(&self, list: gst::BufferList) -> Result<gst::FlowSuccess, gst::FlowError> {
            let ready = {
                let mut frame = self.frame();
                let mut ready = Vec::new();
                for buffer in list.iter_owned() {
                    ready.extend(frame.accept(buffer));
                }
                ready
            };
            self.push(ready)
        }

        fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
            match event.type_() {
                gst::EventType::FlushStop => drop(self.frame().take()),
                _ if event.is_serialized() => {
                    // What was gathered goes before the event (caps, segment, EOS…).
                    let pending = self.frame().take();
                    if let Some(list) = pending {
                        let _ = self.srcpad.push_list(list);
                    }
                }
                _ => {}
            }
            gst::Pad::event_default(pad, Some(&*self.obj()), event)
        }
    }

    /// A pad from the element's template (or a bare pad of that name and direction).
    fn pad_builder(
        klass: &<FrameList as ObjectSubclass>::Class,
        name: &str,
        direction: gst::PadDirection,
    ) -> gst::PadBuilder<gst::Pad> {
        match klass.pad_template(name) {
            Some(template) => gst::Pad::builder_from_template(&template),
            None => gst::Pad::builder(direction).name(name),
        }
    }

    #[glib::object_subclass]
    impl ObjectSubclass for FrameList {
        const NAME: &'static str = "RoomcastFrameList";
        type Type = super::FrameList;
        type ParentType = gst::Element;

        fn with_class(klass: &Self::Class) -> Self {
            let sinkpad = pad_builder(klass, "sink", gst::PadDirection::Sink)
                .chain_function(|_, parent, buffer| {
                    FrameList::catch_panic_pad_function(
                        parent,
                        || Err(gst::FlowError::Error),
                        |this| this.chain(buffer),
                    )
                })
                .chain_list_function(|_, parent, list| {
                    FrameList::catch_panic_pad_function(
                        parent,
                        || Err(gst::FlowError::Error),
                        |this| this.chain_list(list),
                    )
                })
                .event_function(|pad, parent, event| {
                    FrameList::catch_panic_pad_function(
                        parent,
                        || false,
                        |this| this.sink_event(pad, event),
                    )
                })
                .flags(gst::PadFlags::PROXY_CAPS | gst::PadFlags::PROXY_ALLOCATION)
                .build();
            let srcpad = pad_builder(klass, "src", gst::PadDirection::Src)
                .flags(gst::PadFlags::PROXY_CAPS | gst::PadFlags::PROXY_ALLOCATION)
                .build();
            Self {
                sinkpad,
                srcpad,
                frame: Mutex::new(Frame::default()),
            }
        }
    }

    impl ObjectImpl for FrameList {
        fn constructed(&self) {
            self.parent_constructed();
            let element = self.obj();
            for pad in [&self.sinkpad, &self.srcpad] {
                if let Err(e) = element.add_pad(pad) {
                    gst::error!(gst::CAT_DEFAULT, "cannot add pad {}: {e}", pad.name());
                }
            }
        }
    }

    impl GstObjectImpl for FrameList {}

    impl ElementImpl for FrameList {
        fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
            static METADATA: std::sync::OnceLock<gst::subclass::ElementMetadata> =
                std::sync::OnceLock::new();
            Some(METADATA.get_or_init(|| {
                gst::subclass::ElementMetadata::new(
                    "RTP frame list",
                    "Filter/Network/RTP",
                    "Passes the RTP packets of one frame on as one buffer list",
                    "roomcast",
                )
            }))
        }

        fn pad_templates() -> &'static [gst::PadTemplate] {
            static TEMPLATES: std::sync::OnceLock<Vec<gst::PadTemplate>> =
                std::sync::OnceLock::new();
            TEMPLATES.get_or_init(|| {
                let caps = gst::Caps::new_empty_simple("application/x-rtp");
                [
                    ("sink", gst::PadDirection::Sink),
                    ("src", gst::PadDirection::Src),
                ]
                .into_iter()
                .filter_map(|(name, direction)| {
                    gst::PadTemplate::new(name, direction, gst::PadPresence::Always, &caps).ok()
                })
                .collect()
            })
        }

        fn change_state(
            &self,
            transition: gst::StateChange,
        ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
            let result = self.parent_change_state(transition)?;
            if transition == gst::StateChange::PausedToReady {
                drop(self.frame().take());
            }
            Ok(result)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::media::testing::{rtp_packet as packet, run_to_eos};

    fn sizes(lists: &[gst::BufferList]) -> Vec<usize> {
        lists.iter().map(|l| l.len()).collect()
    }

    #[test]
    fn a_frame_leaves_at_its_marker() {
        gst::init().unwrap();
        let mut frame = Frame::default();
        assert!(frame.accept(packet(3000, false, 1000)).is_empty());
        assert!(frame.accept(packet(3000, false, 1000)).is_empty());
        assert_eq!(sizes(&frame.accept(packet(3000, true, 10))), vec![3]);
        assert_eq!(sizes(&frame.accept(packet(6000, true, 10))), vec![1]);
        assert!(frame.take().is_none());
    }

    #[test]
    fn a_new_timestamp_closes_an_unmarked_frame() {
        gst::init().unwrap();
        let mut frame = Frame::default();
        assert!(frame.accept(packet(3000, false, 100)).is_empty());
        assert!(frame.accept(packet(3000, false, 100)).is_empty());
        let ready = frame.accept(packet(6000, false, 100));
        assert_eq!(sizes(&ready), vec![2]);
        assert_eq!(
            sizes(&frame.take().into_iter().collect::<Vec<_>>()),
            vec![1]
        );
    }

    #[test]
    fn what_is_not_rtp_passes_alone_and_in_order() {
        gst::init().unwrap();
        let mut frame = Frame::default();
        assert!(frame.accept(packet(3000, false, 100)).is_empty());
        let ready = frame.accept(gst::Buffer::from_slice([1u8, 2, 3]));
        assert_eq!(sizes(&ready), vec![1, 1]);
        let last = ready[1].get(0).unwrap().map_readable().unwrap();
        assert_eq!(last.as_slice(), &[1, 2, 3]);
    }

    #[test]
    fn an_endless_frame_is_cut() {
        gst::init().unwrap();
        let mut frame = Frame::default();
        let mut out = Vec::new();
        for _ in 0..MAX_PACKETS + 5 {
            out.extend(frame.accept(packet(3000, false, 10)));
        }
        assert_eq!(sizes(&out), vec![MAX_PACKETS]);
    }

    /// Lists and packets seen on a pad.
    fn count_on(pad: &gst::Pad) -> Arc<Mutex<Vec<(usize, bool)>>> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        pad.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
            move |_, info| {
                let entry = match &info.data {
                    Some(gst::PadProbeData::Buffer(b)) => (1, header(b).is_some_and(|h| h.marker)),
                    Some(gst::PadProbeData::BufferList(l)) => (
                        l.len(),
                        l.get(l.len().saturating_sub(1))
                            .and_then(header)
                            .is_some_and(|h| h.marker),
                    ),
                    _ => return gst::PadProbeReturn::Ok,
                };
                record.lock().unwrap().push(entry);
                gst::PadProbeReturn::Ok
            },
        );
        seen
    }

    #[test]
    fn real_h264_frames_become_one_list_each() {
        gst::init().unwrap();
        register().unwrap();
        // Two slices per frame (as x264's sliced threads and hardware encoders make):
        // rtph264pay pushes ~2-3 times per frame; every room's branch should see one.
        let pipeline = gst::parse::launch(
            "videotestsrc num-buffers=30 ! video/x-raw,width=1280,height=720,framerate=30/1 ! \
             x264enc tune=zerolatency speed-preset=ultrafast bitrate=2000 key-int-max=10 \
             sliced-threads=true threads=2 ! video/x-h264,profile=constrained-baseline ! \
             h264parse config-interval=-1 ! video/x-h264,stream-format=byte-stream,alignment=au ! \
             rtph264pay name=pay config-interval=-1 aggregate-mode=zero-latency mtu=1200 ! \
             roomcastframelist name=frames ! fakesink",
        )
        .unwrap();
        let bin = pipeline.downcast_ref::<gst::Bin>().unwrap();
        let pay = bin.by_name("pay").unwrap().static_pad("src").unwrap();
        let frames = bin.by_name("frames").unwrap().static_pad("src").unwrap();
        let (from_pay, from_frames) = (count_on(&pay), count_on(&frames));
        run_to_eos(&pipeline, 20);

        let from_pay = from_pay.lock().unwrap();
        let from_frames = from_frames.lock().unwrap();
        let packets = |seen: &[(usize, bool)]| seen.iter().map(|(n, _)| n).sum::<usize>();
        assert!(
            from_pay.len() > 30,
            "the payloader pushed {}",
            from_pay.len()
        );
        assert_eq!(from_frames.len(), 30, "one push per frame");
        assert!(
            from_frames.iter().all(|(_, marked)| *marked),
            "each ends a frame"
        );
        assert_eq!(packets(&from_frames), packets(&from_pay), "no packet lost");
    }

    #[test]
    fn what_is_gathered_goes_out_before_eos() {
        gst::init().unwrap();
        register().unwrap();
        let pipeline = gst::parse::launch(
            "appsrc name=src format=time caps=application/x-rtp,media=video,clock-rate=90000,encoding-name=H264,payload=96 ! \
             roomcastframelist name=frames ! fakesink",
        )
        .unwrap();
        let bin = pipeline.downcast_ref::<gst::Bin>().unwrap();
        let src = bin
            .by_name("src")
            .unwrap()
            .downcast::<gst_app::AppSrc>()
            .unwrap();
        let frames = bin.by_name("frames").unwrap().static_pad("src").unwrap();
        let seen = count_on(&frames);
        for _ in 0..3 {
            src.push_buffer(packet(3000, false, 500)).unwrap();
        }
        src.end_of_stream().unwrap();
        run_to_eos(&pipeline, 20);
        assert_eq!(*seen.lock().unwrap(), vec![(3, false)]);
    }
}
