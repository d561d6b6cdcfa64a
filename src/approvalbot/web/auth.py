"""Bearer-token authentication: identity comes from the token, never from the payload."""

from __future__ import annotations

import logging

from aiohttp import web

from approvalbot.core.models import Agent, Approver
from approvalbot.store.identities import Auditor, Principal
from approvalbot.web.context import services
from approvalbot.web.errors import ApiError, where

log = logging.getLogger("approvalbot.web")


async def principal(request: web.Request, *, auditor_ok: bool = False) -> Principal:
    """The caller, from the bearer token (see web/credentials.py for what a bad token costs: almost nothing).

    Auditor tokens are refused (403) unless the endpoint says they may read it: closed by default.
    """
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        log.info("401 on %s: no bearer token", where(request))
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <token>")
    found = await services(request).authenticator.authenticate(token.strip())
    if found is None:
        log.info("401 on %s: unknown, malformed or revoked token", where(request))  # never the token
        raise ApiError(401, "unauthorized", "the token is unknown or revoked")
    if found.kind == "auditor" and not auditor_ok:
        raise ApiError(403, "forbidden", "auditor tokens may read only the audit log, its verification and reports")
    return found


async def require_agent(request: web.Request) -> Agent:
    who = await principal(request)
    if who.agent is None:
        raise ApiError(403, "forbidden", "this endpoint needs an agent token")
    return who.agent


async def require_approver(request: web.Request) -> Approver:
    who = await principal(request)
    if who.approver is None:
        raise ApiError(403, "forbidden", "this endpoint needs an approver token")
    return who.approver


async def require_audit_reader(request: web.Request) -> Principal:
    """The audit log and its verification: approvers and auditors."""
    who = await principal(request, auditor_ok=True)
    if who.approver is None and who.auditor is None:
        raise ApiError(403, "forbidden", "this endpoint needs an approver or auditor token")
    return who


async def require_auditor(request: web.Request) -> Auditor:
    """Evidence reports: auditors only (an approver's view is the log itself)."""
    who = await principal(request, auditor_ok=True)
    if who.auditor is None:
        raise ApiError(403, "forbidden", "this endpoint needs an auditor token (approvalbot auditors add EMAIL)")
    return who.auditor
