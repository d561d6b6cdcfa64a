"""People, not strings, over real HTTP against real Redis: each attack from issue 11 (API side).

The `api` fixture's agent etl-bot is owned by owner@example.com; alice@example.com approves for
`security`. Bob appears as the person an agent claims to act for.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from approvalbot.cli import parser
from approvalbot.cli import people as people_cli
from approvalbot.core.models import ChatIdentity
from approvalbot.core.policy import Policy
from approvalbot.store import keys
from approvalbot.store.identities import IdentityStore
from approvalbot.store.tokens import token_digest
from tests.helpers import exact


@pytest.fixture
def policy() -> Policy:
    return Policy.from_yaml(
        """
rules:
  - name: iam-two-person
    match: {action: "iam.*"}
    effect: require_approval
    approvers: [security]
    min_approvals: 2
  - name: payroll
    match: {action: "payroll.*"}
    effect: require_approval
    approvers: [finance]
  - name: rest
    match: {action: "*"}
    effect: require_approval
    approvers: ["*"]
"""
    )


async def audit_records(api) -> list[dict]:
    return [r.as_dict() async for r in api.service.audit.records()]


# --- canonical addresses: on_behalf_of cannot smuggle the approver in ----------------------------

ATTACKS = [
    # (how the agent spells Bob, expected: "422" refused, or "self" accepted as Bob and refused to him)
    ("bob@example.com.", "self"),
    ("BOB@Example.COM", "self"),
    ("\uff42\uff4f\uff42@example.com", "self"),  # fullwidth
    ("bob\u200b@example.com", "422"),
    ("bob\u0000@example.com", "422"),
    ("bob@example.com\u202e", "422"),
    ('"bob"@example.com', "422"),
    ('"bob@example.com"@evil.example', "422"),
    ("bob@ex\u0430mple.com", "422"),  # Cyrillic look-alike
    ("bob@xn--exmple-4nf.com", "422"),  # the same look-alike as punycode
]


@pytest.mark.parametrize(("spelling", "expected"), ATTACKS, ids=[repr(a)[:30] for a, _ in ATTACKS])
async def test_on_behalf_of_is_canonical_or_refused(api, spelling, expected):
    _, bob = await api.service.identities.add_approver("bob@example.com", [])
    status, body = await api.ask(on_behalf_of=spelling)
    if expected == "422":
        assert status == 422, body
        assert body["error"]["code"] == "invalid_address"
        assert "not an acceptable email address" in body["error"]["message"]
        assert await api.service.redis.zcard("ab:pending") == 0
        return
    assert status == 201 and body["on_behalf_of"] == "bob@example.com"
    person = await api.service.people.by_email("bob@example.com")
    assert person is not None and person.id in body["requester_ids"]
    status, err = await api.decide(body["id"], bob)
    assert (status, err["error"]["code"]) == (403, "self_approval")


async def test_on_behalf_of_an_alias_resolves_to_its_person(api):
    _, bob = await api.service.identities.add_approver("bob@example.com", [])
    await api.service.people.add("bob@example.com", aliases=["robert@example.com"])
    status, req = await api.ask(on_behalf_of="Robert@Example.com.")
    assert status == 201 and req["on_behalf_of"] == "robert@example.com"
    status, err = await api.decide(req["id"], bob)
    assert (status, err["error"]["code"]) == (403, "self_approval")
    blocked = [r for r in await audit_records(api) if r["type"] == "self_approval.blocked"]
    bob_id = (await api.service.people.by_email("bob@example.com")).id
    assert blocked[-1]["actor"]["person_id"] == bob_id


async def test_owner_under_an_alias_cannot_approve_their_agents_request(api):
    # The owner's person exists since `agents add`; olga@ is another address of the same human.
    await api.service.people.add("owner@example.com", aliases=["olga@example.com"])
    _, olga = await api.service.identities.add_approver("olga@example.com", ["security"])
    status, req = await api.ask()
    assert status == 201
    status, err = await api.decide(req["id"], olga)
    assert (status, err["error"]["code"]) == (403, "self_approval")
    # The token authenticates the owner person: she sees her own request, and cannot decide it.
    status, seen = await api.call("GET", f"/v1/requests/{req['id']}", olga)
    assert status == 200 and seen["id"] == req["id"]
    status, listed = await api.call("GET", "/v1/requests", olga)
    assert listed["items"] == []


async def test_people_changed_by_another_process_count_at_once_for_new_requests(api):
    """The service remembers whom the owner and on-behalf-of addresses name between requests; a
    change made elsewhere (the `approvalbot people` command: another store on the same Redis) must
    apply to the very next request, or a freshly added alias could approve its own request."""
    elsewhere = IdentityStore(api.service.redis)
    _, bob = await elsewhere.add_approver("bob@example.com", [])
    owner = await api.service.people.by_email("owner@example.com")
    assert owner is not None
    status, first = await api.ask(on_behalf_of="carol@example.com")
    assert status == 201 and first["requester_ids"] == [owner.id]  # carol@ names nobody yet
    status, again = await api.ask(on_behalf_of="carol@example.com")  # answered from memory
    assert status == 201 and again["requester_ids"] == [owner.id]

    await elsewhere.people.add("bob@example.com", aliases=["carol@example.com"])
    bob_id = (await elsewhere.people.by_email("bob@example.com")).id
    status, after = await api.ask(on_behalf_of="carol@example.com")
    assert status == 201 and after["requester_ids"] == [owner.id, bob_id]
    status, err = await api.decide(after["id"], bob)
    assert (status, err["error"]["code"]) == (403, "self_approval")

    # And back: once the alias is gone with its person, the address names nobody again.
    await elsewhere.people.remove("bob@example.com")
    status, gone = await api.ask(on_behalf_of="carol@example.com")
    assert status == 201 and gone["requester_ids"] == [owner.id]
    assert await api.service.redis.zcard("ab:pending") == 4  # every attempt created exactly one request


async def test_an_agent_owner_is_a_person_but_not_an_approver(api):
    owner = await api.service.people.by_email("owner@example.com")
    agent = await api.service.identities.get_agent_by_name("etl-bot")
    assert owner is not None and not owner.may_approve and agent.owner_id == owner.id
    assert "owner@example.com" not in [a.email for a in await api.service.identities.list_approvers()]


# --- N of M counts persons ---------------------------------------------------------------------


async def test_one_person_with_two_addresses_and_tokens_counts_once(api):
    ids = api.service.identities
    _, carol = await ids.add_approver("carol@example.com", ["security"])
    await api.service.people.add("carol@example.com", aliases=["c.jones@example.com"])
    _, carol_again = await ids.add_approver("c.jones@example.com", [])  # same person, second token
    status, req = await api.ask(action="iam.role.attach")
    assert status == 201 and req["approvals_needed"] == 2
    status, body = await api.decide(req["id"], carol)
    assert status == 200 and body["approvals_needed"] == 1
    status, err = await api.decide(req["id"], carol_again)
    assert (status, err["error"]["code"]) == (409, "already_decided")
    status, body = await api.decide(req["id"], api.approver_token)  # alice: a second human
    assert status == 200 and body["status"] == "approved"
    carol_id = (await api.service.people.by_email("c.jones@example.com")).id
    assert body["decisions"][0]["person_id"] == carol_id


async def test_decision_records_name_the_person_and_the_token(api):
    status, req = await api.ask()
    status, _ = await api.decide(req["id"], api.approver_token)
    assert status == 200
    approved = [r for r in await audit_records(api) if r["type"] == "request.approved"][-1]
    alice = await api.service.people.by_email("alice@example.com")
    actor = approved["actor"]
    assert (actor["person_id"], actor["channel"]) == (alice.id, "api")
    assert actor["channel_user"] == "tok_" + token_digest(api.approver_token)[:16]
    created = [r for r in await audit_records(api) if r["type"] == "request.created"][-1]
    owner = await api.service.people.by_email("owner@example.com")
    assert created["actor"]["person_id"] == owner.id  # the accountable person behind the agent


# --- least visibility --------------------------------------------------------------------------


async def test_an_approver_sees_only_what_they_may_decide_or_decided(api):
    ids = api.service.identities
    _, frank = await ids.add_approver("frank@example.com", ["finance"])
    _, nobody = await ids.add_approver("nogroup@example.com", [])
    status, payroll = await api.ask(action="payroll.run", params={"iban": "secret"})
    assert status == 201
    # Alice (security) and an approver in no group: the request does not exist for them.
    for token in (api.approver_token, nobody):
        status, err = await api.call("GET", f"/v1/requests/{payroll['id']}", token)
        assert (status, err["error"]["code"]) == (404, "not_found")
        status, listed = await api.call("GET", "/v1/requests", token)
        assert payroll["id"] not in [i["id"] for i in listed["items"]]
    status, seen = await api.call("GET", f"/v1/requests/{payroll['id']}", frank)
    assert status == 200
    status, approved = await api.decide(payroll["id"], frank)
    assert approved["status"] == "approved" and approved["grant"] is None  # the grant is the agent's
    approved = await exact(api, payroll["id"])
    # Settled: still hidden from another team, still visible to the decider.
    status, _ = await api.call("GET", f"/v1/requests/{payroll['id']}", nobody)
    assert status == 404
    status, seen = await api.call("GET", f"/v1/requests/{payroll['id']}", frank)
    assert status == 200 and seen["status"] == "approved" and seen["grant"] is None
    # And no approver can burn the agent's grant.
    status, err = await api.call("POST", "/v1/grants/consume", frank, json={"grant": approved["grant"]})
    assert (status, err["error"]["code"]) == (403, "forbidden")


async def test_executor_bound_to_the_agent_consumes_and_is_named(api):
    status, req = await api.ask()
    await api.decide(req["id"], api.approver_token)
    done = await exact(api, req["id"])
    executor, token = await api.service.identities.add_executor("exporter", "etl-bot")
    status, body = await api.call("POST", "/v1/grants/consume", token, json={"grant": done["grant"]})
    assert status == 200 and body["claims"]["sub"] == executor.agent_id
    consumed = [r for r in await audit_records(api) if r["type"] == "grant.consumed"][-1]
    assert consumed["data"]["consumed_by"] == {"kind": "executor", "id": executor.id, "name": "exporter"}
    status, err = await api.call("POST", "/v1/grants/consume", api.agent_token, json={"grant": done["grant"]})
    assert (status, err["error"]["code"]) == (409, "grant_used")
    # An executor token is not an approver or agent token.
    status, _ = await api.call("GET", f"/v1/requests/{req['id']}", token)
    assert status == 404
    status, err = await api.decide(req["id"], token)
    assert (status, err["error"]["code"]) == (403, "forbidden")
    await api.service.identities.revoke_executor("exporter")
    status, _ = await api.call("POST", "/v1/grants/consume", token, json={"grant": done["grant"]})
    assert status == 401


# --- the upgrade from approver records -----------------------------------------------------------


async def write_the_old_way(redis, email: str, groups: list[str], revoked: bool = False) -> tuple[str, str]:
    """An approver and its token exactly as store/identities.py wrote them before persons."""
    approver_id = f"apr_{email.split('@')[0]}0001"
    doc = {
        "id": approver_id,
        "email": email,
        "groups": groups,
        "created_at": datetime(2024, 5, 1, tzinfo=UTC).isoformat().replace("+00:00", "Z"),
        "revoked": revoked,
    }
    token = "abk_appr_old-" + email.split("@")[0] + "-0123456789abcdefghijklmnopqrstuvwxyz"
    digest = token_digest(token)
    await redis.set(keys.token(digest), json.dumps({"kind": "approver", "doc": doc}))
    await redis.set(keys.approver(email), json.dumps(doc))
    await redis.sadd(keys.APPROVERS, email)
    await redis.sadd(keys.approver(email) + ":tokens", digest)
    return approver_id, token


async def test_old_approver_data_upgrades_in_place_and_old_tokens_keep_working(api):
    redis = api.service.redis
    old_id, old_token = await write_the_old_way(redis, "gina@example.com", ["security"])
    await write_the_old_way(redis, "hank@example.com", [])
    status, req = await api.ask(action="iam.role.attach")
    # The old token authenticates at once (upgrading Gina on first use) and decides as her person.
    status, body = await api.decide(req["id"], old_token)
    assert status == 200 and body["decisions"][0]["person_id"] == old_id
    gina = await api.service.people.by_email("gina@example.com")
    assert gina is not None and (gina.id, gina.groups) == (old_id, ["security"])
    assert await redis.get(keys.approver("gina@example.com")) is None  # the old record is gone
    # Everyone else upgrades on `people list`; running it again changes nothing.
    listed = {p.email: p for p in await api.service.people.list()}
    assert {"gina@example.com", "hank@example.com", "alice@example.com", "owner@example.com"} <= set(listed)
    assert await redis.scard(keys.APPROVERS) == 0
    before = await api.service.audit.length()
    assert await api.service.people.migrate_approvers() == 0
    assert await api.service.audit.length() == before
    migrated = [r for r in await audit_records(api) if r["data"].get("migrated_from") == "approver"]
    assert sorted(r["data"]["email"] for r in migrated) == ["gina@example.com", "hank@example.com"]
    # Revoking the upgraded approver deletes the old token too.
    await api.service.identities.revoke_approver("gina@example.com")
    assert await IdentityStore(redis).authenticate(old_token) is None


# --- the people and executors commands ---------------------------------------------------------


async def run_cli(api, *argv: str) -> int:
    args = parser().parse_args(list(argv))
    fn = people_cli.people if args.command == "people" else people_cli.executors
    return await fn(api.service, args)


async def test_people_commands_change_persons_and_are_audited(api, capsys):
    assert await run_cli(api, "people", "add", "Ivy@Example.com", "--name", "Ivy", "--alias", "i.v@example.com") == 0
    assert await run_cli(api, "people", "link", "i.v@example.com", "--slack", "T0001/U0IVY") == 0
    ivy = await api.service.people.by_identity(ChatIdentity(channel="slack", workspace="T0001", user_id="U0IVY"))
    assert ivy is not None and ivy.email == "ivy@example.com" and ivy.aliases == ["i.v@example.com"]
    # An identity belongs to one person: linking it to another is refused.
    await api.service.people.add("jo@example.com")
    with pytest.raises(ValueError, match=r"linked to ivy@example\.com"):
        await run_cli(api, "people", "link", "jo@example.com", "--slack", "T0001/U0IVY")
    assert await run_cli(api, "people", "show", "ivy@example.com") == 0
    assert "slack:T0001:U0IVY" in capsys.readouterr().out
    assert await run_cli(api, "people", "unlink", "ivy@example.com", "--slack", "T0001/U0IVY") == 0
    assert await run_cli(api, "people", "remove", "ivy@example.com") == 0
    assert await api.service.people.by_email("i.v@example.com") is None
    types = [r["type"] for r in await audit_records(api) if r["data"].get("email") == "ivy@example.com"]
    assert types == ["person.added", "person.linked", "person.unlinked", "person.removed"]
    assert all(r["actor"]["id"] == "admin" for r in await audit_records(api) if r["type"].startswith("person."))


async def test_people_add_refuses_bad_addresses_and_stolen_aliases(api):
    with pytest.raises(ValueError, match=r"not an acceptable email address"):
        await run_cli(api, "people", "add", "bob\u200b@example.com")
    with pytest.raises(ValueError, match=r"already belongs to alice@example\.com"):
        await run_cli(api, "people", "add", "mallory@example.com", "--alias", "Alice@Example.com.")


async def test_first_use_links_only_an_address_that_names_one_person(api):
    people = api.service.people
    slack = ChatIdentity(channel="slack", workspace="T0001", user_id="U0ALICE")
    alice = await people.link_on_first_use(slack, "Alice@Example.com")
    assert getattr(alice, "email", None) == "alice@example.com"
    # The profile address changes to the owner's: the identity stays Alice's; the change is audited.
    again = await people.link_on_first_use(slack, "owner@example.com")
    assert getattr(again, "id", None) == alice.id
    changed = [r for r in await audit_records(api) if r["type"] == "identity.changed"]
    assert len(changed) == 1 and changed[0]["data"]["address"] == "owner@example.com"
    stranger = await people.link_on_first_use(
        ChatIdentity(channel="slack", workspace="T0001", user_id="U0X"), "x@y.org"
    )
    assert getattr(stranger, "code", None) == "no_person" and "approvalbot people link" in stranger.message
    await api.service.identity_refused(
        ChatIdentity(channel="teams", workspace="tenant-2", user_id="aad-x"), "foreign_workspace", "not ours"
    )
    refused = [r for r in await audit_records(api) if r["type"] == "identity.refused"][-1]
    assert refused["actor"]["workspace"] == "tenant-2" and refused["data"]["code"] == "foreign_workspace"


async def test_executor_commands(api, capsys):
    assert await run_cli(api, "executors", "add", "exporter", "--agent", "etl-bot") == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("abk_exec_")
    assert await run_cli(api, "executors", "list") == 0
    assert "exporter\t" in capsys.readouterr().out
    assert await run_cli(api, "executors", "revoke", "exporter") == 0
    assert await api.service.identities.authenticate(token) is None
    with pytest.raises(ValueError, match="no active agent"):
        await run_cli(api, "executors", "add", "x", "--agent", "no-such-bot")
