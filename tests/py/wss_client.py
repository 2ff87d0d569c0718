"""An outside client for tests/it/tls.rs (`--tls-self-signed` with an outside client): Python's `ssl`
and `websockets`, nothing of ccrelay's. Connects to a wss:// URL, trusts the
server's certificate only if its SHA-256 fingerprint is the pinned one, signs the
challenge with `ssh-keygen -Y sign`, attaches, and prints one JSON line with what
happened. Usage: wss_client.py URL FINGERPRINT KEY_FILE
"""

import asyncio
import base64
import hashlib
import json
import ssl
import subprocess
import sys
import urllib.parse

import websockets


def fingerprint(der: bytes) -> str:
    digest = hashlib.sha256(der).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def ssh_sign(key: str, text: str) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-Y", "sign", "-n", "ccrelay-auth", "-f", key],
        input=text.encode(),
        capture_output=True,
        check=True,
    )
    return out.stdout.decode()


def origin_of(url: str) -> str:
    """The origin the client dialed, serialized as a browser does: lower-case
    scheme and host, IPv6 in brackets, the scheme's default port left out."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname.rstrip(".")
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is None or port == {"ws": 80, "wss": 443}[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


async def main(url: str, pinned: str, key: str) -> dict:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # The chain is not verified: the pin below replaces it.
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    async with websockets.connect(url, ssl=ctx, max_size=None) as ws:
        sslobj = ws.transport.get_extra_info("ssl_object")
        seen = fingerprint(sslobj.getpeercert(binary_form=True))
        result = {"fingerprint": seen, "tls_version": sslobj.version()}
        if seen != pinned:
            result["error"] = "fingerprint mismatch"
            return result
        challenge = json.loads(await ws.recv())
        result["challenge"] = challenge
        # Bound to the origin this client dialed (docs/protocol.md, "Origin binding").
        origin = origin_of(url)
        signature = ssh_sign(key, f"{challenge['sign']}:origin:{origin}")
        await ws.send(
            json.dumps({"type": "auth.response", "signature": signature, "origin": origin})
        )
        result["auth"] = json.loads(await ws.recv())
        if result["auth"].get("type") != "auth.ok":
            return result
        await ws.send(json.dumps({"type": "attach", "id": "a", "session": "default"}))
        while True:
            frame = json.loads(await ws.recv())
            if frame.get("id") == "a":
                result["attach"] = frame
                return result


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(*sys.argv[1:4]))))
