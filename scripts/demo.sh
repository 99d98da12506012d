#!/usr/bin/env bash
# The main job, on one machine: a local Janus and mosquitto, and the roomcast agent on
# test sources, commanded over MQTT (roomcast ctl) to log in to "bigclass" and
# "group-3" and publish its main source into both. Then it shows what happens: every
# event, and the state every 5 s. Ctrl-C stops everything (the agent leaves its rooms).
#
# Janus never does ICE on loopback, so all of it runs in a private network namespace
# (scripts/in-netns.sh). Usage: ./scripts/demo.sh [--duration SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

duration=0
if [ "${1:-}" = "--duration" ]; then duration=${2:?seconds}; fi

if [ "${ROOMCAST_NETNS:-}" != 1 ]; then
  ./scripts/install-deps.sh
  cargo build --locked --bin roomcast
  exec ./scripts/in-netns.sh "$0" "$@"
fi

bin="$root/target/debug/roomcast"
work=$(mktemp -d /tmp/roomcast-demo.XXXXXX)
pids=()
cleanup() {
  # The agent first (it leaves its rooms on SIGTERM), then the services.
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; sleep 0.5; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# Janus, from the same templates as the tests.
libdir=$(dirname "$(ls -d /usr/lib/*/janus/plugins | head -1)")
mkdir -p "$work/janus"
for f in tests/janus-config/*.jcfg; do
  sed -e "s#@CONFIG_DIR@#$work/janus#" -e "s#@JANUS_LIBDIR@#$libdir#" \
      -e "s#@ADMIN_SECRET@#demo-admin#" -e "s#@RTP_RANGE@#20000-20999#" \
      -e "s#@ADMIN_PORT@#7088#" -e "s#@WS_PORT@#8188#" -e "s#@EXTRA_GENERAL@##" \
      "$f" > "$work/janus/$(basename "$f")"
done
janus -C "$work/janus/janus.jcfg" -F "$work/janus" -o > "$work/janus.log" 2>&1 &
pids=("$!" "${pids[@]}")

# mosquitto (set_tcp_nodelay: see docs/mqtt.md).
cat > "$work/mosquitto.conf" <<EOF
listener 1883 127.0.0.1
allow_anonymous true
persistence false
set_tcp_nodelay true
log_dest stdout
EOF
mosquitto -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 &
pids=("$!" "${pids[@]}")

for port in 8188 1883; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
done

# The agent: the example config, pointed at the local services.
sed -e "s#^state_dir = .*#state_dir = \"$work/state\"#" config/roomcast.example.toml > "$work/roomcast.toml"
mkdir -p "$work/state"
"$bin" check-config --config "$work/roomcast.toml"
RUST_LOG=${RUST_LOG:-info} "$bin" run --config "$work/roomcast.toml" --log-format text 2> "$work/agent.log" &
pids=("$!" "${pids[@]}")

ctl() { "$bin" ctl --broker mqtt://127.0.0.1:1883 --device box-17 "$@"; }
for _ in $(seq 100); do ctl get_state >/dev/null 2>&1 && break; sleep 0.1; done
mosquitto_sub -h 127.0.0.1 -t 'roomcast/box-17/events' -v > "$work/events.log" &
pids=("$!" "${pids[@]}")

echo "== the agent is up; commanding it over MQTT"
ctl login_room room_id=bigclass
ctl login_room room_id=group-3
ctl start_publishing stream_id=box-17-main-bigclass room_id=bigclass channel=main
ctl start_publishing stream_id=box-17-main-group-3 room_id=group-3 channel=main
echo "== in two rooms, one encode. Events: $work/events.log, agent log: $work/agent.log"

summary() {
  ctl get_state | python3 -c "$(cat <<'PY'
import json, sys
state = json.load(sys.stdin)["result"]
print("rooms: " + ", ".join(r["room_id"] + " " + r["state"] for r in state["rooms"]))
for p in state["publishing"]:
    s = p["stats"]
    print("  %-24s in %-9s %-11s %7d packets %7.2f MB  frames encoded %d" % (
        p["stream_id"], p["room_id"], p["state"], s.get("packets_sent", 0),
        s.get("bytes_sent", 0) / 1e6, s.get("frames_encoded", 0)))
PY
)"
}

started=$(date +%s)
while :; do
  sleep 5
  summary
  if [ "$duration" -gt 0 ] && [ $(( $(date +%s) - started )) -ge "$duration" ]; then break; fi
done
