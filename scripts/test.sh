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

# need CMD PACKAGE WHY HINT: installs Debian's PACKAGE when CMD is missing
# and we may (root with apt-get); otherwise says how, and stops.
need() {
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing $2 ($3)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  else
    echo "$3: $1 must be on the PATH. Install it first: Debian/Ubuntu: sudo apt-get install $2; $4" >&2
    exit 1
  fi
}
# The dashboard test drives a real browser, the HAProxy driver's tests a real
# HAProxy (2.4 or later), the cluster tests a real etcd.
need chromium chromium "for the dashboard's browser test" \
  "Fedora: sudo dnf install chromium; macOS: brew install --cask chromium (then link its binary as 'chromium')."
need haproxy haproxy "for the HAProxy driver's tests" "elsewhere: https://www.haproxy.org/"
need etcd etcd-server "for the cluster tests" "elsewhere: https://etcd.io/docs/latest/install/"
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
