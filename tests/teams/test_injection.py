"""Agent (and human) text is shown as data: no markdown, no links, no mentions."""

from __future__ import annotations

import json

from approvalbot.teams.text import command_text, escape_markdown, inert

from .conftest import new_conversation

EVIL = "<at>x</at> **bold** [link](http://evil) {{DATE(2017-02-14T06:08:39Z)}} <b>html</b>\u202egnp.exe"


def nodes(card, predicate):
    found = []

    def walk(node):
        if isinstance(node, dict):
            if predicate(node):
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(card)
    return found


def assert_inert(card) -> None:
    raw = json.dumps(card, ensure_ascii=False)
    assert "<at>" not in raw and "</at>" not in raw and "<b>" not in raw
    assert "msteams" not in raw and "entities" not in raw  # no mention entities, ever
    assert "Action.OpenUrl" not in raw and "http://evil" not in json.dumps(
        nodes(card, lambda n: n.get("type") in ("TextBlock", "FactSet", "Action.OpenUrl"))
    )
    assert "{{" not in raw  # no template expressions either
    assert "\u202e" not in raw
    for block in nodes(card, lambda n: n.get("type") == "TextBlock"):
        assert "**bold**" not in block["text"] and "[link]" not in block["text"], block


async def test_agent_text_is_inert_in_every_card(teams, people, card_validator):
    channel = new_conversation("approvals")
    await teams.add_bot(channel, name="approvals")
    await teams.service.identities.add_approver("alice@example.com", [])
    created = await teams.ask(
        resource=EVIL,
        justification=EVIL,
        params={"note": EVIL, EVIL: 1},
        context={"code_path": EVIL, "run_url": "[click](http://evil)", EVIL[:90]: EVIL},
    )
    await teams.run_jobs()
    card = teams.fake.cards("create", channel)[0]
    assert_inert(card)
    # The data is still there, readable, in plain-text runs.
    runs = [n["text"] for n in nodes(card, lambda n: n.get("type") == "TextRun")]
    assert any("**bold** [link](http://evil)" in r for r in runs)
    assert any("\uff1cat\uff1ex\uff1c/at\uff1e" in r for r in runs)

    # A human's deny reason is just as inert, in the clicker's card, the channel card and the chain.
    status, answer = await teams.click(people["alice"], channel, "deny", created["id"], deny_reason=EVIL)
    assert status == 200 and answer["statusCode"] == 200
    assert_inert(answer["value"])
    await teams.run_jobs()
    for produced in [*teams.fake.all_cards(), answer["value"]]:
        assert_inert(produced)
        assert not list(card_validator.iter_errors(produced))
    # Plain messages the bot sent (the welcome) carry no agent text at all.
    for call in teams.fake.ok("create"):
        assert "<at>" not in json.dumps(call.body)


def test_text_helpers():
    assert inert("<at>x</at>") == "\uff1cat\uff1ex\uff1c/at\uff1e"
    assert inert("a" * 20, 10) == "a" * 9 + "\u2026"
    assert inert("ok\x00\x07\u200b") == "ok"
    assert escape_markdown("**b** [l](u)") == "\\*\\*b\\*\\* \\[l\\]\\(u\\)"
    assert command_text("<at>approvalbot</at>&nbsp;pending\n") == "pending"
    assert command_text("<p><at>Approval Bot</at> approval req_abc</p>") == "approval req_abc"
