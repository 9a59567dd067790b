#!/usr/bin/env bash
# Runs py-consul's own test suite (from its PyPI sdist) against a local agent and summarises it.
#
#   scripts/compat/pyconsul.sh                    # against Waypost (this checkout)
#   scripts/compat/pyconsul.sh --consul PATH      # against a real consul binary, e.g. 1.8.7
#   scripts/compat/pyconsul.sh --waypost-root DIR # against another Waypost tree (e.g. a
#                                                 # `git archive HEAD` export), run with this .venv
#   scripts/compat/pyconsul.sh [--version 1.8.0] [--out DIR] [-- extra pytest args]
#
# py-consul's fixtures start Consul in Docker; its root conftest.py is replaced by
# pyconsul_plugin.py, which starts `waypost agent -dev` / `consul agent -dev` on free ports with
# the fixture's config. Nothing of py-consul is kept in this repository: the sdist is downloaded
# at run time into DIR (default /tmp/compat-out). Tools go into their own venv
# ($COMPAT_VENV, default /tmp/waypost-compat-venv). Exit status: 0 when every failure is in
# known_failures.json, 1 otherwise. Raw output: DIR/<target>/{pytest.log,junit.xml,results.json,logs/}.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VERSION="1.8.0"
OUT="/tmp/compat-out"
CONSUL=""
WAYPOST_ROOT="$ROOT"
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --consul) CONSUL="$2"; shift 2 ;;
    --version) VERSION="$2"; shift 2 ;;
    --waypost-root) WAYPOST_ROOT="$(cd "$2" && pwd)"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

VENV="${COMPAT_VENV:-/tmp/waypost-compat-venv}"
PY="$VENV/bin/python"
STAMP="$VENV/.pyconsul-$VERSION"
if [ ! -f "$STAMP" ]; then
  python3 -m venv "$VENV"
  "$PY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  # py-consul's tests-requirements.txt minus linters, Docker and coverage; pytest-timeout so
  # that a hung request fails one test instead of the run.
  "$PY" -m pip install -q "py-consul==$VERSION" pytest pytest-asyncio pytest-timeout \
    aiohttp requests packaging 2> >(grep -v "is ignored: it is neither" >&2)
  touch "$STAMP"
fi

SRC="$OUT/src/py-consul-$VERSION"
if [ ! -d "$SRC" ]; then
  mkdir -p "$OUT/sdist" "$OUT/src"
  "$PY" -m pip download -q --no-deps --no-binary :all: "py-consul==$VERSION" -d "$OUT/sdist"
  tmp="$(mktemp -d "$OUT/src/.extract.XXXXXX")"
  tar -xzf "$OUT"/sdist/py[-_]consul-"$VERSION".tar.gz -C "$tmp"
  mv "$tmp"/py[-_]consul-"$VERSION" "$SRC"
  rmdir "$tmp"
  if [ ! -f "$SRC/conftest.py" ] || [ ! -d "$SRC/tests/api" ]; then
    echo "py-consul $VERSION's sdist lacks conftest.py or tests/api; use 1.8.0 or later" >&2
    exit 2
  fi
  # The Docker fixtures: kept for reference under another name, never collected.
  mv "$SRC/conftest.py" "$SRC/conftest_docker.py.orig"
fi
cp "$HERE/harness_test_fixture_config.py" "$SRC/tests/test_zz_harness.py"

if [ -n "$CONSUL" ]; then
  TARGET=consul
  TARGET_ARGS=(--compat-target consul --compat-consul "$(cd "$(dirname "$CONSUL")" && pwd)/$(basename "$CONSUL")")
else
  TARGET=waypost
  WPY="$ROOT/.venv/bin/python"
  [ -x "$WPY" ] || WPY="$(command -v python3)"
  TARGET_ARGS=(--compat-target waypost --compat-waypost-root "$WAYPOST_ROOT" --compat-waypost-python "$WPY")
  # Config keys Waypost refuses today; each one is a documented known failure.
  for key in $("$PY" -c 'import json,sys; print(" ".join(json.load(open(sys.argv[1]))["config_workarounds"]["waypost"]))' "$HERE/known_failures.json"); do
    TARGET_ARGS+=(--compat-drop-key "$key")
  done
fi

RUN="$OUT/$TARGET"
rm -rf "$RUN"
mkdir -p "$RUN"
echo "py-consul $VERSION suite against $TARGET; raw output in $RUN"
set +e
# --rootdir and -c pin py-consul's own pytest settings (asyncio_mode = "auto"): pytest would
# otherwise pick its rootdir from any existing path among the arguments, such as this checkout.
(cd "$SRC" && PYTHONPATH="$HERE" "$PY" -m pytest -p pyconsul_plugin -p no:cacheprovider \
   --rootdir "$SRC" -c "$SRC/pyproject.toml" -o addopts="" --timeout=300 -rA "${TARGET_ARGS[@]}" --compat-out "$RUN" \
   --junitxml="$RUN/junit.xml" tests "${EXTRA[@]}") >"$RUN/pytest.log" 2>&1
set -e
tail -n 1 "$RUN/pytest.log"
"$PY" "$HERE/summarize.py" --known "$HERE/known_failures.json" "$RUN/results.json"
