"""Adaptive Cards (schema 1.5) for Teams: the approval card, audit replies and notices.

Pure functions from approvalbot's models to card JSON; nothing here talks to Teams.
Rule of the module: `TextBlock`s (which render markdown) only ever hold our own
words, numbers, dates and hex; anything an agent or a person wrote goes into a
`TextRun` (plain text by the schema) after `text.inert`.

Cards render `request.shown()`, the masked view of what the agent supplied, never the
raw values. The exact values appear only in `reveal_card`, the invoke answer to the
clicker's own Reveal (Universal Actions answer each user with their own card).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from approvalbot.core.models import ApprovalRequest, Status
from approvalbot.core.quoting import is_multiline, quoted
from approvalbot.core.rules import approval_progress
from approvalbot.teams.text import inert

CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
SCHEMA_URL = "http://adaptivecards.io/schemas/adaptive-card.json"
VERSION = "1.5"
MAX_REFRESH_USERS = 60  # Teams refreshes automatically for at most 60 listed users
VERB_APPROVE, VERB_DENY, VERB_REFRESH, VERB_REVEAL = "approve", "deny", "refresh", "reveal"
REASON_INPUT, DENY_REASON_INPUT = "reason", "deny_reason"
REASON_MAX = 1000

CONTEXT_LABELS = {"code_path": "Code path", "run_url": "Run", "model": "Model", "impact": "Impact"}
MAX_CONTEXT_ROWS = 12
MAX_DECISIONS_SHOWN = 10
DECISION_REASON_CHARS = 200
CONTEXT_VALUE_CHARS = 200
PARAMS_MAX_CHARS = 2000
REVEAL_VALUE_CHARS = 4000  # one revealed value on the card; the API returns it whole
REVEAL_TOTAL_CHARS = 16000  # all revealed values together (Teams cards stay well under ~28 KB)

# Size as sent: botbuilder (msrest) serialises activities with `json.dumps`, which escapes every
# non-ASCII character as \uXXXX (6 bytes; 12 for an emoji, a surrogate pair). The budget is
# APPROVALBOT_TEAMS_MAX_BYTES; ENVELOPE_BYTES is what the activity around a card adds at most
# (addresses, ids, the summary: measured in tests/teams/test_limits.py).
DEFAULT_MAX_BYTES = 28000
ENVELOPE_BYTES = 2500
REFRESH_RESERVE = 1200  # bytes kept for `refresh.userIds` (about ten ids) when fitting a pending card
AUDIT_PAGE = 25  # records per page of the `approval ID` trail
SHORTENED = 'Shortened to fit in Teams: send the bot "approval {id}" for every detail.'

STATUS_TITLES = {
    Status.PENDING: ("Approval needed", "warning"),
    Status.APPROVED: ("Approved", "good"),
    Status.DENIED: ("Denied", "attention"),
    Status.EXPIRED: ("Expired: nobody decided in time", "attention"),
    Status.CANCELLED: ("Cancelled by the agent", "emphasis"),
}

EVENT_LABELS = {
    "request.created": "Requested",
    "approval.recorded": "Approval recorded",
    "request.approved": "Approved",
    "request.denied": "Denied",
    "request.expired": "Expired",
    "request.cancelled": "Cancelled",
    "self_approval.blocked": "Self-approval blocked",
    "grant.consumed": "Grant used",
    "reminder.due": "Reminder",
    "escalation.due": "Escalated",
    "delivery.failed": "Delivery failed",
    "executed": "Executed",
    "execution_failed": "Execution failed",
    "params.revealed": "Values revealed",
}


@dataclass(frozen=True)
class Notice:
    """A message to the person looking at the card: our words, plus optional data (shown inert)."""

    text: str
    detail: str | None = None
    style: str = "attention"  # a ContainerStyle: attention, good, warning, accent, emphasis


def when(value: datetime | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.strftime("%Y-%m-%d %H:%M UTC")


def run(text: object, limit: int = 1000, **style: Any) -> dict[str, Any]:
    """A TextRun: plain text, never markdown."""
    return {"type": "TextRun", "text": inert(text, limit), **style}


def rich(*inlines: dict[str, Any], **props: Any) -> dict[str, Any]:
    return {"type": "RichTextBlock", "inlines": list(inlines), **props}


def _block(value: object, limit: int) -> str:
    """Untrusted text, made inert: one line as it is, several lines as a quoted block (every line
    starts with "> ", shown as a look-alike by `inert`), so none of its lines can pass for a record."""
    text = inert(value, limit)
    return quoted(text) if is_multiline(text) else text


def _after(value: object, limit: int) -> str:
    """A reason following our own words on one line: ": reason", or ":" and the quoted block below."""
    text = _block(value, limit)
    return f":\n{text}" if is_multiline(text) else f": {text}"


def label(text: str, **props: Any) -> dict[str, Any]:
    """A TextBlock for our own fixed words only."""
    return {"type": "TextBlock", "text": text, "wrap": True, **props}


def row(name: str, value: object, limit: int = 1000, monospace: bool = False) -> dict[str, Any]:
    value_run = run(value, limit, fontType="Monospace") if monospace else run(value, limit)
    return {
        "type": "ColumnSet",
        "spacing": "Small",
        "columns": [
            {"type": "Column", "width": 2, "items": [label(name, weight="Bolder", isSubtle=True)]},
            {"type": "Column", "width": 5, "items": [rich(value_run)]},
        ],
    }


def card(
    body: list[dict[str, Any]],
    actions: list[dict[str, Any]] | None = None,
    refresh: dict[str, Any] | None = None,
    fallback: str | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "AdaptiveCard", "$schema": SCHEMA_URL, "version": VERSION, "body": body}
    if actions:
        out["actions"] = actions
    if refresh:
        out["refresh"] = refresh
    if fallback:
        out["fallbackText"] = fallback
    return out


def notice_block(notice: Notice) -> dict[str, Any]:
    items: list[dict[str, Any]] = [label(notice.text, weight="Bolder")]
    if notice.detail:
        items.append(rich(run(notice.detail, 300)))
    return {"type": "Container", "style": notice.style, "items": items, "spacing": "Medium"}


def _context_rows(
    context: dict[str, str], value_chars: int = CONTEXT_VALUE_CHARS, max_rows: int = MAX_CONTEXT_ROWS
) -> list[dict[str, Any]]:
    known = [(k, CONTEXT_LABELS[k]) for k in CONTEXT_LABELS if k in context]
    others = [(k, None) for k in sorted(context) if k not in CONTEXT_LABELS]
    rows = []
    for key, name in (known + others)[:max_rows]:
        if name is None:
            rows.append(
                {
                    "type": "ColumnSet",
                    "spacing": "Small",
                    "columns": [
                        {"type": "Column", "width": 2, "items": [rich(run(key, 100, weight="Bolder", isSubtle=True))]},
                        {"type": "Column", "width": 5, "items": [rich(run(context[key], value_chars))]},
                    ],
                }
            )
        else:
            rows.append(row(name, context[key], value_chars, monospace=key == "code_path"))
    return rows


def hidden_count(request: ApprovalRequest) -> int:
    """How many values the masked view hides (0 for requests made before masking)."""
    return len(request.masked.items) if request.masked is not None else 0


def hidden_paths(request: ApprovalRequest) -> list[str]:
    """The distinct masked paths, in order: what a Reveal click asks the service for."""
    if request.masked is None:
        return []
    return list(dict.fromkeys(item.path for item in request.masked.items))


def _hidden_block(request: ApprovalRequest) -> list[dict[str, Any]]:
    count = hidden_count(request)
    if not count:
        return []
    noun = "value" if count == 1 else "values"
    why = (
        "reveal if you may decide"
        if request.policy.reveal
        else "this request's policy rule does not allow revealing them"
    )
    return [label(f"\U0001f512 {count} {noun} hidden ({why})", isSubtle=True, spacing="Small")]


def revealed_paths(record: dict[str, Any]) -> str:
    """The paths a `params.revealed` record names (never values)."""
    paths = (record.get("data") or {}).get("paths")
    if not isinstance(paths, list) or not paths:
        return "-"
    more = f" and {len(paths) - 20} more" if len(paths) > 20 else ""
    return ", ".join(str(p) for p in paths[:20]) + more


def _params_block(request: ApprovalRequest) -> list[dict[str, Any]]:
    """Parameters folded behind a toggle: the card stays short, the data is one click away."""
    if not request.params:
        return []
    text = json.dumps(request.params, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    target = f"params-{request.id}"
    return [
        {
            "type": "ActionSet",
            "actions": [
                {
                    "type": "Action.ToggleVisibility",
                    "title": f"Parameters ({len(request.params)})",
                    "targetElements": [target],
                }
            ],
        },
        {
            "type": "Container",
            "id": target,
            "isVisible": False,
            "items": [rich(run(text, PARAMS_MAX_CHARS, fontType="Monospace"))],
        },
    ]


def _decisions_block(
    request: ApprovalRequest, shown: int = MAX_DECISIONS_SHOWN, reason_chars: int = DECISION_REASON_CHARS
) -> list[dict[str, Any]]:
    if not request.decisions:
        return []
    out: list[dict[str, Any]] = [label("Decisions", weight="Bolder", spacing="Medium", separator=True)]
    hidden = len(request.decisions) - shown
    if hidden > 0:
        out.append(
            label(
                f'{hidden} earlier decision(s) not shown; send the bot "approval" and the '
                "request id for the full trail.",
                isSubtle=True,
                spacing="Small",
            )
        )
    for d in request.decisions[-shown:]:
        verb = "\u2714 approved" if d.decision == "approve" else "\u2716 denied"
        inlines = [run(d.approver, 254, weight="Bolder"), run(f" {verb} via {d.channel.value}, {when(d.at)}")]
        if d.reason:
            inlines.append(run(_after(d.reason, reason_chars), 3 * reason_chars, italic=True))
        out.append(rich(*inlines, spacing="Small"))
    return out


def _outcome_block(request: ApprovalRequest, reason_chars: int = 1000) -> list[dict[str, Any]]:
    if not request.status.final:
        return []
    title, style = STATUS_TITLES[request.status]
    human = [d for d in request.decisions if d.decision == ("deny" if request.status is Status.DENIED else "approve")]
    who = human[-1].approver if human and request.status in (Status.APPROVED, Status.DENIED) else "approvalbot"
    items = [
        label(f"Outcome: {title}", weight="Bolder"),
        rich(run("by "), run(who, 254, weight="Bolder"), run(f", {when(request.decided_at)}")),
    ]
    if request.outcome_reason:
        items.append(
            rich(run("Why: "), run(_block(request.outcome_reason, reason_chars), 3 * reason_chars, italic=True))
        )
    if request.execution is not None:
        ran = request.execution.status == "executed"
        items.append(
            label(f"Executed {request.execution.at:%H:%M} UTC" if ran else "Execution failed", weight="Bolder")
        )
        if request.execution.detail:
            items.append(rich(run(_block(request.execution.detail, 500), 500, italic=True)))
    return [{"type": "Container", "style": style, "items": items, "spacing": "Medium"}]


def _decision_inputs(request: ApprovalRequest) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The reason input and the Approve / Deny actions (Deny asks for its required reason)."""
    data = {"request_id": request.id}
    body = [
        {
            "type": "Input.Text",
            "id": REASON_INPUT,
            "label": "Reason (optional when approving)",
            "isMultiline": True,
            "maxLength": REASON_MAX,
            "placeholder": "Why you approve, e.g. a ticket number",
        }
    ]
    deny_card = card(
        body=[
            {
                "type": "Input.Text",
                "id": DENY_REASON_INPUT,
                "label": "Reason for denying (required)",
                "isMultiline": True,
                "isRequired": True,
                "maxLength": REASON_MAX,
                "errorMessage": "A reason is required to deny.",
            }
        ],
        actions=[
            {
                "type": "Action.Execute",
                "title": "Deny",
                "verb": VERB_DENY,
                "style": "destructive",
                "data": data,
                "associatedInputs": "auto",
            }
        ],
    )
    actions = [
        {
            "type": "Action.Execute",
            "title": "Approve",
            "verb": VERB_APPROVE,
            "style": "positive",
            "data": data,
            "associatedInputs": "auto",
        },
        {"type": "Action.ShowCard", "title": "Deny\u2026", "card": deny_card},
    ]
    return body, actions


def card_bytes(value: Any) -> int:
    """How many bytes `value` takes in the JSON the SDK sends (ASCII, non-ASCII escaped)."""
    return len(json.dumps(value, default=str))


def sent_size(card: dict[str, Any]) -> int:
    """A card's size as sent in one activity: the card, its summary again, and the envelope."""
    return card_bytes(card) + card_bytes(card.get("fallbackText") or "") + ENVELOPE_BYTES


def with_refresh_users(card: dict[str, Any], users: Sequence[str], max_bytes: int) -> dict[str, Any]:
    """The card with `refresh.userIds` set to as many of `users` as the byte budget leaves room for."""
    if "refresh" not in card:
        return card
    room = max_bytes - sent_size({**card, "refresh": {**card["refresh"], "userIds": []}})
    kept: list[str] = []
    for user in list(dict.fromkeys(users))[:MAX_REFRESH_USERS]:
        room -= card_bytes(user) + 2
        if room < 0:
            break
        kept.append(user)
    return {**card, "refresh": {**card["refresh"], "userIds": kept}}


def fit_request_card(
    request: ApprovalRequest,
    max_bytes: int = DEFAULT_MAX_BYTES,
    *,
    actions: bool = True,
    notice: Notice | None = None,
    refresh_user_ids: Sequence[str] = (),
) -> dict[str, Any]:
    """The approval card within `max_bytes` as sent: whole when it fits, else shortened (fewer
    and shorter texts, parameters left out) and saying how to see the rest, else the summary.
    A pending card keeps room for some auto-refresh ids (`REFRESH_RESERVE`); the ids fill what is left."""
    built = request_card(request, actions=actions, notice=notice)
    for level in (1, 2, 3):
        reserve = REFRESH_RESERVE if "refresh" in built else 0
        if sent_size(built) + reserve <= max_bytes:
            break
        built = request_card(request, actions=actions, notice=notice, shorten=level)
    return with_refresh_users(built, refresh_user_ids, max_bytes)


def summary_card(request: ApprovalRequest, *, actions: bool = True) -> dict[str, Any]:
    """The smallest approval card: state, action, resource, id and the buttons (a few KB at most,
    whatever the request holds); what a 413 from the connector is answered with."""
    return request_card(request, actions=actions, shorten=3)


def request_card(
    request: ApprovalRequest,
    *,
    actions: bool = True,
    notice: Notice | None = None,
    refresh_user_ids: Sequence[str] = (),
    shorten: int = 0,
) -> dict[str, Any]:
    """The approval card. `actions=False` shows a pending request read-only (e.g. to its owner).

    `shorten` 1-3 leaves out more and cuts texts shorter (see `fit_request_card`): 1 cuts long
    texts and drops the parameters, 2 keeps one line per text and the last decisions, 3 is the
    summary (no justification, context or decisions)."""
    raw = request
    request = request.shown()
    cut = (1.0, 0.25, 0.08, 0.0)[shorten]

    def chars(limit: int) -> int:
        return max(40, int(limit * cut)) if shorten else limit

    title, style = STATUS_TITLES[request.status]
    approvals, needed = approval_progress(request)
    header = {
        "type": "Container",
        "style": style,
        "bleed": True,
        "items": [
            label(title, size="Large", weight="Bolder"),
            rich(run(request.action, 200, fontType="Monospace", weight="Bolder", size="Medium")),
            label(
                f"{approvals} of {needed} approvals \u00b7 expires {when(request.expires_at)}",
                isSubtle=True,
                spacing="Small",
            ),
        ],
    }
    body: list[dict[str, Any]] = [header]
    if notice:
        body.append(notice_block(notice))
    if shorten:
        body.append(label(SHORTENED.format(id=request.id), isSubtle=True, spacing="Small"))
    if request.resource:
        body.append(row("Resource", request.resource, chars(500), monospace=True))
    if request.justification and shorten < 3:
        body.append(row("Justification", _block(request.justification, chars(1500)), 3 * chars(1500)))
    body.append(row("Agent", request.agent_name, 100))
    body.append(row("Owner", request.owner, 254))
    if request.on_behalf_of:
        body.append(row("On behalf of", request.on_behalf_of, 254))
    if shorten < 3:
        body.extend(_context_rows(request.context, chars(CONTEXT_VALUE_CHARS), MAX_CONTEXT_ROWS if not shorten else 4))
    body.append(row("Policy rule", request.policy.rule, 200))
    body.append(row("Approvals", f"{approvals} of {needed}"))
    body.append(row("Requested", when(request.created_at)))
    body.append(row("Request id", request.id, 100, monospace=True))
    if not shorten:
        body.extend(_params_block(request))
    elif request.params:
        body.append(label(f"Parameters ({len(request.params)}): not shown here.", isSubtle=True, spacing="Small"))
    body.extend(_hidden_block(raw))
    if shorten < 3:
        body.extend(_decisions_block(request, MAX_DECISIONS_SHOWN if shorten < 2 else 3, chars(DECISION_REASON_CHARS)))
    body.extend(_outcome_block(request, chars(1000)))

    card_actions: list[dict[str, Any]] = []
    refresh = None
    if request.status is Status.PENDING:
        if actions:
            inputs, card_actions = _decision_inputs(request)
            body.extend(inputs)
        refresh = {
            "action": {
                "type": "Action.Execute",
                "title": "Refresh",
                "verb": VERB_REFRESH,
                "data": {"request_id": request.id},
            },
            "userIds": list(dict.fromkeys(refresh_user_ids))[:MAX_REFRESH_USERS],
        }
    # Reveal with the decision buttons, and on final cards (approvers may still look; the service decides who).
    if hidden_count(raw) and raw.policy.reveal and (card_actions or request.status.final):
        card_actions.append(
            {"type": "Action.Execute", "title": "Reveal", "verb": VERB_REVEAL, "data": {"request_id": request.id}}
        )
    return card(body, card_actions, refresh, fallback=f"Approval request {inert(request.action, 200)}: {title}")


def _chars_within(text: str, nbytes: int) -> int:
    """How many characters of `text` (as `inert` shows it) fit in `nbytes` of JSON as sent."""
    used = 2  # the quotes
    count = 0
    for ch in inert(text, len(text) + 1):
        used += len(json.dumps(ch)) - 2
        if used > nbytes - 6:  # room for the "…" that marks a cut
            return count
        count += 1
    return count


def reveal_card(request: ApprovalRequest, values: dict[str, Any], max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, Any]:
    """The private answer to the clicker's Reveal: the exact values, on a card only they get.

    It is the invoke response (per user; the shared card is never updated with it), and its
    Hide action refreshes back to the masked card. Values are TextRuns after `inert` (so `<`
    and `>` show as look-alikes); a value longer than fits (4,000 characters, 16,000 in all, and
    `max_bytes` as sent) is cut and says so.
    """
    shown = request.shown()
    title, style = STATUS_TITLES[request.status]
    body: list[dict[str, Any]] = [
        {
            "type": "Container",
            "style": style,
            "bleed": True,
            "items": [
                label(title, size="Large", weight="Bolder"),
                rich(run(shown.action, 200, fontType="Monospace", weight="Bolder", size="Medium")),
            ],
        },
        notice_block(
            Notice(
                "Hidden values, shown only to you. The reveal is recorded in the audit log (who, which paths, when).",
                style="warning",
            )
        ),
    ]
    room = max_bytes - ENVELOPE_BYTES - card_bytes(body) - 2500  # the frame, the id row, Hide
    chars_left = REVEAL_TOTAL_CHARS
    for path, value in values.items():
        text = value if isinstance(value, str) else json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
        heading = rich(run(path, 300, weight="Bolder"), spacing="Medium")
        fits = _chars_within(text, room - card_bytes(heading) - 400)
        limit = min(REVEAL_VALUE_CHARS, chars_left, fits)
        if limit <= 0:
            body.append(label("More values than fit on a card: the API's reveal returns them all.", isSubtle=True))
            break
        shown_value = rich(run(text, limit, fontType="Monospace"))
        body += [heading, shown_value]
        room -= card_bytes(heading) + card_bytes(shown_value) + 4
        chars_left -= min(len(text), limit)
        if len(text) > limit:
            note = label(f"Cut at {limit} characters: the API's reveal returns the whole value.", isSubtle=True)
            body.append(note)
            room -= card_bytes(note) + 2
    body.append(row("Request id", request.id, 100, monospace=True))
    hide = {"type": "Action.Execute", "title": "Hide values", "verb": VERB_REFRESH, "data": {"request_id": request.id}}
    return card(body, [hide], fallback=f"Hidden values of {request.id}")


def restricted_card(request: ApprovalRequest, notice: Notice) -> dict[str, Any]:
    """What someone who may not view a request (`rules.may_view`) sees when their client refreshes
    or they click: its state and id, none of its details (no action, params, justification, people)."""
    title, style = STATUS_TITLES[request.status]
    body: list[dict[str, Any]] = [
        {"type": "Container", "style": style, "bleed": True, "items": [label(title, size="Large", weight="Bolder")]},
        notice_block(notice),
        row("Request id", request.id, 100, monospace=True),
    ]
    return card(body, fallback=title)


def consumer_of(record: dict[str, Any]) -> str | None:
    """Who used a grant (`data.consumed_by` of `grant.consumed`): "agent etl-bot", "executor deployer"."""
    consumed_by = (record.get("data") or {}).get("consumed_by")
    if record.get("type") != "grant.consumed" or not isinstance(consumed_by, dict):
        return None
    kind = consumed_by.get("kind") if consumed_by.get("kind") in ("agent", "executor") else "principal"
    return f"{kind} {consumed_by.get('name') or consumed_by.get('id') or '?'}"


def audit_card(record: dict[str, Any], short: bool = False) -> dict[str, Any]:
    """One mirrored audit record: sequence number, what happened, who, why, hash prefix
    (`short`: the reason cut to one line, what a 413 from the connector is answered with)."""
    seq = int(record["seq"])
    digest = str(record.get("hash") or "")[:12]
    kind = str(record.get("type", ""))
    actor = record.get("actor") or {}
    consumer = consumer_of(record)
    who = consumer or actor.get("email") or actor.get("id") or actor.get("kind") or "?"
    via = "" if consumer else actor.get("channel") or ""
    inlines = [run(f"used by {who}" if consumer else who, 254, weight="Bolder")]
    if via:
        inlines.append(run(f" via {via}", 40))
    inlines.append(run(f", {when(record.get('at'))}"))
    body: list[dict[str, Any]] = [
        {
            "type": "ColumnSet",
            "columns": [
                {"type": "Column", "width": "auto", "items": [label(f"#{seq}", weight="Bolder")]},
                {
                    "type": "Column",
                    "width": "stretch",
                    "items": [
                        rich(
                            run(EVENT_LABELS.get(kind, kind), 60, weight="Bolder"), run(f"  {kind}", 60, isSubtle=True)
                        )
                    ],
                },
            ],
        },
        rich(*inlines, spacing="None"),
    ]
    if record.get("reason"):
        limit = 100 if short else 1000
        body.append(rich(run(_block(record["reason"], limit), 3 * limit, italic=True), spacing="Small"))
    data = record.get("data") or {}
    if kind == "params.revealed":
        body.append(rich(run(f"Values revealed to {who}: {revealed_paths(record)}", 1500), spacing="None"))
    if kind == "approval.recorded" and "approvals" in data:
        body.append(
            label(
                f"{int(data['approvals'])} of {int(data.get('required', 0))} approvals", isSubtle=True, spacing="None"
            )
        )
    if kind == "delivery.failed":
        body.append(
            rich(
                run(
                    " ".join(str(data.get(k, "")) for k in ("channel", "target", "stage"))
                    + f": {data.get('error', '')}",
                    300,
                ),
                spacing="None",
            )
        )
    body.append(
        label(
            f"hash {digest}" if digest else "hash pending",
            fontType="Monospace",
            isSubtle=True,
            size="Small",
            spacing="None",
        )
    )
    return card(body, fallback=f"#{seq} {kind}")


def message_card(title: str, lines: Iterable[str] = (), notice: Notice | None = None) -> dict[str, Any]:
    """A small card of our own words (help, empty queue, errors)."""
    body: list[dict[str, Any]] = [label(title, weight="Bolder", size="Medium")]
    if notice:
        body.append(notice_block(notice))
    body.extend(label(line, spacing="Small") for line in lines)
    return card(body, fallback=title)


def _trail_line(record: dict[str, Any]) -> dict[str, Any]:
    kind = str(record.get("type", ""))
    actor = record.get("actor") or {}
    inlines = [
        run(f"#{int(record['seq'])} ", weight="Bolder"),
        run(EVENT_LABELS.get(kind, kind), 60),
        run(" \u00b7 "),
        run(consumer_of(record) or actor.get("email") or actor.get("id") or "?", 254),
        run(f" \u00b7 {when(record.get('at'))} \u00b7 {str(record.get('hash') or '')[:12]}", fontType="Monospace"),
    ]
    if kind == "params.revealed":
        inlines.append(run(f": {revealed_paths(record)}", 1000))
    if record.get("reason"):
        inlines.append(run(_after(record["reason"], 300), 900, italic=True))
    return rich(*inlines, spacing="Small")


def audit_pages(records: list[dict[str, Any]], max_bytes: int = DEFAULT_MAX_BYTES) -> list[list[dict[str, Any]]]:
    """The trail cut into pages, oldest first: at most AUDIT_PAGE records and `max_bytes` as sent each."""
    room = max_bytes - ENVELOPE_BYTES - 2000  # the card's frame: title, id, paging line, fallback
    pages: list[list[dict[str, Any]]] = [[]]
    used = 0
    for record in records:
        size = card_bytes(_trail_line(record)) + 2
        if pages[-1] and (len(pages[-1]) >= AUDIT_PAGE or used + size > room):
            pages.append([])
            used = 0
        pages[-1].append(record)
        used += size
    return pages


def audit_page_card(
    request: ApprovalRequest, records: list[dict[str, Any]], page: int = 1, max_bytes: int = DEFAULT_MAX_BYTES
) -> dict[str, Any]:
    """The `approval ID [page]` command's second card: one page of the request's audit trail."""
    pages = audit_pages(records, max_bytes)
    page = min(max(page, 1), len(pages))
    body: list[dict[str, Any]] = [
        label(
            "Audit trail" if len(pages) == 1 else f"Audit trail, page {page} of {len(pages)}",
            weight="Bolder",
            size="Medium",
        ),
        rich(run(request.id, 100, fontType="Monospace")),
    ]
    body.extend(_trail_line(record) for record in pages[page - 1])
    if page < len(pages):
        body.append(label(f'More records: send "approval {request.id} {page + 1}" for page {page + 1}.', isSubtle=True))
    return card(body, fallback=f"Audit trail of {request.id}")


def audit_list_card(request: ApprovalRequest, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The first page of the trail (kept for callers that do not page)."""
    return audit_page_card(request, records)
