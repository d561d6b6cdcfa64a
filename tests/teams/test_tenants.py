"""Issue 11, Teams: only allowed tenants are served, and a Teams user is a person by tenant + AAD object id.

Every attack of the issue, over real HTTP through `CloudAdapter.process`, with activities
from two tenants against the fake connector (each tenant its own directory of members).
"""

from __future__ import annotations

import json

import pytest

from approvalbot.app import build_app
from approvalbot.config import Settings
from approvalbot.core.models import ChatIdentity
from approvalbot.core.policy import Policy
from approvalbot.teams import cards, tenants
from approvalbot.teams.channel import TeamsChannel
from approvalbot.teams.identity import member_key
from approvalbot.teams.references import ConversationRef, ReferenceStore
from approvalbot.teams.settings import TeamsConfigError

from .conftest import BOT_ID, OTHER_TENANT, TENANT, Person, new_conversation
from .test_flow import texts

EVIL_ALICE = Person("29:evil-alice", "aad-evil", "alice@example.com", "Alice", tenant=OTHER_TENANT)

SECURITY = Policy.from_yaml(
    """
rules:
  - name: security
    match: {action: "*"}
    effect: require_approval
    approvers: [security]
    channel: "#approvals"
"""
)


async def records_of(teams, kind: str) -> list[dict]:
    return [r.as_dict() async for r in teams.service.audit.records() if r.as_dict()["type"] == kind]


async def request_records(teams, request_id: str) -> list[str]:
    return [r.as_dict()["type"] for r in await teams.service.audit.for_request(request_id)]


def foreign_ref(teams, conversation: str, name: str = "approvals") -> ConversationRef:
    """A conversation of the other tenant as an older version stored it (it did not check tenants)."""
    service_url = teams.fake.service_url(OTHER_TENANT)
    return ConversationRef(
        id=conversation,
        kind="channel",
        name=name,
        service_url=service_url,
        reference={
            "bot": {"id": BOT_ID},
            "conversation": {"id": conversation, "conversationType": "channel", "tenantId": OTHER_TENANT},
            "channelId": "msteams",
            "serviceUrl": service_url,
        },
        team="Partner",
        tenant_id=OTHER_TENANT,
    )


# --- start-up -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        {"APPROVALBOT_TEAMS_DEV": True},
        {"MICROSOFT_APP_ID": "5b1f0a5e-1c2d-4e5f-8a9b-0c1d2e3f4a5b", "MICROSOFT_APP_PASSWORD": "x"},
        {"APPROVALBOT_TEAMS_DEV": True, "APPROVALBOT_TEAMS_TENANTS": " , "},
    ],
)
def test_start_up_without_a_tenant_setting_is_a_clear_error(rt, redis, redis_url, data_dir, monkeypatch, extra):
    for name in ("MICROSOFT_APP_TENANT_ID", "APPROVALBOT_TEAMS_TENANTS", "MICROSOFT_APP_ID"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(REDIS_URL=redis_url, APPROVALBOT_DATA_DIR=data_dir, **extra)
    with pytest.raises(TeamsConfigError, match="MICROSOFT_APP_TENANT_ID or APPROVALBOT_TEAMS_TENANTS"):
        TeamsChannel(settings)
    with pytest.raises(TeamsConfigError, match="MICROSOFT_APP_TENANT_ID or APPROVALBOT_TEAMS_TENANTS"):
        build_app(settings, rt.service(redis))


def test_either_setting_names_the_allowed_tenants(redis_url):
    one = TeamsChannel(Settings(REDIS_URL=redis_url, APPROVALBOT_TEAMS_DEV=True, MICROSOFT_APP_TENANT_ID="T-1"))
    assert one.ts.tenants == {"t-1"} and one.ts.allows("t-1") and one.ts.allows("T-1")
    both = TeamsChannel(
        Settings(
            REDIS_URL=redis_url,
            MICROSOFT_APP_ID="app",
            MICROSOFT_APP_PASSWORD="x",
            MICROSOFT_APP_TENANT_ID="t-1",
            APPROVALBOT_TEAMS_TENANTS="t-2, t-3,",
        )
    )
    assert both.ts.tenants == {"t-1", "t-2", "t-3"} and not both.ts.allows(None) and not both.ts.allows("t-4")
    assert "tenants t-1, t-2, t-3" in both.status_line()


# --- activities from another tenant ----------------------------------------------------------------


async def test_install_from_another_tenant_is_refused_and_never_receives_cards(teams, people):
    ours, theirs = new_conversation("approvals"), new_conversation("approvals")
    assert (await teams.add_bot(ours, name="approvals", by=people["alice"]))[0] in (200, 201)
    teams.fake.add(EVIL_ALICE)
    for _ in range(3):
        status, body = await teams.add_bot(theirs, name="approvals", by=EVIL_ALICE, tenant=OTHER_TENANT)
        assert status == 403 and body["error"]["code"] == "foreign_workspace"
    assert [r.id for r in await ReferenceStore(teams.service.redis).all()] == [ours]
    assert teams.fake.to(theirs) == []  # no welcome message either

    refused = await records_of(teams, "identity.refused")
    assert len(refused) == 1  # three attempts, one record (bounded)
    assert refused[0]["data"]["code"] == "foreign_workspace"
    assert (refused[0]["actor"]["workspace"], refused[0]["actor"]["channel_user"]) == (OTHER_TENANT, "aad-evil")

    created = await teams.ask(justification="quarterly numbers", params={"rows": 5000})
    await teams.run_jobs()
    assert len(teams.fake.cards("create", ours)) == 1
    assert teams.fake.to(theirs) == [] and {c.tenant for c in teams.fake.calls} == {TENANT}
    assert "delivery.failed" not in await request_records(teams, created["id"])


async def test_removal_and_renames_from_another_tenant_change_nothing(teams, people):
    ours = new_conversation("approvals")
    await teams.add_bot(ours, name="approvals")
    removal = teams.activity("conversationUpdate", EVIL_ALICE, ours, membersRemoved=[{"id": BOT_ID}])
    assert (await teams.post(removal))[0] == 403
    rename = teams.activity(
        "conversationUpdate",
        EVIL_ALICE,
        ours,
        channelData={"eventType": "channelRenamed", "channel": {"id": ours, "name": "pwned"}},
    )
    assert (await teams.post(rename))[0] == 403
    assert [(r.id, r.name) for r in await ReferenceStore(teams.service.redis).all()] == [(ours, "approvals")]


async def test_foreign_user_whose_connector_email_is_alices_cannot_approve(teams, people):
    await teams.service.identities.add_approver("alice@example.com", ["security"])
    ours = new_conversation("approvals")
    await teams.add_bot(ours, name="approvals")
    created = await teams.ask()
    await teams.run_jobs()
    teams.fake.add(EVIL_ALICE)  # the other tenant's directory says this account is alice@example.com
    calls = len(teams.fake.calls)

    # In the other tenant's conversation (a card an older version posted there), and in ours.
    for conversation in (new_conversation("approvals"), ours):
        status, body = await teams.click(EVIL_ALICE, conversation, "approve", created["id"])
        assert status == 403 and body["error"]["code"] == "foreign_workspace"
    # Claiming our tenant in channelData while the conversation says otherwise is no better.
    mixed = teams.activity(
        "invoke",
        EVIL_ALICE,
        ours,
        tenant=TENANT,
        name="adaptiveCard/action",
        value={"action": {"type": "Action.Execute", "verb": "approve", "data": {"request_id": created["id"]}}},
    )
    mixed["conversation"]["tenantId"] = OTHER_TENANT
    assert (await teams.post(mixed))[0] == 403

    assert teams.fake.calls[calls:] == []  # no member lookup, no reply
    request = await teams.service.get(created["id"])
    assert request.status.value == "pending" and request.decisions == []
    assert await request_records(teams, created["id"]) == ["request.created"]
    assert not await records_of(teams, "person.linked")
    alice = await teams.service.people.by_email("alice@example.com")
    assert alice is not None and alice.identities == []


async def test_policy_channel_matches_only_our_tenants_conversation(teams, people):
    teams.service.policy = SECURITY
    ours, theirs = new_conversation("approvals"), new_conversation("approvals")
    await teams.add_bot(ours, name="approvals")
    await ReferenceStore(teams.service.redis).save(foreign_ref(teams, theirs))  # stored before tenants were checked
    created = await teams.ask()
    await teams.run_jobs()
    assert len(teams.fake.cards("create", ours)) == 1
    assert teams.fake.to(theirs) == []

    teams.service.policy = Policy.from_yaml(
        'rules: [{name: all, match: {action: "*"}, effect: require_approval, approvers: ["*"]}]'
    )
    unrouted = await teams.ask()
    await teams.run_jobs()
    assert len(teams.fake.cards("create", ours)) == 2 and teams.fake.to(theirs) == []
    for rid in (created["id"], unrouted["id"]):
        assert "delivery.failed" not in await request_records(teams, rid)


async def test_refresh_lists_never_include_users_of_another_tenant(teams, people):
    """The seen-users set is per tenant: users of another tenant never make it onto our cards."""
    await teams.service.identities.add_approver("alice@example.com", ["security"])
    ours = new_conversation("approvals")
    await teams.add_bot(ours, name="approvals")
    await teams.say(people["alice"], "a:personal-alice", "pending", kind="personal")
    teams.fake.add(EVIL_ALICE)
    assert (await teams.say(EVIL_ALICE, "a:personal-evil", "pending", kind="personal"))[0] == 403
    # Even an entry in the other tenant's set (as if it had been allowed once) stays out of our cards.
    await teams.service.redis.zadd(f"ab:teams:seen:{OTHER_TENANT}", {"29:evil-alice": 1e10})

    teams.service.policy = SECURITY
    created = await teams.ask()
    await teams.run_jobs()
    [card] = teams.fake.cards("create", ours)
    assert card["refresh"]["userIds"] == ["29:alice"]
    _, answer = await teams.click(people["alice"], ours, "refresh", created["id"])
    assert answer["value"]["refresh"]["userIds"] == ["29:alice"]


class TestTwoAllowedTenants:
    """Both tenants served: each conversation's card lists only its own tenant's users."""

    @pytest.fixture
    def teams_tenants(self) -> str:
        return f"{TENANT},{OTHER_TENANT}"

    async def test_each_card_lists_only_its_tenants_users(self, teams, people):
        carol = teams.fake.add(Person("29:carol", "aad-carol", "carol@partner.example", "Carol", tenant=OTHER_TENANT))
        for email in ("alice@example.com", "bob@example.com", "carol@partner.example"):
            await teams.service.identities.add_approver(email, ["security"])
        ours, theirs = new_conversation("approvals"), new_conversation("approvals")
        await teams.add_bot(ours, name="approvals")
        await teams.add_bot(theirs, name="approvals", tenant=OTHER_TENANT)
        for person in (people["alice"], people["bob"], carol):
            status, _ = await teams.say(person, f"a:personal-{person.aad}", "pending", kind="personal")
            assert status in (200, 201)
        teams.service.policy = SECURITY
        created = await teams.ask()
        await teams.run_jobs()
        [card_ours] = teams.fake.cards("create", ours)
        [card_theirs] = teams.fake.cards("create", theirs)
        assert sorted(card_ours["refresh"]["userIds"]) == ["29:alice", "29:bob"]
        assert card_theirs["refresh"]["userIds"] == ["29:carol"]

        # Carol approves in her tenant: her actor carries her person and tenant; the update keeps the lists apart.
        status, answer = await teams.click(carol, theirs, "approve", created["id"])
        assert status == 200 and any("You approved" in t for t in texts(answer["value"]))
        [recorded] = await records_of(teams, "approval.recorded")
        carol_person = await teams.service.people.by_email("carol@partner.example")
        assert recorded["actor"]["person_id"] == carol_person.id
        assert (recorded["actor"]["workspace"], recorded["actor"]["channel_user"]) == (OTHER_TENANT, "aad-carol")


# --- who a Teams user is -----------------------------------------------------------------------------


async def test_identity_is_linked_on_first_use_and_never_moved_by_an_email_change(teams, people):
    await teams.service.identities.add_approver("alice@example.com", ["security"])
    await teams.service.identities.add_approver("bob@example.com", ["security"])
    alice = await teams.service.people.by_email("alice@example.com")
    ours = new_conversation("approvals")
    await teams.add_bot(ours, name="approvals")
    first, second = await teams.ask(), await teams.ask()

    status, answer = await teams.click(people["alice"], ours, "approve", first["id"])
    assert status == 200 and any("You approved" in t for t in texts(answer["value"]))
    [linked] = await records_of(teams, "person.linked")
    assert linked["data"]["how"] == "first_use" and linked["data"]["person_id"] == alice.id
    [decision] = [r for r in await records_of(teams, "approval.recorded") if r["request_id"] == first["id"]]
    assert decision["actor"]["person_id"] == alice.id
    assert (decision["actor"]["channel"], decision["actor"]["workspace"], decision["actor"]["channel_user"]) == (
        "teams",
        TENANT,
        "aad-alice",
    )

    # Alice's directory address becomes Bob's: her Teams identity still belongs to Alice, by id.
    teams.fake.members[(TENANT, "29:alice")]["email"] = "bob@example.com"
    teams.fake.members[(TENANT, "29:alice")]["userPrincipalName"] = "bob@example.com"
    await teams.service.redis.delete(member_key(TENANT, "aad-alice"))  # the cache lives a minute at most
    status, answer = await teams.click(people["alice"], ours, "approve", second["id"])
    assert any("You approved" in t for t in texts(answer["value"]))
    done = await teams.service.get(second["id"])
    assert [(d.approver, d.person_id) for d in done.decisions] == [("alice@example.com", alice.id)]
    [changed] = await records_of(teams, "identity.changed")
    assert changed["data"]["address"] == "bob@example.com"
    bob = await teams.service.people.by_email("bob@example.com")
    assert bob.identities == []
    assert [i.key for i in (await teams.service.people.get(alice.id)).identities] == [f"teams:{TENANT}:aad-alice"]


async def test_unlinkable_identity_is_refused_with_the_admin_command_and_audited_once(teams, people):
    ours = new_conversation("approvals")
    await teams.add_bot(ours, name="approvals")
    created = await teams.ask()
    for _ in range(3):
        status, answer = await teams.click(people["mallory"], ours, "approve", created["id"])
        assert status == 200
    shown = texts(answer["value"])
    assert any(f"approvalbot people link EMAIL --teams {TENANT}/aad-mallory" in t for t in shown)
    [refused] = await records_of(teams, "identity.refused")
    assert refused["data"]["code"] == "identity_unknown"
    assert refused["data"]["identity"] == f"teams:{TENANT}:aad-mallory"
    assert (await teams.service.get(created["id"])).decisions == []


async def test_a_member_lookup_for_another_account_is_not_trusted(teams, people):
    await teams.service.identities.add_approver("alice@example.com", [])
    ours = new_conversation("approvals")
    await teams.add_bot(ours, name="approvals")
    created = await teams.ask()
    # The activity says Teams user 29:alice but with another AAD object id: the connector's Alice is not them.
    impostor = Person("29:alice", "aad-impostor", "alice@example.com", "Alice")
    status, answer = await teams.click(impostor, ours, "approve", created["id"])
    assert status == 200 and any("could not confirm who you are" in t for t in texts(answer["value"]))
    assert (await teams.service.get(created["id"])).decisions == []
    assert not await records_of(teams, "person.linked")


async def test_an_admin_link_makes_an_account_with_another_address_that_person(teams, people):
    await teams.service.identities.add_approver("alice@example.com", [])
    alice = await teams.service.people.link(
        "alice@example.com", ChatIdentity(channel="teams", workspace=TENANT, user_id="aad-mallory")
    )
    ours = new_conversation("approvals")
    await teams.add_bot(ours, name="approvals")
    created = await teams.ask()
    await teams.click(people["mallory"], ours, "approve", created["id"])
    assert [d.person_id for d in (await teams.service.get(created["id"])).decisions] == [alice.id]
    channel = TeamsChannel(teams.settings)
    assert (await channel.approver_for(teams.service.redis, f"{TENANT}/aad-mallory")).id == alice.id
    assert await channel.approver_for(teams.service.redis, f"{OTHER_TENANT}/aad-mallory") is None
    assert await channel.approver_for(teams.service.redis, f"{TENANT}/aad-bob") is None  # never linked


# --- least visibility ----------------------------------------------------------------------------------


async def test_refresh_by_someone_who_may_not_decide_shows_no_details(teams, people):
    teams.service.policy = SECURITY
    await teams.service.identities.add_approver("alice@example.com", ["security"])
    await teams.service.identities.add_approver("bob@example.com", ["finance"])  # an approver, not of this
    ours = new_conversation("approvals")
    await teams.add_bot(ours, name="approvals")
    created = await teams.ask(justification="quarterly numbers", params={"rows": 5000, "table": "payroll"})

    for who in ("bob", "mallory"):
        status, answer = await teams.click(people[who], ours, "refresh", created["id"])
        assert status == 200
        card = answer["value"]
        shown = " ".join(texts(card))
        assert "quarterly numbers" not in shown and "payroll" not in shown and "dataset.export" not in shown
        assert "Parameters" not in str(card) and "actions" not in card and "refresh" not in card
        assert created["id"] in shown
    status, answer = await teams.click(people["bob"], ours, "approve", created["id"])
    assert "quarterly numbers" not in " ".join(texts(answer["value"]))
    assert (await teams.service.get(created["id"])).decisions == []

    _, answer = await teams.click(people["alice"], ours, "refresh", created["id"])
    assert "quarterly numbers" in texts(answer["value"]) and answer["value"]["actions"]
    _, answer = await teams.click(people["owner"], ours, "refresh", created["id"])  # the owner may view, not decide
    assert "quarterly numbers" in texts(answer["value"]) and "actions" not in answer["value"]


async def test_approval_command_shows_a_request_only_to_who_may_view_it(teams, people):
    teams.service.policy = SECURITY
    await teams.service.identities.add_approver("alice@example.com", ["security"])
    await teams.service.identities.add_approver("bob@example.com", ["finance"])
    created = await teams.ask(justification="quarterly numbers")
    for who, visible in (("bob", False), ("mallory", False), ("alice", True)):
        since = len(teams.fake.calls)
        await teams.say(people[who], f"a:personal-{who}", f"approval {created['id']}", kind="personal")
        sent = [c for c in teams.fake.calls[since:] if c.conversation == f"a:personal-{who}"]
        shown = " ".join(t for c in sent for a in (c.body or {}).get("attachments") or [] for t in texts(a["content"]))
        assert ("quarterly numbers" in shown) is visible, who
        assert ("No request with that id is visible to you." in shown) is not visible, who


# --- the reply chain --------------------------------------------------------------------------------------


def test_grant_used_reply_names_the_consumer(card_validator):
    record = {
        "seq": 9,
        "type": "grant.consumed",
        "at": "2026-11-22T10:00:00+00:00",
        "hash": "ab" * 32,
        "actor": {"kind": "executor", "id": "exe_1", "email": "owner@example.com"},
        "data": {"consumed_by": {"kind": "executor", "id": "exe_1", "name": "deploy-runner"}},
    }
    card = cards.audit_card(record)
    shown = texts(card)
    assert "used by executor deploy-runner" in shown and "owner@example.com" not in " ".join(shown)
    assert not list(card_validator.iter_errors(card))


async def test_refusal_records_are_bounded_under_a_flood(teams, monkeypatch):
    monkeypatch.setattr(tenants, "REFUSALS_PER_MINUTE", 3)
    ours = new_conversation("approvals")
    for i in range(8):
        stranger = Person(f"29:s{i}", f"aad-s{i}", f"s{i}@elsewhere.example", "S", tenant=OTHER_TENANT)
        for _ in range(2):
            assert (await teams.add_bot(ours, name="x", by=stranger, tenant=OTHER_TENANT))[0] == 403
    assert len(await records_of(teams, "identity.refused")) == 3
    assert await ReferenceStore(teams.service.redis).all() == []


async def test_a_click_on_a_settled_request_is_answered_before_any_identity_check(teams, people):
    """Issue 12: deciding a request that is no longer pending is refused before the clicker is
    looked up, and writes no record, whoever clicks (here someone linked to no person)."""
    await teams.service.identities.add_approver("alice@example.com", ["security"])
    ours = new_conversation("approvals")
    await teams.add_bot(ours, name="approvals")
    created = await teams.ask()
    await teams.service.cancel(created["id"], await teams.service.identities.get_agent_by_name("etl-bot"))
    await teams.run_jobs()
    nobody = teams.fake.add(Person("29:nobody", "aad-nobody", "nobody@example.com", "Nobody"))
    calls = len(teams.fake.calls)
    before = await request_records(teams, created["id"])
    status, body = await teams.click(nobody, ours, "approve", created["id"])
    assert status == 200
    assert "no longer pending" in json.dumps(body)
    assert teams.fake.calls[calls:] == []  # no member lookup
    assert await request_records(teams, created["id"]) == before
    assert not await records_of(teams, "identity.refused")
