"""Checks the answers the HTTP layer gives below the API, as the node-agent
contract documents them ("Validation and errors"): malformed HTTP/1.1 is 400
with an empty body and `connection: close`, oversized headers 431 the same
way, a listed path with another method 405 with `Allow` and the error body.

Usage: http_layer.py HOST PORT
"""

import json
import socket
import sys

HOST, PORT = sys.argv[1], int(sys.argv[2])


def exchange(data):
    with socket.create_connection((HOST, PORT), timeout=10) as s:
        try:
            s.sendall(data)
        except OSError:
            pass
        out = b""
        try:
            while b"\r\n\r\n" not in out or not complete(out):
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except OSError:
            pass
    return out


def complete(out):
    head, _, body = out.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return True


def parse(out):
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


REQUEST = "POST /v1/agent/heartbeat HTTP/1.1\r\nHost: x\r\n"
BAD = {
    "an unknown transfer coding": REQUEST + "Transfer-Encoding: gzip, chunked, x\r\n\r\n0\r\n\r\n",
    "a transfer coding that is not chunked": REQUEST + "Transfer-Encoding: foo\r\n\r\n",
    "a NUL byte in a header": REQUEST + "X-FlatRender-Node: a\0b\r\nContent-Length: 0\r\n\r\n",
    "a Content-Length that is not a number": REQUEST + "Content-Length: abc\r\n\r\n",
    "a method that is not a token": "G@T /v1/agent/files/x HTTP/1.1\r\nHost: x\r\n\r\n",
}
TOO_LARGE = {
    "2 MB of headers": "GET /v1/agent/files/x HTTP/1.1\r\nHost: x\r\nX-A: " + "a" * 2_000_000 + "\r\n\r\n",
    "200 header fields": "GET /v1/agent/files/x HTTP/1.1\r\nHost: x\r\n"
    + "".join(f"X-{i}: a\r\n" for i in range(200))
    + "\r\n",
}

failures = []
checked = 0
for expected, cases in ((400, BAD), (431, TOO_LARGE)):
    for what, request in cases.items():
        checked += 1
        status, headers, body = parse(exchange(request.encode("latin-1")))
        if (status, body, headers.get("connection")) != (expected, b"", "close"):
            failures.append(f"{what}: {status} {headers} {body[:200]!r}, expected {expected}, no body, connection: close")

status, headers, body = parse(exchange(b"DELETE /v1/agent/heartbeat HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"))
checked += 1
try:
    code = json.loads(body)["error"]["code"]
except (ValueError, KeyError, TypeError):
    code = None
if (status, headers.get("allow"), code) != (405, "POST", "method_not_allowed"):
    failures.append(f"DELETE heartbeat: {status} allow={headers.get('allow')} {body[:200]!r}")

with socket.create_connection((HOST, PORT), timeout=10) as s:
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    checked += 1
    try:
        answer = s.recv(100)
    except OSError:
        answer = b""
    if answer:
        failures.append(f"an HTTP/2 preface got an answer: {answer!r}")

print(f"http layer: {checked} checked, {len(failures)} not as documented")
for f in failures:
    print("  " + f)
sys.exit(1 if failures else 0)
