"""Printing a report to PDF with headless Chromium (Debian's `chromium` package).

The HTML is written to a temporary file and Chromium prints it with the report's own
@page CSS; nothing is fetched (the report has no external references and its
Content-Security-Policy forbids them).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


class PdfError(RuntimeError):
    """Chromium is missing or failed; the message says what to do."""


def find_chromium() -> str:
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise PdfError("--format pdf needs headless Chromium: install it (Debian: apt-get install -y chromium)")


def chromium_args(browser: str, *extra: str) -> list[str]:
    return [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", *extra]


def html_to_pdf(page: str, out: Path, timeout: float = 120) -> None:
    browser = find_chromium()
    with tempfile.TemporaryDirectory(prefix="approvalbot-pdf-") as tmp:
        source = Path(tmp) / "report.html"
        source.write_text(page, encoding="utf-8")
        args = chromium_args(
            browser, f"--user-data-dir={tmp}/profile", "--no-pdf-header-footer", f"--print-to-pdf={out}"
        )
        done = subprocess.run([*args, source.as_uri()], capture_output=True, timeout=timeout, check=False)
        if done.returncode != 0 or not out.exists() or out.stat().st_size == 0:
            tail = done.stderr.decode(errors="replace")[-500:]
            raise PdfError(f"chromium could not print the report (exit {done.returncode}): {tail}")
