#!/usr/bin/env bash
# What bench/run.sh needs (Debian/Ubuntu). gcc builds the small wrk LD_PRELOAD shim.
set -euo pipefail
apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y nginx haproxy wrk nghttp2-client openssl curl python3 gcc libc6-dev
