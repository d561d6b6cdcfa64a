"""Masking: the copy of a request that people read, with secrets and personal data replaced.

Pure: no I/O, no clock, no global state. The service masks a request once, at intake, with the
settings frozen into its AppliedPolicy, and every reader (chat cards, approver API, audit record
and export, logs) shows that copy; the agent and the grant keep the exact params.

A value is masked when
* the policy marks its path (`sensitive:`): the whole value at the path goes, objects and lists
  included, as `[sensitive · 12 chars · 9e2d]`;
* its parameter or context key names a credential (`password`, `db_pass`, `api_key`, ...) and
  secret detection is on: the whole scalar goes, as `[secret · credential field · 8 chars · 51c0]`;
* a detector finds it inside a string: only the matching part of the text is replaced, so
  "rotate AKIA... now" reads "rotate [secret · aws key · 20 chars · 3f9a] now";
* it is a JSON integer that is a valid payment card number (13-19 digits, Luhn) and card
  detection is on: the number becomes a mask string.

Detectors read values only, never dictionary keys: a key is the shape of the request that a
reviewer needs to see, and a secret used as a key is a known miss (mark the parent `sensitive`).

Each mask ends with a keyed fingerprint, the first 4 hex digits of HMAC-SHA256(key, value), so
two requests carrying the same value can be told apart from two carrying different ones without
showing either. With 16 bits it is a comparison aid, not an identity; the key must be secret,
or a short value (a PIN) could be found by trying them all.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import translate
from functools import lru_cache
from typing import Any, Literal

from approvalbot.core.chain import params_digest
from approvalbot.core.errors import ParamsDeleted, UnknownPath
from approvalbot.core.models import AppliedPolicy, ApprovalRequest, Detect, MaskedValue, MaskedView, PiiKind
from approvalbot.core.pii import card_number, find_pii
from approvalbot.core.secret_scan import credential_key, find_secrets

__all__ = [
    "CONTEXT_PREFIX",
    "MaskedItem",
    "MaskedRequest",
    "ensure_masked",
    "fingerprint",
    "is_masked",
    "mask_request",
    "mask_text",
    "masked_view",
    "raw_values",
    "reveal",
]

Category = Literal["secret", "personal", "sensitive"]
Part = str | int

CONTEXT_PREFIX = "context."
SEP = " · "
# Shorter strings cannot hold anything a detector finds (the shortest is an address like a@b.co).
_MIN_SCAN = 6
_MASK = re.compile(r"\[(?:secret|personal|sensitive) · (?:[a-z -]+ · )?\d+ chars · [0-9a-f]{4}\]")


@dataclass(frozen=True, slots=True)
class MaskedItem:
    """One masked value, for the reveal UI and the audit record (never the value itself).

    `path` is where the value lives: `params.<dotted path>` (list items by index),
    `context.<key>`, `justification` or `resource`. A string with several detected parts
    yields one item per part, all with the string's path; `whole` says whether the item
    replaced the entire value at the path.
    """

    path: str
    category: Category
    kind: str | None  # "aws key", "email", "credential field"; None for policy-marked values
    length: int
    fingerprint: str
    whole: bool
    parts: tuple[Part, ...]  # the path as keys and indices, unambiguous even when a key has a dot

    @property
    def mask(self) -> str:
        return _mask_string(self.category, self.kind, self.length, self.fingerprint)


@dataclass(frozen=True, slots=True)
class MaskedRequest:
    """The reader's copy of a request's free-form parts, and what was masked in it."""

    params: dict[str, Any]
    context: dict[str, str]
    justification: str | None
    resource: str | None
    items: tuple[MaskedItem, ...]

    @property
    def paths(self) -> list[str]:
        """The distinct masked paths, in order: what `POST /reveal` may ask for."""
        return list(dict.fromkeys(item.path for item in self.items))


def fingerprint(key: bytes, value: str) -> str:
    """4 hex digits of HMAC-SHA256(key, value): equal values compare equal under one key."""
    return hmac.new(key, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:4]


def _mask_string(category: Category, kind: str | None, length: int, fp: str) -> str:
    middle = f"{kind}{SEP}" if kind else ""
    return f"[{category}{SEP}{middle}{length} chars{SEP}{fp}]"


def is_masked(text: str) -> bool:
    """Whether `text` contains a mask string (for tests and for readers that style masks)."""
    return _MASK.search(text) is not None


def _canonical_json(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


@dataclass(frozen=True, slots=True)
class _Rules:
    params: re.Pattern[str] | None
    context: re.Pattern[str] | None


@lru_cache(maxsize=256)
def _rules(sensitive: tuple[str, ...]) -> _Rules:
    """Compiled `sensitive:` globs; `*` crosses dots (as in rule globs), case-insensitive.

    Case-insensitive, unlike rule matching, because here a miss shows a secret while an extra
    match only hides a value the reviewer can still reveal.
    """
    params = [translate(p) for p in sensitive if not p.startswith(CONTEXT_PREFIX)]
    context = [translate(p[len(CONTEXT_PREFIX) :]) for p in sensitive if p.startswith(CONTEXT_PREFIX)]

    def compile_(globs: list[str]) -> re.Pattern[str] | None:
        return re.compile("|".join(f"(?:{g})" for g in globs), re.IGNORECASE | re.DOTALL) if globs else None

    return _Rules(compile_(params), compile_(context))


class _Masker:
    """One masking pass; collects the items as it rebuilds the values."""

    def __init__(self, sensitive: tuple[str, ...], detect: Detect, key: bytes):
        if not key:
            raise ValueError("masking needs a non-empty fingerprint key")
        self.rules = _rules(sensitive)
        self.secrets = detect.secrets
        self.pii: tuple[PiiKind, ...] = tuple(dict.fromkeys(detect.pii))
        self.cards = "card" in self.pii
        self.key = key
        self.items: list[MaskedItem] = []

    def whole(self, value: Any, parts: tuple[Part, ...], category: Category, kind: str | None) -> str:
        text = _canonical_json(value)
        item = MaskedItem(_path(parts), category, kind, len(text), fingerprint(self.key, text), True, parts)
        self.items.append(item)
        return item.mask

    def text(self, text: str, parts: tuple[Part, ...]) -> str:
        if len(text) < _MIN_SCAN:
            return text
        spans: list[tuple[int, int, Category, str, str]] = []
        if self.secrets:
            spans += [(f.start, f.end, "secret", f.kind, text[f.start : f.end]) for f in find_secrets(text)]
        if self.pii:
            spans += [(m.start, m.end, "personal", m.kind, m.normal) for m in find_pii(text, self.pii)]
        if not spans:
            return text
        out: list[str] = []
        pos = 0
        for start, end, category, kind, normal in _merge(spans):
            value = text[start:end]
            whole = start == 0 and end == len(text)
            fp = fingerprint(self.key, normal or value)
            item = MaskedItem(_path(parts), category, kind, len(value), fp, whole, parts)
            self.items.append(item)
            out += [text[pos:start], item.mask]
            pos = end
        out.append(text[pos:])
        return "".join(out)

    def param(self, value: Any, parts: tuple[Part, ...]) -> Any:
        if isinstance(value, str) and value[:1] == "[" and _MASK.fullmatch(value):
            return value  # masked before: masking the reader's copy again changes nothing
        rules = self.rules.params
        if rules is not None and len(parts) > 1 and rules.fullmatch(".".join(map(str, parts[1:]))):
            return self.whole(value, parts, "sensitive", None)
        if self.secrets and _scalar(value) and isinstance(parts[-1], str) and credential_key(parts[-1]):
            return self.whole(value, parts, "secret", "credential field")
        if isinstance(value, str):
            return self.text(value, parts)
        if isinstance(value, dict):
            return {k: self.param(v, (*parts, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.param(v, (*parts, i)) for i, v in enumerate(value)]
        if self.cards and type(value) is int and card_number(str(abs(value))):
            return self.whole(value, parts, "personal", "card")
        return value

    def context_value(self, key: str, value: str) -> str:
        parts: tuple[Part, ...] = ("context", key)
        if value[:1] == "[" and _MASK.fullmatch(value):
            return value
        rules = self.rules.context
        if rules is not None and rules.fullmatch(key):
            return self.whole(value, parts, "sensitive", None)
        if self.secrets and value and credential_key(key):
            return self.whole(value, parts, "secret", "credential field")
        return self.text(value, parts)


def _scalar(value: Any) -> bool:
    """A credential-named field is masked whole when it holds a non-empty string or a number."""
    return (isinstance(value, str) and value != "") or (isinstance(value, int | float) and not isinstance(value, bool))


def _path(parts: tuple[Part, ...]) -> str:
    return ".".join(map(str, parts))


def _merge(
    spans: list[tuple[int, int, Category, str, str]],
) -> list[tuple[int, int, Category, str, str]]:
    """Overlapping finds become one mask covering all of them, so no part of either shows.

    The earliest find names the mask, a secret before personal data at the same place (a
    basic-auth password looks like the local part of an address), then the longest; a merged
    span is fingerprinted as text.
    """
    spans.sort(key=lambda s: (s[0], s[2] != "secret", -s[1]))
    merged: list[tuple[int, int, Category, str, str]] = []
    for span in spans:
        if merged and span[0] < merged[-1][1]:
            last = merged[-1]
            if span[1] > last[1]:
                merged[-1] = (last[0], span[1], last[2], last[3], "")
            continue
        merged.append(span)
    return merged


def mask_request(
    *,
    params: Mapping[str, Any],
    context: Mapping[str, str] | None = None,
    justification: str | None = None,
    resource: str | None = None,
    sensitive: Iterable[str] = (),
    detect: Detect | None = None,
    key: bytes,
) -> MaskedRequest:
    """The reader's copy of a request; pass the request's AppliedPolicy `sensitive` and `detect`.

    Never raises for odd params (any JSON); the inputs are not modified.
    """
    m = _Masker(tuple(sensitive), detect or Detect(), key)
    masked_params = {k: m.param(v, ("params", k)) for k, v in params.items()}
    masked_context = {k: m.context_value(k, v) for k, v in (context or {}).items()}
    masked_justification = None if justification is None else m.text(justification, ("justification",))
    masked_resource = None if resource is None else m.text(resource, ("resource",))
    return MaskedRequest(masked_params, masked_context, masked_justification, masked_resource, tuple(m.items))


def mask_text(text: str, *, detect: Detect | None = None, key: bytes) -> str:
    """Detectors only, over one string (a log line, a decision reason); no paths apply."""
    m = _Masker((), detect or Detect(), key)
    return m.text(text, ("text",))


def raw_values(
    masked: MaskedRequest,
    paths: Iterable[str],
    *,
    params: Mapping[str, Any],
    context: Mapping[str, str] | None = None,
    justification: str | None = None,
    resource: str | None = None,
) -> dict[str, Any]:
    """The exact values at masked paths, for a reveal; KeyError names a path that was not masked.

    Only paths in `masked.paths` can be revealed, so a reveal can never be used to read an
    unmasked part of a request that the reader's copy doesn't already show. A string with
    detected parts is revealed whole.
    """
    by_path = {item.path: item.parts for item in masked.items}
    roots: dict[str, Any] = {
        "params": dict(params),
        "context": dict(context or {}),
        "justification": justification,
        "resource": resource,
    }
    out: dict[str, Any] = {}
    for path in paths:
        if path not in by_path:
            raise KeyError(path)
        parts = by_path[path]
        node = roots[str(parts[0])]
        for part in parts[1:]:
            node = node[part]
        out[path] = node
    return out


def masked_view(
    *,
    params: Mapping[str, Any],
    context: Mapping[str, str] | None,
    justification: str | None,
    resource: str | None,
    policy: AppliedPolicy,
    key: bytes,
) -> MaskedView:
    """The stored reader's copy of a new request, masked with the settings frozen into its policy.

    Computed once, at intake: readers never mask again (the cost stays on the create path), and a
    later change to the policy file cannot change what people were shown for an existing request.
    `params_sha256` is the grant's params hash, so the record of what was asked and the grant
    that allows it name the same exact params.
    """
    m = mask_request(
        params=params,
        context=context,
        justification=justification,
        resource=resource,
        sensitive=policy.sensitive,
        detect=policy.detect,
        key=key,
    )
    return MaskedView(
        params=m.params,
        context=m.context,
        justification=m.justification,
        resource=m.resource,
        items=[
            MaskedValue(
                path=i.path, category=i.category, kind=i.kind, length=i.length, fingerprint=i.fingerprint, whole=i.whole
            )
            for i in m.items
        ],
        params_sha256=params_digest(dict(params)),
    )


def ensure_masked(request: ApprovalRequest, key: bytes) -> ApprovalRequest:
    """A request stored before masking existed, with the masked view intake would have given it.

    Masked with the settings frozen into its policy; a policy stored before masking loads with no
    `sensitive:` paths and every detector on, so only detectors apply. Deterministic, so the
    request's masked paths are the same every time it is read, and a reveal finds them again.
    A request whose raw values retention already dropped (before it had a view) keeps an empty
    `params_sha256`: the hash of the exact params cannot be known any more.
    """
    if request.masked is not None:
        return request
    view = masked_view(
        params=request.params,
        context=request.context,
        justification=request.justification,
        resource=request.resource,
        policy=request.policy,
        key=key,
    )
    if request.params_deleted:
        view = view.model_copy(update={"params_sha256": ""})
    return request.model_copy(update={"masked": view})


def reveal(request: ApprovalRequest, paths: Iterable[str], key: bytes) -> dict[str, Any]:
    """The exact values at masked paths of a stored request (who may ask is `rules.reveal_refusal`).

    Only paths masked in the stored view can be asked for (UnknownPath otherwise, also for a request
    made before masking), and only while the raw values exist (ParamsDeleted after retention). An
    empty `paths` means every masked path. The request is masked again with its frozen settings to
    find each path's keys and indices (the stored dotted path is ambiguous when a key holds a dot);
    masking is deterministic, so the paths are the same ones the stored view lists.
    """
    view = request.masked
    known = list(dict.fromkeys(item.path for item in view.items)) if view is not None else []
    wanted = list(dict.fromkeys(paths)) or known
    unknown = [p for p in wanted if p not in known]
    if unknown or not wanted:
        raise UnknownPath(f"not a masked path of this request: {', '.join(unknown) or '(none masked)'}")
    if request.params_deleted:
        raise ParamsDeleted()
    fresh = mask_request(
        params=request.params,
        context=request.context,
        justification=request.justification,
        resource=request.resource,
        sensitive=request.policy.sensitive,
        detect=request.policy.detect,
        key=key,
    )
    try:
        return raw_values(
            fresh,
            wanted,
            params=request.params,
            context=request.context,
            justification=request.justification,
            resource=request.resource,
        )
    except KeyError as missing:  # masked at intake, not now: the detectors changed since (an upgrade)
        raise UnknownPath(f"this path can no longer be revealed: {missing.args[0]}") from None
