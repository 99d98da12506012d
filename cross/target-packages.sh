#!/usr/bin/env bash
# Prints the package names in cross/target-packages.txt, one a line.
#   target-packages.sh build   those marked `build` (what the cross images install)
#   target-packages.sh all     every package (what the sysroot of cross/build.sh holds)
# A malformed line is an error, so a typo cannot silently drop a package.
set -euo pipefail
want=${1:-all}
case "$want" in build | all) ;; *)
  echo "usage: $0 build|all" >&2
  exit 64
  ;;
esac
awk -v want="$want" '
  { sub(/#.*/, "") }
  NF == 0 { next }
  NF != 2 || ($2 != "build" && $2 != "run") {
    printf "target-packages.txt:%d: expected \"<package> build|run\", got \"%s\"\n", NR, $0 > "/dev/stderr"
    bad = 1
    next
  }
  want == "all" || $2 == want { print $1 }
  END { exit bad }
' "$(dirname "$0")/target-packages.txt"
