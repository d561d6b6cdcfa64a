"""The channel interface: what every chat channel (Slack, Teams, a test channel) implements.

Interface only: Protocols and small value types. Implementations live in their own
packages above web and jobs, and only the composition root (`approvalbot.app`) names them.
"""

from __future__ import annotations

from approvalbot.channels.protocol import (
    CanWitness,
    Card,
    CardError,
    Channel,
    ChannelFactory,
    Commands,
    DeliveryPrimitives,
    Failure,
    FinalStep,
    JobSpec,
    Posted,
    RouteError,
    StepFailed,
    Target,
    Witness,
    WitnessUnavailable,
)

__all__ = [
    "CanWitness",
    "Card",
    "CardError",
    "Channel",
    "ChannelFactory",
    "Commands",
    "DeliveryPrimitives",
    "Failure",
    "FinalStep",
    "JobSpec",
    "Posted",
    "RouteError",
    "StepFailed",
    "Target",
    "Witness",
    "WitnessUnavailable",
]
