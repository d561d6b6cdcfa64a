"""Tell an agent's callback URL the final outcome, signed, retried with backoff by RQ.

The signature header is `t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, the
same construction Stripe and Slack use, so receivers can reject replays by age.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import urllib.error
import urllib.request
from http.client import HTTPMessage
from typing import IO

from rq import Retry, get_current_job

from approvalbot.config import load_settings
from approvalbot.core.models import ApprovalRequest
from approvalbot.keyfiles import callback_secret
from approvalbot.store import keys

SIGNATURE_HEADER = "X-Approvalbot-Signature"
RETRY = Retry(max=8, interval=[1, 2, 5, 10, 30, 60, 120, 300])
TIMEOUT = 10


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(  # a callback must answer where it was registered
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: HTTPMessage, newurl: str
    ) -> urllib.request.Request | None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def sign(secret: bytes, body: bytes, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret, b"%d." % t + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secret: bytes, body: bytes, header: str, tolerance: int = 300) -> bool:
    """For receivers (and tests): check the signature and that it is recent."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        t = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs(time.time() - t) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, body, t), header)


def deliver_callback(request_id: str) -> int:
    """RQ job. Raises on failure so RQ retries it; returns the receiver's status code."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("deliver_callback runs only as an RQ job (it reads through the job's connection)")
    connection = job.connection
    doc = connection.hget(keys.request(request_id), "doc")
    if doc is None:
        return 0
    final = ApprovalRequest.model_validate_json(doc)
    if not final.callback_url:
        return 0
    body = final.model_dump_json(exclude={"version"}).encode()
    url = final.callback_url
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "approvalbot-callback",
            SIGNATURE_HEADER: sign(callback_secret(load_settings()), body),
            "X-Approvalbot-Delivery": request_id,
        },
    )
    try:
        with _opener.open(request, timeout=TIMEOUT) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        if 400 <= exc.code < 500 and exc.code not in (408, 429):
            return exc.code  # the receiver rejected it; retrying will not change its mind
        raise
