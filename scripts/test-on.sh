#!/usr/bin/env bash
# Runs roomcast's tests on another Debian release than this machine's: inside a root file
# system of that release, against ITS GStreamer, libsrtp, libnice, mosquitto, coturn and
# Chromium. scripts/test.sh keeps testing the machine it runs on.
#
#   scripts/test-on.sh debian13 [--full] [-- ARGS...]
#
#   (default)  the subset CI runs (SUBSET below): every integration area and the
#              workaround tests, in about half the full run's time.
#   --full     every test binary `cargo test` runs (all but the doctests, which need
#              rustdoc and test no system library).
#   ARGS       passed to every test binary, as `cargo test -- ARGS` would (e.g. a name
#              filter, --nocapture).
# Ends with "debian13: N passed, N failed" (tests, summed over the binaries); exits 1
# when any test binary failed.
#
# How it works, and why:
# - The root: scripts/apt-packages-debian13.txt, made with mmdebstrap (scripts/roots.sh)
#   under target/roots/debian13 and reused while that list is unchanged (~1.5 GB, made
#   in 2-4 min).
# - The test binaries are built here on the Debian 12 host (`cargo test --no-run`):
#   programs linked against glibc 2.36 run on Debian 13's 2.41, and they load the root's
#   own GStreamer 1.26 and libsrtp 2.7 at run time. So the code under test is the same
#   code scripts/test.sh tests; what changes is every library and service below it.
# - The root is entered with chroot, inside the private network namespace of
#   scripts/in-netns.sh and a private mount namespace: the repository is bind-mounted at
#   its own path (the binaries know their paths from the build: CARGO_MANIFEST_DIR,
#   CARGO_BIN_EXE_roomcast), with /proc, /sys, /dev, and tmpfs /tmp and /run. Nothing is
#   mounted in this host's namespace; it all goes away when the run ends.
# - Janus: Debian 13 has no `janus` package (nor libjs-janus-gateway). A real deployment
#   runs the room server on another machine anyway, so the tests use this host's Janus
#   1.1.2, the one scripts/test.sh tests with. The host's root is bind-mounted at /mnt
#   inside the test root and the harness starts Janus through ROOMCAST_TEST_JANUS, a
#   wrapper that execs `chroot /mnt /usr/bin/janus ...` (tests/support/janus.rs): Janus
#   runs with the host's libraries, in the same network namespace as the tests, reading
#   its config from a folder both see at the same path (TMPDIR, under target/).
#   janus.js comes from the host's libjs-janus-gateway, bind-mounted for the browser test.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
# shellcheck source=scripts/roots.sh
. scripts/roots.sh

# The CI subset: one entry per test binary, `NAME` (all its tests) or `NAME FILTER...`
# (libtest name filters: a test runs when its name contains one of them). It covers every
# integration area against Debian 13's libraries and services in about half the full
# run's time (measured: README, "Supported releases and boards"):
#   roomcast (lib)       every unit test, among them the fast paths' own (hops,
#                        fec_bypass), which fail when a shortcut stops engaging
#   fast_paths           every fast path engaged in a real publishing agent, each switch
#                        off alone (docs/workarounds.md): fails when one stops engaging.
#                        Not the untested-libsrtp case: it builds a C shim (no compiler
#                        in this root) and checks a version gate that is the same logic
#                        on every release
#   srtp_crypto          libsrtp 2.7's own SRTP vs roomcast's AES-ICM/HMAC-SHA1, byte for
#                        byte; fails when the replacement does not engage
#   audio_processing     echo cancellation end to end on webrtc-audio-processing 1.x
#                        (AEC3): the goals (20 dB, near end within 3 dB) asserted
#   janus_rooms          VideoRoom and TextRoom through the agent's Janus client
#   media_fanout         one encode into several rooms, the sending-path shortcut end to end
#   media_alsa           capture through Debian 13's alsa-lib and gstreamer1.0-alsa
#   e2e_browser          Debian 13's Chromium as a peer of the agent through Janus
#   mqtt_control         mosquitto 2.0.21: commands and events end to end, TLS, the ACL,
#                        the last will, mosquitto_pub/sub alone
#   service              sd_notify and the watchdog, SIGHUP, systemd-analyze of Debian 13
#   restrictive_network  coturn (TURN over TLS) when nftables drops UDP
#   faults               one room's Janus handle failing and coming back
#   server_fanout        Janus remote publishers: one upload relayed into every room
#   uplink               congestion control (rtpgccbwe) over a shaped 4 Mbit/s uplink
#   presets, cli, cli_devices, packaging, fuzz_seeds: fast, all of them
# `--full` runs every test of every binary.
SUBSET=(
  "roomcast"
  "fast_paths fast_paths_engage_where_checked"
  "srtp_crypto"
  "audio_processing"
  "janus_rooms"
  "media_fanout"
  "media_alsa"
  "e2e_browser"
  "mqtt_control publishing_and_playing_over_mqtt tls_with_a_client_certificate the_example_acl last_will mosquitto_pub_and_sub"
  "service notify_ready_status_watchdog sighup_refuses the_unit_rates"
  "restrictive_network udp_blocked_media_goes_through_turn_over_tls_verified"
  "faults one_rooms_handle_failing"
  "server_fanout one_upload_is_relayed_into_every_room"
  "uplink five_rooms_over_a_4_mbit_uplink"
  "presets"
  "cli"
  "cli_devices"
  "packaging"
  "fuzz_seeds"
)

usage() {
  echo "usage: $0 debian13 [--full] [-- ARGS...]" >&2
  exit 64
}

# ---- inside: the private network and mount namespaces (re-run by the outside part) ----
if [ "${1:-}" = __inside ]; then
  shift
  root=$1 run_dir=$2 list=$3
  shift 3
  # Private mounts: nothing below reaches this host's mount table.
  mount --make-rprivate /
  # The host's root first (before anything is mounted into the root, so it does not
  # carry those mounts): where the Janus wrapper chroots to.
  mount --rbind / "$root/mnt"
  mount -t proc proc "$root/proc"
  mount -t sysfs sysfs "$root/sys" # of this network namespace: /sys/class/net is ours
  mount --rbind /dev "$root/dev"
  mount -t tmpfs tmpfs "$root/tmp"
  mount -t tmpfs tmpfs "$root/run"
  mkdir -p "$root$repo"
  mount --bind "$repo" "$root$repo"
  target_dir=$(jq -r .target_directory "$run_dir/metadata.json")
  case "$target_dir" in "$repo"/*) ;; *)
    mkdir -p "$root$target_dir"
    mount --bind "$target_dir" "$root$target_dir"
    ;;
  esac
  js=/usr/share/javascript/janus-gateway
  if [ -d "$js" ]; then
    mkdir -p "$root$js"
    mount --bind -o ro "$js" "$root$js"
  fi
  janus=$(command -v janus)
  cat >"$run_dir/janus-from-host" <<EOF
#!/bin/sh
# Janus from the host (Debian 13 has no janus package): scripts/test-on.sh.
exec chroot /mnt $janus "\$@"
EOF
  chmod +x "$run_dir/janus-from-host"
  libdir=$(dirname "$(find /usr/lib -maxdepth 3 -type d -path '*/janus/plugins' | head -1)")
  mkdir -p "$run_dir/tmp" "$run_dir/cache"

  status=0
  # shellcheck disable=SC2016 # the sh -c script's variables are that shell's
  while IFS=$'\t' read -r name bin filters; do
    read -ra filter_args <<<"$filters"
    echo "     Running $name ($bin) in $(cat "$root/etc/debian_version" 2>/dev/null)"
    chroot "$root" /usr/bin/env -i \
      PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      HOME=/root TMPDIR="$run_dir/tmp" XDG_CACHE_HOME="$run_dir/cache" \
      LANG=C.UTF-8 RUST_BACKTRACE=1 ROOMCAST_NETNS=1 \
      ${RUST_LOG:+RUST_LOG=$RUST_LOG} \
      ROOMCAST_TEST_JANUS="$run_dir/janus-from-host" \
      ROOMCAST_TEST_JANUS_LIBDIR="$libdir" \
      CARGO_MANIFEST_DIR="$repo" \
      /bin/sh -c 'cd "$1" && shift && exec "$@"' sh "$repo" "$bin" "${filter_args[@]}" "$@" </dev/null ||
      status=1
  done <"$list"
  exit "$status"
fi

# ---- outside ----
[ "$#" -ge 1 ] || usage
release=$1
shift
[ "$release" = debian13 ] || {
  echo "test-on: only debian13 for now (scripts/test.sh tests this Debian 12 machine itself)" >&2
  exit 64
}
full=0
while [ "$#" -gt 0 ]; do
  case "$1" in
    --full) full=1; shift ;;
    --) shift; break ;;
    *) usage ;;
  esac
done
[ "$(id -u)" -eq 0 ] || {
  echo "test-on: needs root (chroot, mounts in a private namespace, mmdebstrap)" >&2
  exit 2
}
suite=$(release_suite "$release")
start=$SECONDS

# This host's side: the build, Janus, mmdebstrap, jq.
./scripts/install-deps.sh mmdebstrap jq
root=$roots_dir/$release
ensure_root "$root" "$suite" "$(package_list "scripts/apt-packages-$release.txt")"

run_dir=$repo/target/test-on/$release-$$
rm -rf "$run_dir"
mkdir -p "$run_dir"
trap 'rm -rf "$run_dir"' EXIT
cargo metadata --format-version 1 --no-deps --locked >"$run_dir/metadata.json"
# The test binaries, as `cargo test` builds them (a no-op after scripts/test.sh).
cargo test --no-run --locked --message-format=json >"$run_dir/build.json"
# name <TAB> executable, one per test binary: the library's unit tests as `roomcast`,
# the binary's as `roomcast-bin`, each tests/*.rs by its name.
jq -r 'select(.reason == "compiler-artifact" and .profile.test and .executable != null)
  | [(if .target.kind == ["bin"] then .target.name + "-bin" else .target.name end), .executable]
  | @tsv' "$run_dir/build.json" | sort >"$run_dir/all.tsv"

if [ "$full" = 1 ]; then
  cp "$run_dir/all.tsv" "$run_dir/list.tsv"
else
  : >"$run_dir/list.tsv"
  for entry in "${SUBSET[@]}"; do
    name=${entry%% *}
    filters=
    [ "$name" != "$entry" ] && filters=${entry#* }
    bin=$(awk -F'\t' -v n="$name" '$1 == n { print $2 }' "$run_dir/all.tsv")
    [ -n "$bin" ] || {
      echo "test-on: no test binary '$name' (SUBSET in $0 names one that is gone?)" >&2
      exit 1
    }
    printf '%s\t%s\t%s\n' "$name" "$bin" "$filters" >>"$run_dir/list.tsv"
  done
fi
echo "test-on: $release ($suite, $(cat "$root/etc/debian_version")): $(wc -l <"$run_dir/list.tsv") test binaries$([ "$full" = 1 ] && echo ", full run" || echo ", CI subset")"
# shellcheck disable=SC2016 # dpkg-query's format, not the shell's
chroot "$root" dpkg-query -W -f='  ${Package} ${Version}\n' \
  libgstreamer1.0-0 libsrtp2-1 libnice10 mosquitto coturn chromium 2>/dev/null || true

set +e
./scripts/in-netns.sh unshare -m --propagation private "$repo/scripts/test-on.sh" __inside "$root" "$run_dir" "$run_dir/list.tsv" "$@" 2>&1 |
  tee "$run_dir/output.log"
status=${PIPESTATUS[0]}
set -e
# Sum libtest's result lines: "test result: ok. 5 passed; 0 failed; 1 ignored; ...".
read -r passed failed < <(awk '/^test result:/ {
    for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i }
  } END { print p + 0, f + 0 }' "$run_dir/output.log")
binaries_failed=$(grep -c '^test result: FAILED' "$run_dir/output.log" || true)
echo "test-on: $release done in $((SECONDS - start)) s"
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
  # A binary that crashed or could not start prints no result line.
  failed=1
  echo "test-on: a test binary failed without a result line (crash, or could not start): see above"
fi
[ "$binaries_failed" -gt 0 ] && echo "test-on: $binaries_failed test binaries failed"
echo "$release: $passed passed, $failed failed"
[ "$status" -eq 0 ]
