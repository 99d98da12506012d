//! Each stream's quality figures (`publisher_quality_update`, `player_quality_update`):
//! sampled every [`PERIOD`] by a task of the peer's own, from the branch's counters and
//! webrtcbin's statistics (the SFU's receiver reports for what the box sends, the RTP
//! session's for what it receives). The peer hands out the latest sample; the engine
//! sends them as events and puts them in the state snapshot.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// How often a stream's figures are sampled.
pub const PERIOD: Duration = Duration::from_secs(2);

/// The latest figures, shared by the sampling task and the peer.
pub(crate) type Latest<T> = Arc<Mutex<Option<T>>>;

/// Calls `sample` with the time since the last call every [`PERIOD`] and keeps what it
/// returns in `latest`, until `closing` is cancelled.
pub(crate) fn spawn_sampler<T, F, Fut>(closing: CancellationToken, latest: Latest<T>, mut sample: F)
where
    T: Send + 'static,
    F: FnMut(Duration) -> Fut + Send + 'static,
    Fut: Future<Output = Option<T>> + Send,
{
    tokio::spawn(async move {
        let mut last = Instant::now();
        loop {
            tokio::select! {
                _ = closing.cancelled() => return,
                _ = tokio::time::sleep(PERIOD) => {}
            }
            let now = Instant::now();
            let figures = sample(now.saturating_duration_since(last)).await;
            last = now;
            if let Ok(mut latest) = latest.lock() {
                *latest = figures;
            }
        }
    });
}

/// How much a monotonic counter grew since the last call.
#[derive(Debug, Default)]
pub(crate) struct Growth {
    last: u64,
}

impl Growth {
    pub fn since_last(&mut self, now: u64) -> u64 {
        let grown = now.saturating_sub(self.last);
        self.last = now;
        grown
    }
}

/// `bytes` over `elapsed`, in kbit/s.
pub(crate) fn kbps(bytes: u64, elapsed: Duration) -> u32 {
    let seconds = elapsed.as_secs_f64();
    if seconds <= 0.0 {
        return 0;
    }
    (bytes as f64 * 8.0 / 1000.0 / seconds).round() as u32
}

/// `count` over `elapsed`, per second, to one decimal.
pub(crate) fn per_second(count: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds <= 0.0 {
        return 0.0;
    }
    round1(count as f64 / seconds)
}

pub(crate) fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// A numeric field of a stats object, whatever integer or float type webrtcbin gave it.
fn number(object: &gst::StructureRef, field: &str) -> Option<f64> {
    let value = object.value(field).ok()?;
    value
        .get::<f64>()
        .ok()
        .or_else(|| value.get::<i64>().ok().map(|v| v as f64))
        .or_else(|| value.get::<u64>().ok().map(|v| v as f64))
        .or_else(|| value.get::<i32>().ok().map(f64::from))
        .or_else(|| value.get::<u32>().ok().map(f64::from))
}

/// The stats objects named `kind` (e.g. `remote-inbound-rtp`) in webrtcbin's stats.
fn objects<'a>(
    stats: &'a gst::StructureRef,
    kind: &'a str,
) -> impl Iterator<Item = gst::Structure> + 'a {
    stats.iter().filter_map(move |(_, value)| {
        value
            .get::<gst::Structure>()
            .ok()
            .filter(|object| object.name() == kind)
    })
}

/// What the SFU reports of the packets the box sent it: the worst loss (%) and
/// round-trip time (ms) over the stream's media (audio, video).
pub(crate) fn sender_reports(stats: &gst::StructureRef) -> (Option<f64>, Option<f64>) {
    let mut loss: Option<f64> = None;
    let mut rtt: Option<f64> = None;
    for object in objects(stats, "remote-inbound-rtp") {
        if let Some(fraction) = number(&object, "fraction-lost") {
            let percent = round1(fraction.clamp(0.0, 1.0) * 100.0);
            loss = Some(loss.map_or(percent, |l| l.max(percent)));
        }
        if let Some(seconds) = number(&object, "round-trip-time").filter(|s| *s > 0.0) {
            let ms = round1(seconds * 1000.0);
            rtt = Some(rtt.map_or(ms, |r| r.max(ms)));
        }
    }
    (loss, rtt)
}

/// What the box's RTP session counted of what it received: packets lost and received
/// (summed over the stream's media) and the largest inter-arrival jitter (ms).
pub(crate) fn receiver_counts(stats: &gst::StructureRef) -> (u64, u64, Option<f64>) {
    let (mut lost, mut received) = (0u64, 0u64);
    let mut jitter: Option<f64> = None;
    for object in objects(stats, "inbound-rtp") {
        lost += number(&object, "packets-lost").unwrap_or(0.0).max(0.0) as u64;
        received += number(&object, "packets-received").unwrap_or(0.0).max(0.0) as u64;
        if let Some(seconds) = number(&object, "jitter") {
            let ms = round1(seconds * 1000.0);
            jitter = Some(jitter.map_or(ms, |j| j.max(ms)));
        }
    }
    (lost, received, jitter)
}

/// Loss over a window, in %, from how many packets were lost and received in it.
pub(crate) fn loss_percent(lost: u64, received: u64) -> Option<f64> {
    let expected = lost + received;
    (expected > 0).then(|| round1(lost as f64 * 100.0 / expected as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_over_a_window() {
        assert_eq!(kbps(250_000, Duration::from_secs(2)), 1000);
        assert_eq!(kbps(1, Duration::ZERO), 0);
        assert_eq!(per_second(59, Duration::from_secs(2)), 29.5);
        let mut growth = Growth::default();
        assert_eq!(growth.since_last(10), 10);
        assert_eq!(growth.since_last(25), 15);
        // A counter that started again (a new peer) never gives a negative rate.
        assert_eq!(growth.since_last(3), 0);
        assert_eq!(loss_percent(3, 97), Some(3.0));
        assert_eq!(loss_percent(0, 0), None);
    }

    #[test]
    fn reads_webrtcbins_stats_objects() {
        gst::init().unwrap();
        let remote_video = gst::Structure::builder("remote-inbound-rtp")
            .field("fraction-lost", 0.05f64)
            .field("round-trip-time", 0.012f64)
            .build();
        let remote_audio = gst::Structure::builder("remote-inbound-rtp")
            .field("fraction-lost", 0.0f64)
            .field("round-trip-time", 0.020f64)
            .build();
        let inbound = gst::Structure::builder("inbound-rtp")
            .field("packets-lost", 4i64)
            .field("packets-received", 96u64)
            .field("jitter", 0.0031f64)
            .build();
        let stats = gst::Structure::builder("application/x-webrtc-stats")
            .field("remote-inbound-rtp_1", remote_video)
            .field("remote-inbound-rtp_2", remote_audio)
            .field("inbound-rtp_3", inbound)
            .build();
        assert_eq!(sender_reports(&stats), (Some(5.0), Some(20.0)));
        assert_eq!(receiver_counts(&stats), (4, 96, Some(3.1)));
    }
}
