"""Cairn's web page at /, used in a real headless browser (Debian's chromium), and the API it stands on."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from cairn.processes import free_port
from models.instant import InstantChatModel
from prompts.agent import ANSWER_TASK
from serving.web import STATIC_DIR
from tests.conftest import ROOT, SAMPLE_REPO
from tests.serving.conftest import served

pytestmark = pytest.mark.integration

QUESTION = "How does the LRU cache evict entries?"
SCREENSHOT = ROOT / "docs" / "images" / "web-page.png"
# The one excerpt line the prompts open each piece of code with: "(n) [path:start-end] Symbol".
EXCERPT = re.compile(r"^\(\d+\) \[(?P<citation>[^\]\s]+:\d+-\d+)\](?: (?P<symbol>\S+))?$", re.M)
LANGUAGES = {".py": "python", ".js": "javascript", ".md": "markdown"}
# URLs that appear in the vendored libraries' code and are never fetched: XML namespace names, which
# the DOM APIs take as identifiers, and text of the libraries' own warning and error messages.
NOT_FETCHED = {
    "http://www.w3.org/2000/svg": "SVG namespace name (Preact, DOMPurify, the favicon)",
    "http://www.w3.org/1999/xhtml": "XHTML namespace name (DOMPurify)",
    "http://www.w3.org/1998/Math/MathML": "MathML namespace name (DOMPurify)",
    "http://": "marked: the scheme it puts before a bare www. link, which becomes a link (never fetched)",
    "https://github.com/markedjs/marked.": "marked: text of its 'please report this' error message",
    "https://github.com/highlightjs/highlight.js/issues/2277": "highlight.js: text of a console warning",
    "https://github.com/highlightjs/highlight.js/wiki/security": "highlight.js: text of a console warning",
}
LICENCE_COMMENT = re.compile(r"/\*[!*].*?\*/", re.S)
URL = re.compile(r"https?://[^\s\"'`<>()\\]*")


class ScriptedAnswer(InstantChatModel):
    """Answer as a capable model would, from the first excerpt shown: a sentence citing it, then its code.

    ``extra`` is appended to the answer (markup a page must not run); plan, analyze and refine get
    "ok" and take their deterministic fallbacks, as with the instant model.
    """

    extra: str = ""

    def reply_to(self, messages: list) -> str:
        if ANSWER_TASK not in str(messages[-1].content):
            return "ok"
        prompt = str(messages[0].content)
        found = EXCERPT.search(prompt)
        if found is None:
            return "ok"
        citation, symbol = found["citation"], found["symbol"] or "this code"
        code = "\n".join(prompt[found.end() + 1 :].split("\n\n(")[0].rstrip().split("\n")[:8])
        language = LANGUAGES.get(Path(citation.split(":")[0]).suffix, "")
        return (
            f"The work is done in `{symbol}` [{citation}]. This is how it starts:\n\n"
            f"```{language}\n{code}\n```\n\n"
            "Click a citation to read the code in context; the sources below list every excerpt retrieved, "
            f"with its score.{self.extra}"
        )


class LongAnswer(InstantChatModel):
    """Stream a 400-word answer citing the first excerpt, at ``delay`` seconds a word."""

    def reply_to(self, messages: list) -> str:
        first = super().reply_to(messages)
        if first == "ok":
            return first
        return first + " " + " ".join(f"word{n}" for n in range(400))


@dataclass
class Visit:
    """A browser page on one service, with every request it made and every error it raised."""

    page: object
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """One Chromium for the module (Debian's), pages opened per test."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is not installed: run `make test` (it installs chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def visit(browser) -> Iterator[Callable[..., Visit]]:
    """Open the page of a service in a fresh browser context; afterwards, check where requests went."""
    opened: list[Visit] = []
    contexts = []

    def open_page(url: str, color_scheme: str = "light") -> Visit:
        context = browser.new_context(
            viewport={"width": 1280, "height": 800},
            permissions=["clipboard-read", "clipboard-write"],
            color_scheme=color_scheme,
        )
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        seen = Visit(page)
        page.on("request", lambda request: seen.requests.append(request.url))
        page.on("pageerror", lambda exc: seen.errors.append(str(exc)))
        page.goto(url)
        page.locator("html[data-ready='true']").wait_for(state="attached")
        opened.append(seen)
        return seen

    yield open_page
    for context in contexts:
        context.close()
    for seen in opened:
        # nothing the page does may leave the machine: every request went to the service on loopback
        assert seen.requests and all(urlparse(url).hostname == "127.0.0.1" for url in seen.requests), seen.requests
        assert not seen.errors, seen.errors


def ask(page, question: str) -> None:
    page.get_by_label("Ask about the code").fill(question)
    page.get_by_label("Ask about the code").press("Enter")


def wait_answered(page) -> None:
    page.locator(".turn.assistant .actions").last.wait_for(timeout=30_000)


def clipboard(page) -> str:
    return page.evaluate("navigator.clipboard.readText()")


def cited_lines(page) -> list[int]:
    page.locator("aside.panel .line.cited").first.wait_for()
    return [int(n) for n in page.locator("aside.panel .line.cited").evaluate_all("ls => ls.map(l => l.dataset.line)")]


def file_lines(path: str) -> list[str]:
    return (SAMPLE_REPO / path).read_text(encoding="utf-8").split("\n")


def serious_violations(page) -> list[str]:
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:12]}"
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]


# ---------------------------------------------------------------- the API the page uses


def test_search_and_file_api(service_index: Path, redis_url: str) -> None:
    with served(service_index, redis_url) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        found = http.get("/api/search", params={"q": "evict least recently used", "k": 3}).json()
        assert found["mode"] == "hybrid" and len(found["results"]) == 3
        keyword = http.get("/api/search", params={"q": "evict least recently used", "mode": "keyword"}).json()
        assert keyword["mode"] == "keyword" and keyword["results"][0]["path"] == "tinykv/cache.py"
        first = found["results"][0]
        assert first["citation"] == f"{first['path']}:{first['start_line']}-{first['end_line']}"
        assert first["score"] > 0 and first["rank"] == 1 and first["snippet"]
        javascript = http.get("/api/search", params=[("q", "retry"), ("language", "javascript"), ("k", "5")]).json()
        assert javascript["results"] and {r["language"] for r in javascript["results"]} == {"javascript"}
        unknown = http.get("/api/search", params={"q": "x", "mode": "psychic"})
        assert unknown.status_code == 400 and "hybrid" in unknown.json()["error"]["message"]
        assert http.get("/api/retrievers").json()["modes"] >= ["dense", "hybrid", "keyword"]

        excerpt = http.get("/api/files/tinykv/cache.py", params={"start": 10, "end": 12, "context": 2}).json()
        assert [line["number"] for line in excerpt["lines"]] == [8, 9, 10, 11, 12, 13, 14]
        assert [line["number"] for line in excerpt["lines"] if line["cited"]] == [10, 11, 12]
        assert excerpt["language"] == "Python" and excerpt["total_lines"] == len(file_lines("tinykv/cache.py")) - 1
        text = [re.sub(r"<[^>]+>", "", line["html"]) for line in excerpt["lines"]]
        expected = file_lines("tinykv/cache.py")[7:14]
        assert [t.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&#39;", "'")
                .replace("&amp;", "&") for t in text] == expected  # fmt: skip
        assert any('class="' in line["html"] for line in excerpt["lines"])  # Pygments' token spans
        whole = http.get("/api/files/tinykv/cache.py", params={"start": 1, "end": 100_000}).json()
        assert len(whole["lines"]) <= 400

        for path, status in [
            ("%2E%2E/pyproject.toml", 400),  # leaves the repository
            ("/etc/passwd", 400),  # absolute
            ("~/x", 400),
            ("tinykv/missing.py", 404),  # not in the index
        ]:
            refused = http.get(f"/api/files/{path}")
            assert refused.status_code == status, (path, refused.text)
            assert refused.json()["error"]["message"]
        assert http.get("/api/files/tinykv/cache.py", params={"start": 5, "end": 2}).status_code == 400
        assert http.get("/static/..%2F..%2Fapp.py").status_code == 404
        assert "/api/search" in http.get("/openapi.json").json()["paths"]


def test_highlighted_lines_stand_alone_and_keep_the_file_s_numbering() -> None:
    from serving.web.code_view import highlight_lines

    text = '\n\ndef f():\n    """A docstring\n    over <three> lines\n    """\n    return 1\n'
    language, lines = highlight_lines("x.py", text)
    assert language == "Python" and len(lines) == text.count("\n")  # leading blank lines kept
    for line in lines:  # every line opens and closes its own spans
        assert line.count("<span") == line.count("</span>")
    assert "&lt;three&gt;" in lines[4] and 'class="sd"' in lines[4]  # inside the docstring, escaped
    assert highlight_lines("notes.unknownext", "a\nb")[1] == ["a", "b"]


def test_page_needs_no_key_but_the_api_does_and_nothing_served_points_outside(
    service_index: Path, redis_url: str, visit
) -> None:
    with served(service_index, redis_url, api_keys=["s3cret"]) as server:
        page_response = httpx.get(server.url + "/")
        assert page_response.status_code == 200
        assert "default-src 'none'" in page_response.headers["content-security-policy"]
        assert httpx.get(server.url + "/static/app.js").status_code == 200
        assert httpx.get(server.url + "/api/search", params={"q": "x"}).status_code == 401
        assert httpx.get(server.url + "/static").status_code == 401  # only the folder's files are open

        # every file the page can load, as served: no URL outside licence comments but known non-fetches
        for path in sorted(STATIC_DIR.rglob("*")):
            if path.is_dir() or path.name.startswith("LICENSE") or path.name == "VERSIONS.json":
                continue
            served_text = httpx.get(f"{server.url}/static/{path.relative_to(STATIC_DIR)}").text
            for url in URL.findall(LICENCE_COMMENT.sub("", served_text)):
                assert url in NOT_FETCHED, f"{path.relative_to(STATIC_DIR)} refers to {url}"
        assert not URL.findall(page_response.text)

        seen = visit(server.url)
        page = seen.page
        dialog = page.get_by_role("dialog", name="API key")
        dialog.wait_for()
        dialog.get_by_label("Key").fill("wrong")
        dialog.get_by_role("button", name="Use this key").click()
        page.get_by_text("That key was refused").wait_for()
        dialog.get_by_label("Key").fill("s3cret")
        dialog.get_by_role("button", name="Use this key").click()
        page.locator(".badge.ready").wait_for()
        assert page.evaluate("localStorage.getItem('cairn.apiKey')") == "s3cret"
        ask(page, QUESTION)
        wait_answered(page)
        assert page.locator(".turn.assistant .chip").count() >= 1


# ---------------------------------------------------------------- chat


def test_answer_streams_and_stop_ends_it(service_index: Path, redis_url: str, visit, fake_models) -> None:
    fake_models(lambda spec, config: LongAnswer(delay=0.03))
    with served(service_index, redis_url, model="fake/long") as server:
        page = visit(server.url).page
        textarea = page.get_by_label("Ask about the code")
        textarea.fill("first line")
        textarea.press("Shift+Enter")  # a new line, not a send
        textarea.type("second line")
        assert textarea.input_value() == "first line\nsecond line"
        textarea.fill(QUESTION)
        textarea.press("Enter")
        stop = page.get_by_role("button", name="Stop")
        stop.wait_for()
        answer = page.locator(".turn.assistant .md").last
        page.wait_for_function("() => document.querySelector('.turn.assistant .md').innerText.length > 20")
        lengths = []
        for _ in range(4):
            lengths.append(len(answer.inner_text()))
            time.sleep(0.25)
        assert lengths == sorted(lengths) and lengths[-1] > lengths[0], lengths  # it grows while streaming
        stop.click()
        page.get_by_role("button", name="Send").wait_for()
        page.get_by_text("Stopped.").wait_for()
        stopped_at = len(answer.inner_text())
        time.sleep(0.5)
        assert len(answer.inner_text()) == stopped_at  # nothing more arrives
        assert "word399" not in answer.inner_text()


def test_steps_citations_sources_and_the_code_panel(service_index: Path, redis_url: str, visit, tmp_path) -> None:
    with served(service_index, redis_url, model="instant/0.05") as server:
        page = visit(server.url).page
        page.evaluate(
            """() => { window.liveSteps = []
            new MutationObserver(() => { const live = document.querySelector('.steps.live')
              if (live) window.liveSteps.push(live.innerText) })
            .observe(document.body, { subtree: true, childList: true, characterData: true }) }"""
        )
        ask(page, QUESTION)
        wait_answered(page)
        live = "\n".join(page.evaluate("window.liveSteps"))
        assert "Planning" in live and f'Searching "{QUESTION}"' in live and "Reading" in live, live
        steps = page.locator("details.steps")  # collapsed once the answer started
        assert steps.count() == 1 and not steps.evaluate("d => d.open")
        assert "Answered with" in steps.text_content() and "kept" in steps.text_content()

        sources = page.locator(".sources li")
        assert sources.count() >= 1 and "score 0." in sources.first.inner_text()
        chip = page.locator(".turn.assistant .md .chip").first
        path = chip.get_attribute("data-path")
        start, end = int(chip.get_attribute("data-start")), int(chip.get_attribute("data-end"))
        chip.click()
        assert cited_lines(page) == list(range(start, end + 1))
        panel = page.locator("aside.panel")
        assert panel.locator("h2").inner_text() == f"{path}:{start}-{end}"
        shown = panel.locator(".line").evaluate_all("ls => ls.map(l => l.querySelector('.lc').textContent)")
        first = int(panel.locator(".line").first.get_attribute("data-line"))
        assert shown == file_lines(path)[first - 1 : first - 1 + len(shown)]  # the file's own lines
        assert first == max(1, start - 8)  # with context before the range
        assert panel.locator(".line.cited").first.evaluate(  # scrolled into view
            "l => { const r = l.getBoundingClientRect(), p = l.closest('.panel-body').getBoundingClientRect();"
            " return r.top >= p.top && r.bottom <= p.bottom }"
        )
        panel.get_by_role("button", name="Copy path:lines").click()
        assert clipboard(page) == f"{path}:{start}-{end}"

        page.locator(".turn.assistant .copy-answer").click()
        assert clipboard(page).startswith("It is implemented in")
        page.locator(".turn.assistant .regenerate").click()
        page.locator(".turn.assistant .actions").nth(1).wait_for(timeout=30_000)
        assert page.locator(".turn.user").count() == 2
        page.keyboard.press("Escape")
        assert page.locator("aside.panel").count() == 0


def test_code_blocks_are_highlighted_and_copied_and_markup_is_not_run(
    service_index: Path, redis_url: str, visit, fake_models
) -> None:
    extra = (
        "\n\n<script>window.pwned = 'script'</script>\n\n<img src=\"x\" onerror=\"window.pwned = 'img'\">"
        "\n\n<a href=\"javascript:window.pwned='link'\">a link</a>"
    )
    fake_models(lambda spec, config: ScriptedAnswer(extra=extra))
    with served(service_index, redis_url, model="fake/scripted") as server:
        page = visit(server.url).page
        ask(page, QUESTION)
        wait_answered(page)
        block = page.locator(".turn.assistant .codeblock").first
        assert block.locator(".codelang").inner_text() == "python"
        block.locator("code.hljs .hljs-keyword").first.wait_for()  # highlighted
        code = block.locator("code").inner_text()
        block.get_by_role("button", name="Copy python code").click()
        assert clipboard(page) == code and "def " in code
        page.evaluate("navigator.clipboard.writeText('something else')")
        page.keyboard.press("Control+Shift+Semicolon")  # copy the last code block
        page.wait_for_function("async () => (await navigator.clipboard.readText()) !== 'something else'")
        assert clipboard(page) == code
        page.get_by_text("a link").click()
        assert page.evaluate("window.pwned") is None  # no script, handler or javascript: link ran
        assert page.locator(".md script, .md img, .md [onerror], .md a[href^='javascript']").count() == 0

        # rendered a block at a time as it streams, an answer ends as if rendered whole
        rendered = page.evaluate(
            """async (text) => {
              const md = await import('./static/markdown.js')
              const streamed = document.createElement('div'), whole = document.createElement('div')
              const renderer = new md.StreamingMarkdown(streamed)
              for (let i = 0; i < text.length; i += 7) { renderer.append(text.slice(i, i + 7)); renderer.render() }
              renderer.finish()
              await renderer.settled()
              md.renderInto(whole, text)
              const blocks = (root) => [...root.querySelectorAll('h2, p, li, pre, td, blockquote')]
                .map((e) => `${e.tagName}:${e.textContent}`)
              return [blocks(streamed), blocks(whole)]
            }""",
            "## Title\n\nA paragraph citing [tinykv/cache.py:6-40] and `x`.\n\n- one\n- two\n\n  more of two\n\n"
            "1. first\n\n2. second\n\n```python\ndef f():\n\n    return 1\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
            "> quoted\n\nLast line.",
        )
        assert rendered[0] == rendered[1] and len(rendered[0]) >= 9, rendered

        page.keyboard.press("Control+Shift+O")  # new chat
        assert page.locator(".turn").count() == 0 and page.get_by_text("Ask about").count() >= 1
        page.keyboard.press("Shift+Escape")
        assert page.evaluate("document.activeElement.id") == "question"


def test_search_lists_results_that_open_the_panel(service_index: Path, redis_url: str, visit) -> None:
    with served(service_index, redis_url) as server:
        page = visit(server.url).page
        page.get_by_role("tab", name="Search").click()
        page.get_by_label("Query").fill("evict the least recently used entry")
        page.get_by_label("Mode").select_option("keyword")
        page.get_by_role("button", name="Search", exact=True).click()
        results = page.locator(".results li")
        results.first.wait_for()
        first = results.first.inner_text()
        where = re.search(r"(\S+):(\d+)-(\d+)", first)
        assert where and "keyword score" in first and "rank 1" in first
        assert results.first.locator("pre").inner_text().strip()  # the snippet
        results.first.locator("button.result").click()
        assert cited_lines(page) == list(range(int(where[2]), int(where[3]) + 1))
        assert page.locator("aside.panel h2").inner_text() == where[0]


# ---------------------------------------------------------------- sessions and status


def test_a_session_is_listed_survives_reload_and_is_deleted(service_index: Path, redis_url: str, visit) -> None:
    with served(service_index, redis_url) as server:
        page = visit(server.url).page
        ask(page, QUESTION)
        wait_answered(page)
        session = page.evaluate("decodeURIComponent(location.hash.slice('#session='.length))")
        item = page.locator(f"nav.sessions li[data-session='{session}']")
        item.wait_for()
        assert QUESTION in item.inner_text()
        page.get_by_label("Session telemetry").wait_for()

        page.reload()
        page.locator(".turn.user").first.wait_for()
        assert page.locator(".turn.user").inner_text().endswith(QUESTION)
        assert page.locator(".turn.assistant .md .chip").count() >= 1  # the answer, citations as chips again
        telemetry = page.get_by_label("Session telemetry").inner_text()
        assert "2 messages" in telemetry and "history" in telemetry
        assert page.locator(f"nav.sessions li[data-session='{session}'][aria-current='true']").count() == 1

        page.once("dialog", lambda dialog: dialog.accept())
        item.get_by_role("button", name=re.compile("Delete conversation")).click()
        item.wait_for(state="detached")
        assert httpx.get(f"{server.url}/sessions/{session}").status_code == 404
        assert page.locator(".turn").count() == 0  # the open conversation was the deleted one


def test_a_model_or_service_that_is_down_is_shown(service_index: Path, redis_url: str, visit) -> None:
    nothing = f"openai-compatible/absent@http://127.0.0.1:{free_port()}/v1"
    with served(service_index, redis_url, model=nothing, model_max_retries=0, model_timeout=5) as server:
        page = visit(server.url).page
        page.get_by_role("alert").filter(has_text="The model is not answering").wait_for()
        assert page.locator(".badge.down").inner_text() == "Model down"
        ask(page, QUESTION)
        error = page.locator(".turn.assistant .error")
        error.wait_for(timeout=30_000)
        assert "absent" in error.inner_text() or "127.0.0.1" in error.inner_text()
        page.get_by_role("button", name="Send").wait_for()
    ask(page, "Are you there?")  # the service is gone now
    page.locator(".turn.assistant .error").nth(1).wait_for()
    assert "Cannot reach the Cairn service" in page.locator(".turn.assistant .error").nth(1).inner_text()
    page.locator(".badge.offline").wait_for()


def test_without_redis_the_page_says_so_and_answers_without_a_session(service_index: Path, visit) -> None:
    with served(service_index, f"redis://127.0.0.1:{free_port()}/0") as server:
        page = visit(server.url).page
        page.get_by_role("alert").filter(has_text="Sessions are unavailable").wait_for()
        assert page.locator(".badge.degraded").inner_text() == "Sessions off"
        ask(page, QUESTION)
        wait_answered(page)
        assert page.locator(".turn.assistant .md .chip").count() >= 1  # answered, statelessly
        assert "not being saved" in page.locator(".turn.assistant .notice").inner_text()


def test_no_serious_accessibility_violations_and_the_screenshot(
    service_index: Path, redis_url: str, visit, fake_models, tmp_path: Path
) -> None:
    fake_models(lambda spec, config: ScriptedAnswer())
    with served(service_index, redis_url, model="fake/scripted") as server:
        httpx.post(  # an earlier conversation, so the sidebar has one
            f"{server.url}/v1/chat/completions",
            json={"model": "cairn-agent", "messages": [{"role": "user", "content": "Where is the log replayed?"}]},
            headers={"X-Session-Id": "earlier"},
            timeout=30,
        )
        for scheme in ("light", "dark"):
            page = visit(server.url, color_scheme=scheme).page
            page.locator("nav.sessions li").first.wait_for()
            ask(page, QUESTION)
            wait_answered(page)
            page.locator(".turn.assistant .md .chip").first.click()
            page.locator("aside.panel .line.cited").first.wait_for()
            page.locator(".codeblock code.hljs").first.wait_for()
            assert serious_violations(page) == [], scheme
            if scheme == "light":
                out = SCREENSHOT if os.environ.get("CAIRN_UPDATE_SCREENSHOTS") == "1" else tmp_path / "web-page.png"
                out.parent.mkdir(parents=True, exist_ok=True)
                page.locator(".conversation").evaluate("c => { c.scrollTop = 0 }")  # the question, steps and answer
                page.screenshot(path=str(out))
            page.get_by_role("tab", name="Search").click()
            page.get_by_label("Query").fill("write-ahead log")
            page.get_by_role("button", name="Search", exact=True).click()
            page.locator(".results li").first.wait_for()
            assert serious_violations(page) == [], scheme


# ---------------------------------------------------------------- several repositories, conversations, status

STATUS_SCREENSHOT = ROOT / "docs" / "images" / "status-view.png"


def test_the_page_picks_a_repository_finds_conversations_and_shows_the_status_view(
    two_repos: Path, redis_url: str, visit, fake_models, tmp_path: Path
) -> None:
    import uuid

    from serving.app import create_app
    from tests.serving.conftest import Server, service_settings

    fake_models(lambda spec, config: ScriptedAnswer())
    settings = service_settings(two_repos / "unused", redis_url, model="fake/scripted")
    settings = settings.model_copy(update={"data_dir": two_repos, "index_dir": None})
    tag = uuid.uuid4().hex[:6]
    with Server(create_app(settings)) as server:
        httpx.post(  # a conversation about the cache, started elsewhere: found by its words
            f"{server.url}/v1/chat/completions", timeout=30, headers={"X-Session-Id": f"cache-{tag}"},
            json={"model": "cairn/tinykv", "messages": [{"role": "user", "content": f"How does the LRU evict? {tag}"}]},
        )  # fmt: skip
        page = visit(server.url).page
        picker = page.get_by_label("Repository")
        picker.wait_for()
        assert picker.input_value() == "*"  # several repositories, none the default: all of them
        assert page.locator(".repo-picker option").all_inner_texts() == ["All repositories", "billing", "tinykv"]
        picker.select_option("billing")
        ask(page, "How is an invoice total rounded?")
        wait_answered(page)
        session = page.evaluate("decodeURIComponent(location.hash.slice('#session='.length))")
        assert httpx.get(f"{server.url}/sessions/{session}").json()["repo"] == "billing"  # the model was cairn/billing
        page.locator(".turn.assistant .md .chip").first.click()  # a billing path, read from the billing repository
        page.locator("aside.panel .line.cited").first.wait_for()
        item = page.locator(f"nav.sessions li[data-session='{session}']")
        item.wait_for()
        assert "billing" in item.locator(".repo").inner_text()
        assert "tinykv" in page.locator(f"nav.sessions li[data-session='cache-{tag}'] .repo").inner_text()

        # search conversations by their text: the other one, with a snippet where it matched
        page.get_by_label("Search conversations").fill(f"lru {tag}")
        found = page.locator("nav.sessions li")
        page.wait_for_function("n => document.querySelectorAll('nav.sessions li').length === n", arg=1)
        assert found.first.get_attribute("data-session") == f"cache-{tag}"
        assert tag in found.first.locator(".snippet").inner_text()
        # opening it brings its repository back into the picker
        found.first.locator("button.open").click()
        page.locator(".turn.user").first.wait_for()
        assert picker.input_value() == "tinykv"
        page.get_by_label("Search conversations").fill("")
        page.get_by_role("button", name="Close the code panel").click()

        # the operator's status view: each repository, the model, recent requests with their first token
        page.get_by_role("tab", name="Status").click()
        view = page.get_by_role("region", name="Service status")
        view.locator("table").first.wait_for()
        rows = view.locator("table").first.locator("tbody tr")
        assert rows.count() == 2 and "billing" in rows.nth(0).inner_text() and "up to date" in rows.nth(0).inner_text()
        assert "fake/scripted" in view.inner_text()
        requests = view.locator("table").nth(1).locator("tbody tr")
        answered = requests.filter(has_text="/v1/chat/completions").first
        assert "cairn/billing" in answered.inner_text() and re.search(r"\d+ ms", answered.inner_text())
        assert serious_violations(page) == []
        page.locator(".toast").wait_for(state="detached")
        out = STATUS_SCREENSHOT if os.environ.get("CAIRN_UPDATE_SCREENSHOTS") == "1" else tmp_path / "status-view.png"
        page.screenshot(path=str(out))


def test_a_long_session_shows_what_its_history_keeps(service_index: Path, redis_url: str, visit) -> None:
    with served(service_index, redis_url, model_context_tokens=4096) as server:
        for turn in range(12):
            httpx.post(
                f"{server.url}/v1/chat/completions",
                timeout=30,
                headers={"X-Session-Id": "long-one"},
                json={"model": "cairn-agent", "messages": [{"role": "user", "content": f"{QUESTION} ({turn})"}]},
            )
        page = visit(f"{server.url}/#session=long-one").page
        note = page.locator(".telemetry .history-note")
        note.wait_for()
        assert re.search(r"last \d+ turns? word for word, \d+ summarised", note.inner_text())
        assert "history" in page.get_by_label("Session telemetry").inner_text()
        ask(page, "And how big can it get?")
        wait_answered(page)
        page.locator(".steps summary").last.click()  # the folded steps
        assert "earlier conversation: last" in page.locator(".turn.assistant .steps").last.inner_text()
