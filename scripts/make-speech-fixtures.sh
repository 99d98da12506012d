#!/usr/bin/env bash
# Makes the two voices of the echo-cancellation test (tests/audio_processing.rs), committed
# as tests/data/teacher.wav and tests/data/pupil.wav so that every run and every Debian
# release hears the same samples. Needs espeak-ng and gst-launch-1.0 (gstreamer1.0-tools,
# gstreamer1.0-plugins-good); run it again only to change the voices.
#
# Each voice is real speech with one band taken out, where the other voice is measured:
#   teacher (the far end, played on the box's speaker): no 300-900 Hz
#   pupil (the near end, the simulated room's talker):  no 1.3-3.3 kHz
# so that the test can tell the two apart in what the box publishes while both talk
# (tests/support/audio_meter.rs measures the pupil at 400-800 Hz, the teacher at
# 1.5-3 kHz), and the canceller still gets voices, not tones: a periodic far end
# (a fixed-pitch sawtooth) defeats GStreamer 1.26's canceller (docs/performance.md).
# Both are 8 s long, so that 8 s of measurement hear each whole.
set -euo pipefail
cd "$(dirname "$0")/.."
out=tests/data
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

espeak-ng -v en-us+f3 -s 160 -w "$tmp/teacher.wav" \
  "Good morning everyone. Today we look at the water cycle: the sun warms the sea, and the water rises into the air."
espeak-ng -v en-us+m3 -s 150 -w "$tmp/pupil.wav" \
  "Excuse me, why do some clouds look dark and others white? We saw a rainbow after the storm."

# band-reject LOW HIGH: a windowed-sinc filter (Blackman, 2,001 taps at 16 kHz), about
# 70 dB down in the band.
reject() {
  local name=$1 low=$2 high=$3
  gst-launch-1.0 -q filesrc location="$tmp/$name.wav" ! wavparse ! audioconvert ! audioresample ! \
    audio/x-raw,format=F32LE,rate=16000,channels=1 ! \
    audiowsincband mode=band-reject window=blackman length=2001 lower-frequency="$low" upper-frequency="$high" ! \
    audioconvert ! audio/x-raw,format=S16LE ! wavenc ! filesink location="$out/$name.wav"
}
reject teacher 300 900
reject pupil 1300 3300
# Each voice exactly 8 s long (cut, or padded with silence), so that a measurement of
# 8 s hears all of it whatever second it starts in.
for name in teacher pupil; do
  python3 - "$out/$name.wav" <<'PY'
import sys, wave
path = sys.argv[1]
with wave.open(path) as w:
    params, frames = w.getparams(), w.readframes(w.getnframes())
want = 8 * params.framerate * params.sampwidth
frames = frames[:want] + bytes(max(0, want - len(frames)))
with wave.open(path, "wb") as w:
    w.setparams(params)
    w.writeframes(frames)
PY
done
ls -l "$out/teacher.wav" "$out/pupil.wav"
