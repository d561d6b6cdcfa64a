"""The Teams app package: three files, valid manifest with the right ids and commands, proper icons."""

from __future__ import annotations

import argparse
import json
import struct
import zipfile
import zlib
from pathlib import Path

import pytest

from approvalbot.teams import cli as teams_cli
from approvalbot.teams.package import PackageError, build, default_source, render_manifest

APP_ID = "5B1F0A5E-1C2D-4E5F-8A9B-0C1D2E3F4A5B"


def decode_png(data: bytes) -> tuple[int, int, int, list[bytes]]:
    """(width, height, color type, rows of raw pixels) for the 8-bit non-interlaced PNGs we ship."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length = struct.unpack(">I", data[pos : pos + 4])[0]
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, color, _, _, interlace = header
    assert (depth, interlace) == (8, 0)
    raw = zlib.decompress(idat)
    stride = width * 4 + 1
    rows = [raw[i * stride : (i + 1) * stride] for i in range(height)]
    assert all(r[0] == 0 for r in rows)  # no filters: what make_icons.py writes
    return width, height, color, [r[1:] for r in rows]


def make_parser():
    parser = argparse.ArgumentParser(prog="approvalbot")
    teams_cli.add_commands(parser.add_subparsers(dest="command", required=True))
    return parser


class FakeRuntime:
    def __init__(self, settings):
        self.settings = settings


def test_package_command_writes_a_valid_zip(tmp_path, settings, capsys):
    out = tmp_path / "pkg" / "approvalbot-teams.zip"
    args = make_parser().parse_args(
        ["teams", "package", "--app-id", APP_ID, "--domain", "Approvals.Example.com", "--output", str(out)]
    )
    assert teams_cli.cmd_teams(FakeRuntime(settings), args) == 0
    assert capsys.readouterr().out.strip() == str(out)
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == ["color.png", "manifest.json", "outline.png"]
        manifest = json.loads(zf.read("manifest.json"))
        color, outline = zf.read("color.png"), zf.read("outline.png")
    app_id = APP_ID.lower()
    assert manifest["id"] == app_id and manifest["manifestVersion"] == "1.16"
    assert "v1.16" in manifest["$schema"]
    bot = manifest["bots"][0]
    assert bot["botId"] == app_id
    assert set(bot["scopes"]) == {"team", "groupChat", "personal"}
    commands = {c["title"] for cl in bot["commandLists"] for c in cl["commands"]}
    assert {"pending", "approval"} <= commands
    assert manifest["validDomains"] == ["approvals.example.com"]
    assert manifest["developer"]["websiteUrl"] == "https://approvals.example.com/"
    assert manifest["icons"] == {"color": "color.png", "outline": "outline.png"}
    assert "{{" not in json.dumps(manifest)

    width, height, _, _ = decode_png(color)
    assert (width, height) == (192, 192)
    width, height, color_type, rows = decode_png(outline)
    assert (width, height, color_type) == (32, 32, 6)
    pixels = [row[i : i + 4] for row in rows for i in range(0, len(row), 4)]
    assert all(p[:3] == b"\xff\xff\xff" for p in pixels)  # white only...
    assert any(p[3] == 0 for p in pixels) and any(p[3] == 255 for p in pixels)  # ...on transparent


def test_package_uses_the_configured_app_id(tmp_path, redis_url, data_dir):
    from approvalbot.config import Settings

    settings = Settings(REDIS_URL=redis_url, APPROVALBOT_DATA_DIR=data_dir, MICROSOFT_APP_ID=APP_ID)
    out = tmp_path / "x.zip"
    args = make_parser().parse_args(["teams", "package", "--output", str(out)])
    assert teams_cli.cmd_teams(FakeRuntime(settings), args) == 0
    with zipfile.ZipFile(out) as zf:
        assert json.loads(zf.read("manifest.json"))["bots"][0]["botId"] == APP_ID.lower()


def test_package_refuses_bad_input(tmp_path, settings):
    args = make_parser().parse_args(["teams", "package", "--output", str(tmp_path / "x.zip")])
    assert teams_cli.cmd_teams(FakeRuntime(settings), args) == 2  # no app id anywhere
    with pytest.raises(PackageError, match="GUID"):
        build(default_source(), tmp_path / "y.zip", "not-a-guid", "example.com")
    with pytest.raises(PackageError, match="host name"):
        build(default_source(), tmp_path / "y.zip", APP_ID, "https://example.com/path")
    assert not (tmp_path / "x.zip").exists() and not (tmp_path / "y.zip").exists()


def test_committed_manifest_template_is_valid_json():
    manifest = json.loads((default_source() / "manifest.json").read_text())
    assert manifest["id"] == "{{MICROSOFT_APP_ID}}" == manifest["bots"][0]["botId"]
    assert Path(default_source() / "color.png").is_file()


async def test_teams_channels_lists_the_stored_conversations(teams, capsys):
    from .conftest import new_conversation

    channel = new_conversation("approvals")
    await teams.add_bot(channel, name="approvals")
    await teams.add_bot("19:chat@thread.v2", name="Incident", kind="groupChat")

    class Rt:
        settings = teams.settings

        def async_redis(self):
            from redis.asyncio import Redis

            return Redis.from_url(teams.settings.redis_url)

    args = make_parser().parse_args(["teams", "channels"])
    import asyncio

    assert await asyncio.to_thread(teams_cli.cmd_teams, Rt(), args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[:3] for line in lines] == [
        ["channel", "Platform/approvals", channel],
        ["groupChat", "Incident", "19:chat@thread.v2"],
    ]


def test_a_manifest_that_is_not_json_is_a_clear_error(tmp_path):
    """A hand-edited template with a syntax error is named, not a traceback."""
    with pytest.raises(PackageError, match="not valid JSON"):
        render_manifest('{"id": "{{MICROSOFT_APP_ID}}",', "00000000-0000-0000-0000-000000000001", "a.example.com")
