"""The Gradio web demo (ast_hf.demo_app), served for real on 127.0.0.1 and driven by headless Chromium via selenium:
the labels the page shows are the audio-tagging pipeline's, the timeline appears, and bad uploads give a message."""

from __future__ import annotations

import math
import os
import shutil
import socket
import time
import urllib.request
import wave
from pathlib import Path

import numpy as np
import pytest
from conftest import speak, tiny_model

import ast_hf

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
for binary in (CHROMIUM, CHROMEDRIVER):
    if not (os.path.isfile(binary) or shutil.which(Path(binary).name)):
        pytest.skip(f"{binary} not found: the browser test needs Debian's chromium and chromium-driver "
                    "(apt-get install chromium chromium-driver)", allow_module_level=True)
pytest.importorskip("gradio", reason="the web demo needs gradio (pip install gradio)")
pytest.importorskip("matplotlib", reason="the timeline needs matplotlib (pip install matplotlib)")
webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (pip install selenium)")
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402
from transformers import pipeline  # noqa: E402

from ast_hf.demo_app import launch  # noqa: E402

pytestmark = pytest.mark.slow

# Seven AudioSet-style labels (one with commas and spaces), more than the page's top_k=5 shows.
LABELS = ["Speech", "Music", "Dog", "Siren", "Rain", "Engine", "Bird vocalization, bird call, bird song"]
TOP_K = 5
WAIT_S = 30


def write_wav(path: Path, audio: np.ndarray, rate: int = 16000) -> Path:
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes((np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes())
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny multi-label AST (independent sigmoid scores, so no two are equal) saved with its extractor."""
    folder = tmp_path_factory.mktemp("demo_model")
    model = tiny_model(num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
                       label2id={name: i for i, name in enumerate(LABELS)}, problem_type="multi_label_classification")
    model.save_pretrained(folder)
    ast_hf.ASTFeatureExtractor(max_length=128).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def server(checkpoint):
    """The demo, served from a thread of this process on a free port; its URL."""
    port = free_port()
    demo = launch(checkpoint, port=port, top_k=TOP_K, prevent_thread_lock=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                assert response.status == 200
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    yield url
    demo.close()


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1500"):
        options.add_argument(argument)
    options.binary_location = CHROMIUM if os.path.isfile(CHROMIUM) else shutil.which("chromium")
    service = webdriver.ChromeService(CHROMEDRIVER if os.path.isfile(CHROMEDRIVER) else shutil.which("chromedriver"))
    driver = webdriver.Chrome(service=service, options=options)
    yield driver
    driver.quit()


def open_page(browser, url: str):
    browser.get(url)
    WebDriverWait(browser, WAIT_S).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#submit-button"))


def upload_and_submit(browser, path: Path | None):
    if path is not None:
        browser.find_element(By.CSS_SELECTOR, "#audio-input input[type=file]").send_keys(str(path))
        # The upload is done when the player (and its clear button) replaces the drop zone.
        WebDriverWait(browser, WAIT_S).until(
            lambda b: not b.find_elements(By.CSS_SELECTOR, "#audio-input input[type=file]"))
    browser.find_element(By.ID, "submit-button").click()


def shown_labels(browser) -> list[tuple[str, str, float]]:
    """(name, displayed percentage, exact score of the bar) of each row of the Label output, top to bottom."""
    rows = browser.find_elements(By.CSS_SELECTOR, "#clip-labels .confidence-set")
    return [(row.find_element(By.CSS_SELECTOR, "dt").text, row.find_element(By.CSS_SELECTOR, "dd").text,
             float(row.find_element(By.CSS_SELECTOR, "meter").get_attribute("value"))) for row in rows]


def error_toast(browser, expected: str) -> str:
    """The text of the error message (Gradio's toast) the page shows, once it contains `expected`."""
    toasts = lambda b: " ".join(toast.text for toast in b.find_elements(By.CSS_SELECTOR, ".toast-body"))
    try:
        WebDriverWait(browser, WAIT_S).until(lambda b: expected in toasts(b))
    except TimeoutException:
        pytest.fail(f"no error message with {expected!r} appeared; the page says: "
                    f"{browser.find_element(By.TAG_NAME, 'body').text}")
    return toasts(browser)


def test_page_shows_the_pipeline_clip_labels_and_the_timeline(server, browser, checkpoint, tmp_path):
    clip = write_wav(tmp_path / "left right.wav", speak("left right up down, the quick brown fox", "en-us", 140))
    expected = pipeline("audio-tagging", model=str(checkpoint))(str(clip), top_k=TOP_K)
    assert len(expected["clip"]) == TOP_K
    open_page(browser, server)
    assert "Audio tagging" in browser.title and checkpoint.name in browser.title
    upload_and_submit(browser, clip)
    WebDriverWait(browser, WAIT_S).until(lambda b: len(shown_labels(b)) == TOP_K)

    shown = shown_labels(browser)
    assert [name for name, _, _ in shown] == [entry["label"] for entry in expected["clip"]]
    for (name, percent, score), entry in zip(shown, expected["clip"], strict=True):
        assert percent == f"{math.floor(entry['score'] * 100 + 0.5)}%", name  # as the page rounds (JS Math.round)
        assert score == pytest.approx(entry["score"], abs=1e-6), name  # the bar's exact value
    top = browser.find_element(By.CSS_SELECTOR, "#clip-labels [data-testid=label-output-value]").text
    assert top == expected["clip"][0]["label"]

    # The timeline: a rendered image, several hundred pixels wide.
    WebDriverWait(browser, WAIT_S).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#timeline img"))
    image = browser.find_element(By.CSS_SELECTOR, "#timeline img")
    WebDriverWait(browser, WAIT_S).until(lambda b: b.execute_script(
        "return arguments[0].complete && arguments[0].naturalWidth", image))
    assert browser.execute_script("return arguments[0].naturalWidth", image) >= 400

    # The segments table: one row per pipeline segment, its bounds and its best label with that label's score.
    table = [[cell.text for cell in row.find_elements(By.CSS_SELECTOR, "[role=gridcell]")]
             for row in browser.find_elements(By.CSS_SELECTOR, "#segments [role=row].virtual-row")]
    assert len(table) == len(expected["segments"])
    for (start, end, label, score), segment in zip(table, expected["segments"], strict=True):
        best = segment["labels"][0]
        assert (float(start), float(end), label) == (round(segment["start"], 2), round(segment["end"], 2),
                                                     best["label"])
        assert float(score) == pytest.approx(best["score"], abs=5e-4)
    browser.save_screenshot(str(tmp_path / "demo.png"))


def test_missing_and_corrupt_uploads_show_a_message(server, browser, tmp_path):
    open_page(browser, server)
    upload_and_submit(browser, None)
    error_toast(browser, "No audio: upload a file or record with the microphone")

    corrupt = tmp_path / "broken.wav"
    corrupt.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + os.urandom(200))
    open_page(browser, server)
    upload_and_submit(browser, corrupt)
    message = error_toast(browser, "Could not tag 'broken.wav'")
    assert "Traceback" not in message and "/tmp/gradio" not in message
    assert not browser.find_elements(By.CSS_SELECTOR, "#clip-labels .confidence-set")
