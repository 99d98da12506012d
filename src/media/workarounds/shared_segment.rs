//! Gives the video tee and the audio tee one and the same segment event.
//!
//! Every room's webrtcbin bundles audio and video through an `rtpfunnel`, which, each
//! time the next packet comes from the other stream, re-sends that stream's segment
//! down the whole sending chain (RTP session, retransmission, SRTP, ICE sink). With
//! packets alternating between a frame's list and an Opus packet that is some 60
//! segment events a second per room, each as costly as a packet. GStreamer stores
//! sticky events by identity: re-sending the event a pad already has costs nothing.
//! So both tees get the same event object, a TIME segment starting at 0, and every
//! buffer's timestamps are turned into running time, which that segment maps to
//! itself. Running time is all that anything downstream uses (webrtcbin's clock
//! sync, RTCP sender reports), so nothing is shifted: the Opus encoder's segment
//! (which starts just before 1000 h so that its look-ahead cannot go negative) and
//! the video's (which starts at 0) mean the same instants before and after.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use gst::prelude::*;

type TimeSegment = gst::FormattedSegment<gst::ClockTime>;

/// Installs the shared segment on `pads` (the tees' sink pads).
pub fn install(pads: &[gst::Pad]) {
    let shared = gst::event::Segment::new(&TimeSegment::new());
    for pad in pads {
        let retimer = Retimer::default();
        let shared = shared.clone();
        let kinds = gst::PadProbeType::EVENT_DOWNSTREAM
            | gst::PadProbeType::BUFFER
            | gst::PadProbeType::BUFFER_LIST;
        pad.add_probe(kinds, move |_, info| {
            match &mut info.data {
                Some(gst::PadProbeData::Event(event)) => {
                    if let gst::EventView::Segment(segment) = event.view()
                        && retimer.follow(segment.segment())
                    {
                        *event = shared.clone();
                    }
                }
                Some(gst::PadProbeData::Buffer(buffer)) if !retimer.is_identity() => {
                    retimer.retime(buffer.make_mut());
                }
                Some(gst::PadProbeData::BufferList(list)) if !retimer.is_identity() => {
                    list.make_mut().foreach_mut(|mut buffer, _| {
                        retimer.retime(buffer.make_mut());
                        std::ops::ControlFlow::Continue(Some(buffer))
                    });
                }
                _ => {}
            }
            gst::PadProbeReturn::Ok
        });
    }
}

/// One pad's upstream segment, for turning its buffers' timestamps into running time.
struct Retimer {
    upstream: Mutex<TimeSegment>,
    /// The upstream segment already maps every time to itself (no rewriting needed).
    identity: AtomicBool,
}

impl Default for Retimer {
    fn default() -> Self {
        Self {
            upstream: Mutex::new(TimeSegment::new()),
            identity: AtomicBool::new(true),
        }
    }
}

impl Retimer {
    /// Takes a new upstream segment. False when it is not in TIME: it is passed on
    /// as it is and buffers keep their times.
    fn follow(&self, segment: &gst::Segment) -> bool {
        let Ok(time) = segment.clone().downcast::<gst::ClockTime>() else {
            self.identity.store(true, Ordering::Release);
            return false;
        };
        let identity = is_identity(&time);
        if let Ok(mut upstream) = self.upstream.lock() {
            *upstream = time;
        }
        self.identity.store(identity, Ordering::Release);
        true
    }

    fn is_identity(&self) -> bool {
        self.identity.load(Ordering::Acquire)
    }

    fn retime(&self, buffer: &mut gst::BufferRef) {
        if self.is_identity() {
            return;
        }
        let Ok(upstream) = self.upstream.lock() else {
            return;
        };
        let pts = buffer.pts().and_then(|t| upstream.to_running_time(t));
        let dts = buffer.dts().and_then(|t| upstream.to_running_time(t));
        buffer.set_pts(pts);
        buffer.set_dts(dts);
    }
}

/// Whether running time equals buffer time in `segment` (what the shared one says).
fn is_identity(segment: &TimeSegment) -> bool {
    segment.rate() == 1.0
        && segment.start() == Some(gst::ClockTime::ZERO)
        && segment.base() == Some(gst::ClockTime::ZERO)
        && segment.offset() == Some(gst::ClockTime::ZERO)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A linked src → sink pad pair, the sink (a tee's, in the agent) recording the
    /// segment events and buffer times that get past it.
    struct Link {
        src: gst::Pad,
        sink: gst::Pad,
        segments: Arc<Mutex<Vec<gst::Event>>>,
        times: Arc<Mutex<Vec<Option<gst::ClockTime>>>>,
    }

    impl Link {
        fn new() -> Self {
            let segments = Arc::new(Mutex::new(Vec::new()));
            let times = Arc::new(Mutex::new(Vec::new()));
            let (seen, timed, listed) = (segments.clone(), times.clone(), times.clone());
            let sink = gst::Pad::builder(gst::PadDirection::Sink)
                .event_function(move |_, _, event| {
                    if event.type_() == gst::EventType::Segment {
                        seen.lock().unwrap().push(event);
                    }
                    true
                })
                .chain_function(move |_, _, buffer| {
                    timed.lock().unwrap().push(buffer.pts());
                    Ok(gst::FlowSuccess::Ok)
                })
                .chain_list_function(move |_, _, list| {
                    listed.lock().unwrap().extend(list.iter().map(|b| b.pts()));
                    Ok(gst::FlowSuccess::Ok)
                })
                .build();
            let src = gst::Pad::builder(gst::PadDirection::Src).build();
            src.link(&sink).unwrap();
            sink.set_active(true).unwrap();
            src.set_active(true).unwrap();
            assert!(src.push_event(gst::event::StreamStart::new("test")));
            Self {
                src,
                sink,
                segments,
                times,
            }
        }

        fn start_segment(&self, start: gst::ClockTime) {
            let mut segment = TimeSegment::new();
            segment.set_start(start);
            segment.set_time(gst::ClockTime::ZERO);
            segment.set_position(start);
            assert!(self.src.push_event(gst::event::Segment::new(&segment)));
        }

        fn push_at(&self, pts: gst::ClockTime) {
            let mut buffer = gst::Buffer::new();
            buffer.get_mut().unwrap().set_pts(pts);
            self.src.push(buffer).unwrap();
        }
    }

    fn ms(ms: u64) -> gst::ClockTime {
        gst::ClockTime::from_mseconds(ms)
    }

    #[test]
    fn both_pads_pass_one_segment_object_and_running_times() {
        gst::init().unwrap();
        let (video, audio) = (Link::new(), Link::new());
        install(&[video.sink.clone(), audio.sink.clone()]);
        // The Opus encoder's segment starts just before 1000 h; the video's at 0.
        let opus_start = gst::ClockTime::from_seconds(3_600_000) - ms(65);
        video.start_segment(gst::ClockTime::ZERO);
        audio.start_segment(opus_start);

        let (v, a) = (
            video.segments.lock().unwrap(),
            audio.segments.lock().unwrap(),
        );
        assert_eq!(v[0].as_ptr(), a[0].as_ptr(), "the very same event object");
        let gst::EventView::Segment(shared) = v[0].view() else {
            unreachable!()
        };
        assert!(is_identity(
            &shared
                .segment()
                .clone()
                .downcast::<gst::ClockTime>()
                .unwrap()
        ));
        drop((v, a));

        video.push_at(ms(40));
        audio.push_at(opus_start + ms(40));
        let mut list = gst::BufferList::new();
        for pts in [ms(60), ms(80)] {
            let mut buffer = gst::Buffer::new();
            buffer.get_mut().unwrap().set_pts(opus_start + pts);
            list.get_mut().unwrap().add(buffer);
        }
        audio.src.push_list(list).unwrap();
        assert_eq!(*video.times.lock().unwrap(), vec![Some(ms(40))]);
        assert_eq!(
            *audio.times.lock().unwrap(),
            vec![Some(ms(40)), Some(ms(60)), Some(ms(80))]
        );
    }

    /// A new upstream segment (a restart after a flush) is followed: times stay
    /// running times, and downstream still sees the one shared event.
    #[test]
    fn a_new_upstream_segment_is_followed() {
        gst::init().unwrap();
        let audio = Link::new();
        install(std::slice::from_ref(&audio.sink));
        audio.start_segment(ms(1000));
        audio.push_at(ms(1010));
        audio.start_segment(ms(5000));
        audio.push_at(ms(5020));
        assert_eq!(
            *audio.times.lock().unwrap(),
            vec![Some(ms(10)), Some(ms(20))]
        );
        let segments = audio.segments.lock().unwrap();
        assert!(segments.iter().all(|s| s.as_ptr() == segments[0].as_ptr()));
    }
}
