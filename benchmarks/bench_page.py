"""The web page's own cost: its weight, its time to interactive, and long tasks while a long answer streams.

    python benchmarks/bench_page.py [--runs N] [--tokens N]

The service runs in this process (uvicorn in a thread) on the sample repository's index, with a real
Redis, and Debian's Chromium (headless, through Playwright) loads the page from it on loopback.

1. Weight: every file the page loads to show an answer with Python code blocks and open the code panel
   (the HTML, its scripts and styles, highlight.js' core and the Python grammar, the panel's colours),
   raw and as served gzipped.
2. Time to interactive: from navigation start until the question box is rendered and accepts input
   (the page's ``cairn-interactive`` mark), in a fresh browser context each run (nothing cached).
3. Long tasks: a test-only model (registered here as ``bench``) streams a 2,000-token Markdown answer
   (headings, paragraphs with citations, lists, code blocks); a PerformanceObserver counts tasks over
   50 ms while it streams, and requestAnimationFrame timestamps give the longest gap between frames.
   Once paced at 2 ms a token (500 tokens/s, faster than any local model), once as fast as it goes.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import ThreadServer, machine, percentile, write_result  # noqa: E402
from cairn.processes import free_port  # noqa: E402
from config import Settings  # noqa: E402
from models.instant import InstantChatModel  # noqa: E402

SAMPLE = ROOT / "examples" / "sample-repo"
QUESTION = "How does the LRU cache evict entries?"
GOALS = {"weight_kb_gzip": 150, "interactive_ms": 300, "long_tasks": 0}
SECTION = (
    "## Part {n}\n\n"
    "The cache keeps its entries in insertion order and moves an entry to the end on every read "
    "{cite}, so the least recently used one is always first. When a put makes the cache larger than "
    "its capacity, the oldest entries are removed one by one until it fits again, and the hit and "
    "miss counters are left alone.\n\n"
    "- reads move the entry to the end\n- writes insert or refresh, then evict\n- `invalidate` drops "
    "one entry and never fails\n\n"
    "```python\ndef put(self, key, value):\n    self._entries[key] = value\n    self._entries.move_to_end(key)\n"
    "    while len(self._entries) > self.capacity:\n        self._entries.popitem(last=False)\n```\n\n"
)


class LongMarkdownAnswer(InstantChatModel):
    """Answer with about ``tokens`` words of Markdown citing the first excerpt, one word per chunk."""

    tokens: int = 2000

    def reply_to(self, messages: list) -> str:
        first = super().reply_to(messages)
        if first == "ok":
            return first
        cite = "[" + first.split("It is implemented in ")[1].split(",")[0] + "]"
        text, n = "", 0
        while len(text.split(" ")) < self.tokens:
            n += 1
            text += SECTION.format(n=n, cite=cite)
        return " ".join(text.split(" ")[: self.tokens])


def weight(url: str, paths: list[str]) -> dict[str, Any]:
    """Return raw and gzipped bytes of each file the page loaded, and their totals."""
    files = {}
    for path in sorted(set(paths)):
        body = httpx.get(url + path).content
        with httpx.stream("GET", url + path, headers={"Accept-Encoding": "gzip"}) as response:
            wire = sum(len(part) for part in response.iter_raw())
        files[path] = {"raw": len(body), "gzip9": len(gzip.compress(body, 9)), "served": wire}
    total = {key: sum(f[key] for f in files.values()) for key in ("raw", "gzip9", "served")}
    return {"files": files, "total_bytes": total, "total_kb_gzip": round(total["gzip9"] / 1024, 1)}


def interactive(browser: Any, url: str, runs: int) -> dict[str, Any]:
    """Return navigation start → interactive (ms) over ``runs`` fresh contexts, and DOMContentLoaded."""
    marks, loaded = [], []
    for n in range(runs + 2):
        context = browser.new_context()
        page = context.new_page()
        page.goto(url)
        page.locator("html[data-ready='true']").wait_for(state="attached")
        mark = page.evaluate("performance.getEntriesByName('cairn-interactive')[0].startTime")
        dcl = page.evaluate("performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd")
        context.close()
        if n >= 2:  # two warm-ups: the service's first requests, Chromium's first run
            marks.append(mark)
            loaded.append(dcl)
    return {
        "interactive_ms": {
            "p50": round(statistics.median(marks), 1),
            "p95": round(percentile(marks, 95), 1),
            "max": round(max(marks), 1),
            "n": len(marks),
        },
        "dom_content_loaded_ms_p50": round(statistics.median(loaded), 1),
    }


def stream_long_answer(browser: Any, url: str) -> dict[str, Any]:
    """Stream the long answer into the page; return long tasks, frame gaps and time taken."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(url)
    page.locator("html[data-ready='true']").wait_for(state="attached")
    page.evaluate(
        """() => {
          window.longTasks = []; window.frames = []; window.watching = true
          new PerformanceObserver((list) => { for (const e of list.getEntries())
            window.longTasks.push({ start: e.startTime, duration: e.duration }) }).observe({ type: 'longtask' })
          const tick = (t) => { window.frames.push(t); if (window.watching) requestAnimationFrame(tick) }
          requestAnimationFrame(tick)
        }"""
    )
    started = page.evaluate("performance.now()")
    page.get_by_label("Ask about the code").fill(QUESTION)
    page.get_by_label("Ask about the code").press("Enter")
    page.locator(".turn.assistant .actions").wait_for(timeout=120_000)
    # the stream has ended; the page may still be catching up (rendering, highlighting): count that too
    page.wait_for_function(
        "() => { const blocks = document.querySelectorAll('.turn.assistant .codeblock code')"
        "; return blocks.length > 0 && [...blocks].every((b) => b.dataset.highlighted) }",
        timeout=60_000,
    )
    page.evaluate("window.watching = false")
    result = page.evaluate(
        """(started) => {
          const frames = window.frames.filter((t) => t >= started)
          const gaps = frames.slice(1).map((t, i) => t - frames[i])
          return { longTasks: window.longTasks.filter((t) => t.start >= started), gaps,
                   elapsed: performance.now() - started,
                   words: document.querySelector('.turn.assistant .md').innerText.split(/\\s+/).length,
                   codeBlocks: document.querySelectorAll('.turn.assistant .codeblock').length,
                   highlighted: document.querySelectorAll('.turn.assistant code.hljs').length }
        }""",
        started,
    )
    context.close()
    gaps = sorted(result["gaps"]) or [0.0]
    return {
        "long_tasks": len(result["longTasks"]),
        "longest_task_ms": round(max((t["duration"] for t in result["longTasks"]), default=0.0), 1),
        "frame_gap_ms": {
            "p50": round(statistics.median(gaps), 1),
            "p95": round(percentile(gaps, 95), 1),
            "max": round(gaps[-1], 1),
        },
        "seconds": round(result["elapsed"] / 1000, 2),
        "words_shown": result["words"],
        "code_blocks": result["codeBlocks"],
        "highlighted": result["highlighted"],
    }


def loaded_files(browser: Any, url: str) -> list[str]:
    """Return the paths the page fetched from the service to show an answer with code and the code panel."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(url)
    page.locator("html[data-ready='true']").wait_for(state="attached")
    page.locator("nav.sessions li .open").first.click()  # the long answer streamed before, with its code blocks
    page.locator(".turn.assistant code.hljs").first.wait_for()
    page.locator(".turn.assistant .chip").first.click()  # the code panel, with its Pygments colours
    page.locator("aside.panel .line.cited").first.wait_for()
    paths = page.evaluate(
        "[location.pathname, ...performance.getEntriesByType('resource')"
        ".map((e) => new URL(e.name).pathname).filter((p) => p.startsWith('/static/'))]"
    )
    context.close()
    return paths


def measure(settings: Settings, chromium: str, runs: int, *, first: bool) -> dict[str, Any]:
    """Serve ``settings`` and measure the page on it: the long answer, and with ``first`` the rest too."""
    from playwright.sync_api import sync_playwright

    from serving.app import create_app

    results: dict[str, Any] = {}
    with ThreadServer(create_app(settings)) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            if first:
                results["interactive"] = interactive(browser, server.url, runs)
            results["stream"] = stream_long_answer(browser, server.url)
            if first:
                results["weight"] = weight(server.url, loaded_files(browser, server.url))
        finally:
            browser.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="page loads for time to interactive")
    parser.add_argument("--tokens", type=int, default=2000, help="tokens of the long answer")
    args = parser.parse_args()

    from ingest.pipeline import ingest_repository
    from models import PROVIDERS, clear_model_caches
    from serving.redis_server import start_redis

    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("Debian's chromium is needed: make system-deps")
    results: dict[str, Any] = {"machine": machine(), "goals": GOALS, "tokens": args.tokens}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        ingest_repository(SAMPLE, Settings(_env_file=None, data_dir=base, index_dir=base / "index"))
        redis_port = free_port()
        redis = start_redis(redis_port, base / "redis")
        try:
            for label, delay in (("paced_2ms", 0.002), ("unpaced", 0.0)):

                def factory(spec: Any, config: Any, delay: float = delay) -> LongMarkdownAnswer:
                    return LongMarkdownAnswer(delay=delay, tokens=args.tokens)

                with PROVIDERS.registered("bench", factory):
                    clear_model_caches()
                    settings = Settings(
                        _env_file=None,
                        data_dir=base,
                        index_dir=base / "index",
                        model="bench/long",
                        redis_url=f"redis://127.0.0.1:{redis_port}/0",
                        redis_prefix=f"bench-{label}",
                    )
                    measured = measure(settings, chromium, args.runs, first=label == "paced_2ms")
                    results[label] = measured.pop("stream")
                    results.update(measured)
                clear_model_caches()
        finally:
            redis.stop()
    path = write_result("page", results)
    loaded, ready = results["weight"], results["interactive"]["interactive_ms"]
    raw, files = loaded["total_bytes"]["raw"], len(loaded["files"])
    print(f"weight: {loaded['total_kb_gzip']} KB gzipped ({raw:,} B raw, {files} files)")
    print(f"interactive: p50 {ready['p50']} ms, p95 {ready['p95']} ms over {ready['n']} loads")
    for label in ("paced_2ms", "unpaced"):
        run = results[label]
        gaps = run["frame_gap_ms"]
        print(
            f"{label}: {run['long_tasks']} long tasks (longest {run['longest_task_ms']} ms), frame gap p95 "
            f"{gaps['p95']} ms, max {gaps['max']} ms, {run['seconds']} s, {run['code_blocks']} code blocks "
            f"({run['highlighted']} highlighted)"
        )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
