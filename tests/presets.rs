//! Every board preset in gst/ parses, and each one whose elements exist on this machine
//! really encodes: a short pipeline runs to EOS and gives constrained-baseline H.264.

use gst::prelude::*;
use roomcast::media::encoder;

#[test]
fn every_preset_parses_and_the_available_ones_encode() {
    roomcast::webrtc::init().unwrap();
    let presets = encoder::presets().expect("every preset parses");
    let mut ran = Vec::new();
    let mut skipped = Vec::new();
    for preset in &presets {
        for spec in &preset.encoder {
            let needed = std::iter::once(spec.element.as_str()).chain(spec.convert.as_deref());
            if !needed.clone().all(encoder::element_exists) {
                skipped.push(format!("{}/{}", preset.name, spec.element));
                continue;
            }
            encoder::check_properties(spec).unwrap_or_else(|e| panic!("{}: {e}", preset.name));
            let props: String = encoder::properties(spec, 1000, 30)
                .into_iter()
                .map(|(k, v)| format!(" {k}=\"{v}\""))
                .collect();
            let format = spec
                .input
                .split(',')
                .find_map(|p| p.strip_prefix("format="))
                .unwrap_or("I420");
            let convert = spec
                .convert
                .as_ref()
                .map(|c| format!("{c} ! {} ! ", spec.input))
                .unwrap_or_default();
            let description = format!(
                "videotestsrc num-buffers=45 ! video/x-raw,format={format},width=640,height=360,framerate=30/1 ! \
                 {convert}{}{props} ! {} ! h264parse ! appsink name=out sync=false",
                spec.element, spec.output
            );
            let pipeline = gst::parse::launch(&description)
                .unwrap_or_else(|e| panic!("{}: {e}: {description}", preset.name))
                .downcast::<gst::Pipeline>()
                .unwrap();
            let sink = pipeline
                .by_name("out")
                .unwrap()
                .downcast::<gst_app::AppSink>()
                .unwrap();
            pipeline.set_state(gst::State::Playing).unwrap();
            let mut frames = 0;
            let mut profile = None;
            while let Ok(sample) = sink
                .try_pull_sample(gst::ClockTime::from_seconds(10))
                .ok_or(())
            {
                frames += 1;
                if let Some(caps) = sample.caps() {
                    profile = caps
                        .structure(0)
                        .and_then(|s| s.get::<String>("profile").ok());
                }
            }
            let bus = pipeline.bus().unwrap();
            let error = bus.pop_filtered(&[gst::MessageType::Error]);
            pipeline.set_state(gst::State::Null).unwrap();
            assert!(
                error.is_none(),
                "{}/{}: {error:?}",
                preset.name,
                spec.element
            );
            assert_eq!(
                frames, 45,
                "{}/{}: all frames encoded",
                preset.name, spec.element
            );
            assert_eq!(
                profile.as_deref(),
                Some("constrained-baseline"),
                "{}/{}",
                preset.name,
                spec.element
            );
            ran.push(format!("{}/{}", preset.name, spec.element));
        }
    }
    println!("ran: {ran:?}; absent here: {skipped:?}");
    assert!(!ran.is_empty(), "at least the software presets run here");
}
