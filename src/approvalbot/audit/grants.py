"""Grants and receipts: signed, self-contained proof of how a request ended.

When a request is approved it gets a `grant`: a compact JWT (EdDSA, Ed25519)
that an executor can check offline with the public key before doing the action.
It binds the agent, action, resource and a digest of the params, names the
approvers, and expires `policy.grant_ttl` seconds after the decision. Denied,
expired and cancelled requests get a `receipt` instead: the same kind of token
stating the outcome, with no expiry, which can never pass as a grant (different
`aud` and `typ`, and no `exp`).

Both are minted by a final-state hook inside the same commit as the decision
(`install`), so a request is never approved without its grant.

`consume` makes a grant single-use: the first presentation marks it used (SET NX)
and appends a `grant.consumed` audit record in the same Lua step; any later one
is refused.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from typing import Any, Protocol

import jwt
from redis.asyncio import Redis

from approvalbot.audit.signing import PublicKeyInput, Signer, as_keyring
from approvalbot.core.chain import params_digest
from approvalbot.core.events import EventType, event_for
from approvalbot.core.models import Actor, Agent, ApprovalRequest, Status
from approvalbot.store import codec, keys, replication
from approvalbot.store.audit import AuditLog
from approvalbot.store.requests import RequestStore, audit_body, load_script

ISSUER = "approvalbot"
GRANT_AUDIENCE = "approvalbot:grant"
RECEIPT_AUDIENCE = "approvalbot:receipt"
ALGORITHM = "EdDSA"
DEFAULT_LEEWAY = 5  # seconds of clock skew tolerated between this service and an executor
USED_MARKER_SLACK = 3600  # keep the used-marker this long past the grant's expiry


class GrantError(Exception):
    """A token that must not be acted on; `code` is a stable, machine-readable reason."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class GrantRevoked(GrantError):
    def __init__(self) -> None:
        super().__init__("grant_revoked", "this grant was revoked: the agent it was issued to has been revoked")


class GrantUsed(GrantError):
    def __init__(self, used: dict[str, Any]):
        super().__init__("grant_used", "this grant has already been used")
        self.used = used


def _epoch(when: datetime) -> int:
    return int(when.timestamp())


def _common_claims(request: ApprovalRequest, audience: str, typ: str) -> dict[str, Any]:
    """What grants and receipts both bind: issuer, kind, request, agent and the exact action."""
    return {
        "iss": ISSUER,
        "aud": audience,
        "typ": typ,
        "jti": request.id,
        "sub": request.agent_id,
        "agent": request.agent_name,
        "action": request.action,
        "resource": request.resource,
        "params_sha256": params_digest(request.params),
    }


def grant_claims(request: ApprovalRequest) -> dict[str, Any]:
    decided = request.decided_at or request.created_at
    return {
        **_common_claims(request, GRANT_AUDIENCE, "grant"),
        "approvers": [d.approver for d in request.decisions if d.decision == "approve"],
        "policy": request.policy.rule,
        "iat": _epoch(decided),
        "nbf": _epoch(decided),
        "exp": _epoch(decided) + request.policy.grant_ttl,
    }


def receipt_claims(request: ApprovalRequest) -> dict[str, Any]:
    decided = request.decided_at or request.created_at
    return {
        **_common_claims(request, RECEIPT_AUDIENCE, "receipt"),
        "status": request.status.value,
        "reason": request.outcome_reason,
        "deciders": [d.approver for d in request.decisions],
        "policy": request.policy.rule,
        "decided_at": decided.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "iat": _epoch(decided),
    }


def _sign(claims: dict[str, Any], signer: Signer) -> str:
    return jwt.encode(claims, signer.jwt_key, algorithm=ALGORITHM, headers={"kid": signer.key_id})


def issue(request: ApprovalRequest, signer: Signer) -> ApprovalRequest:
    """The request with its grant (approved) or receipt (any other final status)."""
    if request.status is Status.APPROVED:
        return request.model_copy(update={"grant": _sign(grant_claims(request), signer)})
    if request.status.final:
        return request.model_copy(update={"receipt": _sign(receipt_claims(request), signer)})
    return request


class GrantHook:
    """The `ApprovalService.on_final` hook; a class so `install` can tell it is already there."""

    def __init__(self, signer: Signer):
        self.signer = signer

    def __call__(self, request: ApprovalRequest) -> ApprovalRequest:
        return issue(request, self.signer)

    def __repr__(self) -> str:
        return f"GrantHook({self.signer!r})"


class FinalHooks(Protocol):
    """What `install` needs of the service: its list of final-state hooks."""

    on_final: list[Callable[[ApprovalRequest], ApprovalRequest]]


class GrantLedger(Protocol):
    """What `consume` needs of the service (the audit layer cannot import it)."""

    @property
    def redis(self) -> Redis: ...
    @property
    def requests(self) -> RequestStore: ...
    @property
    def audit(self) -> AuditLog: ...
    def clock(self) -> datetime: ...


def install(service: FinalHooks, signer: Signer) -> None:
    """Mint grants and receipts in every final commit of `service` (idempotent)."""
    service.on_final[:] = [h for h in service.on_final if not isinstance(h, GrantHook)]
    service.on_final.append(GrantHook(signer))


# ---------------------------------------------------------------------------
# Verification, for executors (offline, public key only)


def _decode(token: str, public_key: PublicKeyInput, audience: str, require: list[str], leeway: float) -> dict[str, Any]:
    if not isinstance(token, str) or not token or len(token) > 16_384:
        raise GrantError("malformed_grant", "the token is not a compact JWT")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise GrantError("malformed_grant", "the token is not a compact JWT") from None
    if header.get("alg") != ALGORITHM:
        raise GrantError("invalid_signature", f"the token is not signed with {ALGORITHM}")
    keyring = as_keyring(public_key)
    kid = header.get("kid")
    key = keyring.get(kid) if isinstance(kid, str) else None  # PyJWT already refuses a non-str kid
    if key is None:
        if len(keyring) != 1 or "kid" in header:
            raise GrantError("unknown_key", "the token was signed by a key that is not trusted")
        key = next(iter(keyring.values()))
    try:
        return jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            audience=audience,
            issuer=ISSUER,
            leeway=leeway,
            options={"require": require},
        )
    except jwt.ExpiredSignatureError:
        raise GrantError("grant_expired", "the grant has expired") from None
    except jwt.ImmatureSignatureError:
        raise GrantError("grant_not_yet_valid", "the token is not valid yet (check the clocks)") from None
    except jwt.InvalidAudienceError:
        raise GrantError(f"not_a_{audience.split(':')[1]}", f"the token is not a {audience.split(':')[1]}") from None
    except jwt.InvalidSignatureError:
        raise GrantError("invalid_signature", "the signature does not match the token's contents") from None
    except jwt.MissingRequiredClaimError as exc:
        raise GrantError("malformed_grant", f"the token lacks the {exc.claim!r} claim") from None
    except jwt.InvalidTokenError as exc:
        raise GrantError("invalid_grant", f"the token is not valid ({exc.__class__.__name__})") from None


def verify_grant(
    token: str,
    public_key: PublicKeyInput,
    action: str | None = None,
    resource: str | None = None,
    params: dict[str, Any] | None = None,
    *,
    leeway: float = DEFAULT_LEEWAY,
) -> dict[str, Any]:
    """The grant's claims, if it is genuine, unexpired and (when given) for this action/resource/params.

    Raises GrantError with a `code`: malformed_grant, unknown_key,
    invalid_signature, grant_expired, grant_not_yet_valid, not_a_grant,
    invalid_grant, action_mismatch, resource_mismatch, params_mismatch.
    """
    claims = _decode(token, public_key, GRANT_AUDIENCE, ["iat", "jti", "sub", "iss", "aud"], leeway)
    if claims.get("typ") != "grant":
        raise GrantError("not_a_grant", "the token is not a grant")
    if "exp" not in claims or "nbf" not in claims:  # PyJWT checked them if present; a grant must have them
        raise GrantError("malformed_grant", "the grant has no expiry")
    if action is not None and claims.get("action") != action:
        raise GrantError("action_mismatch", "the grant is for a different action")
    if resource is not None and claims.get("resource") != resource:
        raise GrantError("resource_mismatch", "the grant is for a different resource")
    if params is not None and claims.get("params_sha256") != params_digest(params):
        raise GrantError("params_mismatch", "the grant was approved for different params")
    return claims


def verify_receipt(token: str, public_key: PublicKeyInput, *, leeway: float = DEFAULT_LEEWAY) -> dict[str, Any]:
    claims = _decode(token, public_key, RECEIPT_AUDIENCE, ["iat", "jti", "sub", "iss", "aud"], leeway)
    if claims.get("typ") != "receipt":
        raise GrantError("not_a_receipt", "the token is not a receipt")
    return claims


# ---------------------------------------------------------------------------
# Single use


def used_key(jti: str) -> str:
    return f"{keys.GRANTS_USED}:{jti}"


@cache
def _consume_text() -> str:

    return load_script("grant_consume.lua")


async def consume(
    service: GrantLedger,
    public_key: PublicKeyInput,
    token: str,
    actor: Actor,
    *,
    agent_id: str | None = None,
    action: str | None = None,
    resource: str | None = None,
    params: dict[str, Any] | None = None,
    leeway: float = DEFAULT_LEEWAY,
    consumer_name: str | None = None,
) -> tuple[dict[str, Any], int]:
    """Verify and use a grant once: (claims, audit seq) the first time, GrantUsed after.

    `agent_id`, when given, must be the grant's subject (an agent, or an executor
    bound to it, may only use that agent's grants). The record names the consumer
    (`data.consumed_by`: kind, id, name), so a thread can say who used the grant.
    """

    claims = verify_grant(token, public_key, action, resource, params, leeway=leeway)
    if agent_id is not None and claims["sub"] != agent_id:
        raise GrantError("grant_not_yours", "this grant was issued to another agent")
    request = await service.requests.get(claims["jti"])
    if request is None:
        raise GrantError("invalid_grant", "the request this grant was issued for does not exist")
    return await _use(service, request, token, claims, actor, leeway, consumer_name)


async def consume_issued(
    service: GrantLedger, request: ApprovalRequest, actor: Actor, consumer_name: str | None = None
) -> tuple[dict[str, Any], int]:
    """Use the grant of a request this process has just committed, for its own agent (`actor`).

    For `POST /v1/requests?consume_grant=true`: the grant was signed a moment ago from this very
    request, so its signature and binding are not checked again and the request is not read back;
    everything else is as `consume` (revoked agent, revoked grant, single use, audit, seal).
    """
    if request.grant is None:
        raise GrantError("invalid_grant", "this request carries no grant")
    return await _use(service, request, request.grant, grant_claims(request), actor, DEFAULT_LEEWAY, consumer_name)


async def _use(
    service: GrantLedger,
    request: ApprovalRequest,
    token: str,
    claims: dict[str, Any],
    actor: Actor,
    leeway: float,
    consumer_name: str | None,
) -> tuple[dict[str, Any], int]:
    if await agent_revoked(service.redis, claims["sub"]):  # also covers grants approved after the revocation
        raise GrantRevoked()
    now = service.clock()
    token_digest = hashlib.sha256(token.encode()).hexdigest()
    consumed_by = {"kind": actor.kind, "id": actor.id, "name": consumer_name or actor.id}
    event = event_for(
        request,
        EventType.GRANT_CONSUMED,
        actor,
        now,
        None,
        grant_sha256=token_digest,
        grant_exp=claims["exp"],
        consumed_by=consumed_by,
    )
    marker = json.dumps({"at": event.at.isoformat(), "by": f"{actor.kind}:{consumer_name or actor.id}"})
    ttl = max(int(claims["exp"] - time.time()), 0) + int(leeway) + USED_MARKER_SLACK
    script = service.redis.register_script(_consume_text())
    body = audit_body(event)
    result = await script(
        keys=[used_key(request.id), keys.AUDIT_LOG, keys.request_audit(request.id), keys.GRANTS_REVOKED],
        args=[marker, ttl, body, request.id],
    )
    if result[0] == b"revoked":
        raise GrantRevoked()
    if result[0] == b"used":
        try:
            used = json.loads(result[1])
        except (ValueError, TypeError):
            used = {}
        raise GrantUsed(used)
    seq = int(result[1])
    await service.audit.seal(seq)
    await replication.confirm(service.redis, replication.Proof.record(seq, body))
    return claims, seq


# ---------------------------------------------------------------------------
# Revocation: an agent's grants die with the agent


async def agent_revoked(redis: Redis, agent_id: object) -> bool:
    raw = await redis.get(keys.agent(str(agent_id)))
    return raw is not None and Agent.model_validate_json(raw).revoked


def _scored(rows: object) -> list[tuple[str, float]]:
    """A ZRANGE ... WITHSCORES reply as (member, score) pairs (redis-py types it loosely)."""
    out: list[tuple[str, float]] = []
    for row in rows if isinstance(rows, list) else []:
        member, score = row
        out.append((codec.member(member), float(score)))
    return out


async def revoke_agent_grants(redis: Redis, agent_id: str, now: float | None = None) -> list[str]:
    """Put the agent's unexpired grants on the revoked list; returns their ids (jti).

    Online consumers are refused (`grant_revoked`) by the consume script; offline
    executors learn the ids from `GET /v1/grants/revoked`. Entries leave the list an
    hour after the grant's own expiry, when the grant is useless anyway.
    """
    now = time.time() if now is None else now
    index = keys.agent_grants(agent_id)
    found = _scored(await redis.zrange(index, now - DEFAULT_LEEWAY, "+inf", byscore=True, withscores=True))
    pipe = redis.pipeline(transaction=True)
    if found:
        pipe.zadd(keys.GRANTS_REVOKED, dict(found))
    pipe.zremrangebyscore(keys.GRANTS_REVOKED, "-inf", now - USED_MARKER_SLACK)
    await pipe.execute()
    return [member for member, _ in found]


async def revoked_grants(redis: Redis, now: float | None = None) -> list[dict[str, Any]]:
    """Revoked grants that are not yet expired (with the clock-skew leeway): `jti` and `exp`."""
    now = time.time() if now is None else now
    rows = await redis.zrange(keys.GRANTS_REVOKED, now - DEFAULT_LEEWAY, "+inf", byscore=True, withscores=True)
    return [{"jti": member, "exp": int(score)} for member, score in _scored(rows)]
