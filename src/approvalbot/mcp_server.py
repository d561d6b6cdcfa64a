"""`approvalbot mcp`: an MCP server (stdio) so any MCP-capable agent can gate its own actions.

The tools block on the same long-poll as the HTTP client, so reviewers decide in
Slack, Teams or the API and the agent's tool call returns with the outcome; no
elicitation support is needed in the agent's client. A denial is an answer, not
an error: the agent must see it and not retry around it.
"""

from __future__ import annotations

import time
from typing import Any

from mcp.server.mcpserver import MCPServer

from approvalbot.client import AsyncApprovalClient, RequestFields
from approvalbot.core.models import ApprovalRequest

MAX_TOOL_WAIT = 3600
INSTRUCTIONS = (
    "Before any privileged or irreversible action (exporting data, changing access, rotating "
    "keys, deploying, scaling, deleting), call request_approval describing exactly that action "
    "and proceed only if it returns approved=true. If it is denied, do not perform the action "
    "or an equivalent one. If it is still pending, poll approval_status."
)


def summary(request: ApprovalRequest) -> dict[str, Any]:
    return {
        "request_id": request.id,
        "status": request.status.value,
        "approved": request.status.value == "approved",
        "reason": request.outcome_reason,
        "decided_by": [d.approver for d in request.decisions],
        "approvals_needed": request.approvals_needed,
        "expires_at": request.expires_at.isoformat(),
        "grant": request.grant,
    }


def build_server(client: AsyncApprovalClient) -> MCPServer:
    server = MCPServer("approvalbot", instructions=INSTRUCTIONS)

    async def settle(request: ApprovalRequest, wait_seconds: float) -> dict[str, Any]:
        deadline = time.monotonic() + min(wait_seconds, MAX_TOOL_WAIT)
        while not request.status.final and (remaining := deadline - time.monotonic()) > 0:
            request = await client.get(request.id, wait=remaining)
        return summary(request)

    @server.tool()
    async def request_approval(
        action: str,
        resource: str | None = None,
        params: dict[str, Any] | None = None,
        justification: str | None = None,
        context: dict[str, str] | None = None,
        wait_seconds: float = 300,
    ) -> dict[str, Any]:
        """Ask a human to approve one action; waits up to wait_seconds for the decision.

        action: dotted name such as dataset.export or iam.role.attach.
        resource: what the action touches. params: its exact parameters.
        justification: why the action is needed, for the reviewer.
        """
        fields: RequestFields = {}
        if resource is not None:
            fields["resource"] = resource
        if params is not None:
            fields["params"] = params
        if justification is not None:
            fields["justification"] = justification
        if context is not None:
            fields["context"] = context
        request = await client.request(action, **fields)
        return await settle(request, wait_seconds)

    @server.tool()
    async def approval_status(request_id: str, wait_seconds: float = 0) -> dict[str, Any]:
        """The current outcome of an approval request; optionally waits for a decision."""
        return await settle(await client.get(request_id), wait_seconds)

    return server


def run() -> int:
    server = build_server(AsyncApprovalClient())
    server.run("stdio")
    return 0
