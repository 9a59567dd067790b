#!/bin/sh
# Make and check the gossip codec's golden vectors with the real memberlist 0.2.2 (Debian's
# golang-github-hashicorp-memberlist-dev sources under /usr/share/gocode, GOPATH mode, no network).
#   1. writes Waypost's own encodings to $GOLDEN_DIR/py_vectors.json (pyvectors.py)
#   2. go_vectors.json: bytes memberlist produced; go_check.json: memberlist decoding ours.
# GOLDEN_DIR defaults to tests/data/gossip; commit the three files after a run.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
src=${MEMBERLIST_SRC:-/usr/share/gocode/src/github.com/hashicorp/memberlist}
out=$(cd "${GOLDEN_DIR:-$repo/tests/data/gossip}" && pwd)
python=${PYTHON:-$repo/.venv/bin/python}
go=${GO:-/usr/bin/go}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pkg=$work/src/github.com/hashicorp/memberlist
mkdir -p "$pkg"
for f in "$src"/*.go; do
    case "$f" in *_test.go) ;; *) cp "$f" "$pkg/" ;; esac
done
cp -r "$src/vendor" "$pkg/"
cp "$here/golden_test.go" "$pkg/"

(cd "$repo" && "$python" "$here/pyvectors.py") > "$out/py_vectors.json"
cd "$pkg"
[ -n "${HOME:-}" ] || export GOCACHE="${GOCACHE:-$work/gocache}"
GOPATH="$work:/usr/share/gocode" GO111MODULE=off GOFLAGS= GOLDEN_DIR="$out" \
    "$go" test -count=1 -vet=off -run 'TestGolden(Generate|Check)' .
