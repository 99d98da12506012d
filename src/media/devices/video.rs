//! V4L2 nodes, through the `v4l` crate: `/dev/videoN` in number order, what each one is,
//! and what a camera can deliver.
//!
//! The capability and format queries use the crate's ioctl and kernel structs directly
//! rather than its `query_caps` / `enum_formats`: those panic on a card name cut inside a
//! UTF-8 character and only know single-planar capture queues, while M2M encoders (the
//! Pi 4's `bcm2835-codec-encode`) are multi-planar.

use std::ffi::c_void;
use std::fs;
use std::io;
use std::mem;
use std::path::{Path, PathBuf};

use v4l::frameinterval::FrameIntervalEnum;
use v4l::framesize::FrameSizeEnum;
use v4l::v4l_sys::{v4l2_capability, v4l2_fmtdesc};
use v4l::v4l2::{self as raw, vidioc};
use v4l::video::Capture;
use v4l::{Device, FourCC, Fraction};

use super::{DeviceError, Fps, FrameRates, FrameSize, VideoDevice, VideoFormat, VideoKind, c_text};

// Capability bits (linux/videodev2.h, V4L2_CAP_*).
const CAP_VIDEO_CAPTURE: u32 = 0x0000_0001;
const CAP_VIDEO_CAPTURE_MPLANE: u32 = 0x0000_1000;
const CAP_VIDEO_M2M_MPLANE: u32 = 0x0000_4000;
const CAP_VIDEO_M2M: u32 = 0x0000_8000;
const CAP_META_CAPTURE: u32 = 0x0080_0000;
const CAP_DEVICE_CAPS: u32 = 0x8000_0000;

const CAPABILITY_NAMES: [(u32, &str); 22] = [
    (CAP_VIDEO_CAPTURE, "video_capture"),
    (0x0000_0002, "video_output"),
    (0x0000_0004, "video_overlay"),
    (0x0000_0010, "vbi_capture"),
    (0x0000_0020, "vbi_output"),
    (0x0000_0200, "video_output_overlay"),
    (CAP_VIDEO_CAPTURE_MPLANE, "video_capture_mplane"),
    (0x0000_2000, "video_output_mplane"),
    (CAP_VIDEO_M2M_MPLANE, "video_m2m_mplane"),
    (CAP_VIDEO_M2M, "video_m2m"),
    (0x0001_0000, "tuner"),
    (0x0002_0000, "audio"),
    (0x0004_0000, "radio"),
    (0x0010_0000, "sdr_capture"),
    (0x0020_0000, "ext_pix_format"),
    (CAP_META_CAPTURE, "meta_capture"),
    (0x0100_0000, "readwrite"),
    (0x0400_0000, "streaming"),
    (0x0800_0000, "meta_output"),
    (0x1000_0000, "touch"),
    (0x2000_0000, "io_mc"),
    (CAP_DEVICE_CAPS, "device_caps"),
];

// Buffer (queue) types, V4L2_BUF_TYPE_*.
const BUF_VIDEO_CAPTURE: u32 = 1;
const BUF_VIDEO_OUTPUT: u32 = 2;
const BUF_VIDEO_CAPTURE_MPLANE: u32 = 9;
const BUF_VIDEO_OUTPUT_MPLANE: u32 = 10;
const BUF_META_CAPTURE: u32 = 13;

const FMT_FLAG_COMPRESSED: u32 = 0x0001;

/// Drivers whose capture nodes belong to an image signal processor, not a camera.
const ISP_DRIVERS: [&str; 2] = ["bcm2835-isp", "pispbe"];
/// V4L2_PIX_FMT_PRIV_MAGIC's sibling: the big-endian variant flag of a fourcc.
const FOURCC_BIG_ENDIAN: u32 = 1 << 31;

/// Every `/dev/videoN`, probed. A node that cannot be opened is listed with the reason.
pub(super) fn list(errors: &mut Vec<String>) -> Vec<VideoDevice> {
    let nodes = match nodes(Path::new("/dev")) {
        Ok(nodes) => nodes,
        Err(source) => {
            errors.push(
                DeviceError::List {
                    what: "/dev",
                    source,
                }
                .to_string(),
            );
            return Vec::new();
        }
    };
    let links = stable_links();
    nodes.iter().map(|node| probe(node, &links)).collect()
}

/// The `videoN` nodes of a directory, in number order.
fn nodes(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let index = video_index(entry.file_name().to_str()?)?;
            Some((index, entry.path()))
        })
        .collect();
    found.sort();
    Ok(found.into_iter().map(|(_, path)| path).collect())
}

/// N of a `videoN` node name.
fn video_index(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("video")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// udev's stable names (`/dev/v4l/by-id/…`, `/dev/v4l/by-path/…`) with the node each
/// one points at.
fn stable_links() -> Vec<(PathBuf, String)> {
    let mut links = Vec::new();
    for dir in ["/dev/v4l/by-id", "/dev/v4l/by-path"] {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            if let Ok(target) = fs::canonicalize(entry.path()) {
                links.push((target, entry.path().display().to_string()));
            }
        }
    }
    links.sort_by(|a, b| a.1.cmp(&b.1));
    links
}

fn probe(node: &Path, links: &[(PathBuf, String)]) -> VideoDevice {
    let path = node.display().to_string();
    let canonical = fs::canonicalize(node).unwrap_or_else(|_| node.to_path_buf());
    let mut device = VideoDevice {
        links: links
            .iter()
            .filter(|(target, _)| *target == canonical)
            .map(|(_, link)| link.clone())
            .collect(),
        name: node
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| fs::read_to_string(format!("/sys/class/video4linux/{n}/name")).ok())
            .map(|n| n.trim().to_owned()),
        path,
        card: None,
        driver: None,
        bus: None,
        kind: VideoKind::Unknown,
        capabilities: Vec::new(),
        capture: false,
        formats: Vec::new(),
        error: None,
    };
    if let Err(e) = query(&mut device, node) {
        device.error = Some(e.to_string());
    }
    device
}

fn query(device: &mut VideoDevice, node: &Path) -> Result<(), DeviceError> {
    let dev = Device::with_path(node).map_err(|e| DeviceError::open(&device.path, "video", e))?;
    let fd = dev.handle().fd();
    let failed = |query: &'static str| {
        let path = device.path.clone();
        move |source| DeviceError::Query {
            path,
            query,
            source,
        }
    };
    let caps = query_caps(fd).map_err(failed("VIDIOC_QUERYCAP"))?;
    device.card = Some(c_text(&caps.card));
    device.driver = Some(c_text(&caps.driver));
    device.bus = Some(c_text(&caps.bus_info));
    // `device_caps` describes this node; `capabilities` the whole physical device.
    let bits = if caps.capabilities & CAP_DEVICE_CAPS != 0 {
        caps.device_caps
    } else {
        caps.capabilities
    };
    device.capabilities = capability_names(bits);

    let m2m = bits & (CAP_VIDEO_M2M | CAP_VIDEO_M2M_MPLANE) != 0;
    let (capture_queue, output_queue) = queues(bits);
    let capture_formats = match capture_queue {
        Some(queue) => enum_formats(fd, queue).map_err(failed("VIDIOC_ENUM_FMT"))?,
        None => Vec::new(),
    };
    let output_formats = match output_queue {
        Some(queue) if m2m => enum_formats(fd, queue).map_err(failed("VIDIOC_ENUM_FMT"))?,
        _ => Vec::new(),
    };
    device.kind = match classify(bits, &capture_formats, &output_formats) {
        VideoKind::Camera
            if device
                .driver
                .as_deref()
                .is_some_and(|d| ISP_DRIVERS.contains(&d)) =>
        {
            VideoKind::Isp
        }
        kind => kind,
    };
    device.capture = device.kind == VideoKind::Camera;
    device.formats = capture_formats
        .into_iter()
        .map(|format| {
            let mut out = VideoFormat {
                fourcc: fourcc_string(format.code),
                description: format.description,
                compressed: format.compressed,
                sizes: Vec::new(),
                error: None,
            };
            // Sizes and rates matter for what `v4l2src` captures, not for an M2M
            // encoder's output or a metadata queue.
            if device.capture {
                match frame_sizes(&dev, format.code) {
                    Ok(sizes) => out.sizes = sizes,
                    Err(e) => out.error = Some(e.to_string()),
                }
            }
            out
        })
        .collect();
    Ok(())
}

/// The capture queue to list formats of, and an M2M device's output (input-side) queue.
fn queues(bits: u32) -> (Option<u32>, Option<u32>) {
    if bits & (CAP_VIDEO_CAPTURE | CAP_VIDEO_M2M) != 0 {
        let output = (bits & CAP_VIDEO_M2M != 0).then_some(BUF_VIDEO_OUTPUT);
        (Some(BUF_VIDEO_CAPTURE), output)
    } else if bits & (CAP_VIDEO_CAPTURE_MPLANE | CAP_VIDEO_M2M_MPLANE) != 0 {
        let output = (bits & CAP_VIDEO_M2M_MPLANE != 0).then_some(BUF_VIDEO_OUTPUT_MPLANE);
        (Some(BUF_VIDEO_CAPTURE_MPLANE), output)
    } else if bits & CAP_META_CAPTURE != 0 {
        (Some(BUF_META_CAPTURE), None)
    } else {
        (None, None)
    }
}

/// What a node is, from its capabilities and the formats on each side of an M2M device.
fn classify(bits: u32, produced: &[RawFormat], consumed: &[RawFormat]) -> VideoKind {
    if bits & (CAP_VIDEO_M2M | CAP_VIDEO_M2M_MPLANE) != 0 {
        let codes_out = produced.iter().any(|f| f.compressed);
        let codes_in = consumed.iter().any(|f| f.compressed);
        let h264 = u32::from(FourCC::new(b"H264"));
        match (codes_in, codes_out) {
            (false, true) if produced.iter().any(|f| f.code == h264) => VideoKind::M2mH264Encoder,
            (false, true) => VideoKind::M2mEncoder,
            (true, false) => VideoKind::M2mDecoder,
            _ => VideoKind::M2mConverter,
        }
    } else if bits & (CAP_VIDEO_CAPTURE | CAP_VIDEO_CAPTURE_MPLANE) != 0 {
        VideoKind::Camera
    } else if bits & CAP_META_CAPTURE != 0 {
        VideoKind::Metadata
    } else {
        VideoKind::Other
    }
}

fn capability_names(bits: u32) -> Vec<String> {
    CAPABILITY_NAMES
        .iter()
        .filter(|(bit, _)| bits & bit != 0)
        .map(|(_, name)| (*name).to_owned())
        .collect()
}

/// A fourcc as text: `YUYV`, `Y16` (trailing blanks dropped), `Y16-BE` for the
/// big-endian variants, hex when it is not printable.
pub fn fourcc_string(code: u32) -> String {
    let bytes = (code & !FOURCC_BIG_ENDIAN).to_le_bytes();
    if !bytes.iter().all(|b| b.is_ascii_graphic() || *b == b' ') || bytes[0] == b' ' {
        return format!("0x{code:08x}");
    }
    let text: String = bytes.iter().map(|&b| char::from(b)).collect();
    let text = text.trim_end().to_owned();
    if code & FOURCC_BIG_ENDIAN != 0 {
        format!("{text}-BE")
    } else {
        text
    }
}

/// A frame interval (seconds per frame) as frames per second; `None` for a zero interval.
pub fn fps_from_interval(numerator: u32, denominator: u32) -> Option<Fps> {
    (numerator != 0 && denominator != 0).then_some(Fps {
        num: denominator,
        den: numerator,
    })
}

fn fps(interval: &Fraction) -> Option<Fps> {
    fps_from_interval(interval.numerator, interval.denominator)
}

struct RawFormat {
    code: u32,
    description: String,
    compressed: bool,
}

fn query_caps(fd: i32) -> io::Result<v4l2_capability> {
    // SAFETY: all-zero bytes are a valid v4l2_capability (integers and byte arrays).
    let mut caps: v4l2_capability = unsafe { mem::zeroed() };
    // SAFETY: VIDIOC_QUERYCAP writes one v4l2_capability through the pointer, which points
    // at a live value of exactly that type.
    unsafe {
        raw::ioctl(
            fd,
            vidioc::VIDIOC_QUERYCAP,
            (&raw mut caps).cast::<c_void>(),
        )
    }?;
    Ok(caps)
}

/// VIDIOC_ENUM_FMT on one queue until the driver says there are no more (EINVAL).
fn enum_formats(fd: i32, queue: u32) -> io::Result<Vec<RawFormat>> {
    let mut formats = Vec::new();
    for index in 0.. {
        let mut desc = v4l2_fmtdesc {
            index,
            type_: queue,
            // SAFETY: all-zero bytes are a valid v4l2_fmtdesc (integers and byte arrays).
            ..unsafe { mem::zeroed() }
        };
        // SAFETY: VIDIOC_ENUM_FMT reads and writes one v4l2_fmtdesc through the pointer,
        // which points at a live value of exactly that type.
        let result = unsafe {
            raw::ioctl(
                fd,
                vidioc::VIDIOC_ENUM_FMT,
                (&raw mut desc).cast::<c_void>(),
            )
        };
        match result {
            Ok(()) => formats.push(RawFormat {
                code: desc.pixelformat,
                description: c_text(&desc.description),
                compressed: desc.flags & FMT_FLAG_COMPRESSED != 0,
            }),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
            // A queue type the driver does not know: no formats, not an error.
            Err(e) if index == 0 && e.raw_os_error() == Some(libc::ENOTTY) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(formats)
}

/// Every frame size of a format, with the frame rates of each discrete size.
fn frame_sizes(dev: &Device, code: u32) -> io::Result<Vec<FrameSize>> {
    let fourcc = FourCC::from(code);
    let sizes = dev.enum_framesizes(fourcc)?;
    Ok(sizes
        .into_iter()
        .map(|size| match size.size {
            FrameSizeEnum::Discrete(d) => FrameSize::Discrete {
                width: d.width,
                height: d.height,
                rates: frame_rates(dev, fourcc, d.width, d.height),
            },
            FrameSizeEnum::Stepwise(s) => FrameSize::Stepwise {
                min_width: s.min_width,
                max_width: s.max_width,
                step_width: s.step_width,
                min_height: s.min_height,
                max_height: s.max_height,
                step_height: s.step_height,
            },
        })
        .collect())
}

fn frame_rates(dev: &Device, fourcc: FourCC, width: u32, height: u32) -> FrameRates {
    let Ok(intervals) = dev.enum_frameintervals(fourcc, width, height) else {
        return FrameRates::Unknown;
    };
    let mut discrete = Vec::new();
    for interval in intervals {
        match interval.interval {
            FrameIntervalEnum::Discrete(f) => discrete.extend(fps(&f)),
            // The shortest interval is the highest rate.
            FrameIntervalEnum::Stepwise(s) => {
                if let (Some(max), Some(min)) = (fps(&s.min), fps(&s.max)) {
                    return FrameRates::Range { min, max };
                }
            }
        }
    }
    if discrete.is_empty() {
        FrameRates::Unknown
    } else {
        FrameRates::Discrete { fps: discrete }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &[u8; 4]) -> u32 {
        u32::from_le_bytes(*text)
    }

    #[test]
    fn fourccs_print_as_v4l2_writes_them() {
        assert_eq!(fourcc_string(code(b"YUYV")), "YUYV");
        assert_eq!(fourcc_string(code(b"MJPG")), "MJPG");
        assert_eq!(fourcc_string(code(b"H264")), "H264");
        assert_eq!(fourcc_string(code(b"Y16 ")), "Y16");
        assert_eq!(fourcc_string(code(b"Y16 ") | FOURCC_BIG_ENDIAN), "Y16-BE");
        assert_eq!(fourcc_string(0x0000_0001), "0x00000001");
        // The crate's own FourCC agrees on the byte order.
        assert_eq!(u32::from(FourCC::new(b"NV12")), code(b"NV12"));
    }

    #[test]
    fn intervals_become_rates() {
        assert_eq!(fps_from_interval(1, 30), Some(Fps { num: 30, den: 1 }));
        assert_eq!(fps_from_interval(2, 15), Some(Fps { num: 15, den: 2 }));
        assert_eq!(fps_from_interval(1001, 30000).unwrap().to_string(), "29.97");
        assert_eq!(fps_from_interval(0, 30), None);
        assert_eq!(fps_from_interval(1, 0), None);
    }

    #[test]
    fn only_video_nodes_in_number_order() {
        assert_eq!(video_index("video0"), Some(0));
        assert_eq!(video_index("video12"), Some(12));
        assert_eq!(video_index("video"), None);
        assert_eq!(video_index("video+1"), None);
        assert_eq!(video_index("videox"), None);
        assert_eq!(video_index("vbi0"), None);
        let dir = std::env::temp_dir().join(format!("roomcast-v4l-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        for name in ["video10", "video2", "video0", "vide", "media0", "video-x"] {
            fs::write(dir.join(name), b"").unwrap();
        }
        let found: Vec<String> = nodes(&dir)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(found, ["video0", "video2", "video10"]);
        fs::remove_dir_all(&dir).ok();
        assert!(nodes(Path::new("/nonexistent-dir")).is_err());
    }

    fn format(fourcc: &[u8; 4], compressed: bool) -> RawFormat {
        RawFormat {
            code: code(fourcc),
            description: String::new(),
            compressed,
        }
    }

    #[test]
    fn nodes_are_classified_by_what_they_take_and_give() {
        let camera = CAP_VIDEO_CAPTURE | 0x0400_0000;
        assert_eq!(
            classify(camera, &[format(b"YUYV", false)], &[]),
            VideoKind::Camera
        );
        assert_eq!(classify(CAP_META_CAPTURE, &[], &[]), VideoKind::Metadata);
        assert_eq!(classify(0x0000_0002, &[], &[]), VideoKind::Other);
        let pi_encoder = CAP_VIDEO_M2M_MPLANE;
        assert_eq!(
            classify(
                pi_encoder,
                &[format(b"H264", true)],
                &[format(b"YU12", false)]
            ),
            VideoKind::M2mH264Encoder
        );
        assert_eq!(
            classify(
                pi_encoder,
                &[format(b"JPEG", true)],
                &[format(b"YU12", false)]
            ),
            VideoKind::M2mEncoder
        );
        assert_eq!(
            classify(
                CAP_VIDEO_M2M,
                &[format(b"NV12", false)],
                &[format(b"H264", true)]
            ),
            VideoKind::M2mDecoder
        );
        assert_eq!(
            classify(
                CAP_VIDEO_M2M,
                &[format(b"NV12", false)],
                &[format(b"YUYV", false)]
            ),
            VideoKind::M2mConverter
        );
        assert_eq!(
            queues(pi_encoder),
            (
                Some(BUF_VIDEO_CAPTURE_MPLANE),
                Some(BUF_VIDEO_OUTPUT_MPLANE)
            )
        );
        assert_eq!(queues(camera), (Some(BUF_VIDEO_CAPTURE), None));
        assert_eq!(
            capability_names(camera),
            ["video_capture".to_owned(), "streaming".to_owned()]
        );
    }

    #[test]
    fn a_missing_node_is_listed_with_the_reason() {
        let device = probe(Path::new("/dev/video-roomcast-test-missing"), &[]);
        assert_eq!(device.kind, VideoKind::Unknown);
        let error = device.error.unwrap();
        assert!(
            error.starts_with("cannot open /dev/video-roomcast-test-missing:"),
            "{error}"
        );
    }

    #[test]
    fn a_node_that_is_not_v4l2_is_listed_with_the_failed_query() {
        // /dev/null opens like any node, then refuses VIDIOC_QUERYCAP (ENOTTY).
        let device = probe(Path::new("/dev/null"), &[]);
        assert_eq!(device.kind, VideoKind::Unknown);
        assert!(device.card.is_none() && device.formats.is_empty());
        let error = device.error.unwrap();
        assert!(
            error.starts_with("/dev/null: VIDIOC_QUERYCAP failed:"),
            "{error}"
        );
    }

    #[test]
    fn permission_problems_name_the_group() {
        let e = DeviceError::open(
            "/dev/video0",
            "video",
            io::Error::from(io::ErrorKind::PermissionDenied),
        );
        assert!(
            e.to_string()
                .contains("permission denied; add the service user to group `video`"),
            "{e}"
        );
    }
}
