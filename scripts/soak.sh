#!/usr/bin/env bash
# The soak run (not a CI test: it takes half an hour). Two release-built agents, a local
# Janus and mosquitto, all in a private network namespace (scripts/in-netns.sh), driven
# by examples/soak.rs:
#   - box-17 (the box under test) in 5 rooms, publishing its main source into all 5
#     (one encode), and joining, publishing into and leaving a sixth room every 3 s;
#   - box-18 in the same 5 rooms, so broadcast messages and custom commands flow both ways;
#   - ~20 commands per second over MQTT to the two boxes; every one must get its reply;
#   - Janus killed and restarted every 5 minutes; the boxes must come back by themselves;
#   - box-17's RSS, open file descriptors, threads and CPU sampled every minute.
# The report (JSON) and every log are kept in target/soak/<date>/. Exit 0 when no command
# was lost and box-17 ended live in its 5 rooms.
#
# Usage: ./scripts/soak.sh [--minutes 30] [--rate 20] [--restart-every 300]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

minutes=30 rate=20 restart_every=300
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes=${2:?}; shift 2 ;;
    --rate) rate=${2:?}; shift 2 ;;
    --restart-every) restart_every=${2:?}; shift 2 ;;
    *) echo "usage: $0 [--minutes N] [--rate PER_SECOND] [--restart-every SECONDS]" >&2; exit 2 ;;
  esac
done

if [ "${ROOMCAST_NETNS:-}" != 1 ]; then
  ./scripts/install-deps.sh
  # The driver is nice'd here already: it must not compete with the agent it measures.
  # Two builds: an example turns on dev-dependency features (tokio's test-util), and
  # the agent measured must be the binary that ships.
  nice -n 10 cargo build --release --locked --bin roomcast
  nice -n 10 cargo build --release --locked --example soak
  export SOAK_OUT="$root/target/soak/$(date -u +%Y%m%dT%H%M%SZ)"
  mkdir -p "$SOAK_OUT"
  exec ./scripts/in-netns.sh "$0" --minutes "$minutes" --rate "$rate" --restart-every "$restart_every"
fi

bin="$root/target/release/roomcast"
driver="$root/target/release/examples/soak"
out=${SOAK_OUT:?}
work=$(mktemp -d /tmp/roomcast-soak.XXXXXX)
pids=()
cleanup() {
  # The agents first (they leave their rooms on SIGTERM), then the services.
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; sleep 0.5; done
  [ -f "$work/janus.pid" ] && kill -TERM "$(cat "$work/janus.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  cp "$work"/*.log "$out/" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# Janus, from the same templates as the tests; restartable by PID file.
libdir=$(dirname "$(ls -d /usr/lib/*/janus/plugins | head -1)")
mkdir -p "$work/janus"
for f in tests/janus-config/*.jcfg; do
  sed -e "s#@CONFIG_DIR@#$work/janus#" -e "s#@JANUS_LIBDIR@#$libdir#" \
      -e "s#@ADMIN_SECRET@#soak-admin#" -e "s#@RTP_RANGE@#20000-20999#" \
      -e "s#@ADMIN_PORT@#7088#" -e "s#@WS_PORT@#8188#" -e "s#@EXTRA_GENERAL@##" \
      "$f" > "$work/janus/$(basename "$f")"
done
cat > "$work/restart-janus.sh" <<EOF
#!/usr/bin/env bash
# Kills Janus (SIGKILL: a crash, as far as the boxes can tell) and starts a new one.
set -u
if [ -f "$work/janus.pid" ]; then
  old=\$(cat "$work/janus.pid")
  kill -KILL "\$old" 2>/dev/null
  while kill -0 "\$old" 2>/dev/null; do sleep 0.05; done
fi
echo "\$(date -u +%H:%M:%S) janus (re)start" >> "$work/janus.log"
janus -C "$work/janus/janus.jcfg" -F "$work/janus" -o >> "$work/janus.log" 2>&1 &
echo \$! > "$work/janus.pid"
for _ in \$(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/8188) 2>/dev/null && break; sleep 0.05; done
EOF
chmod +x "$work/restart-janus.sh"
"$work/restart-janus.sh"

cat > "$work/mosquitto.conf" <<EOF
listener 1883 127.0.0.1
allow_anonymous true
persistence false
set_tcp_nodelay true
log_dest stdout
EOF
mosquitto -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 &
pids=("$!" "${pids[@]}")
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null && break; sleep 0.05; done

# Two agents. box-17: room for the 5 live rooms plus the churn room; a 640x360 source
# (the machine is shared: the soak is about the agent, not the encoder).
agent_config() { # device max_rooms
  cat <<EOF
device_id = "$1"
state_dir = "$work/state-$1"
[identity]
user_id = "$1"
user_name = "Soak $1"
[rooms]
mode = "multi"
max_rooms = $2
multi_room_enabled = true
[sources.main]
video = "test"
width = 640
height = 360
framerate = 15
audio = "test"
[encoder]
bitrate_kbps = 600
[player]
audio_device = "null"
[mqtt]
url = "mqtt://127.0.0.1:1883"
[janus]
url = "ws://127.0.0.1:8188"
request_timeout_ms = 5000
EOF
}
for box in box-17:6 box-18:5; do
  device=${box%:*}
  mkdir -p "$work/state-$device"
  agent_config "$device" "${box#*:}" > "$work/$device.toml"
  "$bin" check-config --config "$work/$device.toml"
  RUST_LOG=${RUST_LOG:-info} "$bin" run --config "$work/$device.toml" --log-format text \
    2> "$work/agent-$device.log" &
  pids=("$!" "${pids[@]}")
  [ "$device" = box-17 ] && agent_pid=$!
done
for device in box-17 box-18; do
  for _ in $(seq 100); do
    "$bin" ctl --broker mqtt://127.0.0.1:1883 --device "$device" get_state >/dev/null 2>&1 && break
    sleep 0.1
  done
done

echo "== soak: $minutes min, $rate commands/s, Janus restarted every $restart_every s; box-17 is PID $agent_pid"
echo "== logs and the report: $out"
status=0
nice -n 10 "$driver" --broker mqtt://127.0.0.1:1883 --primary box-17 --peer box-18 \
  --agent-pid "$agent_pid" --minutes "$minutes" --rate "$rate" \
  --restart-every "$restart_every" --restart-cmd "$work/restart-janus.sh" \
  --report "$out/report.json" 2>&1 | tee "$work/driver.log" || status=$?
# The agents must still be running (no crash, no abort).
for pid in "${pids[@]}"; do
  kill -0 "$pid" 2>/dev/null || { echo "== soak: process $pid died during the run"; status=1; }
done
exit "$status"
