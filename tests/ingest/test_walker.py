from __future__ import annotations

import os
from pathlib import Path

import pytest

from cairn.errors import RepositoryNotFound
from ingest.walker import walk_repository


def _write(root: Path, rel: str, data: str | bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data)


def _paths(root: Path, **kwargs) -> list[str]:
    return [f.path for f in walk_repository(root, max_file_bytes=kwargs.pop("max_file_bytes", 10_000), **kwargs).files]


def test_gitignore_rules_apply_at_root_and_below_their_own_folder(tmp_path: Path) -> None:
    _write(tmp_path, ".gitignore", "*.log\nbuild/\n")
    _write(tmp_path, "app.py", "x = 1\n")
    _write(tmp_path, "debug.log", "noise\n")
    _write(tmp_path, "build/gen.py", "x = 2\n")
    _write(tmp_path, "pkg/.gitignore", "secret.py\n")
    _write(tmp_path, "pkg/secret.py", "x = 3\n")
    _write(tmp_path, "pkg/public.py", "x = 4\n")
    _write(tmp_path, "other/secret.py", "x = 5\n")  # pkg's rule must not reach here

    assert _paths(tmp_path) == [".gitignore", "app.py", "other/secret.py", "pkg/.gitignore", "pkg/public.py"]
    report = walk_repository(tmp_path, max_file_bytes=10_000)
    assert report.skipped == {"gitignored": 2, "excluded": 1}  # build/ is also a built-in exclude


def test_vendored_folders_and_configured_excludes_are_skipped(tmp_path: Path) -> None:
    _write(tmp_path, "node_modules/lib/index.js", "x\n")
    _write(tmp_path, ".git/config", "[core]\n")
    _write(tmp_path, "src/main.py", "x = 1\n")
    _write(tmp_path, "src/schema_pb2.py", "x = 1\n")
    _write(tmp_path, "gen/out.py", "x = 1\n")

    assert _paths(tmp_path, exclude=["gen/"]) == ["src/main.py"]


def test_binary_large_and_empty_files_are_skipped_with_reasons(tmp_path: Path) -> None:
    _write(tmp_path, "ok.py", "print('hi')\n")
    _write(tmp_path, "image.png", b"\x89PNG\r\n")
    _write(tmp_path, "blob.dat2", b"abc\x00def")
    _write(tmp_path, "huge.py", "x = 1\n" * 5000)
    _write(tmp_path, "empty.py", "")

    report = walk_repository(tmp_path, max_file_bytes=10_000)
    assert [f.path for f in report.files] == ["ok.py"]
    assert report.skipped == {"binary": 2, "too large": 1, "empty": 1}
    assert report.examples["too large"] == ["huge.py"]


def test_symlinks_leaving_the_repository_are_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("password\n")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "a.py").write_text("x = 1\n")
    os.symlink(outside / "secret.txt", repo / "leak.txt")
    os.symlink(outside, repo / "linked_dir")
    os.symlink(repo / "a.py", repo / "alias.py")  # inside the repository: fine

    report = walk_repository(repo, max_file_bytes=10_000)
    assert [f.path for f in report.files] == ["a.py", "alias.py"]
    assert report.skipped["symlink leaving the repository"] == 1
    assert report.skipped["symlinked folder"] == 1


def test_missing_path_and_file_path_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(RepositoryNotFound, match="No such repository"):
        walk_repository(tmp_path / "nope", max_file_bytes=100)
    (tmp_path / "f.py").write_text("x\n")
    with pytest.raises(RepositoryNotFound, match="Not a folder"):
        walk_repository(tmp_path / "f.py", max_file_bytes=100)


def test_the_watchers_ignore_matcher_agrees_with_the_walk(tmp_path: Path) -> None:
    from ingest.walker import IgnoreMatcher

    _write(tmp_path, ".gitignore", "*.log\nout/\n")
    _write(tmp_path, ".git/info/exclude", "local-notes.md\n")
    files = {
        "app.py": "x = 1\n", "debug.log": "noise\n", "out/gen.py": "x = 2\n", "out/deep/more.py": "x = 2\n",
        "pkg/.gitignore": "secret.py\ncache/\n", "pkg/secret.py": "x = 3\n", "pkg/public.py": "x = 4\n",
        "pkg/cache/a.py": "x = 5\n", "other/secret.py": "x = 5\n", "local-notes.md": "# mine\n",
        "node_modules/lib/index.js": "x\n", "gen/made.py": "x = 6\n", "src/api_pb2.py": "x = 7\n",
    }  # fmt: skip
    for rel, text in files.items():
        _write(tmp_path, rel, text)

    walked = set(_paths(tmp_path, exclude=["gen/"])) - {".gitignore"}
    matcher = IgnoreMatcher(tmp_path, exclude=["gen/"])
    assert {rel for rel in files if not matcher.ignored(rel)} == walked
    assert matcher.ignored("pkg/cache", is_dir=True) and not matcher.ignored("pkg", is_dir=True)

    _write(tmp_path, "pkg/.gitignore", "cache/\n")  # a rule removed: forget() re-reads the files
    assert matcher.ignored("pkg/secret.py")
    matcher.forget()
    assert not matcher.ignored("pkg/secret.py")


def test_files_that_hold_credentials_by_name_are_skipped_as_secrets(tmp_path: Path) -> None:
    _write(tmp_path, ".gitignore", ".env\n")
    credentials = {
        ".env": "SECRET=abc123def\n",  # gitignored too: still counted as a secret
        ".env.local": "X=1\n",
        "deploy/prod.env": "X=1\n",
        "certs/server.pem": "x\n",
        "id_ed25519.pub": "ssh-ed25519 AAAA\n",
        "infra/terraform.tfstate": "{}\n",
        ".docker/config.json": "{}\n",
        "app/secrets.yml": "x: 1\n",
        ".npmrc": "registry=x\n",
    }
    for rel, text in {**credentials, ".ssh/config": "Host x\n", ".aws/credentials": "[default]\n"}.items():
        _write(tmp_path, rel, text)
    kept = {".env.example": "API_KEY=\n", "src/secrets.py": "import hmac\n", "src/app.py": "x = 1\n"}
    for rel, text in kept.items():
        _write(tmp_path, rel, text)

    report = walk_repository(tmp_path, max_file_bytes=10_000)

    assert {f.path for f in report.files} == {".gitignore", *kept}
    assert report.skipped == {"secret": len(credentials) + 2}
    assert report.secrets[".ssh/"] == report.secrets[".aws/"] == "credentials folder"
    assert report.secrets["certs/server.pem"] == "credentials file"


def test_allowed_paths_are_walked_and_the_ignore_matcher_agrees(tmp_path: Path) -> None:
    from ingest.walker import IgnoreMatcher

    for rel in (".env", ".env.test", "certs/test.pem", "src/app.py"):
        _write(tmp_path, rel, "x = 1\n")

    allow = [".env.test", "certs/"]
    assert _paths(tmp_path, secrets_allow=allow) == [".env.test", "certs/test.pem", "src/app.py"]
    matcher = IgnoreMatcher(tmp_path, secrets_allow=allow)
    assert matcher.ignored(".env") and not matcher.ignored(".env.test") and not matcher.ignored("certs/test.pem")
    assert IgnoreMatcher(tmp_path).ignored("certs/test.pem")


def test_a_latin1_source_file_is_text_and_decodes_without_replacement_characters(tmp_path: Path) -> None:
    from ingest.walker import decode_text

    legacy = "# café, naïve, 100 °C\ndef crème():\n    return '€'\n"
    _write(tmp_path, "legacy.py", legacy.encode("cp1252"))
    _write(tmp_path, "controls.dat2", b"\xff\xfe" + bytes(range(1, 32)) * 50)  # no NUL, not UTF-8, not text

    report = walk_repository(tmp_path, max_file_bytes=10_000)

    assert [f.path for f in report.files] == ["legacy.py"] and report.skipped == {"binary": 1}
    assert decode_text((tmp_path / "legacy.py").read_bytes()) == legacy
    assert decode_text("€ and é".encode() + b" \xe9") == "€ and é \ufffd"  # UTF-8 but for one stray byte


def test_one_line_minified_files_are_skipped_but_a_long_line_among_short_ones_is_not(tmp_path: Path) -> None:
    _write(tmp_path, "dist-like/bundle.js", "var a=1;" * 25_000)  # one 200,000-character line
    _write(tmp_path, "data/points.json", "[" + ",".join(str(i) for i in range(3000)) + "]\n")
    _write(tmp_path, "src/table.py", "\n".join(["x = 1"] * 60 + ["BLOB = '" + "ab" * 2500 + "'"]) + "\n")
    cell = {"cell_type": "code", "source": ["print(1)\n"], "outputs": [{"data": {"image/png": "iVBO" * 5000}}]}
    _write(tmp_path, "nb/plot.ipynb", __import__("json").dumps({"cells": [cell]}))

    report = walk_repository(tmp_path, max_file_bytes=300_000)

    assert [f.path for f in report.files] == ["nb/plot.ipynb", "src/table.py"]
    assert report.skipped == {"minified": 2}
