"""`mtl serve` answers GET / with a page to try the model: checked as served (no network assets, a strict
content policy) and driven in headless Chromium against a real server, comparing what the page shows with the
server's own JSON answer for the same text."""
import html.parser
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from conftest import UTTERANCES, write_intent_slot
from mtl.serving.process import ServerProcess, serve_command
from tiny_runs import two_task_trainer

TEXT = "book a flight from new york to boston tomorrow"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture(scope="module")
def server(tmp_path_factory, vocab_file):
    """A two-task model (slots + intent) trained until it tags the tiny corpus, served on loopback."""
    root = tmp_path_factory.mktemp("page")
    write_intent_slot(root / "data" / "train", UTTERANCES * 2)
    write_intent_slot(root / "data" / "dev", UTTERANCES)
    trainer = two_task_trainer(vocab_file, root / "data", num_epochs=12, dropout=0.0)
    trainer.train(print_steps=0)
    model = trainer.export(root / "model")
    running = ServerProcess(serve_command(model, "--threads", "1", "--precision", "fp32"), root / "serve.log")
    yield running
    assert running.stop(), running.text()[-2000:]


class _Page(html.parser.HTMLParser):
    """The parts of the rendered page the test reads: head rows (key -> text) and the marked spans."""

    def __init__(self) -> None:
        super().__init__()
        self.heads: dict[str, str] = {}
        self.marks: list[str] = []
        self.errors: list[str] = []
        self.ready = False
        self._stack: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        if tag == "body" and attrs.get("data-ready") == "yes":
            self.ready = True
        key = attrs.get("data-key")
        if key:
            self.heads[key] = ""
        if tag == "mark":
            self.marks.append("")
        if attrs.get("id") == "error":
            self.errors.append("")
        self._stack.append((tag, key or ("error" if attrs.get("id") == "error" else None)))

    def handle_endtag(self, tag: str) -> None:
        while self._stack and self._stack.pop()[0] != tag:
            pass

    def handle_data(self, data: str) -> None:
        tags = [t for t, _ in self._stack]
        keys = [k for _, k in self._stack if k]
        for key in keys:
            if key == "error":
                self.errors[-1] += data
            else:
                self.heads[key] += data
        if "mark" in tags and "small" not in tags:
            self.marks[-1] += data


def test_the_page_is_served_without_network_assets(server):
    answer = httpx.get(f"{server.url}/", timeout=30)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    assert "connect-src 'self'" in answer.headers["content-security-policy"]
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", answer.text)  # nothing loads from elsewhere
    assert "innerHTML" not in answer.text  # user text reaches the page through textContent only


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium; "
                                             ".ci/run installs it)")
def test_chromium_shows_the_intent_its_probability_and_the_slot_spans(server):
    expected = httpx.post(f"{server.url}/predict", json={"texts": [TEXT]}, timeout=30).json()["predictions"][0]
    page = _rendered(f"{server.url}/?text={quote(TEXT)}")
    assert page.ready and not any(e.strip() for e in page.errors), page.errors
    assert set(page.heads) == set(expected) - {"text"}  # every task of the model, one row per head
    intent = expected["intent"]
    assert f"{intent['label']} ({100 * intent['prob']:.1f}%)" in page.heads["intent"]
    spans = expected["slot"]["spans"]
    assert spans, "the tiny model should tag something in this utterance"
    assert page.marks == [span["text"] for span in spans]  # each span highlighted, in order
    shown, at = "slot", 0  # the head's key, then the text with each span's type after it
    for span in spans:
        shown, at = shown + TEXT[at:span["char_end"]] + span["type"], span["char_end"]
    assert page.heads["slot"] == shown + TEXT[at:]


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")
def test_chromium_shows_the_servers_error_for_a_blank_text(server):
    page = _rendered(f"{server.url}/?text=%20%20&tasks=intent")
    assert page.ready and "422" in page.errors[0] and "texts[0]" in page.errors[0]
    assert not page.heads


def _rendered(url: str) -> _Page:
    """The DOM after the page's scripts ran (`--dump-dom` with a virtual-time budget for the fetches)."""
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-first-run", "--virtual-time-budget=20000", "--dump-dom", url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    page = _Page()
    page.feed(done.stdout)
    return page
