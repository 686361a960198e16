"""Vendor the page's third-party scripts and styles into ``static/vendor/``, pinned, with their licences.

Run ``make vendor`` (``python -m serving.web.vendor``) after changing a version below: each package
is fetched with ``npm pack NAME@VERSION`` (the npm registry's tarball, checked by npm against its
integrity hash), the files the page uses are copied out with the package's licence, source-map
comments are dropped (no map is shipped, and a browser would ask for it), and ``VERSIONS.json``
records what came from where. The output is committed: serving the page needs no npm, no build and
no network. Pygments' token colours (the code panel is highlighted on the server) are written to
``vendor/pygments/code.css`` from the installed Pygments at the same time.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pygments import __version__ as pygments_version
from pygments.formatters import HtmlFormatter

from serving.web import STATIC_DIR

VENDOR_DIR = STATIC_DIR / "vendor"
#: highlight.js grammars vendored (the languages Cairn chunks, and what answers quote most); the page
#: loads highlight.js' core and each grammar only when a code block in that language shows.
HIGHLIGHT_LANGUAGES = (
    "python", "javascript", "typescript", "go", "rust", "java", "kotlin", "scala", "c", "cpp", "csharp", "ruby",
    "php", "swift", "lua", "bash", "shell", "json", "yaml", "markdown", "xml", "css", "sql", "ini", "diff",
    "plaintext", "dockerfile", "makefile",
)  # fmt: skip
#: Pygments styles of the code panel, light and dark (the page follows the system's scheme); chosen
#: because every token colour of theirs has a contrast of 4.5:1 or more (WCAG AA) on the panel, cited
#: lines included (Pygments' own default has 1.9:1 for some).
PYGMENTS_STYLES = ("xcode", "github-dark")
CODE_SCOPE = ".code-view"
_SOURCE_MAP = re.compile(r"\n?//# sourceMappingURL=\S+\s*$")


@dataclass(frozen=True)
class Package:
    """An npm package the page uses: the files taken from it and where they go under ``vendor/``."""

    name: str
    version: str
    folder: str
    files: dict[str, str]
    licences: tuple[str, ...] = ("LICENSE",)
    note: str = ""


PACKAGES = (
    Package("marked", "18.2.1", "marked", {"lib/marked.esm.js": "marked.esm.js"}),
    # the UMD build: minified, and it sets globalThis.DOMPurify when imported as a module
    Package("dompurify", "3.4.18", "dompurify", {"dist/purify.min.js": "purify.min.js"}, ("LICENSE", "LICENSE-MPL")),
    Package(
        "@highlightjs/cdn-assets",
        "11.12.0",
        "highlight.js",
        {
            "es/core.min.js": "core.min.js",
            **{f"es/languages/{name}.min.js": f"languages/{name}.min.js" for name in HIGHLIGHT_LANGUAGES},
            "styles/github.min.css": "github.min.css",
            "styles/github-dark.min.css": "github-dark.min.css",
        },
    ),
    Package(
        "htm",
        "3.1.1",
        "htm",
        {"preact/standalone.module.js": "preact-standalone.module.js"},
        note="htm with Preact and its hooks in one module",
    ),
    # Preact's code ships inside htm's standalone build above; its licence comes from here.
    Package("preact", "10.27.2", "preact", {}, note="licence of the Preact bundled in htm's standalone build"),
)


def npm_pack(spec: str, into: Path) -> Path:
    """Download ``spec`` (``name@version``) as npm's tarball into ``into``; return its path."""
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm is not installed: it is needed only to update the vendored files (apt-get install npm)")
    done = subprocess.run(
        [npm, "pack", spec, "--pack-destination", str(into), "--json", "--silent"],
        check=True,
        capture_output=True,
        text=True,
    )
    return into / json.loads(done.stdout)[0]["filename"]


def extract(package: Package, tarball: Path, target: Path) -> dict[str, str]:
    """Copy the package's files and licences into ``target``; return {file: sha256}."""
    target.mkdir(parents=True, exist_ok=True)
    written = {}
    with tarfile.open(tarball) as archive:
        wanted = {**package.files, **{name: name for name in package.licences}}
        for inside, name in wanted.items():
            member = archive.extractfile(f"package/{inside}")
            if member is None:
                raise SystemExit(f"{package.name}@{package.version} has no file {inside}")
            data = member.read()
            if name.endswith((".js", ".css")):
                data = _SOURCE_MAP.sub("", data.decode("utf-8")).rstrip("\n").encode("utf-8") + b"\n"
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes(data)
            written[name] = hashlib.sha256(data).hexdigest()
    return written


def pygments_css() -> str:
    """Return the code panel's token colours: Pygments' light style, and its dark one for dark systems."""
    light, dark = (
        [
            rule
            for rule in HtmlFormatter(style=style).get_style_defs(CODE_SCOPE).splitlines()
            if rule.startswith(f"{CODE_SCOPE} .") and not rule.startswith(f"{CODE_SCOPE} .hll")
        ]
        for style in PYGMENTS_STYLES
    )
    header = f"/* Token colours of Pygments {pygments_version} (BSD-2-Clause), styles {', '.join(PYGMENTS_STYLES)} */"
    dark_block = "\n".join(f"  {rule}" for rule in dark)
    return f"{header}\n" + "\n".join(light) + f"\n@media (prefers-color-scheme: dark) {{\n{dark_block}\n}}\n"


def vendor(target: Path = VENDOR_DIR) -> None:
    """Replace ``target`` with the pinned packages' files, their licences and Pygments' colours."""
    staging = target.with_name(target.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    record = {}
    with tempfile.TemporaryDirectory() as tmp:
        for package in PACKAGES:
            spec = f"{package.name}@{package.version}"
            print(f"  {spec}", file=sys.stderr)
            files = extract(package, npm_pack(spec, Path(tmp)), staging / package.folder)
            record[package.name] = {"version": package.version, "folder": package.folder, "files": files}
            if package.note:
                record[package.name]["note"] = package.note
    (staging / "pygments").mkdir()
    (staging / "pygments" / "code.css").write_text(pygments_css(), encoding="utf-8")
    record["pygments"] = {"version": pygments_version, "folder": "pygments", "files": {"code.css": "generated"}}
    (staging / "VERSIONS.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


if __name__ == "__main__":
    vendor()
    print(f"vendored into {VENDOR_DIR}", file=sys.stderr)
