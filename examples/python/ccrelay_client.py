#!/usr/bin/env python3
"""A small, complete ccrelay client in Python, written from docs/protocol.md alone.

It authenticates with an SSH key, attaches to the `default` session, sends one
prompt, answers the permission prompt that prompt causes, disconnects on
purpose after the answer and resumes on a new connection with `since` = the
last seq it saw, until the turn has ended.

    python3 ccrelay_client.py ws://127.0.0.1:7878/v1/ws --key ~/.ssh/id_ed25519
    python3 ccrelay_client.py URL --agent --key ~/.ssh/id_ed25519.pub   # ssh-agent signs
    python3 ccrelay_client.py URL --key KEY --prompt 'please run-bash echo hi' --deny

Signing: by default `ssh-keygen -Y sign` (any key type ssh-keygen supports);
with --agent the SSHSIG is built here and the raw signature is asked of the
ssh-agent at $SSH_AUTH_SOCK (key chosen by --key, a .pub file or key file with
a .pub beside it; without --key the agent's first key).

Origin binding: the signed text is never the bare challenge but
`<sign>:origin:<origin>`, the challenge bound to the origin this client dialed
(`ws://127.0.0.1:7878` for the URL above), sent along as `origin`; a server
that relays the challenge to another one gets a signature naming itself,
which the other server refuses. A server reached under a name it does not
know (a forwarded port, a proxy's name) refuses it too, until it is started
with `--server-name HOST:PORT` naming that address.

--bad-signature signs other bytes than the bound text (a deliberately wrong
signature) and reports the server's refusal.

Needs: Python 3.9+, `pip install websockets` (14 or later), OpenSSH's ssh-keygen.
Exit status: 0 the turn ended; 2 usage; 3 authentication refused; 1 other errors.
"""

import argparse
import asyncio
import base64
import hashlib
import ipaddress
import json
import os
import socket
import struct
import subprocess
import sys
import urllib.parse
import uuid

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

NAMESPACE = "ccrelay-auth"
# Event frames can carry an agent line of up to 32 MiB: accept 64 MiB frames.
MAX_FRAME = 64 * 1024 * 1024


def out(*parts):
    """One line on stdout, flushed (the CI test reads it as it comes)."""
    print(*parts, flush=True)


# ---------------------------------------------------------------- signing --

DEFAULT_PORTS = {"ws": 80, "wss": 443}


def dialed_origin(url):
    """The origin a signature is bound to: the scheme, host and port of the URL
    this client dials, serialized as a browser serializes an origin (lower case,
    IDNA for a non-ASCII name, an IPv6 address in brackets in its RFC 5952 form,
    the port left out when it is the scheme's default): ws://127.0.0.1:7878."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"not a ws:// or wss:// URL: {url}")
    host = parts.hostname  # lower-cased, without brackets
    try:
        host = "[" + ipaddress.IPv6Address(host).compressed + "]"
    except ValueError:
        if not host.isascii():
            host = host.encode("idna").decode("ascii")
    port = parts.port  # raises ValueError for a port out of range
    if port is None or port == DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def bound_text(sign, origin):
    """What is signed: the challenge's `sign` bound to the origin dialed."""
    return f"{sign}:origin:{origin}"


def sign_with_ssh_keygen(key_path, text):
    """`printf '%s' "$SIGN" | ssh-keygen -Y sign -n ccrelay-auth -f KEY`."""
    done = subprocess.run(
        ["ssh-keygen", "-q", "-Y", "sign", "-n", NAMESPACE, "-f", key_path],
        input=text.encode("utf-8"),  # exactly the bytes, no trailing newline
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError("ssh-keygen -Y sign failed: " + done.stderr.decode(errors="replace"))
    return done.stdout.decode("ascii")


def ssh_string(data):
    return struct.pack(">I", len(data)) + data


def read_string(buf, offset):
    (length,) = struct.unpack_from(">I", buf, offset)
    start = offset + 4
    return buf[start:start + length], start + length


class SshAgent:
    """Just enough of the ssh-agent protocol (draft-miller-ssh-agent): list keys, sign."""

    REQUEST_IDENTITIES = 11
    IDENTITIES_ANSWER = 12
    SIGN_REQUEST = 13
    SIGN_RESPONSE = 14
    RSA_SHA2_512 = 4  # flag: an rsa-sha2-512 signature for ssh-rsa keys

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)

    def _call(self, payload):
        self.sock.sendall(struct.pack(">I", len(payload)) + payload)
        header = self._read(4)
        (length,) = struct.unpack(">I", header)
        return self._read(length)

    def _read(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise RuntimeError("ssh-agent closed the connection")
            data += chunk
        return data

    def identities(self):
        reply = self._call(bytes([self.REQUEST_IDENTITIES]))
        if reply[0] != self.IDENTITIES_ANSWER:
            raise RuntimeError("ssh-agent refused to list keys")
        (count,) = struct.unpack_from(">I", reply, 1)
        offset, keys = 5, []
        for _ in range(count):
            blob, offset = read_string(reply, offset)
            comment, offset = read_string(reply, offset)
            keys.append((blob, comment.decode(errors="replace")))
        return keys

    def sign(self, key_blob, data):
        key_type, _ = read_string(key_blob, 0)
        flags = self.RSA_SHA2_512 if key_type == b"ssh-rsa" else 0
        reply = self._call(bytes([self.SIGN_REQUEST]) + ssh_string(key_blob)
                           + ssh_string(data) + struct.pack(">I", flags))
        if reply[0] != self.SIGN_RESPONSE:
            raise RuntimeError("ssh-agent refused to sign (is the key loaded?)")
        signature, _ = read_string(reply, 1)
        return signature


def sign_with_agent(key_path, text):
    """Build an SSHSIG (OpenSSH PROTOCOL.sshsig) around a signature from ssh-agent."""
    sock = os.environ.get("SSH_AUTH_SOCK")
    if not sock:
        raise RuntimeError("--agent needs SSH_AUTH_SOCK")
    agent = SshAgent(sock)
    keys = agent.identities()
    if not keys:
        raise RuntimeError("the ssh-agent holds no keys")
    blob = keys[0][0]
    if key_path:
        pub = key_path if key_path.endswith(".pub") else key_path + ".pub"
        with open(pub, encoding="utf-8") as f:
            wanted = base64.b64decode(f.read().split()[1])
        if wanted not in [k for k, _ in keys]:
            raise RuntimeError(pub + ": this key is not in the ssh-agent")
        blob = wanted
    hash_alg = b"sha512"
    reserved = b""
    # The signed data: MAGIC, namespace, reserved, hash algorithm, H(message).
    signed = (b"SSHSIG" + ssh_string(NAMESPACE.encode()) + ssh_string(reserved)
              + ssh_string(hash_alg) + ssh_string(hashlib.sha512(text.encode("utf-8")).digest()))
    signature = agent.sign(blob, signed)
    sshsig = (b"SSHSIG" + struct.pack(">I", 1) + ssh_string(blob)
              + ssh_string(NAMESPACE.encode()) + ssh_string(reserved)
              + ssh_string(hash_alg) + ssh_string(signature))
    b64 = base64.b64encode(sshsig).decode("ascii")
    lines = [b64[i:i + 70] for i in range(0, len(b64), 70)]
    return "-----BEGIN SSH SIGNATURE-----\n" + "\n".join(lines) + "\n-----END SSH SIGNATURE-----\n"


# ----------------------------------------------------------- the protocol --

class Refused(Exception):
    """The server refused authentication (error code, close code)."""


class Client:
    def __init__(self, args):
        self.args = args
        self.request_no = 0

    async def connect(self):
        """Open a connection and authenticate; returns the websocket."""
        ws = await connect(self.args.url, max_size=MAX_FRAME)
        challenge = json.loads(await ws.recv())
        if challenge.get("type") != "auth.challenge":
            raise RuntimeError("expected auth.challenge, got " + challenge.get("type", "?"))
        origin = dialed_origin(self.args.url)
        text = bound_text(challenge["sign"], origin)
        if self.args.bad_signature:
            text += ":not-the-challenge"  # a valid SSHSIG over the wrong bytes
        if self.args.agent:
            signature = sign_with_agent(self.args.key, text)
        else:
            signature = sign_with_ssh_keygen(self.args.key, text)
        await ws.send(json.dumps({"type": "auth.response", "signature": signature,
                                  "origin": origin, "device": self.args.device}))
        try:
            answer = json.loads(await ws.recv())
        except ConnectionClosed as closed:
            raise Refused(f"closed {closed.rcvd.code if closed.rcvd else None}") from None
        if answer.get("type") != "auth.ok":
            code = answer.get("code")
            try:
                await ws.recv()
            except ConnectionClosed as closed:
                raise Refused(f"{code} close {closed.rcvd.code if closed.rcvd else None}") from None
            raise Refused(str(code))
        out(f"authenticated role={answer['role']} fingerprint={answer['fingerprint']}")
        return ws

    async def request(self, ws, frame):
        """Send a request with a fresh id; return its direct reply. Other frames
        that arrive first (events, presence) are handed to on_frame in order."""
        self.request_no += 1
        frame["id"] = self.request_no
        await ws.send(json.dumps(frame))
        while True:
            reply = json.loads(await ws.recv())
            if reply.get("id") == self.request_no:
                return reply
            await self.on_frame(ws, reply)


class PromptRun(Client):
    """Attach, prompt, answer the permission prompt, reconnect, resume."""

    def __init__(self, args):
        super().__init__(args)
        self.last_seq = 0
        self.prompt_id = None
        self.answered = False
        self.turn_over = False

    async def on_frame(self, ws, frame):
        if frame.get("type") != "event":
            return
        seq, event = frame["seq"], frame["event"]
        if seq != self.last_seq + 1 and self.last_seq:
            raise RuntimeError(f"gap: seq {seq} after {self.last_seq}")
        self.last_seq = seq
        kind = event.get("type")
        if kind == "control_request":
            await self.answer(ws, event)
        elif kind == "user":
            for block in event.get("message", {}).get("content", []):
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    content = block.get("content")
                    if isinstance(content, list):
                        content = "".join(c.get("text", "") for c in content if isinstance(c, dict))
                    out(f"tool result: {str(content).strip()}")
        elif kind == "result":
            out(f"result: {event.get('subtype')} {str(event.get('result', '')).strip()}")
        elif kind == "relay.turn" and event.get("prompt_id") == self.prompt_id:
            if event["phase"] in ("ended", "aborted"):
                out(f"turn {event['phase']} at seq {seq}")
                self.turn_over = True

    async def answer(self, ws, control_request):
        """Answer a permission prompt (other control requests are left to other clients)."""
        request = control_request.get("request", {})
        if request.get("subtype") != "can_use_tool":
            return
        out(f"permission asked: {request.get('tool_name')} {json.dumps(request.get('input'))}")
        behavior = "deny" if self.args.deny else "allow"
        reply = await self.request(ws, {"type": "respond", "session": "default",
                                        "request_id": control_request["request_id"],
                                        "response": {"behavior": behavior}})
        if reply.get("type") == "ok":
            out(f"permission answered: {behavior}")
            # Only a prompt our own prompt caused ends the first connection.
            self.answered = self.answered or self.prompt_id is not None
        else:
            out(f"permission answer refused: {reply.get('code')}")  # someone else won

    async def read_until(self, ws, done):
        while not done():
            await self.on_frame(ws, json.loads(await ws.recv()))

    async def run(self):
        ws = await self.connect()
        attached = await self.request(ws, {"type": "attach", "session": "default", "tail": 0})
        out(f"attached head={attached['head']} state={attached['state']}")
        self.last_seq = attached["head"]
        # Requests opened before we came (by another client's prompt) are listed
        # in `pending`; a device shows them like any other, and may answer them.
        for pending in attached["pending"]:
            await self.answer(ws, pending)
        ok = await self.request(ws, {"type": "prompt", "session": "default",
                                     "content": self.args.prompt, "key": uuid.uuid4().hex})
        if ok.get("type") != "ok":
            raise RuntimeError(f"prompt refused: {ok}")
        self.prompt_id = ok["prompt_id"]
        out(f"prompt accepted prompt_id={self.prompt_id}")
        # Follow the turn until the permission prompt was answered (or the turn
        # ended without one), then drop the connection on purpose.
        await self.read_until(ws, lambda: self.answered or self.turn_over)
        await ws.close()
        out(f"disconnected after seq {self.last_seq}")
        if self.turn_over:
            return
        # Resume: a new connection, a new client_id, attach with since = last seq.
        ws = await self.connect()
        attached = await self.request(ws, {"type": "attach", "session": "default",
                                           "since": self.last_seq})
        out(f"resumed since={self.last_seq} replay_from={attached['replay_from']} "
            f"head={attached['head']} truncated={str(attached['truncated']).lower()}")
        if attached["truncated"]:
            raise RuntimeError("the server no longer has the events we missed")
        await self.read_until(ws, lambda: self.turn_over)
        await ws.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="ws://HOST:PORT/v1/ws")
    parser.add_argument("--key", help="private key file (or, with --agent, its .pub)")
    parser.add_argument("--agent", action="store_true", help="sign with the ssh-agent at $SSH_AUTH_SOCK")
    parser.add_argument("--prompt", default="please run-bash echo hello-from-python")
    parser.add_argument("--device", default="python-example")
    parser.add_argument("--deny", action="store_true", help="deny the permission prompt")
    parser.add_argument("--bad-signature", action="store_true", help="send a wrong signature")
    args = parser.parse_args()
    if not args.agent and not args.key:
        parser.error("--key is required unless --agent is given")
    try:
        asyncio.run(PromptRun(args).run())
    except Refused as refused:
        out(f"authentication refused: {refused}")
        sys.exit(3)
    except (OSError, RuntimeError, ValueError, ConnectionClosed) as e:
        out(f"error: {e}")
        sys.exit(1)


if __name__ == "__main__":
    main()
