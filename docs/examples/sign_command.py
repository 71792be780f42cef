#!/usr/bin/env python3
"""Send one signed command to `agentlog serve` (docs/PROTOCOL.md, "Signed commands").

A producer to copy into another language: `signed_message` builds the bytes a
request's signature covers, `sign_request` signs them and returns every header
to send. Needs Python 3.11, `cryptography` (ed25519) and, to send, `nats-py`.

    python3 sign_command.py --vector
        prints the signed bytes (hex) and the signature (base64) of the test
        vector in docs/PROTOCOL.md, computed by `sign_request`.

    python3 sign_command.py --nats nats://127.0.0.1:4222 --key alice.json \\
        --idempotency-key reg-a1 register_agent '{"agent_id": "a1"}'
        sends agentlog.cmd.register_agent signed with the key file that
        `agentlog keygen` wrote, and prints the reply (one line of JSON).

Exit status: 0 when the (first) reply is {"accepted": ...}, 1 when it is
{"rejected": ...}, 2 on a usage, key file or connection error (said on stderr).
`--repeat N` sends the very same signed request N times (same nonce, same
signature) and prints each reply: the node accepts it once and refuses the
rest as `replayed_nonce`. A real retry is signed again: run the script again
with the same --idempotency-key.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import secrets
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

# What every signed message begins with: the scheme and its version.
DOMAIN = b"agentlog-command-v1\n"
CONTENT_TYPE = "application/json"


def signed_message(
    subject: str,
    content_type: str,
    idempotency_key: str,
    correlation_id: str,
    key_id: str,
    nonce: str,
    timestamp: str,
    body: bytes,
) -> bytes:
    """The bytes a request's signature covers: DOMAIN, then each field as a
    4-byte big-endian length and its bytes, in this order. A header not sent
    is the empty field (length 0)."""
    out = bytearray(DOMAIN)
    for field in (
        subject.encode(),
        content_type.encode(),
        idempotency_key.encode(),
        correlation_id.encode(),
        key_id.encode(),
        nonce.encode(),
        timestamp.encode(),
        body,
    ):
        out += len(field).to_bytes(4, "big")
        out += field
    return bytes(out)


def sign_request(
    key: Ed25519PrivateKey,
    key_id: str,
    subject: str,
    body: bytes,
    idempotency_key: str = "",
    correlation_id: str = "",
    nonce: str | None = None,
    timestamp_ns: int | None = None,
) -> tuple[dict[str, str], bytes]:
    """Signs one JSON request. Returns every header to send with `body` on
    `subject`, and the bytes that were signed. Each call takes a fresh random
    nonce and the current time unless given (only the test vector gives them):
    a retry is signed again, with the same idempotency key."""
    nonce = secrets.token_hex(16) if nonce is None else nonce
    timestamp = str(time.time_ns() if timestamp_ns is None else timestamp_ns)
    message = signed_message(
        subject, CONTENT_TYPE, idempotency_key, correlation_id, key_id, nonce, timestamp, body
    )
    headers = {"Content-Type": CONTENT_TYPE}
    if idempotency_key:
        headers["Agentlog-Idempotency-Key"] = idempotency_key
    if correlation_id:
        headers["Agentlog-Correlation-Id"] = correlation_id
    headers["Agentlog-Key-Id"] = key_id
    headers["Agentlog-Nonce"] = nonce
    headers["Agentlog-Timestamp"] = timestamp
    headers["Agentlog-Signature"] = base64.b64encode(key.sign(message)).decode()
    return headers, message


class UsageError(Exception):
    """Exit status 2, with this message on stderr."""


def load_key(path: Path) -> tuple[str, Ed25519PrivateKey]:
    """The key id and private key of a key file `agentlog keygen` wrote:
    {"key_id", "public_key", "secret_key"}, the keys base64 (the secret key
    is the 32-byte ed25519 seed)."""
    try:
        file = json.loads(path.read_text())
        key_id = file["key_id"]
        seed = base64.b64decode(file["secret_key"], validate=True)
        key = Ed25519PrivateKey.from_private_bytes(seed)
        if not isinstance(key_id, str):
            raise TypeError("key_id is not a string")
    except OSError as e:
        raise UsageError(f"cannot read the key file {path}: {e.strerror}") from e
    except KeyError as e:
        raise UsageError(f"{path} is not a key file written by `agentlog keygen`: it lacks {e}") from e
    except (ValueError, TypeError) as e:
        raise UsageError(f"{path} is not a key file written by `agentlog keygen`: {e}") from e
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    if base64.b64encode(public).decode() != str(file.get("public_key", "")).strip():
        raise UsageError(f"{path}: public_key is not the secret key's; the file is damaged")
    return key_id, key


def print_vector() -> None:
    """docs/PROTOCOL.md's test vector, through the same function that signs
    real requests."""
    headers, message = sign_request(
        Ed25519PrivateKey.from_private_bytes(bytes([7] * 32)),
        key_id="alice",
        subject="agentlog.cmd.heartbeat",
        body=b'{"session_id":"s1"}',
        idempotency_key="hb-1",
        nonce="00112233445566778899aabbccddeeff",
        timestamp_ns=1767225600000000000,
    )
    print("message", message.hex())
    print("signature", headers["Agentlog-Signature"])


async def send(url: str, subject: str, headers: dict[str, str], body: bytes, repeat: int, timeout_seconds: float) -> int:
    """Sends the same signed request `repeat` times, printing each reply;
    the exit status follows the first reply."""
    import nats  # only here: --vector needs no NATS client
    import nats.errors

    async def quiet(_error: Exception) -> None:
        pass  # failures are raised to the caller and reported once

    try:
        nc = await nats.connect(
            url, connect_timeout=timeout_seconds, allow_reconnect=False, error_cb=quiet
        )
    except Exception as e:  # nats-py raises several types for an unreachable server
        raise UsageError(f"cannot connect to NATS at {url}: {e or type(e).__name__}") from e
    status = None
    try:
        for _ in range(repeat):
            try:
                msg = await nc.request(subject, body, timeout=timeout_seconds, headers=headers)
            except nats.errors.NoRespondersError as e:
                raise UsageError(f"no agentlog serve answers {subject} (no responders)") from e
            except nats.errors.TimeoutError as e:
                raise UsageError(
                    f"no reply within {timeout_seconds} s: the outcome is unknown; "
                    "send it again, signed again, with the same idempotency key"
                ) from e
            try:
                reply = json.loads(msg.data)
            except ValueError as e:
                raise UsageError(f"the reply is not JSON: {msg.data[:200]!r}") from e
            print(json.dumps(reply, separators=(",", ":")), flush=True)
            if status is None:
                if isinstance(reply, dict) and "accepted" in reply:
                    status = 0
                elif isinstance(reply, dict) and "rejected" in reply:
                    status = 1
                else:
                    raise UsageError("the reply is neither {\"accepted\": ...} nor {\"rejected\": ...}")
    finally:
        await nc.close()
    return status


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Send one signed command to agentlog serve over NATS (docs/PROTOCOL.md).",
    )
    parser.add_argument("--vector", action="store_true", help="print the documented test vector and exit")
    parser.add_argument("--nats", metavar="URL", help="the NATS server, e.g. nats://127.0.0.1:4222")
    parser.add_argument("--key", metavar="KEYFILE", type=Path, help="a key file written by `agentlog keygen`")
    parser.add_argument("--idempotency-key", default="", metavar="K", help="Agentlog-Idempotency-Key (use one)")
    parser.add_argument("--timeout-seconds", type=float, default=5.0, metavar="S", help="per reply (default 5)")
    parser.add_argument("--repeat", type=int, default=1, metavar="N", help="send the same signed request N times")
    parser.add_argument("command", nargs="?", help="the command, e.g. register_agent")
    parser.add_argument("body", nargs="?", help="its fields, as a JSON object")
    args = parser.parse_args()

    if args.vector:
        print_vector()
        return 0
    if not (args.nats and args.key and args.command and args.body is not None):
        parser.error("--nats, --key, COMMAND and JSON-BODY are required (or --vector)")
    if not re.fullmatch(r"[a-z0-9_]+", args.command):
        parser.error(f"COMMAND must be a command name such as claim_task, got {args.command!r}")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.timeout_seconds <= 0:
        parser.error("--timeout-seconds must be positive")
    key = args.idempotency_key
    if key != key.strip() or any(c in key for c in "\r\n"):
        # NATS header values lose such characters on the way: the node would
        # check the signature over a different key.
        parser.error("--idempotency-key must not have surrounding spaces or line breaks")
    try:
        json.loads(args.body)
    except ValueError as e:
        parser.error(f"JSON-BODY is not JSON: {e}")
    # The bytes signed are exactly the bytes sent.
    body = args.body.encode()
    subject = f"agentlog.cmd.{args.command}"
    try:
        key_id, private_key = load_key(args.key)
        headers, _ = sign_request(private_key, key_id, subject, body, idempotency_key=key)
        return asyncio.run(send(args.nats, subject, headers, body, args.repeat, args.timeout_seconds))
    except UsageError as e:
        print(f"sign_command: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
