#!/bin/sh
# Container entrypoint: make sure the owner keys file exists (ccrelay refuses to
# start without a readable one), add $CCRELAY_OWNER_KEY to it once, then run
# `ccrelay serve` with the container's command as its options.
set -eu
keys=${CCRELAY_AUTHORIZED_KEYS:-/data/authorized_keys}
umask 077
[ -e "$keys" ] || : >"$keys"
if [ -n "${CCRELAY_OWNER_KEY:-}" ] && ! grep -qxF "$CCRELAY_OWNER_KEY" "$keys"; then
  printf '%s\n' "$CCRELAY_OWNER_KEY" >>"$keys"
fi
exec ccrelay serve "$@"
