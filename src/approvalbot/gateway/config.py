"""Where the upstream MCP servers are: the quick command-line form or a YAML file.

`${VAR}` in env values, headers and urls is read from the gateway's own environment, so the
upstreams' secrets live only with the gateway (the agent never sees them). A missing
variable stops start-up: silently sending an empty credential would be worse.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class ConfigError(ValueError):
    """The gateway configuration is unusable; the message says which part."""


@dataclass(frozen=True)
class UpstreamConfig:
    name: str
    command: str | None = None
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    resource_args: dict[str, str] = field(default_factory=dict)  # tool -> argument naming the resource
    timeout: float = 120.0  # one upstream call at most this long, then it counts as hung

    def __repr__(self) -> str:  # env and headers may hold credentials
        where = self.url or self.command
        return f"UpstreamConfig(name={self.name!r}, at={where!r})"


def expand(value: str, environ: dict[str, str] | None = None) -> str:
    environ = dict(os.environ) if environ is None else environ

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise ConfigError(f"${{{name}}} is used in the gateway configuration but not set in its environment")
        return environ[name]

    return VAR.sub(sub, value)


def _valid_name(name: object) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise ConfigError(f"upstream name {name!r} must be 1-64 letters, digits, '-' or '_'")
    return name


def parse_resource_args(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        tool, sep, arg = pair.partition("=")
        if not sep or not tool or not arg:
            raise ConfigError(f"--resource-arg wants TOOL=ARG, got {pair!r}")
        out[tool] = arg
    return out


def quick(name: str, command: list[str], resource_args: list[str]) -> list[UpstreamConfig]:
    if not command:
        raise ConfigError("give the upstream command after `--`, e.g. `-- python -m my_server`")
    # The quick form hands the upstream the gateway's environment (where its credentials are), but never
    # approvalbot's own settings: the agent token is the gateway's, not the tool's.
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPROVALBOT_")}
    return [
        UpstreamConfig(
            name=_valid_name(name),
            command=command[0],
            args=command[1:],
            env=env,
            resource_args=parse_resource_args(resource_args),
        )
    ]


def _strings(value: object, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ConfigError(f"{what} must be a mapping of names to strings")
    return {k: expand(str(v)) for k, v in value.items()}


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's message spans several lines with a drawing of the spot; start-up errors are one line."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"{exc.problem or 'invalid YAML'} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(exc).split())


def _timeout(value: object, name: object) -> float:
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        seconds = -1.0
    if not 0 < seconds <= 86400:
        raise ConfigError(f"upstream {name!r}: `timeout` must be a number of seconds (0-86400), got {value!r}")
    return seconds


def from_yaml(path: Path) -> list[UpstreamConfig]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        doc: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {_yaml_problem(exc)}") from None
    upstreams = doc.get("upstreams") if isinstance(doc, dict) else None
    if not isinstance(upstreams, dict) or not upstreams:
        raise ConfigError(f"{path}: expected `upstreams:` mapping names to servers")
    found: list[UpstreamConfig] = []
    for name, spec in upstreams.items():
        if not isinstance(spec, dict) or ("command" in spec) == ("url" in spec):
            raise ConfigError(f"upstream {name!r}: give either `command` (stdio) or `url` (Streamable HTTP)")
        args = spec.get("args") or []
        if not isinstance(args, list):
            raise ConfigError(f"upstream {name!r}: `args` must be a list")
        resource_args = spec.get("resource_args") or {}
        if not isinstance(resource_args, dict):
            raise ConfigError(f"upstream {name!r}: `resource_args` must map tool names to argument names")
        found.append(
            UpstreamConfig(
                name=_valid_name(name),
                command=str(spec["command"]) if "command" in spec else None,
                args=[expand(str(a)) for a in args],
                env=_strings(spec.get("env"), f"upstream {name!r} env"),
                url=expand(str(spec["url"])) if "url" in spec else None,
                headers=_strings(spec.get("headers"), f"upstream {name!r} headers"),
                resource_args={str(k): str(v) for k, v in resource_args.items()},
                timeout=_timeout(spec.get("timeout", 120), name),
            )
        )
    return found
