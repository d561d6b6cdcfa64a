"""The aiohttp web server: the agent and approver API, plus mounts for chat adapters."""
