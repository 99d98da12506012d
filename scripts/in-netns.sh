#!/usr/bin/env bash
# Runs a command inside a private network namespace made for it. Janus (libnice) never
# gathers ICE candidates on loopback, so the tests, the demo and the benchmarks run Janus,
# mosquitto, the agent and any peer in here.
#
#   in-netns.sh CMD...              loopback plus a veth pair with both ends inside
#                                   (10.77.0.1/24 <-> 10.77.0.2/24). Nothing in the
#                                   namespace can reach any other network. The tests.
#   in-netns.sh --host-link CMD...  loopback plus a veth pair with ONE end in this host's
#                                   namespace: host 10.77.0.1/24, namespace 10.77.0.2/24.
#                                   A private point-to-point link, nothing else routed (no
#                                   default route, no forwarding), so that a browser on this
#                                   machine reaches Janus at 10.77.0.2 and its media flows
#                                   over the link. Needs root. The link and the namespace
#                                   are removed when CMD ends. The demo.
# Inside, ROOMCAST_NETNS=1; with --host-link also ROOMCAST_NETNS_ADDR=10.77.0.2.
set -euo pipefail
if [ "${ROOMCAST_NETNS:-}" = 1 ]; then
  [ "${1:-}" = "--host-link" ] && shift
  exec "$@"
fi

if [ "${1:-}" != "--host-link" ]; then
  unshare_flags=(-n)
  [ "$(id -u)" -eq 0 ] || unshare_flags=(-r -n)
  exec unshare "${unshare_flags[@]}" bash -c '
    set -e
    ip link set lo up
    ip link add rc0 type veth peer name rc1
    ip addr add 10.77.0.1/24 dev rc0
    ip addr add 10.77.0.2/24 dev rc1
    ip link set rc0 up
    ip link set rc1 up
    export ROOMCAST_NETNS=1
    exec "$@"' in-netns "$@"
fi

shift
host_addr=10.77.0.1
ns_addr=10.77.0.2
if [ "$(id -u)" -ne 0 ]; then
  echo "in-netns: --host-link needs root (it adds an interface to this host)" >&2
  exit 2
fi
if ip -o -4 addr show | grep -q " 10\.77\.0\.[0-9]*/"; then
  echo "in-netns: 10.77.0.0/24 is already on an interface of this host (another demo?):" >&2
  ip -o -4 addr show | grep " 10\.77\.0\." >&2
  exit 2
fi
ns=roomcast-$$
host_if=rc-h$$
ns_if=rc-n$$
child=
cleanup() {
  # Deleting either end removes the pair; the namespace goes with its last process.
  ip link del "$host_if" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$ns"
ip link add "$host_if" type veth peer name "$ns_if" netns "$ns"
ip addr add "$host_addr/24" dev "$host_if"
ip link set "$host_if" up
ip -n "$ns" link set lo up
ip -n "$ns" addr add "$ns_addr/24" dev "$ns_if"
ip -n "$ns" link set "$ns_if" up

# The command runs as a child, so that the link is removed after it however it ends.
# A background child ignores SIGINT, so Ctrl-C (and TERM, HUP) reach it as SIGTERM.
trap '[ -n "$child" ] && kill -TERM "$child" 2>/dev/null' INT TERM HUP
ROOMCAST_NETNS=1 ROOMCAST_NETNS_ADDR=$ns_addr ip netns exec "$ns" "$@" &
child=$!
status=0
while :; do
  wait "$child" && status=0 || status=$?
  kill -0 "$child" 2>/dev/null || break
done
exit "$status"
