#!/usr/bin/env bash
# Runs vipswap beside HAProxy, nginx and Caddy against the same two backends
# and prints a table per scenario (see docs/performance.md). Installs what it
# needs from Debian when missing. Extra arguments go to the Go program, for
# example:
#   bench/run.sh -duration 10s -rounds 5
#   bench/run.sh -scenarios tls,h2,grpc -idle 0
#   bench/run.sh -scenarios http,scale -scale 10000
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for tool in haproxy nginx caddy wrk h2load perf; do
  pkg=$tool
  [ "$tool" = h2load ] && pkg=nghttp2-client
  [ "$tool" = perf ] && pkg=linux-perf # counts each proxy's system calls
  command -v "$tool" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Debian starts nginx and caddy as services on install; the benchmark runs
# its own, on its own ports.
systemctl stop nginx caddy 2>/dev/null || true

# Room for the idle-connection scenario.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec go run ./bench/compare "$@"
