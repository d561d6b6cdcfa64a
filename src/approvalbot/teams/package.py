"""The Teams app package: manifest.json with the bot's ids filled in, and the two icons, zipped.

`manifests/teams/manifest.json` holds `{{MICROSOFT_APP_ID}}` and `{{BOT_DOMAIN}}`
placeholders; `build` substitutes them, checks the result, and writes a zip with the
three files at its root, ready for "Upload a custom app" in Teams.
"""

from __future__ import annotations

import json
import re
import struct
import uuid
import zipfile
from pathlib import Path
from typing import Any

FILES = ("manifest.json", "color.png", "outline.png")
ICON_SIZES = {"color.png": (192, 192), "outline.png": (32, 32)}
DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")
COMMANDS = ("pending", "approval")


class PackageError(ValueError):
    pass


def default_source() -> Path:
    """`manifests/teams` of the working directory, else of the source checkout this module is in."""
    candidates = [Path.cwd() / "manifests" / "teams", Path(__file__).resolve().parents[3] / "manifests" / "teams"]
    for candidate in candidates:
        if (candidate / "manifest.json").is_file():
            return candidate
    raise PackageError("manifests/teams/manifest.json not found; run from the approvalbot checkout or pass --source")


def png_size(data: bytes) -> tuple[int, int]:
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise PackageError("not a PNG file")
    return struct.unpack(">II", data[16:24])


def render_manifest(template: str, app_id: str, domain: str) -> dict[str, Any]:
    try:
        app_id = str(uuid.UUID(app_id))
    except ValueError:
        raise PackageError("the app id must be the Azure bot's Microsoft App ID (a GUID)") from None
    domain = domain.strip().lower()
    if not DOMAIN_RE.match(domain):
        raise PackageError("the domain must be a host name such as approvals.example.com (no scheme, no path)")
    text = template.replace("{{MICROSOFT_APP_ID}}", app_id).replace("{{BOT_DOMAIN}}", domain)
    if "{{" in text:
        raise PackageError("manifest.json has a placeholder this command does not know")
    try:
        manifest = json.loads(text)
    except ValueError as exc:
        raise PackageError(f"manifest.json is not valid JSON (line {getattr(exc, 'lineno', '?')})") from None
    if not isinstance(manifest, dict):
        raise PackageError("manifest.json must hold a JSON object")
    check_manifest(manifest, app_id)
    return manifest


def check_manifest(manifest: dict[str, Any], app_id: str) -> None:
    """The mistakes that make Teams reject an upload, caught before the upload."""
    if manifest.get("id") != app_id:
        raise PackageError("manifest id is not the app id")
    bots = manifest.get("bots") or []
    if len(bots) != 1 or bots[0].get("botId") != app_id:
        raise PackageError("the manifest must declare one bot whose botId is the app id")
    titles = {c.get("title") for cl in bots[0].get("commandLists", []) for c in cl.get("commands", [])}
    missing = [c for c in COMMANDS if c not in titles]
    if missing:
        raise PackageError(f"the bot's commandLists lack {', '.join(missing)}")
    icons = manifest.get("icons") or {}
    if set(icons.values()) != {"color.png", "outline.png"}:
        raise PackageError("icons must be color.png and outline.png")


def build(source: Path, output: Path, app_id: str, domain: str) -> Path:
    source = Path(source)
    missing = [f for f in FILES if not (source / f).is_file()]
    if missing:
        raise PackageError(f"{source} lacks {', '.join(missing)}")
    manifest = render_manifest((source / "manifest.json").read_text(encoding="utf-8"), app_id, domain)
    icons = {}
    for name, size in ICON_SIZES.items():
        data = (source / name).read_bytes()
        if png_size(data) != size:
            raise PackageError(f"{name} must be {size[0]}x{size[1]} pixels")
        icons[name] = data
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(output, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        for name, data in icons.items():
            zf.writestr(name, data)
    return output
