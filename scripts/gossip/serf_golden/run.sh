#!/bin/sh
# Build and run the Serf golden-vector tool against the Debian serf 0.9.4 sources.
#   run.sh encode OUT.json          vectors Serf writes
#   run.sh decode IN.json OUT.json  Serf decodes each vector of IN and encodes it again
# Needs /usr/bin/go and /usr/share/gocode (golang-github-hashicorp-serf-dev); works offline.
set -eu
mode=$1
here=$(cd "$(dirname "$0")" && pwd)
gocode=${GOCODE:-/usr/share/gocode}
work=${SERF_GOLDEN_WORK:-${TMPDIR:-/tmp}/waypost-serf-golden}
pkg=$work/src/github.com/hashicorp/serf/serf
mkdir -p "$pkg"
for f in "$gocode"/src/github.com/hashicorp/serf/serf/*.go; do
  case $f in *_test.go) ;; *) ln -sf "$f" "$pkg/" ;; esac
done
cp "$here/golden_test.go" "$pkg/zz_waypost_golden_test.go"
abs() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
if [ "$mode" = encode ]; then
  export SERF_GOLDEN_MODE=encode SERF_GOLDEN_OUT=$(abs "$2")
else
  export SERF_GOLDEN_MODE=decode SERF_GOLDEN_IN=$(abs "$2") SERF_GOLDEN_OUT=$(abs "$3")
fi
cd "$pkg"
GOPATH="$work:$gocode" GO111MODULE=off GOFLAGS= GOCACHE="$work/cache" GOPROXY=off \
  ${GO:-/usr/bin/go} test -count=1 -run '^TestGolden$' . >"$work/go-test.log" 2>&1 \
  || { cat "$work/go-test.log" >&2; exit 1; }
