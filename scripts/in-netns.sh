#!/usr/bin/env bash
# Runs a command inside a private network namespace made for it: loopback plus a veth
# pair (10.77.0.1/24 <-> 10.77.0.2/24). Janus (libnice) never gathers ICE candidates on
# loopback, so the tests, the demo and the benchmarks run Janus, mosquitto, the agent and
# any peer in here. Nothing in the namespace can reach any other network.
set -euo pipefail
if [ "${ROOMCAST_NETNS:-}" = 1 ]; then
  exec "$@"
fi
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
