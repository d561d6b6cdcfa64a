"""Verifying the audit log: offline from an export, or server-side straight from Redis.

Both recompute the hash chain from the record bodies and trust nothing that is
stored alongside them: stored hashes are only compared against, and used to say
*what kind* of tampering explains a mismatch. Signed checkpoints then anchor the
recomputed chain: each one's hash must be reproduced at its seq, and a log that
ends before a checkpoint's seq has lost records at its tail.

The first problem is reported with the sequence number where the log stops being
what was originally written, and one of these kinds:

  changed    a record (or its stored hash) differs from what was written
  missing    records were removed from the middle
  inserted   a record was added that was never written by the service
  reordered  records were moved
  truncated  records are gone from the end (caught by a checkpoint, by a chain
             longer than the log, or by a request's audit index naming a seq past
             the log's end)
  checkpoint_missing  a signed checkpoint names a previous one that is not there
  signature  a checkpoint's signature does not verify (or its key is unknown)
  malformed  a record or checkpoint cannot be read at all

Offline input is what `approvalbot audit export --format jsonl` writes: one JSON
object per line, the event's fields plus seq, hash and prev_hash; the body that
is hashed is that object minus those three keys, in canonical JSON.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from approvalbot.audit.checkpoints import FIRST_PREV, Checkpoint
from approvalbot.audit.signing import Keyring, PublicKeyInput, as_keyring
from approvalbot.core.chain import GENESIS, link
from approvalbot.store import codec, keys

META_FIELDS = ("seq", "hash", "prev_hash")
# chain.canonical with the encoder built once (json.dumps builds one per call): same bytes, faster.
_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
KINDS = ("changed", "missing", "inserted", "reordered", "truncated", "checkpoint_missing", "signature", "malformed")
REDIS_BATCH = 10_000


@dataclass(frozen=True)
class Problem:
    seq: int
    kind: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "detail": self.detail}


@dataclass
class Report:
    ok: bool
    count: int  # records in the log (or file) that was checked
    head_seq: int  # how far the recomputed chain verified
    head_hash: str
    checkpoints: int  # checkpoints offered
    checkpoints_verified: int  # signature good and hash reproduced
    attested_seq: int  # the highest seq a verified checkpoint vouches for
    problem: Problem | None = None
    unsealed: int = 0  # records not chained yet (server-side only)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "count": self.count,
            "head": {"seq": self.head_seq, "hash": self.head_hash},
            "checkpoints": self.checkpoints,
            "checkpoints_verified": self.checkpoints_verified,
            "attested_seq": self.attested_seq,
            "unsealed": self.unsealed,
            "problem": self.problem.as_dict() if self.problem else None,
        }

    def summary(self) -> str:
        if self.problem:
            p = self.problem
            return f"FAILED at seq {p.seq}: {p.kind}: {p.detail}"
        text = (
            f"ok: {self.count} records, head {self.head_hash[:16]}… at seq {self.head_seq}; "
            f"{self.checkpoints_verified} checkpoint(s) verified"
        )
        if self.attested_seq < self.head_seq:
            text += f"; records after seq {self.attested_seq} are chained but not yet covered by a signed checkpoint"
        return text


def _first(*problems: Problem | None) -> Problem | None:
    found = [p for p in problems if p is not None]
    return min(found, key=lambda p: p.seq) if found else None


def _claimed_seq(raw: Any) -> int:
    seq = raw.get("seq") if isinstance(raw, Mapping) else getattr(raw, "seq", None)
    return seq if isinstance(seq, int) and not isinstance(seq, bool) and seq > 0 else 0


def prepare_checkpoints(checkpoints: Iterable[Any], keyring: Keyring) -> tuple[list[Checkpoint], Problem | None, int]:
    """Checkpoints whose signatures verify (by seq), the first problem among the rest, and the total."""
    good: list[Checkpoint] = []
    problem: Problem | None = None
    total = 0
    for raw in checkpoints:
        total += 1
        try:
            cp = raw if isinstance(raw, Checkpoint) else Checkpoint.from_dict(raw)
        except ValueError as exc:
            problem = _first(problem, Problem(_claimed_seq(raw), "malformed", f"checkpoint: {exc}"))
            continue
        why = cp.signature_problem(keyring)
        if why is not None:
            problem = _first(problem, Problem(cp.seq, "signature", f"checkpoint at seq {cp.seq}: {why}"))
            continue
        good.append(cp)
    good.sort(key=lambda c: c.seq)
    unique = list({cp.to_json(): cp for cp in good}.values())  # a saved copy of a stored one counts once
    return unique, _first(problem, _link_problem(unique)), total


def _link_problem(checkpoints: list[Checkpoint]) -> Problem | None:
    """A checkpoint whose `prev` does not name the checkpoint before it: one was removed.

    Checkpoints made before links existed (no `prev`) are skipped; the first linked
    one after them names the last of them. The list must be sorted by seq.
    """
    before: Checkpoint | None = None
    for cp in checkpoints:
        if cp.prev is not None:
            expected = before.digest() if before is not None else FIRST_PREV
            if cp.prev != expected and not (before is not None and before.seq == cp.seq):
                return Problem(
                    cp.seq,
                    "checkpoint_missing",
                    f"the signed checkpoint at seq {cp.seq} (made at {cp.at}) names a previous checkpoint "
                    "that is not there: a checkpoint was removed",
                )
        before = cp
    return None


class _Anchors:
    """Walks the verified checkpoints alongside the recomputed chain."""

    def __init__(self, checkpoints: list[Checkpoint]):
        self.cps = checkpoints
        self.i = 0
        self.verified = 0
        self.attested = 0
        self.next_seq = checkpoints[0].seq if checkpoints else None

    def check(self, seq: int, recomputed: str) -> Problem | None:
        while self.i < len(self.cps) and self.cps[self.i].seq == seq:
            cp = self.cps[self.i]
            if cp.hash != recomputed:
                since = f" (the previous verified checkpoint covers up to seq {self.attested})" if self.attested else ""
                return Problem(
                    seq,
                    "changed",
                    f"the records up to seq {seq} do not reproduce the signed checkpoint "
                    f"made at {cp.at}: something at or before seq {seq} was rewritten{since}; "
                    f"or, after a Redis failover, records sealed on the old primary within seq "
                    f"{self.attested + 1} to {seq} were lost before they were replicated and newer "
                    f"records took their numbers",
                )
            self.i += 1
            self.verified += 1
            self.attested = seq
        self.next_seq = self.cps[self.i].seq if self.i < len(self.cps) else None
        return None

    def beyond(self, end: int) -> Problem | None:
        """A checkpoint past the end of the log: the tail is gone, and exactly which records."""
        if self.i < len(self.cps):
            cp = self.cps[self.i]
            last = self.cps[-1]
            missing = f"seq {end + 1}" if last.seq == end + 1 else f"seq {end + 1} to {last.seq}"
            return Problem(
                end + 1,
                "truncated",
                f"{last.seq - end} record(s) missing, {missing}: a signed checkpoint vouches for {cp.seq} "
                f"records (made at {cp.at}; the last known hash, at seq {last.seq}, is {last.hash}), "
                f"but the log ends at seq {end}. Records sealed on a Redis primary that failed before "
                "replicating them go missing this way (APPROVALBOT_MIN_REPLICAS=0); else they were removed",
            )
        return None


# ---------------------------------------------------------------------------
# Offline: exported records


def _split(record: Any) -> tuple[Any, str, str, bytes]:
    """(claimed seq, stored hash, stored prev_hash, canonical body); raises ValueError if unreadable."""
    if not isinstance(record, Mapping):
        raise ValueError("a record must be a JSON object")
    try:
        claimed, stored, stored_prev = record["seq"], record["hash"], record["prev_hash"]
    except KeyError as exc:
        raise ValueError(f"the record has no {exc.args[0]!r}") from None
    if not isinstance(stored, str) or not isinstance(stored_prev, str):
        raise ValueError("hash and prev_hash must be strings")
    body = dict(record)
    del body["seq"], body["hash"], body["prev_hash"]
    try:
        return claimed, stored, stored_prev, _canonical(body).encode()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the record cannot be serialised ({exc.__class__.__name__})") from None


def _rest_claims(records: Iterator[Any]) -> list[Any]:
    """The seq each remaining record claims (None if it has none); used only to explain a failure."""
    return [r.get("seq") if isinstance(r, Mapping) else None for r in records]


def verify_records(
    records: Iterable[Any],
    checkpoints: Iterable[Any] = (),
    public_keys: PublicKeyInput | None = None,
) -> Report:
    """Verify exported records (dicts, in file order) against signed checkpoints."""
    keyring = as_keyring(public_keys)
    cps, cp_problem, cp_total = prepare_checkpoints(checkpoints, keyring)
    anchors = _Anchors(cps)
    records = iter(records)
    prev = prev2 = GENESIS
    seq = 0
    problem: Problem | None = None
    rest: list[Any] = []
    for record in records:
        p = seq + 1
        try:
            claimed, stored, stored_prev, body = _split(record)
        except ValueError as exc:
            problem = Problem(p, "malformed", str(exc))
            rest = _rest_claims(records)
            break
        if claimed != p or type(claimed) is not int:
            rest = _rest_claims(records)
            problem = _explain_seq(p, claimed, body, stored, prev2, rest)
            break
        recomputed = link(prev, p, body)
        if recomputed != stored or stored_prev != prev:
            rest = _rest_claims(records)
            problem = _explain_hash(p, body, stored, stored_prev, prev, rest)
            break
        prev2, prev, seq = prev, recomputed, p
        if p == anchors.next_seq:
            problem = anchors.check(p, recomputed)
            if problem:
                rest = _rest_claims(records)
                if rest and rest[0] == p:  # the genuine record p follows: this one was slipped in
                    problem = Problem(
                        p, "inserted", f"two records claim seq {p}; the first does not belong to the signed chain"
                    )
                seq -= 1
                prev = prev2
                break
    count = seq + (1 + len(rest) if problem else 0)
    return _report(problem, cp_problem, anchors, cp_total, count, seq, prev)


def _report(
    problem: Problem | None,
    cp_problem: Problem | None,
    anchors: _Anchors,
    cp_total: int,
    count: int,
    seq: int,
    prev: str,
    unsealed: int = 0,
) -> Report:
    """The verdict both verifiers give: a chain problem, else a checkpoint past the end, and
    whichever problem comes first."""
    if problem is None:
        problem = anchors.beyond(seq)
    problem = _first(problem, cp_problem)
    return Report(
        ok=problem is None,
        count=count,
        head_seq=seq,
        head_hash=prev,
        checkpoints=cp_total,
        checkpoints_verified=anchors.verified,
        attested_seq=anchors.attested,
        problem=problem,
        unsealed=unsealed,
    )


def _explain_seq(p: int, claimed: Any, body: bytes, stored: str, prev2: str, rest: list[Any]) -> Problem:
    if type(claimed) is not int:
        return Problem(p, "malformed", "seq is not an integer")
    if claimed > p:
        if any(type(c) is int and p <= c < claimed for c in rest):
            return Problem(
                p, "reordered", f"the record at position {p} claims seq {claimed}; seq {p} appears later in the file"
            )
        gone = f"seq {p}" if claimed == p + 1 else f"seqs {p} to {claimed - 1}"
        return Problem(p, "missing", f"{gone} missing: the next record claims seq {claimed}")
    # A seq we have already passed: one of the two records claiming it was never written.
    if claimed == p - 1 and link(prev2, claimed, body) == stored:
        return Problem(
            claimed,
            "inserted",
            f"two records claim seq {claimed}; the one at position {claimed} does not belong to the chain",
        )
    return Problem(p, "inserted", f"the record at position {p} repeats seq {claimed}")


def _explain_hash(p: int, body: bytes, stored: str, stored_prev: str, prev: str, rest: list[Any]) -> Problem:
    if rest and rest[0] == p:
        return Problem(p, "inserted", f"two records claim seq {p}; the first does not belong to the chain")
    if link(stored_prev, p, body) != stored:
        return Problem(p, "changed", "the record's content does not match its recorded hash")
    if stored_prev != prev:
        return Problem(
            p, "changed", "the record does not follow the one before it (prev_hash differs from the recomputed chain)"
        )
    return Problem(p, "changed", "the record's hash differs from the recomputed chain")


def read_jsonl(lines: Iterable[bytes | str]) -> Iterator[Any]:
    """Parse JSON lines; an unreadable line becomes a marker the verifier reports as malformed."""
    for line in lines:
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            yield _Unreadable()


class _Unreadable:
    """Stands in for a line that is not JSON."""


def load_checkpoints(path: str | Path) -> list[Any]:
    """Checkpoints from a file: JSON lines, a JSON array, or {"checkpoints": [...]} (GET /v1/audit/checkpoints)."""
    text = Path(path).read_text().strip()
    if not text:
        return []
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    if isinstance(doc, list):
        return doc
    listed = doc.get("checkpoints") if isinstance(doc, dict) else None
    if isinstance(listed, list):
        return listed
    return [doc]


def verify_file(
    records_path: str | Path,
    checkpoints_path: str | Path | None = None,
    public_keys: PublicKeyInput | None = None,
) -> Report:
    """Offline verification of a JSONL export; needs no server, only the public key."""
    checkpoints = load_checkpoints(checkpoints_path) if checkpoints_path else []
    with open(records_path, "rb") as handle:
        return verify_records(read_jsonl(handle), checkpoints, public_keys)


# ---------------------------------------------------------------------------
# Server-side: straight from Redis


async def verify_redis(
    redis: Redis,
    public_keys: PublicKeyInput | None = None,
    batch: int = REDIS_BATCH,
    saved_checkpoints: Iterable[Any] = (),
) -> Report:
    """Verify the log, chain and checkpoints in Redis, reading in batches (bounded memory).

    `saved_checkpoints` are copies kept outside Redis (an earlier export or
    `GET /v1/audit/checkpoints`): they are checked alongside the stored ones, so a
    checkpoint deleted from Redis together with the records it covered is still
    found. Per-request audit indexes are checked too: each was written in the same
    step as its records, so one naming a seq past the log's end means the tail is gone.
    """

    keyring = as_keyring(public_keys)
    pipe = redis.pipeline(transaction=True)  # one consistent snapshot of the lengths and checkpoints
    pipe.llen(keys.AUDIT_LOG)
    pipe.llen(keys.AUDIT_CHAIN)
    pipe.lrange(keys.AUDIT_CHECKPOINTS, 0, -1)
    n_log, n_chain, raw_cps = await pipe.execute()
    parsed: list[Any] = []
    for raw in raw_cps:
        try:
            parsed.append(json.loads(raw))
        except (json.JSONDecodeError, UnicodeDecodeError):
            parsed.append(None)
    parsed.extend(saved_checkpoints)
    cps, cp_problem, cp_total = prepare_checkpoints(parsed, keyring)
    anchors = _Anchors(cps)
    n = min(n_log, n_chain)
    prev = prev2 = GENESIS
    seq = 0
    problem: Problem | None = None
    while seq < n and problem is None:
        stop = min(seq + batch, n)
        pipe = redis.pipeline(transaction=False)
        pipe.lrange(keys.AUDIT_LOG, seq, stop - 1)
        pipe.lrange(keys.AUDIT_CHAIN, seq, stop - 1)
        bodies, hashes = await pipe.execute()
        if len(bodies) != stop - seq or len(hashes) != stop - seq:
            problem = Problem(
                seq + min(len(bodies), len(hashes)) + 1,
                "truncated",
                "records disappeared while the log was being verified",
            )
            break
        for body, stored in zip(bodies, hashes, strict=True):  # equal lengths checked just above
            p = seq + 1
            recomputed = link(prev, p, body)
            if recomputed != stored.decode():
                problem = await _explain_redis(redis, p, prev, prev2, n_log, n_chain, batch, cps)
                break
            prev2, prev, seq = prev, recomputed, p
            if p == anchors.next_seq:
                problem = anchors.check(p, recomputed)
                if problem:
                    following = await redis.lindex(keys.AUDIT_LOG, p) if p < n_log else None
                    after = await redis.lindex(keys.AUDIT_CHAIN, p) if p < n_chain else None
                    if (
                        following is not None
                        and after is not None
                        and link(prev2, p, codec.blob(following)) == codec.text(after)
                    ):
                        problem = Problem(
                            p, "inserted", f"a record was added at seq {p}; the genuine record {p} follows it"
                        )
                    seq, prev = p - 1, prev2
                    break
    if problem is None and n_chain > n_log:
        problem = Problem(
            n_log + 1,
            "truncated",
            f"the chain has {n_chain} hashes but the log only {n_log} records: records were removed from the end",
        )
    if problem is None and anchors.beyond(seq) is None:  # a signed checkpoint's word is the stronger evidence
        problem = await _index_problem(redis)
    return _report(problem, cp_problem, anchors, cp_total, n_log, seq, prev, unsealed=max(n_log - n_chain, 0))


async def _explain_redis(
    redis: Redis, p: int, prev: str, prev2: str, n_log: int, n_chain: int, batch: int, cps: list[Checkpoint]
) -> Problem:
    """Say what kind of change explains a mismatch at position p.

    `prev` and `prev2` are the recomputed (trusted) hashes at p-1 and p-2. Stored
    hashes are used here only as evidence of where genuine records went.
    """

    async def body(q: int) -> bytes | None:
        raw = await redis.lindex(keys.AUDIT_LOG, q - 1) if 1 <= q <= n_log else None
        return codec.blob(raw) if raw is not None else None

    async def stored(q: int) -> str | None:
        raw = await redis.lindex(keys.AUDIT_CHAIN, q - 1) if 1 <= q <= n_chain else None
        return codec.text(raw) if raw is not None else None

    body_p, stored_p = await body(p), await stored(p)
    if body_p is None or stored_p is None:  # the batch just read had it: the log shrank meanwhile
        return Problem(p, "truncated", "records disappeared while the log was being verified")
    # The record at p is the genuine p-1 with its genuine hash: the one before it was slipped in.
    if p >= 2 and link(prev2, p - 1, body_p) == stored_p:
        return Problem(
            p - 1, "inserted", f"the record at seq {p - 1} was added to the log; the genuine record {p - 1} follows it"
        )
    # Where did the genuine record p go? It hashes to the stored hash at p (or at its new place).
    found: tuple[int, str] | None = None  # (position, hash) of the genuine record p
    q = p + 1
    while q <= n_log and found is None:
        stop = min(q + batch - 1, n_log)
        pipe = redis.pipeline(transaction=False)
        pipe.lrange(keys.AUDIT_LOG, q - 1, stop - 1)
        pipe.lrange(keys.AUDIT_CHAIN, q - 1, stop - 1)
        bodies, hashes = await pipe.execute()
        for i, candidate in enumerate(bodies):
            h = link(prev, p, candidate)
            if h == stored_p or (i < len(hashes) and h == hashes[i].decode()):
                found = (q + i, h)
                break
        q = stop + 1
    if found is not None:
        position, genuine_hash = found
        successors = {stored_p, await stored(p + 1)}
        if link(genuine_hash, p + 1, body_p) in successors:
            return Problem(p, "reordered", f"records {p} and {p + 1} were swapped")
        if position > p + 1:
            before = await stored(position - 1)
            if before is not None and link(before, position, body_p) in {await stored(position), stored_p}:
                return Problem(p, "reordered", f"records {p} and {position} were swapped")
            return Problem(p, "reordered", f"the genuine record {p} was moved to position {position}")
        return Problem(p, "inserted", f"a record was added at seq {p}; the genuine record {p} follows it")
    # The genuine record p is nowhere: removed, or rewritten.
    if p < n_chain and link(stored_p, p + 1, body_p) == await stored(p + 1):
        return Problem(p, "missing", f"record {p} was removed; the record at its place is {p + 1}")
    nxt = await body(p + 1)
    if nxt is not None and p + 1 <= n_chain and link(stored_p, p + 2, nxt) == await stored(p + 1):
        return Problem(p, "missing", f"record {p} and its hash were removed")
    signed = [cp.seq for cp in cps if cp.hash == stored_p and cp.seq > p]
    if signed:
        return Problem(
            p,
            "missing",
            f"the record at seq {p} carries the signed hash of seq {signed[0]}: "
            f"{signed[0] - p} record(s) before it were removed",
        )
    return Problem(p, "changed", f"record {p} (or its stored hash) differs from what was written")


INDEX_BATCH = 500


async def _index_problem(redis: Redis) -> Problem | None:
    """A request's audit index that names a seq past the log's end: records were cut from the tail.

    Each index entry is pushed in the same Lua step as its record, so it can never
    legitimately be ahead of the log. The log length is read in the same MULTI as
    each batch of index heads, so records appended meanwhile are no false alarm.
    """
    names: list[bytes] = []
    async for name in redis.scan_iter(match=keys.request_audit("*"), count=1000, _type="list"):
        names.append(codec.blob(name))
        if len(names) >= INDEX_BATCH:
            found = await _index_batch(redis, names)
            if found:
                return found
            names = []
    return await _index_batch(redis, names) if names else None


async def _index_batch(redis: Redis, names: list[bytes]) -> Problem | None:
    pipe = redis.pipeline(transaction=True)
    for name in names:
        pipe.lindex(name, -1)
    pipe.llen(keys.AUDIT_LOG)
    *heads, n_log = await pipe.execute()
    beyond = [(int(head), name) for head, name in zip(heads, names, strict=True) if head and int(head) > n_log]
    if not beyond:
        return None
    seq, name = max(beyond)
    request_id = codec.text(name)[len(keys.request_audit("")) :]
    return Problem(
        n_log + 1,
        "truncated",
        f"request {request_id}'s audit index names seq {seq}, but the log ends at seq {n_log}: "
        "records were removed from the end",
    )
