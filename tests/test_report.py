"""`makd report`: one self-contained page with makd eval's table, curves, per-class accuracy and the targets' views;
loaded in headless Chromium as a person would see it (no console errors, nothing fetched, a screenshot)."""

import base64
import json
import re
import shutil
import socket
import subprocess
import time

import pytest
from typer.testing import CliRunner

from makd_cli.cli import app
from makd_cli.evaluate.report import format_markdown
from makd_cli.evaluate.run import EvalConfig, run_eval
from makd_cli.train import TrainConfig, train


def cfg(data, out, **kw):
    base = dict(data=str(data), out=str(out), student="small_cnn", epochs=2, batch_size=8, lr=0.05, quiet=True, val_fraction=0.25)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mcq_targets_module):
    from conftest import make_imagefolder

    root = tmp_path_factory.mktemp("report")
    data = make_imagefolder(root / "shapes")
    for seed in (0, 1):
        train(cfg(data, root / "runs" / "ce" / f"seed{seed}", seed=seed))
    train(cfg(data, root / "runs" / "lavid", method="lavid", targets=str(mcq_targets_module), aux_weight=5.0))
    train(cfg(data, root / "runs" / "lavid-test", method="lavid", targets=str(mcq_targets_module), aux_weight=5.0,
              select_by="test-loss"))
    return root / "runs"


@pytest.fixture(scope="module")
def mcq_targets_module(tmp_path_factory):
    from conftest import class_mcq_targets
    from makd_cli.formats.targets import write_targets

    p = tmp_path_factory.mktemp("targets") / "targets.h5"
    write_targets(p, class_mcq_targets())
    return p


def render(runs, out, *extra):
    res = CliRunner().invoke(app, ["report", str(runs / "ce"), str(runs / "lavid"), str(runs / "lavid-test"), "-o", str(out),
                                   "--device", "cpu", "--quiet", "--paper", "ce=63.07", *extra])
    assert res.exit_code == 0, res.output
    return out


def test_html_report_holds_every_section_and_fetches_nothing(runs, tmp_path):
    page = render(runs, tmp_path / "report.html").read_text()
    # the comparison table is makd eval's, cell for cell
    found = run_eval(EvalConfig(checkpoints=[runs / "ce", runs / "lavid", runs / "lavid-test"], device="cpu", progress=False))
    for line in format_markdown(found["table"]).splitlines():
        if line.startswith("|") and "---" not in line:
            for cell in line.strip("|").split("|"):
                assert f">{cell.strip()}<" in page, cell
    for title in ("Comparison", "Protocols side by side", "Training curves", "Per-class accuracy", "Targets: targets.h5",
                  "Target quality: targets.h5"):
        assert f"<h2>{title}</h2>" in page
    assert "63.07" in page and "†" in page  # --paper beside the protocols, the test-split mark
    assert "makd eval" in page and "makd inspect" in page and "--per-class" in page and "--quality" in page
    assert page.count("data:image/png;base64,") == 4  # curves of three runs and one heatmap
    assert not re.search(r"(src|href)=\"(https?:)?//", page) and "<script" not in page


def test_markdown_report_writes_its_pictures_beside_it(runs, tmp_path):
    md = render(runs, tmp_path / "report.md", "--format", "markdown").read_text()
    pictures = sorted(p.name for p in (tmp_path / "report_files").iterdir())
    assert pictures == ["curves-1.png", "curves-2.png", "curves-3.png", "heatmap-1.png"]
    assert "![training curves of" in md and "(report_files/curves-1.png)" in md and "| method |" in md
    assert "## Per-class accuracy" in md and "```\nmakd eval" in md


def test_report_errors_are_one_line(tmp_path):
    res = CliRunner().invoke(app, ["report", str(tmp_path / "missing"), "-o", str(tmp_path / "r.html"), "--paper", "lavid"])
    assert res.exit_code != 0 and "give RUN=NUMBER" in str(res.exception) + res.output


def _browser():
    return next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


def load_in_chromium(browser: str, page, screenshot, profile) -> list[dict]:
    """Loads ``page`` in headless Chromium through the DevTools protocol, saves a full-page screenshot, and returns
    every event seen (console messages, log entries, network requests)."""
    import urllib.request

    import websocket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--remote-debugging-port={port}",
                             f"--user-data-dir={profile}", "--window-size=1280,1600", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    events = []
    try:
        for _ in range(150):
            try:
                targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json").read())
                ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
                break
            except Exception:
                time.sleep(0.2)
        else:
            raise AssertionError("Chromium's DevTools endpoint did not come up")
        ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        ids = iter(range(1, 10_000))

        def call(method, **params):
            n = next(ids)
            ws.send(json.dumps({"id": n, "method": method, "params": params}))
            while True:
                msg = json.loads(ws.recv())
                if msg.get("id") == n:
                    return msg.get("result", {})
                events.append(msg)

        for domain in ("Page", "Runtime", "Log", "Network"):
            call(f"{domain}.enable")
        call("Page.navigate", url=page.as_uri())
        deadline = time.time() + 30
        while time.time() < deadline and not any(e.get("method") == "Page.loadEventFired" for e in events):
            events.append(json.loads(ws.recv()))
        assert any(e.get("method") == "Page.loadEventFired" for e in events), "the page did not finish loading"
        time.sleep(0.5)  # late console messages
        shot = call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        ws.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return events


@pytest.mark.slow
def test_report_in_headless_chromium(runs, tmp_path):
    """Every console message and every network request is recorded; a screenshot is saved under tmp_path."""
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium installed (apt-get install chromium)")
    pytest.importorskip("websocket", reason="websocket-client is not installed (pip install websocket-client)")
    page = render(runs, tmp_path / "report.html")
    events = load_in_chromium(browser, page, tmp_path / "report.png", tmp_path / "profile")
    requests = [e["params"]["request"]["url"] for e in events if e.get("method") == "Network.requestWillBeSent"]
    assert requests and all(u.startswith(("file:", "data:")) for u in requests), requests  # nothing leaves the machine
    errors = [e for e in events if e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "warning")]
    errors += [e for e in events if e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] in ("error", "warning")]
    errors += [e for e in events if e.get("method") == "Runtime.exceptionThrown"]
    assert not errors, errors
    assert (tmp_path / "report.png").stat().st_size > 10_000
