#!/usr/bin/env bash
# What bench/run.sh needs (Debian/Ubuntu). gcc builds the small wrk LD_PRELOAD shims; h2load is in
# nghttp2-client; GNU time measures the peak RSS of `meshgate validate` (config-scale).
set -euo pipefail
apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y nginx haproxy wrk nghttp2-client openssl curl python3 gcc libc6-dev time
