"""Redis persistence: the only place that knows key names and Lua scripts."""
