"""Tests for approvalbot.core.policy: matching, the applied result, and load errors with lines."""

from __future__ import annotations

import functools
import math
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import ValidationError

import approvalbot
from approvalbot.core.models import AppliedPolicy
from approvalbot.core.policy import NO_MATCH, Condition, Policy, PolicyError, parse_duration

EXAMPLE = Path(approvalbot.__file__).parent / "policy.example.yaml"


def yml(text: str) -> str:
    """Dedented YAML; the first line of the literal is line 1."""
    return textwrap.dedent(text)


def one_rule(match: dict[str, Any]) -> Policy:
    """A policy whose only rule allows what `match` matches; anything else falls through to deny."""
    rule = {"name": "r", "match": match, "effect": "allow"}
    return Policy.from_yaml(yaml.safe_dump({"rules": [rule]}))


def cond(param: str, op: str, value: Any = None, **extra: Any) -> dict[str, Any]:
    return {"param": param, "op": op, "value": value, **extra}


# --- matching -----------------------------------------------------------------

MATCHING = [
    # action globs
    ({"action": "dataset.*"}, "dataset.export", None, "a", {}, True),
    ({"action": "dataset.*"}, "datasets.export", None, "a", {}, False),
    ({"action": "iam.*"}, "iam.role.attach", None, "a", {}, True),
    ({"action": "iam.*"}, "iam", None, "a", {}, False),
    ({"action": "IAM.*"}, "iam.role.attach", None, "a", {}, False),
    ({"action": "kms.key.rotate"}, "kms.key.rotate", None, "a", {}, True),
    ({"action": "kms.key.rotate"}, "kms.key.rotated", None, "a", {}, False),
    ({"action": "db.?.drop"}, "db.x.drop", None, "a", {}, True),
    # resource globs; a request without a resource only matches "*"
    ({"resource": "s3://public/*"}, "x.y", "s3://public/a.csv", "a", {}, True),
    ({"resource": "s3://public/*"}, "x.y", "s3://private/a.csv", "a", {}, False),
    ({"resource": "s3://public/*"}, "x.y", None, "a", {}, False),
    ({"resource": "*"}, "x.y", None, "a", {}, True),
    ({}, "x.y", None, "a", {}, True),
    ({}, "x.y", "anything", "a", {}, True),
    # agent globs
    ({"agent": "etl-*"}, "x.y", None, "etl-nightly", {}, True),
    ({"agent": "etl-*"}, "x.y", None, "ml-bot", {}, False),
    # all parts must match
    ({"action": "x.*", "agent": "etl-*"}, "x.y", None, "ml-bot", {}, False),
    ({"action": "x.*", "agent": "etl-*"}, "x.y", None, "etl-1", {}, True),
]


@pytest.mark.parametrize("match,action,resource,agent,params,expected", MATCHING)
def test_globs(
    match: dict[str, Any],
    action: str,
    resource: str | None,
    agent: str,
    params: dict[str, Any],
    expected: bool,
) -> None:
    applied = one_rule(match).evaluate(action, resource, agent, params)
    assert (applied.rule == "r") is expected
    assert applied.effect == ("allow" if expected else "deny")


CONDITIONS = [
    # ==, with bools kept apart from numbers
    (cond("n", "==", 5), {"n": 5}, True),
    (cond("n", "==", 5), {"n": 6}, False),
    (cond("n", "==", 5), {"n": "5"}, False),
    (cond("n", "==", 1), {"n": True}, False),
    (cond("n", "==", True), {"n": 1}, False),
    (cond("n", "==", 1), {"n": 1.0}, True),
    (cond("n", "==", None), {"n": None}, True),
    (cond("n", "==", "prod"), {"n": "prod"}, True),
    (cond("n", "==", 5), {}, False),
    # !=
    (cond("n", "!=", 5), {"n": 6}, True),
    (cond("n", "!=", 5), {"n": 5}, False),
    (cond("n", "!=", 5), {"n": "5"}, True),
    (cond("n", "!=", 5), {}, False),
    # ordering, boundaries
    (cond("n", "<", 10), {"n": 9}, True),
    (cond("n", "<", 10), {"n": 10}, False),
    (cond("n", "<=", 10), {"n": 10}, True),
    (cond("n", "<=", 10), {"n": 11}, False),
    (cond("n", ">", 10), {"n": 11}, True),
    (cond("n", ">", 10), {"n": 10}, False),
    (cond("n", ">=", 10), {"n": 10}, True),
    (cond("n", ">=", 10), {"n": 9.5}, False),
    (cond("n", "<", 10), {"n": 2.5}, True),
    (cond("s", "<", "m"), {"s": "a"}, True),
    (cond("s", "<", "m"), {"s": "z"}, False),
    # ordering between incompatible types is false, not an error
    (cond("n", "<", 10), {"n": "5"}, False),
    (cond("n", ">=", 10), {"n": "50"}, False),
    (cond("s", "<", "m"), {"s": 1}, False),
    (cond("n", "<", 10), {"n": True}, False),
    (cond("n", "<", 10), {"n": None}, False),
    (cond("n", "<", 10), {"n": [1]}, False),
    (cond("n", "<", 10), {"n": {"a": 1}}, False),
    (cond("n", "<", 10), {"n": float("nan")}, False),
    (cond("n", ">=", 10), {"n": float("nan")}, False),
    (cond("n", "<", 10), {}, False),
    # in / not_in
    (cond("r", "in", ["eu", "us"]), {"r": "eu"}, True),
    (cond("r", "in", ["eu", "us"]), {"r": "ap"}, False),
    (cond("r", "in", [1, 2]), {"r": True}, False),
    (cond("r", "in", [{"a": 1}]), {"r": {"a": 1}}, True),
    (cond("r", "in", ["eu"]), {"r": ["eu"]}, False),
    (cond("r", "in", ["eu"]), {}, False),
    (cond("r", "not_in", ["eu", "us"]), {"r": "ap"}, True),
    (cond("r", "not_in", ["eu", "us"]), {"r": "us"}, False),
    (cond("r", "not_in", ["eu"]), {}, False),
    # glob on a parameter
    (cond("db", "glob", "prod-*"), {"db": "prod-users"}, True),
    (cond("db", "glob", "prod-*"), {"db": "dev-users"}, False),
    (cond("db", "glob", "*"), {"db": 5}, False),
    (cond("db", "glob", "*"), {}, False),
    # exists; value false means "absent"
    (cond("t", "exists", True), {"t": "x"}, True),
    (cond("t", "exists", True), {"t": None}, True),
    (cond("t", "exists", True), {}, False),
    ({"param": "t", "op": "exists"}, {"t": 0}, True),
    ({"param": "t", "op": "exists"}, {}, False),
    (cond("t", "exists", False), {}, True),
    (cond("t", "exists", False), {"t": 1}, False),
    # dotted paths into nested params
    (cond("limits.max", "<", 5), {"limits": {"max": 3}}, True),
    (cond("limits.max", "<", 5), {"limits": {"max": 7}}, False),
    (cond("limits.max", "<", 5), {"limits": 3}, False),
    (cond("limits.max", "<", 5), {"limits": {}}, False),
    (cond("limits.max", "<", 5), {"limits": [3]}, False),
    (cond("limits.max", "<", 5), {"limits.max": 3}, False),
    (cond("a.b.c", "==", "x"), {"a": {"b": {"c": "x"}}}, True),
    (cond("a.b.c", "exists", True), {"a": {"b": {"c": None}}}, True),
    (cond("a.b.c", "exists", False), {"a": {"b": {}}}, True),
    (cond("a.b", "!=", 1), {"a": None}, False),
]


@pytest.mark.parametrize("condition,params,expected", CONDITIONS)
def test_conditions(condition: dict[str, Any], params: dict[str, Any], expected: bool) -> None:
    applied = one_rule({"params": [condition]}).evaluate("x.y", None, "a", params)
    assert (applied.rule == "r") is expected


def test_all_conditions_must_hold() -> None:
    policy = one_rule({"params": [cond("rows", "<", 100), cond("pii", "==", False)]})
    assert policy.evaluate("x", None, "a", {"rows": 1, "pii": False}).rule == "r"
    assert policy.evaluate("x", None, "a", {"rows": 1, "pii": True}).rule == NO_MATCH
    assert policy.evaluate("x", None, "a", {"rows": 1000, "pii": False}).rule == NO_MATCH
    assert policy.evaluate("x", None, "a", {"rows": 1}).rule == NO_MATCH


TWO_RULES = yml(
    """\
    defaults:
      expires_in: 2h
      grant_ttl: 10m
    rules:
      - name: first
        match: {action: "iam.*"}
        effect: require_approval
        approvers: [security, Alice@Example.com]
        min_approvals: 2
        expires_in: 30m
        remind_after: 10m
        escalate_after: 20m
        escalate_to: oncall
        channel: "#sec"
        grant_ttl: 120
      - name: second
        match: {action: "iam.role.*"}
        effect: allow
      - name: third
        match: {action: "kms.*"}
        effect: require_approval
        approvers: ["*"]
      - name: fourth
        match: {action: "read.*"}
        effect: allow
        grant_ttl: 1m
      - name: fifth
        match: {action: "db.*"}
        effect: deny
    """
)


def test_first_match_wins_and_rule_settings_are_applied() -> None:
    applied = Policy.from_yaml(TWO_RULES).evaluate("iam.role.attach", "arn:x", "bot", {})
    assert applied == AppliedPolicy(
        rule="first",
        effect="require_approval",
        approvers=["security", "alice@example.com"],
        min_approvals=2,
        expires_in=1800,
        remind_after=600,
        escalate_after=1200,
        escalate_to="oncall",
        channel="#sec",
        grant_ttl=120,
    )


def test_defaults_fill_in_what_a_rule_does_not_say() -> None:
    policy = Policy.from_yaml(TWO_RULES)
    applied = policy.evaluate("kms.key.rotate", None, "bot", {})
    assert applied == AppliedPolicy(
        rule="third",
        effect="require_approval",
        approvers=["*"],
        min_approvals=1,
        expires_in=7200,
        grant_ttl=600,
    )
    assert policy.evaluate("read.thing", None, "bot", {}).grant_ttl == 60


@pytest.mark.parametrize("action,rule,effect", [("read.x", "fourth", "allow"), ("db.x.drop", "fifth", "deny")])
def test_allow_and_deny_need_no_approvers(action: str, rule: str, effect: str) -> None:
    applied = Policy.from_yaml(TWO_RULES).evaluate(action, None, "bot", {})
    assert (applied.rule, applied.effect) == (rule, effect)
    assert applied.min_approvals == 0
    assert applied.approvers == []


def test_no_matching_rule_fails_closed() -> None:
    applied = Policy.from_yaml(TWO_RULES).evaluate("billing.refund", None, "bot", {"amount": 5})
    assert applied.rule == "(no matching rule)" == NO_MATCH
    assert applied.effect == "deny"
    assert applied.min_approvals == 0
    assert applied.approvers == []


def test_default_policy_requires_one_approval_from_anyone() -> None:
    policy = Policy.default()
    assert [r.name for r in policy.rules] == ["default"]
    for action, resource in [("iam.role.attach", "arn:x"), ("dataset.read", None)]:
        applied = policy.evaluate(action, resource, "any-agent", {"x": 1})
        assert applied == AppliedPolicy(
            rule="default", effect="require_approval", approvers=["*"], min_approvals=1, expires_in=3600
        )


@pytest.mark.parametrize(
    "text,seconds",
    [(300, 300), ("300", 300), ("45s", 45), ("30m", 1800), ("1h", 3600), ("2d", 172800), (" 2H ", 7200)],
)
def test_durations(text: Any, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["1y", "-5m", "0", 0, 1.5, "", "1h30m", True, None, "m"])
def test_bad_durations(text: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


# --- errors carry the file name and the line number ----------------------------

ERRORS = [
    pytest.param(
        """\
        rules:
          - name: a
            effect: allow
          - name: b
            effect: require_approval
            approvers: ["*"]
            min_approvals: 0
        """,
        7,
        "rules[1].min_approvals: Input should be greater than or equal to 1",
        id="min_approvals<1",
    ),
    pytest.param(
        """\
        rules:
          - name: a
            effect: [allow
          - name: b
        """,
        4,
        "invalid YAML",
        id="yaml-syntax",
    ),
    pytest.param(
        """\
        rules:
          - name: a
        \teffect: allow
        """,
        3,
        "invalid YAML",
        id="yaml-tab",
    ),
    pytest.param(
        """\
        rules:
          - name: a
            effect: allow
            aprovers: [x]
        """,
        4,
        "rules[0].aprovers: Extra inputs are not permitted",
        id="unknown-rule-key",
    ),
    pytest.param(
        """\
        rules:
          - name: a
            match:
              action: "x.*"
              agents: "etl-*"
            effect: allow
        """,
        5,
        "rules[0].match.agents: Extra inputs are not permitted",
        id="unknown-match-key",
    ),
    pytest.param(
        """\
        rules:
          - name: a
            match:
              params:
                - {param: rows, op: "<", value: 5}
                - {param: rows, op: "<", value: 5, note: hi}
            effect: allow
        """,
        6,
        "rules[0].match.params[1].note: Extra inputs are not permitted",
        id="unknown-condition-key",
    ),
    pytest.param(
        """\
        defaults:
          expires_in: 1h
          ttl: 5m
        rules:
          - name: a
            effect: allow
        """,
        3,
        "defaults.ttl: Extra inputs are not permitted",
        id="unknown-defaults-key",
    ),
    pytest.param(
        """\
        version: 2
        rules:
          - name: a
            effect: allow
        """,
        1,
        "version: Extra inputs are not permitted",
        id="unknown-top-level-key",
    ),
    pytest.param(
        """\
        rules:
          - name: a
            effect: allow
          - name: b
            effect: approve
        """,
        5,
        "rules[1].effect: Input should be 'allow', 'deny' or 'require_approval'",
        id="unknown-effect",
    ),
    pytest.param(
        """\
        rules:
          - name: a
            match:
              params:
                - {param: rows, op: "=<", value: 5}
            effect: allow
        """,
        5,
        "rules[0].match.params[0].op:",
        id="bad-op",
    ),
    pytest.param(
        """\
        rules:
          - name: a
            effect: allow
          - name: b
            effect: deny
          - name: a
            effect: deny
        """,
        6,
        "rules[2].name: duplicate rule name 'a'",
        id="duplicate-rule-name",
    ),
    pytest.param(
        """\
        rules:
          - name: a
            match: {action: "iam.*"}
            effect: require_approval
        """,
        2,
        "rules[0].approvers: a require_approval rule needs approvers",
        id="no-approvers",
    ),
    pytest.param(
        """\
        rules:
          - name: a
            match: {action: "iam.*"}
            effect: require_approval
            approvers: []
        """,
        5,
        "rules[0].approvers: a require_approval rule needs approvers",
        id="empty-approvers",
    ),
    pytest.param(
        """\
        rules:
          - name: a
            effect: require_approval
            approvers: [security]
            expires_in: 1h
            escalate_after: 20m
        """,
        6,
        "rules[0].escalate_after: escalate_after needs escalate_to",
        id="escalate_after-without-escalate_to",
    ),
    pytest.param(
        """\
        rules:
          - name: a
            effect: require_approval
            approvers: [security]
            expires_in: 1h
            escalate_to: oncall
        """,
        6,
        "rules[0].escalate_to: escalate_to needs escalate_after",
        id="escalate_to-without-escalate_after",
    ),
    pytest.param(
        """\
        rules:
          - name: a
            effect: require_approval
            approvers: [security]
            expires_in: 1y
        """,
        5,
        "rules[0].expires_in: invalid duration '1y'",
        id="bad-duration-unit",
    ),
    pytest.param(
        """\
        defaults:
          grant_ttl: "-5m"
        rules:
          - name: a
            effect: allow
        """,
        2,
        "defaults.grant_ttl: invalid duration '-5m'",
        id="negative-duration",
    ),
    pytest.param(
        """\
        rules:
          - name: a
            effect: require_approval
            approvers: [security]
            remind_after: 0
        """,
        5,
        "rules[0].remind_after: duration must be between 1 second and 365 days",
        id="zero-duration",
    ),
    pytest.param(
        """\
        rules:
          - name: a
            effect: require_approval
            approvers: [security]
            remind_after: 2h
        """,
        5,
        "rules[0].remind_after: remind_after (7200 s) must be shorter than expires_in (3600 s)",
        id="remind-after-expiry",
    ),
    pytest.param("rules: []\n", 1, "rules: List should have at least 1 item", id="empty-rules"),
    pytest.param("defaults: {expires_in: 1h}\n", 1, "rules: Field required", id="missing-rules"),
    pytest.param("", 1, "the policy is empty", id="empty-file"),
    pytest.param("# only a comment\n", 1, "the policy is empty", id="comment-only-file"),
    pytest.param("- name: a\n  effect: allow\n", 1, "Input should be a valid dictionary", id="root-is-a-list"),
    pytest.param(
        """\
        rules:
          - name: a
            effect: allow
          - effect: deny
        """,
        4,
        "rules[1].name: Field required",
        id="missing-name",
    ),
    pytest.param(
        """\
        rules:
          - name: a
            effect: allow
            effect: deny
        """,
        4,
        "duplicate key 'effect'",
        id="duplicate-yaml-key",
    ),
    pytest.param(
        """\
        rules:
          - name: a
            effect: allow
            min_approvals: 2
        """,
        4,
        "rules[0].min_approvals: min_approvals has no effect on a rule with effect allow",
        id="approval-setting-on-allow",
    ),
    pytest.param(
        """\
        rules:
          - name: a
            effect: deny
            grant_ttl: 5m
        """,
        4,
        "rules[0].grant_ttl: grant_ttl has no effect on a rule with effect deny",
        id="grant_ttl-on-deny",
    ),
    pytest.param(
        """\
        rules:
          - name: a
            effect: require_approval
            approvers:
              - security
              - bob@
        """,
        6,
        "rules[0].approvers[1]: not an acceptable email address",
        id="bad-email-approver",
    ),
    pytest.param(
        """\
        rules:
          - name: a
            effect: require_approval
            approvers: [security]
            expires_in: 1h
            escalate_after: 30m
            escalate_to: bob@example.com
        """,
        7,
        "rules[0].escalate_to: must be a group name",
        id="escalate_to-email",
    ),
    pytest.param(
        """\
        rules:
          - name: a
            match:
              params:
                - {param: region, op: in, value: eu}
            effect: allow
        """,
        5,
        "rules[0].match.params[0].value: op 'in' takes a list",
        id="in-needs-list",
    ),
    pytest.param(
        """\
        rules:
          - name: a
            match:
              params:
                - param: rows
                  op: "<"
            effect: allow
        """,
        5,
        "rules[0].match.params[0].value: op '<' needs a value",
        id="missing-value",
    ),
    pytest.param(
        """\
        rules:
          - name: a
            match:
              params:
                - {param: rows, op: "<", value: [1, 2]}
            effect: allow
        """,
        5,
        "op '<' takes a number or a string",
        id="ordering-needs-scalar",
    ),
    pytest.param(
        """\
        rules:
          - name: a
            match:
              params:
                - {param: rows, op: exists, value: "yes"}
            effect: allow
        """,
        5,
        "op 'exists' takes true or false",
        id="exists-needs-bool",
    ),
    pytest.param(
        """\
        rules:
          - name: a
            match:
              params:
                - {param: db, op: glob, value: 5}
            effect: allow
        """,
        5,
        "op 'glob' takes a string pattern",
        id="glob-needs-string",
    ),
    pytest.param(
        """\
        rules:
          name: a
          effect: allow
        """,
        1,
        "rules: Input should be a valid list",
        id="rules-not-a-list",
    ),
]


@pytest.mark.parametrize("text,line,message", ERRORS)
def test_errors_name_file_and_line(text: str, line: int, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        Policy.from_yaml(yml(text), source="policy.yaml")
    err = caught.value
    first = str(err).splitlines()[0]
    assert first.startswith(f"policy.yaml line {line}: "), str(err)
    assert message in str(err)
    assert err.line == line
    assert err.source == "policy.yaml"
    assert isinstance(err, ValueError)


def test_every_problem_is_reported_with_its_own_line() -> None:
    text = yml(
        """\
        rules:
          - name: a
            effect: maybe
          - name: b
            effect: require_approval
            approvers: ["*"]
            min_approvals: 0
        """
    )
    with pytest.raises(PolicyError) as caught:
        Policy.from_yaml(text, source="p.yaml")
    lines = str(caught.value).splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["p.yaml line 3", "p.yaml line 7"]


def test_load_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("rules:\n  - name: a\n    effect: allow\n    colour: red\n", encoding="utf-8")
    with pytest.raises(PolicyError, match=rf"^{path} line 4: rules\[0\]\.colour: "):
        Policy.load(path)


def test_load_reads_a_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("rules:\n  - name: everything\n    effect: deny\n", encoding="utf-8")
    assert Policy.load(str(path)).evaluate("x.y", None, "a", {}).rule == "everything"


def test_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Policy.load(tmp_path / "nope.yaml")


def test_yaml_tags_beyond_safe_loader_are_rejected() -> None:
    text = "rules: !!python/object/apply:os.system [echo hi]\n"
    with pytest.raises(PolicyError, match=r"^<string> line 1: invalid YAML"):
        Policy.from_yaml(text)


# --- the shipped example --------------------------------------------------------


def test_example_loads() -> None:
    policy = Policy.load(EXAMPLE)
    assert policy.rules[-1].name == "everything-else"
    assert len({r.name for r in policy.rules}) == len(policy.rules)


SMALL = {"rows": 500, "pii": False}
BUCKET = "s3://acme-analytics/q1.csv"
PROD = {"environment": "production"}
ASK = "require_approval"

EXAMPLE_ROUTES = [
    ("dataset.read", None, "anyone", {}, "reads", "allow"),
    ("iam.role.list", None, "anyone", {}, "listings", "allow"),
    ("db.users.drop", "postgres://prod/users", "dba-bot", {}, "no-database-drops", "deny"),
    ("dataset.export", BUCKET, "etl-nightly", SMALL, "small-exports", "allow"),
    ("dataset.export", BUCKET, "ml-bot", SMALL, "exports", ASK),
    ("dataset.export", "s3://elsewhere/q1.csv", "etl-nightly", SMALL, "exports", ASK),
    ("dataset.export", None, "etl-nightly", SMALL, "exports", ASK),
    ("dataset.export", BUCKET, "etl-nightly", {"rows": 500}, "exports", ASK),
    ("dataset.export", BUCKET, "etl-nightly", {"rows": 50_000, "pii": False}, "exports", ASK),
    ("dataset.export", BUCKET, "etl-nightly", {"rows": 5, "pii": True}, "pii-exports", ASK),
    ("iam.role.attach", "arn:aws:iam::1:role/x", "deployer", {}, "iam-changes", ASK),
    ("kms.key.rotate", None, "keybot", {"environment": "staging"}, "key-rotation-nonprod", "allow"),
    ("kms.key.rotate", None, "keybot", PROD, "key-rotation", ASK),
    ("kms.key.rotate", None, "keybot", {}, "key-rotation", ASK),
    ("service.scale", "svc/api", "autoscaler-main", {"limits": {"max_replicas": 8}}, "scale-within-limits", "allow"),
    ("service.scale", "svc/api", "autoscaler-main", {"limits": {"max_replicas": 50}}, "scale", ASK),
    ("service.scale", "svc/api", "chatops", {"limits": {"max_replicas": 8}}, "scale", ASK),
    ("model.deploy", None, "ml-bot", {"environment": "staging"}, "model-deploy-staging", "allow"),
    ("model.deploy", None, "ml-bot", {**PROD, "eval": {"passed": True}}, "model-deploy-prod", ASK),
    ("model.deploy", None, "ml-bot", {**PROD, "eval": {"passed": False}}, "model-deploy-prod-unevaluated", "deny"),
    ("model.deploy", None, "ml-bot", PROD, "model-deploy-prod-unevaluated", "deny"),
    ("billing.invoice.create", None, "finbot", {}, "everything-else", ASK),
]


@pytest.mark.parametrize("action,resource,agent,params,rule,effect", EXAMPLE_ROUTES)
def test_example_routes(
    action: str, resource: str | None, agent: str, params: dict[str, Any], rule: str, effect: str
) -> None:
    applied = Policy.load(EXAMPLE).evaluate(action, resource, agent, params)
    assert (applied.rule, applied.effect) == (rule, effect)


def test_example_iam_is_two_person_with_escalation() -> None:
    applied = Policy.load(EXAMPLE).evaluate("iam.policy.update", None, "deployer", {})
    assert applied.approvers == ["security"]
    assert applied.min_approvals == 2
    assert (applied.expires_in, applied.remind_after, applied.escalate_after) == (1800, 600, 1200)
    assert applied.escalate_to == "security-oncall"
    assert applied.channel == "#sec-approvals"
    assert applied.grant_ttl == 120


def test_example_catch_all_uses_defaults() -> None:
    applied = Policy.load(EXAMPLE).evaluate("billing.invoice.create", None, "finbot", {})
    assert applied.approvers == ["*"]
    assert applied.min_approvals == 1
    assert (applied.expires_in, applied.grant_ttl) == (3600, 300)


def test_example_prod_model_deploy_accepts_an_email_approver() -> None:
    params = {"environment": "production", "eval": {"passed": True}}
    applied = Policy.load(EXAMPLE).evaluate("model.deploy", None, "ml-bot", params)
    assert applied.approvers == ["ml-leads", "alice@example.com"]
    assert applied.min_approvals == 2
    assert applied.expires_in == 86400


# --- properties -------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)
PARAM_KEYS = st.sampled_from(["rows", "pii", "environment", "limits", "eval", "x"])
PARAMS = st.dictionaries(PARAM_KEYS | st.text(max_size=6), JSON, max_size=6)


@functools.cache
def example_policy() -> Policy:
    return Policy.load(EXAMPLE)


@given(
    action=st.sampled_from(["dataset.export", "model.deploy", "service.scale", "x"]) | st.text(),
    resource=st.none() | st.text(max_size=30),
    agent=st.text(max_size=20),
    params=PARAMS,
)
def test_evaluate_never_raises_on_the_example(
    action: str, resource: str | None, agent: str, params: dict[str, Any]
) -> None:
    policy = example_policy()  # loaded once: the deadline is for evaluating, not for reading YAML
    applied = policy.evaluate(action, resource, agent, params)
    names = {r.name for r in policy.rules}
    assert applied.rule in names
    if applied.effect == "require_approval":
        assert applied.min_approvals >= 1 and applied.approvers
    else:
        assert applied.min_approvals == 0 and applied.approvers == []


@given(
    op=st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in", "not_in", "glob", "exists"]),
    value=JSON,
    path=st.sampled_from(["a", "a.b", "a.b.c"]),
    params=st.dictionaries(st.sampled_from(["a", "b"]), JSON, max_size=3),
)
def test_any_valid_condition_on_any_params_returns_a_bool(
    op: str, value: Any, path: str, params: dict[str, Any]
) -> None:
    try:
        condition = Condition(param=path, op=op, value=value)
    except ValidationError:
        assume(False)
        return
    result = condition.holds(params)
    assert isinstance(result, bool)
    if op in ("<", "<=", ">", ">=") and isinstance(value, float) and math.isnan(value):
        assert result is False
