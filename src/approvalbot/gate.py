"""Put a function or a block of code behind an approval, in one line.

    @requires_approval("dataset.export", resource=lambda table, **_: f"warehouse/{table}",
                       params=lambda table, rows: {"rows": rows})
    def export(table, rows, grant=None): ...

The function runs only once a human approved this exact call; a denial, expiry
or cancellation raises instead. A function that takes a `grant` parameter gets
the signed grant, to hand to the system that performs the action.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast

from approvalbot.client import ApprovalClient, ApprovalError, AsyncApprovalClient
from approvalbot.core.models import ApprovalRequest

log = logging.getLogger("approvalbot.gate")
Field = Any  # a value, or a callable taking the decorated function's arguments
F = TypeVar("F", bound=Callable[..., Any])


def _resolve(value: Field, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return value(*args, **kwargs) if callable(value) else value


def _failure(exc: BaseException | None) -> str | None:
    """The outcome detail for a block that raised: the exception's type only (its text may hold data)."""
    return None if exc is None else f"raised {type(exc).__name__}"


class approval:
    """Context-manager form: `with approval("iam.role.attach", resource=arn) as granted:`.

    Works with `with` and `async with`; the value is the approved request (its
    `.grant` is the signed grant). When the block ends, the outcome is reported:
    `executed`, or `failed` when it raised. A report that cannot be delivered is
    logged and never hides the block's own result or exception.
    """

    def __init__(
        self,
        action: str,
        *,
        timeout: float = 900,
        client: ApprovalClient | AsyncApprovalClient | None = None,
        **fields: Any,
    ):
        self.action, self.timeout, self.client, self.fields = action, timeout, client, fields
        self._sync: ApprovalClient | None = None
        self._async: AsyncApprovalClient | None = None
        self._approved: ApprovalRequest | None = None

    def __enter__(self) -> ApprovalRequest:
        if isinstance(self.client, AsyncApprovalClient):
            # Its request_and_wait is a coroutine: called here it would never run, and the
            # block would go ahead without anyone's approval.
            raise TypeError("an AsyncApprovalClient needs `async with approval(...)` (or an async function)")
        client = self.client or ApprovalClient()
        try:
            self._approved = client.request_and_wait(self.action, timeout=self.timeout, **self.fields)
        except BaseException:
            if self.client is None:
                client.close()
            raise
        self._sync = client
        return self._approved

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        client, self._sync = self._sync, None
        if client is None or self._approved is None:
            return
        try:
            client.report_outcome(self._approved.id, "failed" if exc else "executed", _failure(exc))
        except ApprovalError as err:
            log.warning("could not report the outcome of %s: %s", self._approved.id, err)
        finally:
            if self.client is None:
                client.close()

    async def __aenter__(self) -> ApprovalRequest:
        if isinstance(self.client, ApprovalClient):
            # It would block the event loop for the whole wait, then fail awaiting its result.
            raise TypeError("an ApprovalClient needs `with approval(...)`; use AsyncApprovalClient here")
        client = self.client or AsyncApprovalClient()
        try:
            self._approved = await client.request_and_wait(self.action, timeout=self.timeout, **self.fields)
        except BaseException:
            if self.client is None:
                await client.aclose()
            raise
        self._async = client
        return self._approved

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        client, self._async = self._async, None
        if client is None or self._approved is None:
            return
        try:
            await client.report_outcome(self._approved.id, "failed" if exc else "executed", _failure(exc))
        except ApprovalError as err:
            log.warning("could not report the outcome of %s: %s", self._approved.id, err)
        finally:
            if self.client is None:
                await client.aclose()


def requires_approval(
    action: str,
    *,
    resource: Field = None,
    params: Field = None,
    justification: Field = None,
    context: Field = None,
    on_behalf_of: Field = None,
    timeout: float = 900,
    client: ApprovalClient | AsyncApprovalClient | None = None,
) -> Callable[[F], F]:
    """Decorate a sync or async function; callables among the fields receive its arguments."""
    spec = {
        "resource": resource,
        "params": params,
        "justification": justification,
        "context": context,
        "on_behalf_of": on_behalf_of,
    }

    def decorate(fn: F) -> F:
        wants_grant = "grant" in inspect.signature(fn).parameters

        def gate(args: tuple[Any, ...], kwargs: dict[str, Any]) -> approval:
            fields = {k: _resolve(v, args, kwargs) for k, v in spec.items() if v is not None}
            return approval(action, timeout=timeout, client=client, **fields)

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                async with gate(args, kwargs) as approved:
                    if wants_grant:
                        kwargs["grant"] = approved.grant
                    return await fn(*args, **kwargs)

            return cast(F, run_async)  # same parameters and result (a coroutine, as fn returns)

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            with gate(args, kwargs) as approved:
                if wants_grant:
                    kwargs["grant"] = approved.grant
                return fn(*args, **kwargs)

        return cast(F, run)  # same parameters and result

    return decorate
