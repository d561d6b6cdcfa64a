"""approvalbot: a human in the loop of AI agents, one privileged action at a time."""

__version__ = "0.1.0"
