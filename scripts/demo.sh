#!/usr/bin/env bash
# The main job, on one machine: a local Janus and mosquitto, and the roomcast agent on
# test sources, commanded over MQTT (roomcast ctl) to log in to "bigclass" and
# "group-3" and publish its main source into both. It serves the project's room page
# (tests/web/) and the operator console (roomcast console) and prints the URLs a person opens to be the teacher in bigclass or a
# student in group-3. Then it shows what happens: every event, and the state every 5 s.
# Ctrl-C stops everything (the agent leaves its rooms).
#
# Janus never does ICE on loopback, so all of it runs in a private network namespace
# (scripts/in-netns.sh). As root, that namespace gets a private point-to-point link to
# this host (host 10.77.0.1, namespace 10.77.0.2; nothing else routed), so a browser on
# this machine reaches Janus at 10.77.0.2 and media flows over the link. The page itself
# is served on http://localhost:PORT: a secure context, where browsers allow the camera
# (on http://10.77.0.2 they would not).
#
# Usage: ./scripts/demo.sh [--duration SECONDS] [--no-host-link]
#   ROOMCAST_DEMO_PORT  the page's port on localhost (default: 8080, or the next free one)
#   ROOMCAST_DEMO_CONSOLE_PORT  the operator console's (roomcast console) port on localhost
#                       (default: 8090, or the next free one)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

duration=0
host_link=1
while [ "$#" -gt 0 ]; do
  case "$1" in
    --duration) duration=${2:?seconds}; shift 2 ;;
    --no-host-link) host_link=0; shift ;;
    *) echo "usage: $0 [--duration SECONDS] [--no-host-link]" >&2; exit 2 ;;
  esac
done

if [ "${ROOMCAST_NETNS:-}" != 1 ]; then
  ./scripts/install-deps.sh
  cargo build --locked --bin roomcast
  if [ "$host_link" = 1 ] && [ "$(id -u)" -ne 0 ]; then
    echo "demo: not root, so no link to this host: the page cannot reach Janus from here"
    host_link=0
  fi
  if [ "$host_link" = 0 ]; then
    exec ./scripts/in-netns.sh "$0" --duration "$duration" --no-host-link
  fi

  # The page, on this host's loopback: tests/web/ plus Debian's janus.js and adapter.js
  # under /javascript/ (the layout tests/support/web.rs serves too).
  www=$(mktemp -d /tmp/roomcast-demo-www.XXXXXX)
  ln -s "$root"/tests/web/* "$www"/
  ln -s /usr/share/javascript "$www/javascript"
  port=${ROOMCAST_DEMO_PORT:-}
  if [ -z "$port" ]; then
    for port in $(seq 8080 8099); do
      (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break
    done
  fi
  python3 -m http.server --bind 127.0.0.1 --directory "$www" "$port" > "$www.log" 2>&1 &
  web_pid=$!
  # The operator console (roomcast console), on this host's loopback too: it reaches the
  # namespace's mosquitto and Janus over the link (it keeps retrying until they are up).
  console_port=${ROOMCAST_DEMO_CONSOLE_PORT:-}
  if [ -z "$console_port" ]; then
    for console_port in $(seq 8090 8109); do
      [ "$console_port" = "$port" ] && continue
      (exec 3<>"/dev/tcp/127.0.0.1/$console_port") 2>/dev/null || break
    done
  fi
  target/debug/roomcast console --broker mqtt://10.77.0.2:1883 \
    --listen "127.0.0.1:$console_port" --janus ws://10.77.0.2:8188/ > "$www.console.log" 2>&1 &
  console_pid=$!
  trap 'kill "$web_pid" "$console_pid" 2>/dev/null || true; rm -rf "$www" "$www.log" "$www.console.log"' EXIT
  python3 - "$port" "$console_port" <<'PY'
import sys, time, urllib.request
port, console = sys.argv[1], sys.argv[2]
for port, path in [(port, "/"), (port, "/roomcast.js"),
                   (port, "/javascript/janus-gateway/janus.js"),
                   (port, "/javascript/webrtc-adapter/adapter.js"),
                   (console, "/"), (console, "/javascript/janus-gateway/janus.js")]:
    for attempt in range(50):
        try:
            urllib.request.urlopen("http://127.0.0.1:%s%s" % (port, path), timeout=2).read()
            break
        except Exception as e:
            if attempt == 49:
                sys.exit("demo: nothing serves http://127.0.0.1:%s%s: %s" % (port, path, e))
            time.sleep(0.1)
PY
  status=0
  ROOMCAST_DEMO_PAGE="http://localhost:$port/" ROOMCAST_DEMO_CONSOLE="http://localhost:$console_port/" \
    ./scripts/in-netns.sh --host-link "$0" --duration "$duration" || status=$?
  exit "$status"
fi

bin="$root/target/debug/roomcast"
work=$(mktemp -d /tmp/roomcast-demo.XXXXXX)
# The services run in sessions of their own (setsid): Ctrl-C reaches only this script,
# which stops the agent first (it leaves its rooms), then the services.
pids=()
sleeper=
cleanup() {
  set +e
  [ -n "$sleeper" ] && kill "$sleeper" 2>/dev/null
  # The agent first (it leaves its rooms on SIGTERM), then the services.
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; sleep 0.5; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# With the host link, Janus's WebSocket and mosquitto also listen on the link's address.
link_addr=${ROOMCAST_NETNS_ADDR:-}
ws_ip=127.0.0.1
[ -n "$link_addr" ] && ws_ip=0.0.0.0

# Janus, from the same templates as the tests.
libdir=$(dirname "$(ls -d /usr/lib/*/janus/plugins | head -1)")
mkdir -p "$work/janus"
for f in tests/janus-config/*.jcfg; do
  sed -e "s#@CONFIG_DIR@#$work/janus#" -e "s#@JANUS_LIBDIR@#$libdir#" \
      -e "s#@ADMIN_SECRET@#demo-admin#" -e "s#@RTP_RANGE@#20000-20999#" \
      -e "s#@ADMIN_PORT@#7088#" -e "s#@WS_PORT@#8188#" -e "s#@WS_IP@#$ws_ip#" \
      -e "s#@EXTRA_GENERAL@##" \
      "$f" > "$work/janus/$(basename "$f")"
done
# From its folder: a core dump, should Janus crash, stays out of the repository.
(cd "$work" && exec setsid janus -C "$work/janus/janus.jcfg" -F "$work/janus" -o > "$work/janus.log" 2>&1) &
pids=("$!" "${pids[@]}")

# mosquitto (set_tcp_nodelay: see docs/mqtt.md).
{
  echo "listener 1883 127.0.0.1"
  echo "set_tcp_nodelay true"
  if [ -n "$link_addr" ]; then
    echo "listener 1883 $link_addr"
    echo "set_tcp_nodelay true"
  fi
  echo "allow_anonymous true"
  echo "persistence false"
  echo "log_dest stdout"
} > "$work/mosquitto.conf"
setsid mosquitto -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 &
pids=("$!" "${pids[@]}")

for port in 8188 1883; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
done

# The agent: the example config, pointed at the local services.
sed -e "s#^state_dir = .*#state_dir = \"$work/state\"#" config/roomcast.example.toml > "$work/roomcast.toml"
mkdir -p "$work/state"
"$bin" check-config --config "$work/roomcast.toml"
RUST_LOG=${RUST_LOG:-info} setsid "$bin" run --config "$work/roomcast.toml" --log-format text 2> "$work/agent.log" &
pids=("$!" "${pids[@]}")

ctl() { "$bin" ctl --broker mqtt://127.0.0.1:1883 --device box-17 "$@"; }
for _ in $(seq 100); do ctl get_state >/dev/null 2>&1 && break; sleep 0.1; done
setsid mosquitto_sub -h 127.0.0.1 -t 'roomcast/box-17/events' -v > "$work/events.log" &
pids=("$!" "${pids[@]}")

echo "== the agent is up; commanding it over MQTT"
ctl login_room room_id=bigclass
ctl login_room room_id=group-3
ctl start_publishing stream_id=box-17-main-bigclass room_id=bigclass channel=main
ctl start_publishing stream_id=box-17-main-group-3 room_id=group-3 channel=main
echo "== in two rooms, one encode. Events: $work/events.log, agent log: $work/agent.log"

if [ -n "$link_addr" ] && [ -n "${ROOMCAST_DEMO_PAGE:-}" ]; then
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/$link_addr/8188") 2>/dev/null && break; sleep 0.05; done
  janus_ws="ws://$link_addr:8188/"
  page=$ROOMCAST_DEMO_PAGE
  cat <<EOF
== Open the room page in a browser on this machine (Chromium, Chrome or Firefox):
   teacher in bigclass:  ${page}?room=bigclass&user=teacher&name=Ms%20Smith&janus=$janus_ws
   student in group-3:   ${page}?room=group-3&user=student-1&name=Student%201&janus=$janus_ws
   operator console:     ${ROOMCAST_DEMO_CONSOLE:-}
   (every box live, with buttons to log it in and out of rooms, publish, play, message)
   The box's test picture and tone play in both. "Start camera" publishes yours as
   <user>-cam; have the box play it and talk to the rooms from another terminal:
     $bin ctl --broker mqtt://$link_addr:1883 --device box-17 start_playing stream_id=teacher-cam room_id=bigclass
     $bin ctl --broker mqtt://$link_addr:1883 --device box-17 send_broadcast_message room_id=bigclass message=hello
     $bin ctl --broker mqtt://$link_addr:1883 --device box-17 logout_room room_id=group-3
EOF
else
  echo "== no link to this host (not root, or --no-host-link): the page is not reachable from here"
fi

summary() {
  ctl get_state | python3 -c "$(cat <<'PY'
import json, sys
state = json.load(sys.stdin)["result"]
print("rooms: " + ", ".join(r["room_id"] + " " + r["state"] + " (" + str(len(r["users"])) + " others)" for r in state["rooms"]))
for p in state["publishing"]:
    s = p["stats"]
    print("  publishing %-24s in %-9s %-11s %7d packets %7.2f MB  frames encoded %d" % (
        p["stream_id"], p["room_id"], p["state"], s.get("packets_sent", 0),
        s.get("bytes_sent", 0) / 1e6, s.get("frames_encoded", 0)))
for p in state["playing"]:
    s = p["stats"]
    print("  playing    %-24s in %-9s %-11s %7.2f MB  frames decoded %d" % (
        p["stream_id"], p["room_id"], p["state"], s.get("bytes_received", 0) / 1e6,
        s.get("frames_decoded", 0)))
PY
)"
}

started=$(date +%s)
while :; do
  sleep 5 & sleeper=$!
  wait "$sleeper" || true  # (a trapped signal interrupts wait, not sleep)
  summary
  if [ "$duration" -gt 0 ] && [ $(( $(date +%s) - started )) -ge "$duration" ]; then break; fi
done
