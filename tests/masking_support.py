"""Masking in chat tests: planted secrets, a leak scan over what the fakes received, and builders
for the masked view intake stores (for tests that render cards from hand-made requests).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from approvalbot.core.masking import mask_request
from approvalbot.core.models import ApprovalRequest, MaskedValue, MaskedView

KEY = b"chat-tests-masking-key"

AWS = "AKIAIOSFODNN7EXAMPLE"
PEM_BODY = "MIIEowIBAAKCAQEA7bqZt3Vx"
PEM = f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\nq2Fz9w==\n-----END RSA PRIVATE KEY-----"
EMAIL = "jane.roe@customers-example.org"
CARD = "4111 1111 1111 1111"
# Substrings that must never reach a chat fake (the PEM's body line: JSON escapes its newlines).
NEEDLES = (AWS, PEM_BODY, EMAIL, CARD, CARD.replace(" ", ""))


def masked_view(request: ApprovalRequest) -> tuple[MaskedView, Any]:
    """The masked view intake builds, and the core's MaskedRequest (which knows each item's parts)."""
    m = mask_request(
        params=request.params,
        context=request.context,
        justification=request.justification,
        resource=request.resource,
        sensitive=request.policy.sensitive,
        detect=request.policy.detect,
        key=KEY,
    )
    items = [
        MaskedValue(
            path=i.path, category=i.category, kind=i.kind, length=i.length, fingerprint=i.fingerprint, whole=i.whole
        )
        for i in m.items
    ]
    view = MaskedView(
        params=m.params, context=m.context, justification=m.justification, resource=m.resource, items=items
    )
    return view, m


def unmasked(request: ApprovalRequest) -> ApprovalRequest:
    """The request as intake stores one in which nothing needed masking (its view shows every value).
    A request with no view at all has its values withheld wherever a person reads it."""
    if request.masked is not None:
        return request
    view = MaskedView(
        params=request.params,
        context=request.context,
        justification=request.justification,
        resource=request.resource,
    )
    return request.model_copy(update={"masked": view})


def leaks(sent: Iterable[Any], needles: Iterable[str] = NEEDLES) -> list[str]:
    """The needles found in anything sent (each item serialised as JSON, as it went over the wire)."""
    text = "\n".join(json.dumps(item, ensure_ascii=False, default=str) for item in sent)
    return [n for n in needles if n and n in text]


def planted_body(action: str = "dataset.export") -> dict[str, Any]:
    """A request with each kind of planted value in params (nested), context and the justification."""
    return {
        "action": action,
        "resource": "s3://exports/customers",
        "params": {
            "rows": 5000,
            "aws": {"access_key_id": AWS, "region": "eu-west-1"},
            "deploy_key": PEM,
            "notify": [EMAIL, "ops-team"],
        },
        "context": {"code_path": "etl/export.py:42", "impact": f"charges card {CARD}"},
        "justification": f"rotate {AWS} for the customer {EMAIL}",
    }
