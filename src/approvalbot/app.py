"""The composition root: the one module that names the list of channels.

Everything else knows channels only through `approvalbot.channels`: the web app mounts
what it is given, the worker runs the outbox subscriptions it is given, the CLI asks
here for status lines and commands. A new channel is one package plus one line below.

Each chat SDK is imported only inside its own channel package; this module imports the
channel classes themselves, so the dependency is visible to the import contracts.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from approvalbot.audit.signing import Signer
from approvalbot.channels import CanWitness, Channel, ChannelFactory, Commands, Witness, WitnessUnavailable
from approvalbot.config import Settings
from approvalbot.jobs import delivery
from approvalbot.jobs.outbox import CALLBACKS, Subscriber
from approvalbot.service import ApprovalService
from approvalbot.slack.channel import SlackChannel
from approvalbot.teams.channel import TeamsChannel
from approvalbot.web import app as web_app

CHANNELS: tuple[ChannelFactory, ...] = (
    SlackChannel,
    TeamsChannel,
)


def channel_types() -> tuple[ChannelFactory, ...]:
    return CHANNELS


def channels(settings: Settings) -> list[Channel]:
    """Every channel, built from the settings (each validates its own; a bad one raises ConfigError)."""
    return [factory(settings) for factory in channel_types()]


def build_app(
    settings: Settings,
    service: ApprovalService,
    signer: Signer | None = None,
    channel_list: list[Channel] | None = None,
) -> web.Application:
    """The web app with every channel that is on mounted."""
    chosen = channels(settings) if channel_list is None else channel_list
    return web_app.build_app(settings, service, signer=signer, channels=chosen)


def subscribers(settings: Settings, channel_list: list[Channel] | None = None) -> list[Subscriber]:
    """The outbox's follow-up work per audit record: agent callbacks, and each channel's delivery job."""
    chosen = channels(settings) if channel_list is None else channel_list
    jobs = [job for channel in chosen if channel.enabled for job in channel.jobs()]
    return [CALLBACKS, *(delivery.subscriber(job.name, job.func, job.job_id) for job in jobs)]


def status_lines(settings: Settings) -> list[str]:
    """One start-up line per channel (building them validates their settings)."""
    return [channel.status_line() for channel in channels(settings)]


def witness_names() -> list[str]:
    """Channels whose threads can serve as audit witnesses (`audit verify --witness NAME`)."""
    return [factory.name for factory in channel_types() if callable(getattr(factory, "witness", None))]


def witness(settings: Settings, name: str) -> Witness:
    """The named channel's thread reader; WitnessUnavailable when it has none or its settings lack something."""
    for channel in channels(settings):
        if channel.name == name:
            if not isinstance(channel, CanWitness):
                raise WitnessUnavailable(f"the {name} channel cannot read its threads back")
            return channel.witness()
    raise WitnessUnavailable(f"no channel named {name!r}")


def add_commands(subparsers: Any) -> Commands:
    """Each channel's CLI commands on the main parser; returns name -> handler."""
    commands: Commands = {}
    for factory in channel_types():
        commands.update(factory.add_commands(subparsers))
    return commands


__all__ = [
    "CHANNELS",
    "add_commands",
    "build_app",
    "channel_types",
    "channels",
    "status_lines",
    "subscribers",
    "witness",
    "witness_names",
]
