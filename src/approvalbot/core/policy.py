"""Approval policy: ordered rules, loaded from YAML, that decide what a request needs.

The first matching rule wins and no match means deny, so a gap in the policy
can never let an action through. Every mistake in the file is reported with
its file name and line number, because a policy that is silently half-read is
worse than one that refuses to load.
"""

from __future__ import annotations

import math
import operator
import re
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StringConstraints,
    ValidationError,
    model_validator,
)

from approvalbot.core.addresses import canonical_email
from approvalbot.core.errors import DomainError
from approvalbot.core.models import PII_KINDS, AppliedPolicy, Detect, PiiKind
from approvalbot.core.rules import ANY_APPROVER

__all__ = ["Condition", "Defaults", "DetectSpec", "Match", "Policy", "PolicyError", "Rule", "parse_duration"]

NO_MATCH = "(no matching rule)"
MAX_DURATION = 365 * 24 * 3600

Effect = Literal["allow", "deny", "require_approval"]
Op = Literal["==", "!=", "<", "<=", ">", ">=", "in", "not_in", "glob", "exists"]
_ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION_RE = re.compile(r"(\d+)\s*([smhd]?)")
_MISSING = object()


class PolicyError(DomainError, ValueError):
    """A policy that cannot be used; the message starts with `<file> line <n>:`."""

    code = "invalid_policy"

    def __init__(self, message: str, source: str = "<string>", line: int | None = None):
        super().__init__(message)
        self.source = source
        self.line = line


class _At(ValueError):
    """A validator error about a node below the model that raised it (e.g. one rule's name)."""

    def __init__(self, path: tuple[str | int, ...], message: str):
        super().__init__(message)
        self.path = path


def parse_duration(value: object) -> int:
    """Seconds from an int or a string like "45s", "30m", "1h", "2d" (humans write the latter)."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 300, '45s', '30m', '1h' or '2d'")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and (m := _DURATION_RE.fullmatch(value.strip().lower())):
        seconds = int(m[1]) * _UNITS[m[2]]
    else:
        raise ValueError(f"invalid duration {value!r}; use e.g. 300, '45s', '30m', '1h' or '2d'")
    if not 0 < seconds <= MAX_DURATION:
        raise ValueError(f"duration must be between 1 second and 365 days, got {seconds} s")
    return seconds


def _approver(value: str) -> str:
    """Emails are normalized so they compare equal to the approver registry's; groups are kept."""
    value = value.strip()
    if not value:
        raise ValueError("approver must not be empty")
    return canonical_email(value) if "@" in value else value


def _group(value: str) -> str:
    value = value.strip()
    if not value or "@" in value or value == ANY_APPROVER:
        raise ValueError("must be a group name")
    return value


def _detector(value: object) -> object:
    """A readable error for a misspelt detector: the default message lists Literal values cryptically."""
    if isinstance(value, str) and value not in PII_KINDS:
        raise ValueError(f"unknown detector {value!r}; known: {', '.join(PII_KINDS)}")
    return value


def _sensitive_path(value: str) -> str:
    """A glob over dotted param paths, or `context.<glob>` over context keys (core/masking.py)."""
    value = value.strip()
    if value == "context":
        raise ValueError("use 'context.<key glob>' for context values, e.g. 'context.*'")
    if not value or value.startswith(".") or value.endswith(".") or ".." in value:
        raise ValueError(f"invalid sensitive path {value!r}: dotted names such as 'credentials.*' or 'context.*'")
    return value


Duration = Annotated[int, BeforeValidator(parse_duration)]
SensitivePath = Annotated[str, StringConstraints(max_length=200), AfterValidator(_sensitive_path)]
Glob = Annotated[str, StringConstraints(min_length=1, max_length=1000)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class _Model(BaseModel):
    """Unknown keys are errors: a misspelt `min_aprovals` must not quietly become the default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Condition(_Model):
    """One test on a request parameter; `param` may be a dotted path into nested objects."""

    param: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    op: Op
    value: Any = None

    @model_validator(mode="before")
    @classmethod
    def _exists_defaults_to_true(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("op") == "exists":
            return {"value": True, **data}
        return data

    @model_validator(mode="after")
    def _value_fits_op(self) -> Self:
        if "value" not in self.model_fields_set:
            raise _At(("value",), f"op {self.op!r} needs a value")
        v = self.value
        if self.op == "exists" and not isinstance(v, bool):
            raise _At(("value",), "op 'exists' takes true or false")
        if self.op in ("in", "not_in") and not isinstance(v, list):
            raise _At(("value",), f"op {self.op!r} takes a list")
        if self.op == "glob" and not isinstance(v, str):
            raise _At(("value",), "op 'glob' takes a string pattern")
        if self.op in _ORDER and not (_is_number(v) or isinstance(v, str)):
            raise _At(("value",), f"op {self.op!r} takes a number or a string")
        return self

    def holds(self, params: dict[str, Any]) -> bool:
        actual = _lookup(params, self.param)
        if self.op == "exists":
            return bool((actual is not _MISSING) == self.value)
        if actual is _MISSING:
            return False
        match self.op:
            case "==":
                return _equal(actual, self.value)
            case "!=":
                return not _equal(actual, self.value)
            case "in":
                return any(_equal(actual, item) for item in self.value)
            case "not_in":
                return not any(_equal(actual, item) for item in self.value)
            case "glob":
                return isinstance(actual, str) and fnmatchcase(actual, self.value)
            case _:
                return _ordered(actual, self.op, self.value)


class Match(_Model):
    """What a rule applies to; every part defaults to "anything"."""

    action: Glob = "*"
    resource: Glob = "*"
    agent: Glob = "*"
    params: list[Condition] = Field(default_factory=list)

    def matches(self, action: str, resource: str | None, agent_name: str, params: dict[str, Any]) -> bool:
        resource_ok = self.resource == "*" if resource is None else fnmatchcase(resource, self.resource)
        return (
            resource_ok
            and fnmatchcase(action, self.action)
            and fnmatchcase(agent_name, self.agent)
            and all(c.holds(params) for c in self.params)
        )


# Settings that only mean something while a request waits for humans.
_APPROVAL_FIELDS = (
    "approvers",
    "min_approvals",
    "expires_in",
    "remind_after",
    "escalate_after",
    "escalate_to",
    "channel",
    "reveal",
)


class DetectSpec(_Model):
    """`detect:` in defaults or a rule; an omitted key falls back to the defaults, then to "on"."""

    secrets: StrictBool | None = None
    pii: list[Annotated[PiiKind, BeforeValidator(_detector)]] | None = None


class Rule(_Model):
    """One policy line: what it matches, the effect, and for approvals who and how fast."""

    name: Name
    match: Match = Field(default_factory=Match)
    effect: Effect
    approvers: list[Annotated[str, AfterValidator(_approver)]] = Field(default_factory=list)
    min_approvals: int = Field(default=1, ge=1, le=20)
    expires_in: Duration | None = None
    remind_after: Duration | None = None
    escalate_after: Duration | None = None
    escalate_to: Annotated[str, AfterValidator(_group)] | None = None
    channel: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    grant_ttl: Duration | None = None
    sensitive: list[SensitivePath] = Field(default_factory=list)
    detect: DetectSpec | None = None
    reveal: StrictBool | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        """Reject settings that would have no effect, so the file says what actually happens."""
        if self.effect != "require_approval":
            useless = [f for f in _APPROVAL_FIELDS if f in self.model_fields_set]
            if self.effect == "deny" and "grant_ttl" in self.model_fields_set:
                useless.append("grant_ttl")
            if useless:
                field = useless[0]
                raise _At((field,), f"{field} has no effect on a rule with effect {self.effect}")
            return self
        if not self.approvers:
            raise _At(("approvers",), "a require_approval rule needs approvers ('*' for anyone)")
        if self.escalate_after is not None and self.escalate_to is None:
            raise _At(("escalate_after",), "escalate_after needs escalate_to (a group to page)")
        if self.escalate_to is not None and self.escalate_after is None:
            raise _At(("escalate_to",), "escalate_to needs escalate_after (when to escalate)")
        return self


class Defaults(_Model):
    """Fallbacks for rules that don't set their own timings."""

    expires_in: Duration = 3600
    grant_ttl: Duration = 300
    sensitive: list[SensitivePath] = Field(default_factory=list)
    detect: DetectSpec = Field(default_factory=DetectSpec)
    reveal: StrictBool = True


class Policy(_Model):
    """The whole file; rules are tried in order and the first match decides."""

    defaults: Defaults = Field(default_factory=Defaults)
    rules: list[Rule] = Field(min_length=1)
    # What each rule (by name; "" for no match) freezes into a request, built on first use: the
    # policy is immutable, and building it (masking settings merged with the defaults) is a
    # measurable part of intake. Callers get a shallow copy: like every model here, it is replaced
    # (model_copy), never changed in place.
    _applied_by_rule: dict[str, AppliedPolicy] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _rules_fit_together(self) -> Self:
        seen: set[str] = set()
        for i, rule in enumerate(self.rules):
            if rule.name in seen:
                raise _At(("rules", i, "name"), f"duplicate rule name {rule.name!r}")
            seen.add(rule.name)
            # A reminder or escalation after expiry could never fire.
            expires_in = rule.expires_in or self.defaults.expires_in
            for field in ("remind_after", "escalate_after"):
                after = getattr(rule, field)
                if after is not None and after >= expires_in:
                    raise _At(
                        ("rules", i, field),
                        f"{field} ({after} s) must be shorter than expires_in ({expires_in} s)",
                    )
        return self

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        """Read and validate a policy file; OSError if it can't be read, PolicyError if invalid."""
        raw = Path(path).read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            raise PolicyError(f"{path} line {line}: not UTF-8 text", str(path), line) from None
        return cls.from_yaml(text, source=str(path))

    @classmethod
    def from_yaml(cls, text: str, source: str = "<string>") -> Policy:
        root, data = _parse(text, source)
        if root is None:
            raise PolicyError(f"{source} line 1: the policy is empty; it needs 'rules'", source, 1)
        if dup := _duplicate_key(root):
            line, key = dup
            raise PolicyError(f"{source} line {line}: duplicate key {key!r}", source, line)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise _policy_error(exc, root, source) from None

    @classmethod
    def default(cls) -> Policy:
        """Used when no policy file is configured: everything needs one human's approval."""
        return cls(
            rules=[
                Rule(
                    name="default",
                    effect="require_approval",
                    approvers=[ANY_APPROVER],
                    min_approvals=1,
                    expires_in=3600,
                )
            ]
        )

    def evaluate(self, action: str, resource: str | None, agent_name: str, params: dict[str, Any]) -> AppliedPolicy:
        """The first matching rule, frozen into an AppliedPolicy; no match fails closed (deny)."""
        params = params if isinstance(params, dict) else {}
        for rule in self.rules:
            if rule.match.matches(action, resource, agent_name, params):
                return self._frozen(rule)
        return self._frozen(None)

    def _frozen(self, rule: Rule | None) -> AppliedPolicy:
        name = rule.name if rule is not None else ""
        applied = self._applied_by_rule.get(name)
        if applied is None:
            applied = self._applied(rule) if rule is not None else self._no_match()
            self._applied_by_rule[name] = applied
        return applied.model_copy()

    def _no_match(self) -> AppliedPolicy:
        return AppliedPolicy(rule=NO_MATCH, effect="deny", approvers=[], min_approvals=0, **self._masking(None))

    def _masking(self, rule: Rule | None) -> dict[str, Any]:
        """Masking settings for a request: sensitive paths add up (a rule cannot un-mark a default
        path), `detect` keys and `reveal` are taken from the rule when it sets them."""
        d = self.defaults
        sensitive = list(dict.fromkeys([*d.sensitive, *(rule.sensitive if rule else [])]))
        spec = rule.detect if rule and rule.detect else DetectSpec()
        secrets = next((v for v in (spec.secrets, d.detect.secrets) if v is not None), True)
        pii = next((v for v in (spec.pii, d.detect.pii) if v is not None), None)
        detect = Detect(secrets=secrets) if pii is None else Detect(secrets=secrets, pii=list(dict.fromkeys(pii)))
        reveal = rule.reveal if rule and rule.reveal is not None else d.reveal
        return {"sensitive": sensitive, "detect": detect, "reveal": reveal}

    def _applied(self, rule: Rule) -> AppliedPolicy:
        d = self.defaults
        grant_ttl = rule.grant_ttl or d.grant_ttl
        if rule.effect != "require_approval":
            return AppliedPolicy(
                rule=rule.name,
                effect=rule.effect,
                approvers=[],
                min_approvals=0,
                grant_ttl=grant_ttl,
                **self._masking(rule),
            )
        return AppliedPolicy(
            rule=rule.name,
            effect=rule.effect,
            approvers=list(rule.approvers),
            min_approvals=rule.min_approvals,
            expires_in=rule.expires_in or d.expires_in,
            remind_after=rule.remind_after,
            escalate_after=rule.escalate_after,
            escalate_to=rule.escalate_to,
            channel=rule.channel,
            grant_ttl=grant_ttl,
            **self._masking(rule),
        )


# --- condition helpers -------------------------------------------------------


def _is_number(value: object) -> bool:
    """Numbers for comparison purposes; bools are not numbers here (True < 2 is a type error), and
    neither are NaN and the infinities (intake refuses them; -Infinity would pass every `<`)."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool)


def _lookup(params: dict[str, Any], path: str) -> Any:
    node: Any = params
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _equal(a: object, b: object) -> bool:
    """Python equality, except that a bool never equals a number (1 == True is a surprise)."""
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return a == b


def _ordered(actual: Any, op: str, expected: Any) -> bool:
    """Ordering only between two numbers or two strings; anything else is simply false."""
    numbers = _is_number(actual) and _is_number(expected)
    if not (numbers or (isinstance(actual, str) and isinstance(expected, str))):
        return False
    return bool(_ORDER[op](actual, expected))


# --- YAML and error locations ---------------------------------------------------


def _parse(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    """Compose once and construct from the same node tree, which is kept for error lines."""
    try:
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
            return root, loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        detail = str(exc.problem or exc.context)
        if exc.context and exc.problem:
            detail += f" ({exc.context}"
            if exc.context_mark and exc.context_mark is not mark:
                detail += f" started on line {exc.context_mark.line + 1}"
            detail += ")"
        raise PolicyError(f"{source} line {line}: invalid YAML: {detail}", source, line) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        detail = f"character #x{exc.character:04x}: {exc.reason}"
        raise PolicyError(f"{source} line {line}: invalid YAML: {detail}", source, line) from None


def _duplicate_key(node: yaml.Node) -> tuple[int, str] | None:
    """YAML quietly keeps the last of two equal keys; in a policy that hides a mistake."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    return key.start_mark.line + 1, key.value
                seen.add(key.value)
            if found := _duplicate_key(value):
                return found
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            if found := _duplicate_key(item):
                return found
    return None


def _line_of(root: yaml.Node, loc: tuple[str | int, ...]) -> int:
    """Line of the deepest node on `loc` that exists; a mapping entry reports its key's line."""
    node, line = root, root.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            keys = [(k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode)]
            entry = next(((k, v) for k, v in keys if k.value == part), None)
            if entry is None:
                break
            line, node = entry[0].start_mark.line + 1, entry[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _format_loc(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _policy_error(exc: ValidationError, root: yaml.Node, source: str) -> PolicyError:
    """One line per problem, each `<file> line <n>: <path>: <message>`; the first sets .line."""
    lines: list[str] = []
    first_line: int | None = None
    for err in exc.errors():
        loc, msg = tuple(err["loc"]), err["msg"]
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, _At):
            loc, msg = loc + cause.path, str(cause)
        elif isinstance(cause, ValueError):
            msg = str(cause)
        line = _line_of(root, loc)
        first_line = first_line or line
        path = _format_loc(loc)
        lines.append(f"{source} line {line}: {path + ': ' if path else ''}{msg}")
    return PolicyError("\n".join(lines), source, first_line)
