"""Masking in chat tests: planted secrets, a leak scan over what the fakes received, and a stand-in
for the server side of masking until it is merged.

The server side (intake fills `request.masked`, audit records are masked, `service.reveal`)
is another branch. `stand_in(service)` fills the gaps ONLY where they are gaps: a request
committed without a masked view gets one (built with `core.masking`, as intake will), its
`request.created` record gets the masked justification and resource, and a service without a
`reveal` method gets a minimal one (eligibility by `rules.refusal_for`, the rule's `reveal`,
exact values by `masking.raw_values`; it writes no `params.revealed` record). Once the real
intake and reveal exist, every one of these is a no-op and the tests run against them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import Any

from approvalbot.core.errors import DomainError, NotFound, Refused
from approvalbot.core.masking import mask_request, raw_values
from approvalbot.core.models import Actor, ApprovalRequest, MaskedValue, MaskedView, Person
from approvalbot.core.rules import refusal_for

KEY = b"chat-tests-masking-key"

AWS = "AKIAIOSFODNN7EXAMPLE"
PEM_BODY = "MIIEowIBAAKCAQEA7bqZt3Vx"
PEM = f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\nq2Fz9w==\n-----END RSA PRIVATE KEY-----"
EMAIL = "jane.roe@customers-example.org"
CARD = "4111 1111 1111 1111"
# Substrings that must never reach a chat fake (the PEM's body line: JSON escapes its newlines).
NEEDLES = (AWS, PEM_BODY, EMAIL, CARD, CARD.replace(" ", ""))

REAL_REVEAL: bool | None = None  # set by `stand_in`: whether the service brought its own reveal


class RevealForbidden(DomainError):
    """The stand-in's refusal when the request's rule says `reveal: false`."""

    code = "reveal_forbidden"


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


def stand_in(service: Any) -> None:
    """Fill what the server side of masking will do, where this branch does not do it yet."""
    global REAL_REVEAL
    store = service.requests
    commit = store.commit

    async def commit_masked(transition: Any, expected_version: int, previous_status: Any, *args: Any, **kw: Any):
        if previous_status is None and transition.request.masked is None:
            view, _ = masked_view(transition.request)
            request = transition.request.model_copy(update={"masked": view})
            events = [
                e.model_copy(update={"reason": view.justification, "resource": view.resource})
                if e.type == "request.created"
                else e.model_copy(update={"resource": view.resource})
                for e in transition.events
            ]
            transition = dataclasses.replace(transition, request=request, events=events)
        return await commit(transition, expected_version, previous_status, *args, **kw)

    store.commit = commit_masked
    REAL_REVEAL = hasattr(type(service), "reveal")
    if REAL_REVEAL:
        return

    async def reveal(request_id: str, actor: Actor, person: Person, paths: list[str]) -> dict[str, Any]:
        request = await service.requests.get(request_id)
        if request is None:
            raise NotFound("no such request")
        refusal = refusal_for(request, actor, person)
        if refusal is not None:
            raise Refused(refusal)
        if not request.policy.reveal:
            raise RevealForbidden("this request's policy rule does not allow revealing masked values")
        _, m = masked_view(request)
        return raw_values(
            m,
            paths,
            params=request.params,
            context=request.context,
            justification=request.justification,
            resource=request.resource,
        )

    service.reveal = reveal


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
