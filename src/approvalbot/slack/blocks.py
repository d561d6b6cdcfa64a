"""Block Kit for every message and view approvalbot shows in Slack.

Everything here is a pure function of the request (and audit records), built
with slack_sdk's block models so Slack's size limits are checked on `to_dict()`.
Untrusted text (anything an agent or a human typed) goes through `escape`:
into plain_text objects where the layout allows, neutralised mrkdwn otherwise.
Buttons carry only the request id; everything else is read back from Redis.

Every function that shows a request renders `request.shown()`: the masked view of
what the agent supplied (params, context, justification, resource), never the raw
values, whichever caller passes the request in. Exact values appear only in the
private answer to a Reveal click (`reveal_modal`), opened for the clicker alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    InputBlock,
    MarkdownTextObject,
    PlainTextInputElement,
    PlainTextObject,
    SectionBlock,
)
from slack_sdk.models.views import View

from approvalbot.core.models import ApprovalRequest, Status
from approvalbot.core.quoting import is_multiline, quoted, text_lines
from approvalbot.core.rules import ANY_APPROVER, approval_progress
from approvalbot.slack.escape import CONTROL, clip, code, escape, fold_params, mrkdwn, plain, slack_date

APPROVE = "approve"
DENY = "deny"
REVEAL = "reveal"
MORE = "pending_more"
DECISION_VIEW = "decision"
REVEAL_VIEW = "revealed"
REASON_BLOCK = "reason"
REASON_INPUT = "reason"
CARD_EVENT = "approvalbot_request"
AUDIT_EVENT = "approvalbot_audit"
OUTCOME_EVENT = "approvalbot_outcome"

STATUS = {
    Status.PENDING: (":hourglass_flowing_sand:", "Approval needed"),
    Status.APPROVED: (":white_check_mark:", "Approved"),
    Status.DENIED: (":no_entry:", "Denied"),
    Status.EXPIRED: (":alarm_clock:", "Expired"),
    Status.CANCELLED: (":heavy_multiplication_x:", "Cancelled"),
}
CONTEXT_LABELS = {"code_path": "Code path", "run_url": "Run", "model": "Model", "impact": "Impact"}

# Slack's limits (Block Kit reference), as data: every text we build is measured against them.
SECTION_TEXT = 3000  # a section's text
HEADER_TEXT = 150  # a header's plain_text
BUTTON_TEXT = 75  # a button's label
FIELD_TEXT = 2000  # one of a section's fields
MESSAGE_BLOCKS = 50  # blocks in one message
MODAL_BLOCKS = 100  # blocks in a modal or the Home tab
APPROVERS_LABEL = "*Approvers:* "
APPROVERS_CHARS = SECTION_TEXT - len(APPROVERS_LABEL) - 50  # room left for the "and N more" tail


@dataclass(frozen=True)
class Rendered:
    """A message: notification text (mrkdwn, neutralised) and its blocks as dicts."""

    text: str
    blocks: list[dict[str, Any]]

    @property
    def digest(self) -> str:
        body = json.dumps({"text": self.text, "blocks": self.blocks}, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()[:32]


def _dicts(blocks: list[Block], max_blocks: int = MESSAGE_BLOCKS) -> list[dict[str, Any]]:
    """Block dicts, validated against Slack's limits by `to_dict()`; never more than `max_blocks`
    (the last ones give way to a note, so a message is never refused for its length)."""
    if len(blocks) > max_blocks:
        dropped = len(blocks) - max_blocks + 1
        blocks = [*blocks[: max_blocks - 1], ContextBlock(elements=[_md(f"_{dropped} more block(s) not shown._")])]
    return [b.to_dict() for b in blocks]


def _label(text: str) -> MarkdownTextObject:
    return MarkdownTextObject(text=f"*{text}*", verbatim=True)


def _value(text: str | None, limit: int = 500) -> PlainTextObject:
    return PlainTextObject(text=plain(text, limit), emoji=False)


def _block(text: str) -> str:
    """Untrusted text for a plain_text object: one line as it is, several lines as a quoted block
    (every line starts with "> "), so none of its lines can pass for a line of ours."""
    return quoted(text) if is_multiline(text) else text


def _md_reason(text: str, limit: int) -> str:
    """A reason after one of our mrkdwn lines (/approval): inline when it is one line, else a real
    Slack quote block under the line, each of its lines neutralised, then marked `&gt; `."""
    if not is_multiline(text):
        return f" - {mrkdwn(text, limit)}"
    lines = text_lines(clip(text, limit))
    return "\n" + "\n".join(f"&gt; {mrkdwn(line, limit, empty='')}" for line in lines)


def _md(text: str) -> MarkdownTextObject:
    return MarkdownTextObject(text=text, verbatim=True)


def _date(when: datetime) -> str:
    return slack_date(when.timestamp(), when.strftime("%Y-%m-%d %H:%M UTC"))


def _table(rows: list[tuple[str, Any]]) -> list[SectionBlock]:
    """Label | value rows, two columns, five rows per section (Slack allows ten fields)."""
    fields: list[Any] = []
    for label, value in rows:
        fields.append(_label(label))
        fields.append(value if isinstance(value, MarkdownTextObject) else _value(value))
    return [SectionBlock(fields=fields[i : i + 10]) for i in range(0, len(fields), 10)]


def approver_names(request: ApprovalRequest, mentions: dict[str, str], limit: int = APPROVERS_CHARS) -> str:
    """Approvers the policy names: people we could resolve are mentioned, groups are named.

    At most `limit` characters: names that do not fit are counted ("and 37 more: /approval ID")."""
    names = []
    for target in request.policy.approvers:
        if target == ANY_APPROVER:
            names.append("any registered approver")
        elif target in mentions:
            names.append(f"<@{mentions[target]}>")
        elif "@" in target:
            names.append(mrkdwn(target, 200))
        else:
            names.append(f"{mrkdwn(target, 100)} (group)")
    if not names:
        return "any registered approver"
    shown: list[str] = []
    used = 0
    for i, name in enumerate(names):
        rest = len(names) - i - 1
        tail = len(f" and {rest} more (`/approval {request.id}`)") if rest else 0
        if used + len(name) + 2 + tail > limit:
            break
        shown.append(name)
        used += len(name) + 2
    if len(shown) == len(names):
        return ", ".join(names)
    return f"{', '.join(shown)} and {len(names) - len(shown)} more (`/approval {request.id}`)"


def _decider(request: ApprovalRequest) -> str:
    if request.status is Status.CANCELLED:
        return "the agent"
    if request.status is Status.EXPIRED:
        return "nobody (it expired)"
    if request.decisions:
        return mrkdwn(request.decisions[-1].approver, 200)
    return f"policy rule {mrkdwn(request.policy.rule, 100)}"


def hidden_count(request: ApprovalRequest) -> int:
    """How many values the masked view hides (0 for requests made before masking)."""
    return len(request.masked.items) if request.masked is not None else 0


def may_reveal(request: ApprovalRequest) -> bool:
    """Whether a Reveal button belongs on the request: something is hidden and the rule allows it."""
    return hidden_count(request) > 0 and request.policy.reveal


def hidden_line(request: ApprovalRequest) -> str | None:
    """The note under the facts: how many values are hidden, and whether anyone may see them."""
    count = hidden_count(request)
    if not count:
        return None
    noun = "value" if count == 1 else "values"
    if request.policy.reveal:
        return f":lock: {count} {noun} hidden (reveal if you may decide)"
    return f":lock: {count} {noun} hidden (this request's policy rule does not allow revealing them)"


def request_rows(request: ApprovalRequest) -> list[tuple[str, Any]]:
    request = request.shown()
    rows: list[tuple[str, Any]] = [
        ("Action", request.action),
        ("Resource", request.resource or "-"),
        ("Agent", request.agent_name),
        ("Owner", request.owner),
    ]
    if request.on_behalf_of:
        rows.append(("On behalf of", request.on_behalf_of))
    for key, label in CONTEXT_LABELS.items():
        if request.context.get(key):
            rows.append((label, request.context[key]))
    approvals, needed = approval_progress(request)
    rows += [
        ("Policy rule", request.policy.rule),
        ("Approvals", f"{approvals} of {needed}"),
        ("Expires" if request.status is Status.PENDING else "Expired at", _md(_date(request.expires_at))),
    ]
    return rows


def decision_buttons(request_id: str, block_id: str = "decide", reveal: bool = False) -> ActionsBlock:
    """Approve and Deny, and Reveal when values are hidden: its answer goes to the clicker only."""
    elements = [
        ButtonElement(text="Approve", action_id=APPROVE, value=request_id, style="primary"),
        ButtonElement(text="Deny", action_id=DENY, value=request_id, style="danger"),
    ]
    if reveal:
        elements.append(ButtonElement(text="Reveal", action_id=REVEAL, value=request_id))
    return ActionsBlock(block_id=block_id, elements=elements)


def card(request: ApprovalRequest, mentions: dict[str, str] | None = None) -> Rendered:
    """The approval card: posted once, updated after every change, buttons only while pending."""
    mentions = mentions or {}
    hidden = hidden_line(request)
    reveal = may_reveal(request)
    request = request.shown()
    icon, title = STATUS[request.status]
    blocks: list[Block] = [
        HeaderBlock(text=PlainTextObject(text=plain(f"{title}: {request.action}", HEADER_TEXT - 10), emoji=True)),
        *_table(request_rows(request)),
    ]
    if request.justification:
        blocks.append(SectionBlock(text=_md("*Justification*")))
        blocks.append(SectionBlock(text=_value(_block(request.justification), 2000)))
    if request.params:
        blocks.append(SectionBlock(text=_md("*Parameters*")))
        blocks.append(SectionBlock(text=_value(fold_params(request.params), 2900)))
    extra = [(k, v) for k, v in sorted(request.context.items()) if k not in CONTEXT_LABELS]
    if extra:
        blocks.append(ContextBlock(elements=[_value(f"{k}: {v}", 300) for k, v in extra[:10]]))
    if hidden:
        blocks.append(ContextBlock(elements=[_md(hidden)]))
    blocks.append(SectionBlock(text=_md(f"{APPROVERS_LABEL}{approver_names(request, mentions)}")))
    for d in request.decisions[-10:]:
        mark = ":white_check_mark:" if d.decision == "approve" else ":no_entry:"
        verb = "approved" if d.decision == "approve" else "denied"
        elements: list[Any] = [_md(f"{mark} *{mrkdwn(d.approver, 200)}* {verb} via {d.channel.value} · {_date(d.at)}")]
        if d.reason:
            elements.append(_value(_block(d.reason), 1000))
        blocks.append(ContextBlock(elements=elements))
    if request.status is Status.PENDING:
        blocks.append(decision_buttons(request.id, reveal=reveal))
    else:
        when = _date(request.decided_at) if request.decided_at else ""
        blocks.append(DividerBlock())
        blocks.append(SectionBlock(text=_md(f"{icon} *{title}* by {_decider(request)} {when}")))
        if request.outcome_reason:
            blocks.append(ContextBlock(elements=[_md("*Why:*"), _value(_block(request.outcome_reason), 1000)]))
        if reveal:  # approvers may still look after the outcome (the service decides who)
            blocks.append(
                ActionsBlock(
                    block_id="reveal", elements=[ButtonElement(text="Reveal", action_id=REVEAL, value=request.id)]
                )
            )
    if request.execution is not None:
        ran = request.execution.status == "executed"
        line = f"Executed {request.execution.at:%H:%M} UTC" if ran else "Execution failed"
        elements = [_md(f"{':gear:' if ran else ':x:'} *{line}*")]
        if request.execution.detail:
            elements.append(_value(_block(request.execution.detail), 500))
        blocks.append(ContextBlock(elements=elements))
    blocks.append(ContextBlock(elements=[_md(f"`{request.id}` · requested {_date(request.created_at)}")]))
    text = (
        f"{title}: {mrkdwn(request.action, 200)} on {mrkdwn(request.resource or '-', 300)} "
        f"by {mrkdwn(request.agent_name, 100)} ({request.id})"
    )
    return Rendered(text, _dicts(blocks))


def card_metadata(request_id: str) -> dict[str, Any]:
    return {"event_type": CARD_EVENT, "event_payload": {"request_id": request_id}}


def _who(actor: dict[str, Any]) -> str:
    if actor.get("kind") == "system":
        return "approvalbot"
    return mrkdwn(actor.get("email") or actor.get("id") or "?", 200)


def _consumer(consumed_by: object) -> str:
    """Which principal redeemed a grant (`data.consumed_by`); records from before it say "the agent"."""
    if not isinstance(consumed_by, dict):
        return "the agent"
    kind = consumed_by.get("kind") if consumed_by.get("kind") in ("agent", "executor") else "principal"
    return f"{kind} {mrkdwn(str(consumed_by.get('name') or consumed_by.get('id') or '?'), 100)}"


def _paths(paths: object) -> str:
    """The paths a reveal named (never their values), neutralised and bounded."""
    if not isinstance(paths, list) or not paths:
        return "-"
    shown = ", ".join(str(p) for p in paths[:20])
    more = f" and {len(paths) - 20} more" if len(paths) > 20 else ""
    return mrkdwn(shown, 500) + more


def describe(record: dict[str, Any]) -> tuple[str, str]:
    """Icon and mrkdwn summary of one audit record (dynamic parts neutralised)."""
    kind = record.get("type", "")
    actor = record.get("actor", {})
    data = record.get("data", {})
    via = actor.get("channel")
    via_text = f" via {code(via, 20)}" if via and actor.get("kind") == "human" else ""
    if kind == "request.created":
        return ":inbox_tray:", f"Requested by agent {mrkdwn(actor.get('id', '?'), 100)} (owner {_who(actor)})"
    if kind == "approval.recorded":
        return ":ballot_box_with_check:", (
            f"Approval recorded: {_who(actor)}{via_text} ({data.get('approvals', '?')} of {data.get('required', '?')})"
        )
    if kind == "self_approval.blocked":
        return ":warning:", (
            f"Self-approval blocked: {_who(actor)} tried to "
            f"{code(data.get('attempted', 'decide'), 20)} their own request{via_text}"
        )
    if kind == "request.approved":
        by = "policy" if actor.get("kind") == "system" else _who(actor)
        return ":white_check_mark:", f"Approved (by {by}{via_text})"
    if kind == "request.denied":
        by = "policy" if actor.get("kind") == "system" else _who(actor)
        return ":no_entry:", f"Denied (by {by}{via_text})"
    if kind == "request.expired":
        return ":alarm_clock:", "Expired: nobody decided in time"
    if kind == "request.cancelled":
        return ":heavy_multiplication_x:", "Cancelled by the agent"
    if kind == "reminder.due":
        return ":bell:", "Reminder: this request is still waiting for a decision"
    if kind == "escalation.due":
        group = data.get("escalate_to") or "the escalation group"
        return ":rotating_light:", f"Escalation: paging {mrkdwn(group, 100)}"
    if kind == "grant.consumed":
        return ":key:", f"Grant used by {_consumer(data.get('consumed_by'))}"
    if kind == "params.revealed":
        return ":eyes:", f"Values revealed to {_who(actor)}{via_text}: {_paths(data.get('paths'))}"
    if kind == "executed":
        return ":gear:", f"Executed (reported by {_consumer({'kind': actor.get('kind'), 'id': actor.get('id')})})"
    if kind == "execution_failed":
        return ":x:", f"Execution failed (reported by {_consumer({'kind': actor.get('kind'), 'id': actor.get('id')})})"
    if kind == "delivery.failed":
        return ":x:", (
            f"Delivery failed: {code(data.get('channel', '?'), 20)} "
            f"{code(data.get('stage', '?'), 20)}: {code(data.get('error', '?'))}"
        )
    return ":memo:", mrkdwn(kind, 100)


def audit_reply(seq: int, record_hash: str, record: dict[str, Any], mentions: Sequence[str] = ()) -> Rendered:
    """One thread reply per audit record, with the numbers `approvalbot audit verify` prints."""
    icon, summary = describe(record)
    head = f"`#{seq}` `{record_hash[:12]}` {icon} {summary}"
    if mentions:
        head += " " + " ".join(mentions)
    blocks: list[Block] = [SectionBlock(text=_md(head))]
    if record.get("reason"):
        blocks.append(ContextBlock(elements=[_md("*Reason:*"), _value(_block(record["reason"]), 1000)]))
    return Rendered(f"#{seq} {record_hash[:12]} {summary}", _dicts(blocks))


def audit_metadata(request_id: str, seq: int) -> dict[str, Any]:
    return {"event_type": AUDIT_EVENT, "event_payload": {"request_id": request_id, "seq": seq}}


def outcome_dm(request: ApprovalRequest) -> Rendered:
    """The owner's direct message once the request is final."""
    request = request.shown()
    icon, title = STATUS[request.status]
    line = (
        f"{icon} Your agent *{mrkdwn(request.agent_name, 100)}* asked to "
        f"*{mrkdwn(request.action, 200)}* on {mrkdwn(request.resource or '-', 300)} "
        f"(`{request.id}`): *{title.lower()}* by {_decider(request)}."
    )
    blocks: list[Block] = [SectionBlock(text=_md(line))]
    if request.outcome_reason:
        blocks.append(ContextBlock(elements=[_md("*Why:*"), _value(_block(request.outcome_reason), 1000)]))
    return Rendered(f"{title}: {mrkdwn(request.action, 200)} ({request.id})", _dicts(blocks))


def outcome_metadata(request_id: str) -> dict[str, Any]:
    return {"event_type": OUTCOME_EVENT, "event_payload": {"request_id": request_id}}


def decision_modal(request: ApprovalRequest, decision: str, private_metadata: str) -> dict[str, Any]:
    """Asks for the reason; required to deny, optional to approve."""
    approve = decision == APPROVE
    request = request.shown()
    summary = (
        f"{request.action} on {request.resource or '-'}\n"
        f"Requested by {request.agent_name} (owner {request.owner})\n{request.id}"
    )
    view = View(
        type="modal",
        callback_id=DECISION_VIEW,
        private_metadata=private_metadata,
        title=PlainTextObject(text="Approve request" if approve else "Deny request"),
        submit=PlainTextObject(text="Approve" if approve else "Deny"),
        close=PlainTextObject(text="Cancel"),
        blocks=[
            SectionBlock(text=_value(summary, 2000)),
            InputBlock(
                block_id=REASON_BLOCK,
                label=PlainTextObject(text="Reason" if approve else "Reason (required)"),
                optional=approve,
                element=PlainTextInputElement(
                    action_id=REASON_INPUT,
                    multiline=True,
                    max_length=2000,
                    placeholder=PlainTextObject(
                        text="Optional note for the audit log"
                        if approve
                        else "Why not? The agent and the audit log will show this"
                    ),
                ),
            ),
        ],
    )
    return view.to_dict()


def hidden_paths(request: ApprovalRequest) -> list[str]:
    """The distinct masked paths, in order: what a Reveal click asks the service for."""
    if request.masked is None:
        return []
    return list(dict.fromkeys(item.path for item in request.masked.items))


REVEAL_CHUNK = SECTION_TEXT - 100  # rendered characters per plain_text object
REVEAL_MAX_BLOCKS = MODAL_BLOCKS - 5  # room for the closing note


def _exact(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    return CONTROL.sub("", text)


def _chunks(text: str, limit: int = REVEAL_CHUNK) -> list[str]:
    """The exact text in pieces whose escaped form fits one plain_text object (nothing is cut off)."""
    out: list[str] = []
    piece: list[str] = []
    size = 0
    for ch in text:
        width = len(escape(ch))
        if size + width > limit:
            out.append("".join(piece))
            piece, size = [], 0
        piece.append(ch)
        size += width
    if piece or not out:
        out.append("".join(piece))
    return out


def reveal_modal(request: ApprovalRequest, values: dict[str, Any]) -> dict[str, Any]:
    """The private answer to a Reveal click: the exact values, in a modal only the clicker sees.

    Values go into plain_text objects (Slack never formats them), escaped as everywhere else
    and split into pieces rather than clipped, so what is shown is exactly what the agent sent.
    """
    blocks: list[Block] = [
        SectionBlock(text=_md(f"Hidden values of `{request.id}` ({mrkdwn(request.action, 200)})")),
        ContextBlock(
            elements=[
                _md(":lock: Only you see this. The reveal is recorded in the audit log (who, which paths, when).")
            ]
        ),
    ]
    cut = False
    for path, value in values.items():
        pieces = [
            SectionBlock(text=PlainTextObject(text=escape(c) or "(empty)", emoji=False)) for c in _chunks(_exact(value))
        ]
        if len(blocks) + 1 + len(pieces) > REVEAL_MAX_BLOCKS:
            cut = True
            break
        blocks.append(SectionBlock(text=_md(f"*{mrkdwn(path, 300)}*")))
        blocks.extend(pieces)
    if cut:
        blocks.append(
            ContextBlock(
                elements=[_md(f"More than fits here: `POST /v1/requests/{request.id}/reveal` returns every value.")]
            )
        )
    view = View(
        type="modal",
        callback_id=REVEAL_VIEW,
        title=PlainTextObject(text="Hidden values"),
        close=PlainTextObject(text="Close"),
        blocks=blocks,
    )
    return view.to_dict()


def notice(text: str) -> Rendered:
    """A one-line message whose text we wrote (dynamic parts already neutralised)."""
    return Rendered(text, _dicts([SectionBlock(text=_md(text))]))


def queue_item(request: ApprovalRequest) -> list[Block]:
    reveal = may_reveal(request)
    request = request.shown()
    rows = [
        ("Action", request.action),
        ("Resource", request.resource or "-"),
        ("Agent", f"{request.agent_name} ({request.owner})"),
        ("Expires", _md(_date(request.expires_at))),
    ]
    return [*_table(rows), decision_buttons(request.id, f"decide:{request.id}", reveal), DividerBlock()]


def pending_message(items: list[ApprovalRequest], cursor: str | None, first: bool) -> Rendered:
    """The ephemeral /pending answer: oldest first, with buttons, and More when there is more."""
    if not items:
        text = "Nothing is waiting for your decision." if first else "No more requests."
        return Rendered(text, _dicts([SectionBlock(text=_md(text))]))
    blocks: list[Block] = [SectionBlock(text=_md(f"*Waiting for your decision* (oldest first, {len(items)} shown)"))]
    for request in items:
        blocks += queue_item(request)
    if cursor:
        blocks.append(
            ActionsBlock(block_id="more", elements=[ButtonElement(text="More", action_id=MORE, value=cursor)])
        )
    return Rendered(f"{len(items)} requests wait for your decision", _dicts(blocks))


def home_view(items: list[ApprovalRequest], more: bool, registered: bool) -> dict[str, Any]:
    blocks: list[Block] = [HeaderBlock(text=PlainTextObject(text="Your approval queue"))]
    if not registered:
        blocks.append(
            SectionBlock(
                text=_md(
                    "You are not a registered approver. An admin can add you with "
                    "`approvalbot approvers add <your email> --group <group>`."
                )
            )
        )
    elif not items:
        blocks.append(SectionBlock(text=_md("Nothing is waiting for your decision. :tada:")))
    for request in items:
        blocks += queue_item(request)
    if more:
        blocks.append(ContextBlock(elements=[_md("More are waiting: run `/pending` to page through them.")]))
    return View(type="home", blocks=blocks[:MODAL_BLOCKS]).to_dict()


DETAIL_PAGE = 40  # audit records per page of the /approval answer


def detail_message(
    request: ApprovalRequest, records: list[tuple[int, str | None, dict[str, Any]]], page: int = 1
) -> Rendered:
    """/approval ID [page]: the card's facts plus one page of the request's audit records (oldest
    first, DETAIL_PAGE per page; the last line names the command for the next page)."""
    hidden = hidden_line(request)
    request = request.shown()
    icon, title = STATUS[request.status]
    blocks: list[Block] = [
        SectionBlock(text=_md(f"{icon} *{title}* · `{request.id}`")),
        *_table(request_rows(request)),
    ]
    if request.justification:
        sep = "\n" if is_multiline(request.justification) else " "
        blocks.append(SectionBlock(text=_value(f"Justification:{sep}{_block(request.justification)}", 1500)))
    if hidden:
        blocks.append(ContextBlock(elements=[_md(hidden)]))
    pages = max(1, -(-len(records) // DETAIL_PAGE))
    page = min(max(page, 1), pages)
    lines = []
    for seq, record_hash, record in records[(page - 1) * DETAIL_PAGE : page * DETAIL_PAGE]:
        _, summary = describe(record)
        line = f"`#{seq}` `{(record_hash or 'unsealed')[:12]}` {summary}"
        if record.get("reason"):
            line += _md_reason(str(record["reason"]), 200)
        lines.append(line)
    heading = "*Audit records*" if pages == 1 else f"*Audit records*, page {page} of {pages}"
    blocks.append(SectionBlock(text=_md(heading)))
    chunk: list[str] = []
    for line in lines:
        if sum(len(x) + 1 for x in chunk) + len(line) > SECTION_TEXT - 200:
            blocks.append(SectionBlock(text=_md("\n".join(chunk))))
            chunk = []
        chunk.append(line)
    if chunk:
        blocks.append(SectionBlock(text=_md("\n".join(chunk))))
    more = [ContextBlock(elements=[_md(f"More: `/approval {request.id} {page + 1}`")])] if page < pages else []
    blocks = [*blocks[: MESSAGE_BLOCKS - len(more)], *more]
    return Rendered(f"{title}: {mrkdwn(request.action, 200)} ({request.id})", _dicts(blocks))
