#!/usr/bin/env bash
# The whole test suite: formatting, vet, staticcheck, every test with the race
# detector, and every benchmark once so they keep working. CI runs exactly
# this (.ci/run). Real measurements are "make bench".
set -euo pipefail
cd "$(dirname "$0")/.."

STATICCHECK_VERSION=v0.7.0
# Go lives in /usr/local/go on our machines; a bare environment may lack it.
command -v go >/dev/null 2>&1 || export PATH="$PATH:/usr/local/go/bin"
export PATH="$(go env GOPATH)/bin:$PATH"
if ! staticcheck -version 2>/dev/null | grep -q "${STATICCHECK_VERSION#v}"; then
  echo "== installing staticcheck $STATICCHECK_VERSION"
  go install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
fi

# The tests drive a real browser (the dashboard), a real HAProxy (2.4 or
# later), a real etcd and h2load (the benchmark's). What is missing is installed from Debian's
# packages when we may (root with apt-get), after saying so; SKIP_INSTALL=1
# refuses: the tests that need a missing program are then skipped, and
# the run says which.
tools=(
  "chromium chromium for the dashboard's browser test"
  "haproxy haproxy for the HAProxy driver's tests"
  "etcd etcd-server for the cluster tests"
  "h2load nghttp2-client for the benchmark's HTTP/2 load generator"
)
missing=()
for t in "${tools[@]}"; do
  read -r cmd pkg why <<<"$t"
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing+=("$pkg ($why)")
done
if [ ${#missing[@]} -gt 0 ]; then
  list=$(printf '%s, ' "${missing[@]}")
  list=${list%, }
  if [ "${SKIP_INSTALL:-}" = 1 ]; then
    echo "== SKIP_INSTALL=1: not installing $list; the tests that need them are skipped"
    export VIPSWAP_SKIP_MISSING=1
  elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== about to install system-wide with apt-get (Debian packages): $list"
    echo "   (SKIP_INSTALL=1 ./scripts/test.sh refuses, and skips the tests that need them)"
    pkgs=()
    for m in "${missing[@]}"; do pkgs+=("${m%% *}"); done
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
  else
    echo "missing: $list." >&2
    echo "Install them first (Debian/Ubuntu: sudo apt-get install ${missing[*]%% *}; elsewhere: your package manager, https://www.haproxy.org/, https://etcd.io/docs/latest/install/)," >&2
    echo "or run SKIP_INSTALL=1 ./scripts/test.sh to skip the tests that need them." >&2
    exit 1
  fi
fi
# Tests leave what a person may want to look at (the dashboard screenshot)
# here; it is not committed.
export VIPSWAP_ARTIFACTS="$PWD/artifacts"
mkdir -p "$VIPSWAP_ARTIFACTS"

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi

echo "== go vet"
go vet ./...

echo "== staticcheck"
staticcheck ./...

echo "== builds for macOS and Windows"
# vipswap builds wherever Go does; what needs Linux says so when used.
GOOS=darwin go build ./...
GOOS=windows go build ./...

echo "== go test -race"
# A busy machine (CI, two cores shared) may take the process tests past
# go test's default 10 minutes per package: they wait on events, not time.
go test -race -count=1 -timeout 30m ./...

echo "== benchmarks, once each"
go test -run '^$' -bench . -benchtime=1x ./...
