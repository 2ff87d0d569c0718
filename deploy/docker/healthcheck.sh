#!/bin/sh
# HEALTHCHECK: GET /healthz on the relay's port, over TLS (self-signed, so not
# verified: this only asks the process inside this container whether it serves)
# or, with --insecure-plaintext, over plain HTTP.
set -eu
port=${CCRELAY_LISTEN##*:}
curl -fsS -k --max-time 4 "https://127.0.0.1:${port}/healthz" >/dev/null 2>&1 \
  || curl -fsS --max-time 4 "http://127.0.0.1:${port}/healthz" >/dev/null
