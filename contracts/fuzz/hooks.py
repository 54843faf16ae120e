"""Schemathesis hooks for fuzzing the served node-agent contract.

Every request is signed as `rest/node-agent.openapi.yaml` ("Signing a
request") specifies, over the exact bytes requests sends: the signer is a
`requests` auth, which runs after the body is encoded. The node comes from
the environment (FUZZ_URL, FUZZ_NODE_ID, FUZZ_KEY_ID, FUZZ_SECRET).

To reach past "unknown task" (404), task operations are often pointed at a
real lease of this node, claimed here on the side: the fuzzer's own task id,
epoch and frame are swapped for the lease's when they are valid values (a
value the fuzzer made invalid on purpose is left as it is). Long polls are
capped at one second so that the run stays short.

`python3 hooks.py register` registers the node (run.sh does it first).
"""

import atexit
import collections
import hashlib
import hmac
import json
import os
import random
import re
import time
import uuid
from urllib.parse import urlsplit

import requests

URL = os.environ["FUZZ_URL"].rstrip("/")
NODE_ID = os.environ["FUZZ_NODE_ID"]
KEY_ID = os.environ["FUZZ_KEY_ID"]
SECRET = bytes.fromhex(os.environ["FUZZ_SECRET"])
SUMMARY = os.environ.get("FUZZ_SUMMARY")

CAPABILITIES = {
    "cores": 2,
    "memory_bytes": 4 * 1024**3,
    "gpus": [],
    "renderers": [{"name": "builtin", "version": "1"}],
    "tags": ["fuzz"],
    "node_class": "standard",
}

random.seed(os.environ.get("FUZZ_SEED", "20261124"))
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
STATUSES = collections.Counter()


def canonical_query(query):
    return "&".join(sorted(part for part in query.split("&") if part))


class NodeSignature(requests.auth.AuthBase):
    """Signs the prepared request: method, path and query as sent, body bytes.

    `omit` leaves the signature header out (the fuzzer's case without it).
    """

    def __init__(self, omit=False):
        self.omit = omit

    def __call__(self, r):
        body = r.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
        if not isinstance(body, bytes):
            raise TypeError(f"cannot sign a streamed body ({type(body)})")
        url = urlsplit(r.url)
        timestamp = str(int(time.time()))
        nonce = uuid.uuid4().hex
        digest = hashlib.sha256(body).hexdigest()
        canonical = "\n".join(
            [
                "FLATRENDER-HMAC-SHA256-V1",
                r.method.upper(),
                url.path,
                canonical_query(url.query),
                NODE_ID,
                KEY_ID,
                timestamp,
                nonce,
                digest,
            ]
        )
        signature = hmac.new(SECRET, canonical.encode("utf-8"), hashlib.sha256).hexdigest()
        r.headers["X-FlatRender-Node"] = NODE_ID
        r.headers["X-FlatRender-Key-Id"] = KEY_ID
        r.headers["X-FlatRender-Timestamp"] = timestamp
        r.headers["X-FlatRender-Nonce"] = nonce
        r.headers["X-FlatRender-Content-Sha256"] = digest
        if self.omit:
            r.headers.pop("X-FlatRender-Signature", None)
        else:
            r.headers["X-FlatRender-Signature"] = "v1=" + signature
        return r


SIGNER = NodeSignature()


def call(method, path, body=None, query=""):
    data = b"" if body is None else json.dumps(body).encode("utf-8")
    url = URL + path + ("?" + query if query else "")
    return requests.request(method, url, data=data, auth=SIGNER, timeout=30)


def register():
    response = call("POST", "/v1/agent/register", CAPABILITIES)
    if response.status_code != 204:
        raise SystemExit(f"registration failed: {response.status_code} {response.text}")


class Leases:
    """Real leases of the fuzzing node, claimed on the side."""

    def __init__(self):
        self.held = []

    def pick(self):
        if not self.held or random.random() < 0.2:
            # The fuzzer may have registered other capabilities in between.
            call("POST", "/v1/agent/register", CAPABILITIES)
            call("POST", "/v1/agent/heartbeat", {"leases": []})
            answer = call("POST", "/v1/agent/claim", query="wait_seconds=0")
            if answer.status_code == 200:
                self.held.append(answer.json())
                del self.held[:-8]
        return random.choice(self.held) if self.held else None


LEASES = Leases()


def valid_epoch(value):
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 2**32 - 1


SHA256 = re.compile(r"^[0-9a-f]{64}$")


def aim_at_a_lease(case):
    """Points a task operation at a real lease where its values are valid,
    and a download at a scene the node may read."""
    params = case.path_parameters or {}
    if "sha256" in params and SHA256.match(str(params["sha256"])) and random.random() < 0.7:
        LEASES.pick()
        if LEASES.held:
            params["sha256"] = random.choice(LEASES.held)["scene"]["sha256"]
        return
    if "task_id" not in params or not UUID.match(str(params["task_id"])):
        return
    if random.random() < 0.3:
        return
    lease = LEASES.pick()
    if lease is None:
        return
    params["task_id"] = lease["task_id"]
    frames = lease["frames"]
    frame = random.randint(frames["start"], frames["end"])
    if "frame" in params and str(params["frame"]).isdigit():
        params["frame"] = frame
    if isinstance(case.query, dict) and valid_epoch(case.query.get("lease_epoch")):
        case.query["lease_epoch"] = lease["lease_epoch"]
    if isinstance(case.body, dict):
        if valid_epoch(case.body.get("lease_epoch")) and random.random() < 0.8:
            case.body["lease_epoch"] = lease["lease_epoch"]
        if isinstance(case.body.get("frame"), int) and 0 <= case.body["frame"] <= 2**32 - 1:
            case.body["frame"] = frame


import schemathesis  # noqa: E402


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.operation.path == "/v1/agent/claim" and isinstance(case.query, dict):
        wait = case.query.get("wait_seconds")
        if isinstance(wait, int) and not isinstance(wait, bool) and 1 < wait <= 30:
            case.query["wait_seconds"] = 1
    aim_at_a_lease(case)
    # The fuzzer fills the security header itself; a case without it tests
    # a missing signature, which stays missing.
    headers = {name.lower() for name in (case.headers or {})}
    kwargs["auth"] = NodeSignature(omit="x-flatrender-signature" not in headers)


@schemathesis.hook
def after_call(context, case, response):
    STATUSES[(case.operation.method.upper(), case.operation.path, response.status_code)] += 1


@atexit.register
def write_summary():
    if not SUMMARY or not STATUSES:
        return
    with open(SUMMARY, "w") as out:
        json.dump(
            {
                "requests": sum(STATUSES.values()),
                "by_status": [
                    {"method": m, "path": p, "status": s, "count": n}
                    for (m, p, s), n in sorted(STATUSES.items())
                ],
            },
            out,
            indent=1,
        )


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["register"]:
        register()
    else:
        raise SystemExit("usage: hooks.py register")
