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

# The dashboard test drives a real browser: Debian's Chromium.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing chromium (for the dashboard's browser test)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "The dashboard's browser test needs Chromium as 'chromium' on the PATH." >&2
    echo "Install it first: Debian/Ubuntu: sudo apt-get install chromium;" >&2
    echo "Fedora: sudo dnf install chromium; macOS: brew install --cask chromium" >&2
    echo "(then link its binary as 'chromium' if it is called otherwise)." >&2
    exit 1
  fi
fi
# The HAProxy driver's tests run a real HAProxy: Debian's haproxy.
if ! command -v haproxy >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing haproxy (for the HAProxy driver's tests)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null
  else
    echo "The HAProxy driver's tests need haproxy (2.4 or later) on the PATH." >&2
    echo "Install it first: Debian/Ubuntu: sudo apt-get install haproxy." >&2
    exit 1
  fi
fi
# The cluster tests run a real etcd: Debian's etcd-server.
if ! command -v etcd >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing etcd-server (for the cluster tests)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
  else
    echo "The cluster tests need etcd on the PATH." >&2
    echo "Install it first: Debian/Ubuntu: sudo apt-get install etcd-server;" >&2
    echo "elsewhere: https://etcd.io/docs/latest/install/" >&2
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

echo "== go test -race"
go test -race -count=1 ./...

echo "== benchmarks, once each"
go test -run '^$' -bench . -benchtime=1x ./...
