"""``gmptl-app`` in a real headless browser: Debian's Chromium driven by Playwright.

The app runs as a user starts it (``python -m lobes.deploy.app MODEL --backend onnx``, its own
process, offline) on a tiny random-weight model exported to ONNX. The browser uploads a generated
wav and must show the label that ``OnnxEmotionRecognizer`` gives for that file, draw the track
(one line per class and the loudness), and offer the JSON record for download; a corrupt file and
a too short one must show the command line's own refusal; a clip recorded from Chromium's test
microphone is classified. A screenshot of the result is saved in
the test's output folder (``app.png``).

Without Chromium the tests skip, saying how to get it (``bash .ci/browser-up``); under CI
(``CI=true``) they fail instead.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile

from lobes.deploy.export import write_model_folder
from lobes.deploy.onnx_export import export_onnx
from lobes.deploy.onnx_runtime import OnnxEmotionRecognizer
from lobes.deploy.predictions import read_clip
from lobes.fixtures.encoders import write_tiny_hubert

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["neu", "hap", "ang", "sad"]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync",
                 # Chromium's own test microphone (a beep), granted without a prompt
                 "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
TIMEOUT_MS = 60000


def skip_or_fail(reason):
    """Skip, saying how to run the test; under CI (``CI=true``) fail instead."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def chromium_path():
    """Debian's Chromium, or a skip (a failure under CI) that says how to get it."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        skip_or_fail("no chromium found: install Debian's (bash .ci/browser-up, or apt-get "
                     "install chromium) to run the browser tests")
    return found


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("app_model")
    folder = write_model_folder(root / "model", write_tiny_hubert(root / "encoder", n_layers=2,
                                                                  dim=32), CLASSES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's warnings on HF's Python checks
        export_onnx(folder)
    return Path(folder)


@pytest.fixture(scope="module")
def app_url(model_folder, tmp_path_factory):
    """The app serving ``model_folder`` with the onnx backend, in its own process."""
    port = free_port()
    log = tmp_path_factory.mktemp("app_log") / "app.log"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1",
               GRADIO_ANALYTICS_ENABLED="False")
    with open(log, "w") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "lobes.deploy.app", str(model_folder), "--backend", "onnx",
             "--port", str(port)], stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=REPO,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"gmptl-app did not start: {log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def chromium():
    return chromium_path()


@pytest.fixture(scope="module")
def browser_page(chromium, app_url, tmp_path_factory):
    try:
        from playwright import sync_api
    except ImportError:
        skip_or_fail("playwright is not installed: make venv (requirements.txt pins it)")
    profile = tmp_path_factory.mktemp("chromium_profile")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=chromium, args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1100, "height": 1150}, accept_downloads=True,
            permissions=["microphone"],
        )
        page = context.new_page()
        outside = []
        page.on("request", lambda request: outside.append(request.url)
                if request.url.startswith(("http:", "https:"))
                and not request.url.startswith(app_url) else None)
        page.goto(app_url)
        page.wait_for_selector("#clip input[type=file]", state="attached", timeout=TIMEOUT_MS)
        yield page, outside
        context.close()


def upload(page, path, wait_for):
    """Clear the clip if one is there, upload ``path`` and wait for ``wait_for`` in the status."""
    clear = page.locator("#clip button[aria-label='Clear']")
    if clear.count():
        clear.first.click()
        page.wait_for_function("!document.querySelector('#status').innerText.includes('(')",
                               timeout=TIMEOUT_MS)
    page.locator("#clip button[aria-label='Upload file']").click()  # after a recording
    page.set_input_files("#clip input[type=file]", str(path))
    page.wait_for_function(
        f"document.querySelector('#status').innerText.includes({json.dumps(wait_for)})",
        timeout=TIMEOUT_MS)
    return page.inner_text("#status")


def test_upload_shows_label_probabilities_track_and_json(browser_page, model_folder, tmp_path):
    page, outside = browser_page
    clip = tmp_path / "speech.wav"
    t = np.arange(40000) / 16000
    soundfile.write(clip, 0.3 * np.sin(2 * np.pi * 180 * t * (1 + 0.2 * t))
                    * (0.5 + 0.5 * np.sin(2 * np.pi * 1.5 * t)), 16000)
    expected = OnnxEmotionRecognizer(model_folder).classify_file(clip)

    status = upload(page, clip, "Predicted emotion")

    assert f"Predicted emotion: {expected.label}" in status
    assert f"{len(expected.frame_scores)} frames" in status
    shown = page.inner_text("#probabilities").split()
    assert shown[shown.index("probabilities") + 1] == expected.label  # the headline label
    assert all(name in shown for name in CLASSES)
    # the plot is drawn: Vega's SVG with one line per class and one for the loudness
    page.wait_for_selector("#track svg g.mark-line path", timeout=TIMEOUT_MS)
    assert page.locator("#track svg g.mark-line path").count() == len(CLASSES) + 1
    with page.expect_download(timeout=TIMEOUT_MS) as download:
        page.locator("#record a").first.click()
    record = json.loads(Path(download.value.path()).read_text())
    assert record["label"] == expected.label and record["file"] == "speech.wav"
    assert len(record["frame_scores"]) == len(expected.frame_scores)
    np.testing.assert_allclose(list(record["probabilities"].values()),
                               expected.probabilities, atol=1e-6)
    page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
    assert (tmp_path / "app.png").stat().st_size > 10000
    assert outside == []  # offline: nothing requested beyond the app itself


def test_recording_from_the_microphone_is_classified(browser_page):
    page, _ = browser_page
    clear = page.locator("#clip button[aria-label='Clear']")
    if clear.count():
        clear.first.click()
    page.locator("#clip button[aria-label='Record audio']").click()
    page.locator("#clip button:has-text('Record'):visible").first.click()
    time.sleep(2.0)
    page.locator("#clip button:has-text('Stop'):visible").first.click()
    page.wait_for_function("document.querySelector('#status').innerText.includes('Predicted')",
                           timeout=TIMEOUT_MS)
    label = page.inner_text("#status").split("Predicted emotion: ")[1].split()[0]
    assert label in CLASSES
    shown = page.inner_text("#probabilities").split()
    assert shown[shown.index("probabilities") + 1] == label
    page.wait_for_selector("#track svg g.mark-line path", timeout=TIMEOUT_MS)


@pytest.mark.parametrize("kind", ["corrupt", "too short"])
def test_refused_file_shows_the_command_lines_message(browser_page, tmp_path, kind):
    page, _ = browser_page
    clip = tmp_path / f"{kind.replace(' ', '_')}.wav"
    if kind == "corrupt":
        clip.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(200)))
    else:
        soundfile.write(clip, np.zeros(300), 16000)

    status = upload(page, clip, "Refused")

    # the upload's path on the server (Gradio's cache), read by the same function as the CLI
    served_path = status.split(clip.name)[0].split()[-1] + clip.name
    with pytest.raises(ValueError) as refused:
        read_clip(served_path)
    assert status == f"Refused: {refused.value}"
    page.screenshot(path=str(tmp_path / "refused.png"), full_page=True)


def test_the_page_shows_the_same_result_with_either_backend(model_folder, tmp_path):
    """What the page shows, computed without a browser: torch and onnxruntime agree, and the
    JSON record is the command line's (``gmptl-classify --json --frames``)."""
    from lobes.deploy.app import classify_upload
    from lobes.deploy.classify_cli import load_recognizer
    from lobes.deploy.predictions import result_record

    clip = tmp_path / "clip.wav"
    soundfile.write(clip, 0.1 * np.random.default_rng(3).standard_normal((30000, 2)), 22050)
    shown = {backend: classify_upload(load_recognizer(model_folder, backend), str(clip), tmp_path)
             for backend in ("torch", "onnx")}
    (status, probabilities, track, record_path), onnx_shown = shown["torch"], shown["onnx"]
    assert status == onnx_shown[0] and "Predicted emotion" in status
    assert probabilities == pytest.approx(onnx_shown[1], abs=1e-4)
    assert track["x_lim"] == [0.0, round(len(read_clip(clip)) / 16000, 3)]
    assert set(track["value"]["series"]) >= set(CLASSES)
    onnx = OnnxEmotionRecognizer(model_folder)
    expected = result_record(clip.name, onnx.classify_file(clip), onnx.classes, with_frames=True)
    assert json.loads(Path(onnx_shown[3]).read_text()) == expected
    assert json.loads(Path(record_path).read_text())["label"] == expected["label"]
