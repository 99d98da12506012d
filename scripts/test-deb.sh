#!/usr/bin/env bash
# Builds roomcast's .deb for each supported Debian release and installs it in a root file
# system of that release: the dependency names and versions must exist there, and the
# package must install, run and set up its service.
#
#   scripts/test-deb.sh [debian12|debian13|all] [--release]
#
#   (default)  packages the debug binary `cargo test`/`cargo build` made (cargo-deb
#              strips it): fast, what CI runs. The package's metadata, maintainer
#              scripts and dependencies are the release package's.
#   --release  builds the release binary first (fat LTO: several minutes), the package
#              to ship: target/debian/roomcast_<version>_amd64.deb (Debian 12) and
#              roomcast_<version>-0+deb13_amd64.deb (Debian 13).
#
# Per release: a small root (mmdebstrap: the package's Depends and Recommends, systemd)
# cached under target/roots/deb-<release>; the checks run in a throw-away overlay of it,
# in private mount and network namespaces (nothing the package starts can reach a
# network). Checks: `dpkg -i` (every dependency satisfied by that release's packages),
# every library the binary links found, `roomcast --version`, `check-config` of the
# installed config run as the service user, the user and its groups, the config's owner
# and mode, the unit enabled, `roomcast run` started as the service runs it and stopped,
# `dpkg --purge` removing the user. Ends with "deb: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
# shellcheck source=scripts/roots.sh
. scripts/roots.sh

# The cargo-deb this script was written and tested with, installed under target/tools/.
cargo_deb_version=3.8.0

# ---- inside: private mount and network namespaces (re-run by the outside part) ----
if [ "${1:-}" = __inside ]; then
  root=$2 deb=$3 work=$4 version=$5
  mount --make-rprivate /
  ip link set lo up
  mkdir -p "$work/upper" "$work/work" "$work/merged"
  mount -t overlay overlay -o "lowerdir=$root,upperdir=$work/upper,workdir=$work/work" "$work/merged"
  m=$work/merged
  mount -t proc proc "$m/proc"
  mount --rbind /dev "$m/dev"
  mount -t tmpfs tmpfs "$m/run"
  cp "$deb" "$m/tmp/roomcast.deb"
  in_root() {
    chroot "$m" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"
  }
  passed=0 failed=0
  # check NAME EXPECTED COMMAND...: passes when COMMAND exits 0 and prints EXPECTED.
  check() {
    local name=$1 expected=$2 out rc
    shift 2
    set +e
    out=$("$@" 2>&1)
    rc=$?
    set -e
    printf '%s\n' "$out" | sed 's/^/    /'
    if [ "$rc" -eq 0 ] && [[ "$out" == *"$expected"* ]]; then
      echo "  ok   $name"
      passed=$((passed + 1))
    else
      echo "  FAIL $name: exit $rc, expected output containing '$expected'"
      failed=$((failed + 1))
    fi
  }
  check "dpkg -i (its dependencies are this release's packages)" "Setting up roomcast" \
    in_root dpkg -i /tmp/roomcast.deb
  check "every library roomcast links is found" "libgstreamer-1.0.so.0 =>" \
    in_root sh -c '! ldd /usr/bin/roomcast | grep "not found" && ldd /usr/bin/roomcast'
  check "roomcast --version" "roomcast $version" in_root roomcast --version
  check "the service user exists, in groups video and audio" "video audio" \
    in_root sh -c 'getent passwd roomcast && id -nG roomcast | tr " " "\n" | grep -x -e video -e audio | sort -r | paste -sd" "'
  check "the config is root:roomcast 0640 (it may hold secrets)" "root:roomcast 640" \
    in_root stat -c '%U:%G %a' /etc/roomcast/roomcast.toml
  check "check-config of the installed config, as the service user" "/etc/roomcast/roomcast.toml: ok" \
    in_root runuser -u roomcast -- roomcast check-config --config /etc/roomcast/roomcast.toml
  check "the unit is enabled (not started until configured)" "enabled" \
    in_root systemctl is-enabled roomcast.service
  # Started the way the unit starts it (its ExecStart, as its user with its groups, its
  # state and cache folders; setpriv execs, so the PID is roomcast's) for 3 s: it must
  # come up and stay up with the shipped config (the broker and Janus it names are
  # unreachable: no network here), then exit 0 on SIGTERM within the unit's
  # TimeoutStopSec (10 s).
  exec_start=$(in_root sh -c 'sed -n "s/^ExecStart=//p" /usr/lib/systemd/system/roomcast.service')
  check "roomcast run as the unit starts it: up for 3 s, exits 0 on SIGTERM" "exited 0 on SIGTERM" \
    in_root sh -c "mkdir -p /var/lib/roomcast /var/cache/roomcast &&
      chown roomcast:roomcast /var/lib/roomcast /var/cache/roomcast &&
      HOME=/var/lib/roomcast XDG_CACHE_HOME=/var/cache/roomcast \
        setpriv --reuid=roomcast --regid=roomcast --init-groups -- $exec_start >/tmp/run.log 2>&1 &
      pid=\$!; sleep 3
      if ! kill -0 \$pid 2>/dev/null; then echo 'exited early:'; cat /tmp/run.log; exit 1; fi
      kill -TERM \$pid; i=0
      while kill -0 \$pid 2>/dev/null && [ \$i -lt 100 ]; do sleep 0.1; i=\$((i + 1)); done
      if kill -0 \$pid 2>/dev/null; then echo 'still running 10 s after SIGTERM'; kill -KILL \$pid; exit 1; fi
      wait \$pid; rc=\$?
      tail -n 3 /tmp/run.log; echo \"exited \$rc on SIGTERM after \$((i / 10)).\$((i % 10)) s\""
  check "dpkg --purge removes the package and its user" "purged" \
    in_root sh -c 'dpkg --purge roomcast >/dev/null && ! getent passwd roomcast && echo purged'
  echo "$passed $failed" >"$work/result"
  exit 0
fi

# ---- outside ----
which=all
profile_args=(--no-build --profile dev)
while [ "$#" -gt 0 ]; do
  case "$1" in
    debian12 | debian13 | all) which=$1; shift ;;
    --release) profile_args=(--locked); shift ;;
    *) echo "usage: $0 [debian12|debian13|all] [--release]" >&2; exit 64 ;;
  esac
done
[ "$which" = all ] && releases=(debian12 debian13) || releases=("$which")
[ "$(id -u)" -eq 0 ] || {
  echo "test-deb: needs root (mmdebstrap, chroot, mounts in a private namespace)" >&2
  exit 2
}
start=$SECONDS
./scripts/install-deps.sh mmdebstrap dpkg-dev

tools=$repo/target/tools
if [ "$("$tools/bin/cargo-deb" --version 2>/dev/null)" != "cargo-deb $cargo_deb_version" ]; then
  echo "test-deb: installing cargo-deb $cargo_deb_version under $tools"
  cargo install --locked --quiet cargo-deb --version "$cargo_deb_version" --root "$tools"
fi
export PATH=$tools/bin:$PATH
version=$(cargo metadata --format-version 1 --no-deps --locked | jq -r '.packages[] | select(.name == "roomcast") | .version')
if [ "${profile_args[0]}" = --no-build ]; then
  cargo build --locked --bin roomcast
fi

work=$repo/target/test-deb/run-$$
trap 'rm -rf "$work"' EXIT
total_passed=0 total_failed=0
for release in "${releases[@]}"; do
  suite=$(release_suite "$release")
  variant=()
  [ "$release" = debian12 ] || variant=(--variant "$release")
  echo "test-deb: $release ($suite)"
  # cargo-deb warns that the dev profile is for testing only: that is what it is here.
  deb=$(cargo deb "${profile_args[@]}" "${variant[@]}" 2> >(grep -v "dev profile is not supported\|To enable debug symbols" >&2) | tail -n 1)
  echo "  $deb: $(dpkg-deb -f "$deb" Version)"
  dpkg-deb -f "$deb" Depends | sed 's/^/  Depends: /'
  # The root: what the package needs (first of any alternatives, versions left to dpkg -i),
  # and systemd for the unit.
  needs=$(dpkg-deb -f "$deb" Depends Recommends | sed 's/^[A-Za-z-]*: //' | tr ',' '\n' |
    sed 's/|.*//; s/(.*)//; s/[[:space:]]//g' | grep -v '^$' | sort -u | paste -sd, -)
  ensure_root "$roots_dir/deb-$release" "$suite" "$needs,systemd"
  mkdir -p "$work/$release"
  unshare -m -n --propagation private "$repo/scripts/test-deb.sh" __inside \
    "$roots_dir/deb-$release" "$deb" "$work/$release" "$version"
  read -r p f <"$work/$release/result"
  echo "  $release: $p passed, $f failed"
  total_passed=$((total_passed + p))
  total_failed=$((total_failed + f))
done
echo "test-deb: done in $((SECONDS - start)) s"
echo "deb: $total_passed passed, $total_failed failed"
[ "$total_failed" -eq 0 ]
