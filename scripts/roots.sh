# shellcheck shell=bash disable=SC2034
# (SC2034: roots_dir is used by the scripts that source this file.)
# Sourced by scripts/test-on.sh and scripts/test-deb.sh (not run): root file systems of
# the Debian releases roomcast supports, made with mmdebstrap from Debian's own packages
# and cached under target/roots/ (ROOMCAST_ROOTS_DIR overrides), so that CI's cache of
# target/ keeps them. A root is stamped with what it was made from (suite, variant,
# packages): a changed list makes a new root, an unchanged one is reused.
#
# A root is only ever entered inside a private mount namespace (`unshare -m`): whatever
# is mounted into it goes away with that namespace, so removing a stale root can never
# reach through a leftover bind mount into this machine's files (checked anyway).

roots_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
roots_dir=${ROOMCAST_ROOTS_DIR:-$roots_repo/target/roots}

# release_suite RELEASE: the Debian suite of a release name roomcast's scripts take.
release_suite() {
  case "$1" in
    debian12) echo bookworm ;;
    debian13) echo trixie ;;
    *)
      echo "unknown release '$1': use debian12 or debian13" >&2
      return 64
      ;;
  esac
}

# package_list FILE: the names in a package list (one a line, `#` comments), comma-joined.
package_list() {
  grep -v '^\s*#' "$1" | sed 's/\s*#.*//' | grep -v '^\s*$' | paste -sd, -
}

roots_as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# ensure_root DIR SUITE PACKAGES: (re)makes DIR, a Debian SUITE root (mmdebstrap's `apt`
# variant: essential packages and apt) with the comma-separated PACKAGES, unless its
# stamp is current. Made beside DIR and renamed into place: an interrupted run never
# leaves half a root. No mirror is named: mmdebstrap then takes Debian's default mirror
# and, for a stable suite, adds its updates and security sources.
ensure_root() {
  local dir=$1 suite=$2 packages=$3 stamp tmp start
  stamp=$(printf '%s\n' "$suite" apt "$packages" | sha256sum | cut -d' ' -f1)
  if [ -f "$dir/.roomcast-stamp" ] && [ "$(cat "$dir/.roomcast-stamp")" = "$stamp" ]; then
    echo "roots: $dir ($suite) is current"
    return 0
  fi
  command -v mmdebstrap >/dev/null || {
    echo "roots: installing mmdebstrap"
    roots_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    roots_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends mmdebstrap
  }
  tmp=$dir.new
  for d in "$dir" "$tmp"; do
    if findmnt -rn -o TARGET | grep -q "^$d/"; then
      echo "roots: something is mounted under $d (a test run still going?): not removing it" >&2
      return 1
    fi
  done
  roots_as_root rm -rf "$tmp"
  mkdir -p "$(dirname "$dir")"
  echo "roots: making $dir ($suite: $packages)"
  start=$SECONDS
  roots_as_root mmdebstrap --quiet --variant=apt --include="$packages" "$suite" "$tmp"
  echo "$stamp" | roots_as_root tee "$tmp/.roomcast-stamp" >/dev/null
  roots_as_root rm -rf "$dir"
  roots_as_root mv "$tmp" "$dir"
  echo "roots: $dir ready in $((SECONDS - start)) s, $(du -sh "$dir" | cut -f1)"
}
