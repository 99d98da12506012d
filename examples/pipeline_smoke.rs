//! A short test-source pipeline run to end-of-stream: proves that a cross-built binary
//! links GStreamer and that the target's plugins load and encode (cross/check.sh runs it
//! under qemu-user). Video: 30 test frames through x264enc, else openh264enc, else none;
//! audio: 50 × 20 ms of test tone through opusenc.
//!
//! `pipeline_smoke [TIMEOUT_SECONDS]` exits 0 on EOS; 1 on a pipeline error, 2 when EOS
//! does not come within the timeout (default 300 s: qemu runs ~25× slower than a board),
//! 3 when the pipeline cannot be built; every failure says why on stderr.

use std::process::ExitCode;
use std::time::Instant;

use gst::prelude::*;

/// Software H.264 encoders, in the order roomcast prefers them.
const H264_ENCODERS: [(&str, &str); 2] = [
    (
        "x264enc",
        "x264enc tune=zerolatency speed-preset=ultrafast bitrate=500",
    ),
    ("openh264enc", "openh264enc bitrate=500000"),
];

fn main() -> ExitCode {
    let timeout_s = match std::env::args().nth(1).map(|a| a.parse::<u64>()) {
        None => 300,
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            eprintln!("pipeline_smoke: the timeout must be whole seconds: {e}");
            return ExitCode::from(3);
        }
    };
    if let Err(e) = gst::init() {
        eprintln!("pipeline_smoke: cannot initialise GStreamer: {e}");
        return ExitCode::from(3);
    }
    println!("pipeline_smoke: {}", gst::version_string());

    let encoder = H264_ENCODERS
        .iter()
        .find(|(factory, _)| gst::ElementFactory::find(factory).is_some());
    let video_encode = match encoder {
        Some((factory, launch)) => {
            println!("pipeline_smoke: video encoder {factory}");
            format!("! {launch} ")
        }
        None => {
            println!(
                "pipeline_smoke: no H.264 encoder (x264enc, openh264enc): video goes raw to fakesink"
            );
            String::new()
        }
    };
    let description = format!(
        "videotestsrc num-buffers=30 ! video/x-raw,width=320,height=240,framerate=30/1 \
         ! videoconvert {video_encode}! fakesink \
         audiotestsrc num-buffers=50 samplesperbuffer=960 ! audioconvert ! audioresample \
         ! opusenc ! fakesink"
    );

    let pipeline = match gst::parse::launch(&description)
        .map_err(|e| e.to_string())
        .and_then(|element| {
            element
                .downcast::<gst::Pipeline>()
                .map_err(|_| "the description is not a pipeline".to_owned())
        }) {
        Ok(pipeline) => pipeline,
        Err(e) => {
            eprintln!("pipeline_smoke: cannot build `{description}`: {e}");
            return ExitCode::from(3);
        }
    };

    let code = run_to_eos(&pipeline, timeout_s);
    // Always back to NULL before the pipeline is dropped.
    if let Err(e) = pipeline.set_state(gst::State::Null) {
        eprintln!("pipeline_smoke: cannot stop the pipeline: {e}");
    }
    code
}

fn run_to_eos(pipeline: &gst::Pipeline, timeout_s: u64) -> ExitCode {
    let Some(bus) = pipeline.bus() else {
        eprintln!("pipeline_smoke: the pipeline has no bus");
        return ExitCode::from(3);
    };
    let started = Instant::now();
    if let Err(e) = pipeline.set_state(gst::State::Playing) {
        // The reason is on the bus as an error message: show it.
        let detail = bus
            .timed_pop_filtered(gst::ClockTime::ZERO, &[gst::MessageType::Error])
            .map(|m| describe(&m))
            .unwrap_or_default();
        eprintln!("pipeline_smoke: cannot start the pipeline: {e}{detail}");
        return ExitCode::from(1);
    }
    match bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(timeout_s),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    ) {
        Some(message) if message.type_() == gst::MessageType::Eos => {
            println!(
                "pipeline_smoke: EOS after {:.1} s",
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Some(message) => {
            eprintln!("pipeline_smoke: pipeline error{}", describe(&message));
            ExitCode::from(1)
        }
        None => {
            eprintln!("pipeline_smoke: no EOS within {timeout_s} s");
            ExitCode::from(2)
        }
    }
}

/// ": from <element>: <error> (<debug>)" for an error message, "" for anything else.
fn describe(message: &gst::Message) -> String {
    match message.view() {
        gst::MessageView::Error(err) => {
            let source = err
                .src()
                .map(|s| s.path_string().to_string())
                .unwrap_or_else(|| "?".to_owned());
            let debug = err.debug().map(|d| format!(" ({d})")).unwrap_or_default();
            format!(": from {source}: {}{debug}", err.error())
        }
        _ => String::new(),
    }
}
