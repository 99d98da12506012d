//! libsrtp with roomcast's AES-ICM and HMAC-SHA1 (`src/webrtc/srtp_crypto.rs`) puts on
//! the wire exactly what libsrtp with its own primitives does: GStreamer's real `srtpenc`
//! encrypts the same RTP and RTCP packets, with the same key, before and after the swap,
//! and every byte matches — across a sequence-number wrap (the rollover counter is in
//! the IV and the tag) and with header extensions.
//!
//! Its own test binary: the swap is process-wide and one-way, and the "before" half has
//! to run first.

use std::sync::{Arc, Mutex};

use gst::prelude::*;

const KEY: [u8; 30] = [
    0xe1, 0xf9, 0x7a, 0x0d, 0x3e, 0x01, 0x8b, 0xe0, 0xd6, 0x4f, 0xa3, 0x2c, 0x06, 0xde, 0x41, 0x39,
    0x0e, 0xc6, 0x75, 0xad, 0x49, 0x8a, 0xfe, 0xeb, 0xb6, 0x96, 0x0b, 0x3a, 0xab, 0xe6,
];

/// RTP packets: two SSRCs, sequence numbers running through 65535 → 0, payloads from
/// 1 byte to a full 1200-byte packet, some with a one-byte header extension.
fn rtp_packets() -> Vec<Vec<u8>> {
    let mut packets = Vec::new();
    for n in 0u32..120 {
        let seq = (65_480 + n) as u16;
        let ssrc: u32 = if n % 3 == 0 { 0x1234_5678 } else { 0x0bad_cafe };
        let extension = n % 4 == 1;
        let mut p = vec![if extension { 0x90 } else { 0x80 }, 96];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(n * 3000).to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        if extension {
            // 0xBEDE profile, one word: id 1, length 2 (3 bytes), then a pad byte.
            p.extend_from_slice(&[0xbe, 0xde, 0x00, 0x01, 0x12, 0xaa, 0xbb, 0xcc]);
        }
        let payload = 1 + (n as usize * 97) % 1188;
        p.extend((0..payload).map(|i| (i as u32 * 31 + n) as u8));
        packets.push(p);
    }
    packets
}

/// RTCP: a sender report with a receiver block, and an SDES, as one compound packet.
fn rtcp_packets() -> Vec<Vec<u8>> {
    (0u8..5)
        .map(|n| {
            let mut p = vec![0x81, 200, 0x00, 0x0c];
            p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
            p.extend((0..44).map(|i| i ^ n));
            p.extend_from_slice(&[0x81, 202, 0x00, 0x03]);
            p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
            p.extend_from_slice(&[1, 3, b'b', b'o', b'x', 0, 0, 0]);
            p
        })
        .collect()
}

/// What a fresh `srtpenc` with [`KEY`] makes of the packets on `sink` (`rtp_sink_0`
/// or `rtcp_sink_0`).
fn encrypt(sink: &str, packets: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let enc = gst::ElementFactory::make("srtpenc")
        .property("key", gst::Buffer::from_slice(KEY))
        .property("random-key", false)
        .property_from_str("rtp-cipher", "aes-128-icm")
        .property_from_str("rtp-auth", "hmac-sha1-80")
        .property_from_str("rtcp-cipher", "aes-128-icm")
        .property_from_str("rtcp-auth", "hmac-sha1-80")
        .build()
        .expect("srtpenc (gstreamer1.0-plugins-bad)");
    let enc_sink = enc.request_pad_simple(sink).expect("request pad");
    let enc_src = enc
        .static_pad(&sink.replace("sink", "src"))
        .expect("its src pad");
    let out = Arc::new(Mutex::new(Vec::new()));
    let collected = out.clone();
    let catcher = gst::Pad::builder(gst::PadDirection::Sink)
        .name("catcher")
        .chain_function(move |_, _, buffer| {
            let map = buffer.map_readable().expect("readable");
            collected.lock().unwrap().push(map.as_slice().to_vec());
            Ok(gst::FlowSuccess::Ok)
        })
        .event_function(|_, _, _| true)
        .build();
    catcher.set_active(true).unwrap();
    enc_src.link(&catcher).unwrap();
    let feeder = gst::Pad::builder(gst::PadDirection::Src)
        .name("feeder")
        .build();
    feeder.set_active(true).unwrap();
    feeder.link(&enc_sink).unwrap();
    enc.set_state(gst::State::Playing).unwrap();
    let caps = if sink.starts_with("rtp") {
        gst::Caps::builder("application/x-rtp")
            .field("media", "video")
            .field("clock-rate", 90_000i32)
            .field("encoding-name", "H264")
            .field("payload", 96i32)
            .build()
    } else {
        gst::Caps::builder("application/x-rtcp").build()
    };
    assert!(feeder.push_event(gst::event::StreamStart::new("srtp-test")));
    assert!(feeder.push_event(gst::event::Caps::new(&caps)));
    assert!(
        feeder.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
            gst::ClockTime,
        >::new()))
    );
    for packet in packets {
        feeder
            .push(gst::Buffer::from_slice(packet.clone()))
            .expect("srtpenc takes the packet");
    }
    enc.set_state(gst::State::Null).unwrap();
    out.lock().unwrap().clone()
}

#[test]
fn srtp_with_roomcasts_primitives_matches_libsrtps_own_byte_for_byte() {
    gst::init().unwrap();
    let (rtp, rtcp) = (rtp_packets(), rtcp_packets());
    let before = (encrypt("rtp_sink_0", &rtp), encrypt("rtcp_sink_0", &rtcp));
    assert_eq!(before.0.len(), rtp.len());
    assert_eq!(before.1.len(), rtcp.len());
    // Encrypted: payloads differ from the input, with a 10-byte tag (SRTCP: 4-byte index + tag).
    assert_eq!(before.0[0].len(), rtp[0].len() + 10);
    assert_ne!(before.0[0][12..rtp[0].len()], rtp[0][12..]);
    assert_eq!(before.1[0].len(), rtcp[0].len() + 14);

    use roomcast::webrtc::srtp_crypto;
    assert_eq!(
        srtp_crypto::aes_keys_set(),
        0,
        "libsrtp's own primitives so far"
    );
    let aes = match srtp_crypto::install() {
        Ok(_) => true,
        // A CPU without AES instructions: only HMAC-SHA1 is swapped (still compared).
        Err(srtp_crypto::SrtpCryptoError::NoAesInstructions { hmac: true }) => false,
        Err(e) => panic!("libsrtp refused the primitives: {e}"),
    };
    let keys_after_self_tests = srtp_crypto::aes_keys_set();
    let after = (encrypt("rtp_sink_0", &rtp), encrypt("rtcp_sink_0", &rtcp));
    if aes {
        // Two sessions, each deriving its keys with AES-ICM and keying a cipher per
        // stream: the packets were encrypted by ours.
        let keys = srtp_crypto::aes_keys_set() - keys_after_self_tests;
        assert!(keys >= 4, "libsrtp keyed roomcast's AES-ICM {keys} times");
    }
    for (i, (a, b)) in before.0.iter().zip(&after.0).enumerate() {
        assert_eq!(a, b, "SRTP packet {i} (seq {})", 65_480 + i);
    }
    assert_eq!(before.0.len(), after.0.len());
    assert_eq!(before.1, after.1, "SRTCP");
}
