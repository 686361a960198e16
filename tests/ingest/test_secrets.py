"""Secrets never enter an index: by name, by content, in old indexes (a later read: tests/tools).

The sample secrets are assembled at run time from pieces, so this file itself holds none that a
scanner (Cairn's own, or a host's push protection) would flag.
"""

from __future__ import annotations

import base64
import random
from pathlib import Path

import pytest

from config import Settings
from ingest.pipeline import ingest_repository
from ingest.secrets import SecretPolicy, find_secret
from ingest.store import open_generation
from retrievers import SearchIndex
from tests.conftest import FakeEmbedder
from tools import load_tools, tool_context_for

_RNG = random.Random(20261)


def _token(length: int, alphabet: str = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789") -> str:
    """Return a random-looking token with every class of character its alphabet has, as a real credential."""
    classes = [test for test in (str.isdigit, str.isupper, str.islower) if any(map(test, alphabet))]
    while True:
        token = "".join(_RNG.choice(alphabet) for _ in range(length))
        if all(any(map(test, token)) for test in classes):
            return token


def _private_key(kind: str = "RSA") -> str:
    body = base64.b64encode(_RNG.randbytes(600)).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    dashes = "-" * 5
    return "\n".join([f"{dashes}BEGIN {kind} PRIVATE KEY{dashes}", *lines, f"{dashes}END {kind} PRIVATE KEY{dashes}"])


AWS_KEY_ID = "AK" + "IA" + _token(16, "ABCDEFGHJKLMNPQRSTUVWXYZ234567")


# ---------------------------------------------------------------- the content scan


@pytest.mark.parametrize(
    ("path", "text", "kind"),
    [
        ("src/keys.py", f'KEY = """\n{_private_key()}\n"""\n', "private key"),
        ("deploy/key.txt", _private_key("OPENSSH"), "private key"),
        ("a.md", _private_key("EC").replace("EC PRIVATE", "PGP PRIVATE").replace("KEY-", "KEY BLOCK-"), "private key"),
        # a service account file: the key inside a JSON string, lines joined by \n escapes
        (
            "sa.json",
            '{"private_key": "' + _private_key("").replace("BEGIN  ", "BEGIN ").replace("\n", "\\n") + '"}',
            "private key",
        ),
        ("config/prod.yaml", f'aws:\n  api_key: "{AWS_KEY_ID}"\n', "AWS access key id"),
        ("ci.py", f"aws_secret_access_key = '{_token(40)}'\n", "AWS secret access key"),
        ("ci.sh", f"export GH={'ghp' + '_'}{_token(36)}\n", "GitHub token"),
        ("a.py", f"t = '{'github' + '_pat_'}{_token(22)}_{_token(59)}'\n", "GitHub token"),
        ("a.py", f"t = '{'glpat' + '-'}{_token(20)}'\n", "GitLab token"),
        ("a.js", f"const t = '{'xoxb' + '-'}{_RNG.randrange(10**11, 10**12)}-{_token(24)}'\n", "Slack token"),
        ("a.rb", f"k = '{'sk_' + 'live_'}{_token(24)}'\n", "Stripe live key"),
        ("a.kt", f'val k = "{"AI" + "za"}{_token(35)}"\n', "Google API key"),
        ("a.py", f"client = OpenAI(api_key='{'sk' + '-proj-'}{_token(48)}')\n", "OpenAI or Anthropic API key"),
        ("a.py", f"k = '{'sk' + '-ant-api03-'}{_token(90)}'\n", "OpenAI or Anthropic API key"),
        ("a.txt", f"//registry.npmjs.org/:_authToken={'npm' + '_'}{_token(36)}\n", "npm token"),
        (
            "a.py",
            f"login(token='{'hf' + '_'}{_token(34, 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ')}')\n",
            "Hugging Face token",
        ),
        ("db.ini", "[db]\npassword = s3cr3t-Passw0rd\n", "secret in a config value"),
        ("app.toml", 'client_secret = "abc123def456ghi"\n', "secret in a config value"),
        ("settings.json", '{"name": "x", "auth_token": "Zq81-ffa0-92ab"}', "secret in a config value"),
        ("docker.yml", "url: postgres://app:Xk29-Lm03@db:5432/app\n", "password in a URL"),
        (".env.example", "STRIPE_KEY=abc123def456\n", "secret in an environment file"),
    ],
)
def test_the_scan_names_the_credential_it_finds(path: str, text: str, kind: str) -> None:
    assert find_secret(path, text.encode()) == kind


@pytest.mark.parametrize(
    ("path", "text"),
    [
        # code and tests say password = "..." all the time: only config-like files are held to that rule
        ("tests/test_login.py", 'password = "hunter2"\nAPI_KEY = "abc123def456"\n'),
        ("src/auth.py", 'if line.startswith("-----BEGIN RSA PRIVATE KEY-----"):\n    return parse(line)\n'),
        ("docs/aws.md", "Use the example key AKIAIOSFODNN7EXAMPLE and AKIAXXXXXXXXXXXXXXXX.\n"),
        ("a.py", "task-scheduler-and-disk-partition-manager-for-everyone = 1\nmask-" + "a" * 40 + "\n"),
        (
            "jwt_test.py",
            "TOKEN = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U'\n",
        ),
        # placeholders and references in config files
        ("config.yaml", "password: changeme\ntoken: ${API_TOKEN}\napi_key: <your-api-key>\nsecret: your-secret-here\n"),
        ("config.yaml", "password: '{{ vault_db_password }}'\nsecret_key: !secret django_key\npassword:\n"),
        (".env.example", "API_KEY=\nSECRET_KEY=changeme\nSTRIPE_KEY=sk_test_xxxxxxxxxxxx\nTOKEN=xxx\n"),
        ("app.ini", "[auth]\npassword_file = /run/secrets/db\ntoken_url = https://example.org/token\n"),
        ("docker.yml", "url: postgres://user:password@localhost/db\n"),
        # a tokenizer's config is full of *_token keys whose values are markup, not secrets
        (
            "tokenizer_config.json",
            '{"bos_token": "<s>", "pad_token": "[PAD]", "max_tokens": 512, "eos_token": {"content": "</s>"},'
            ' "tokenizer_class": "BertTokenizer", "unk_token": "<|endoftext|>", "model_max_length": 1000000}',
        ),
    ],
)
def test_samples_placeholders_and_code_are_not_secrets(path: str, text: str) -> None:
    assert find_secret(path, text.encode()) is None


def test_the_allow_patterns_let_a_path_in_by_name_and_by_content() -> None:
    policy = SecretPolicy(["tests/fixtures/", ".env.test"])
    key = _private_key().encode()
    assert policy.secret_content("tests/fixtures/server.py", key) is None
    assert policy.secret_content("src/server.py", key) == "private key"
    assert not policy.secret_name(".env.test") and policy.secret_name(".env.prod")
    assert not policy.secret_name("tests/fixtures/server.pem") and policy.secret_name("certs/server.pem")


# ---------------------------------------------------------------- ingest


@pytest.fixture
def leaky_repo(tmp_path: Path) -> Path:
    """A repository with four secrets among ordinary code (one of them a test with a sample password)."""
    repo = tmp_path / "leaky"
    files = {
        ".env": "SECRET=abc123def\n",
        "config/prod.yaml": f'service:\n  name: billing\n  api_key: "{AWS_KEY_ID}"\n',
        "id_rsa": _private_key() + "\n",
        "src/deploy_keys.py": (
            f'DEPLOY_KEY = """{_private_key()}"""\n\n\ndef load_deploy_key():\n    return DEPLOY_KEY\n'
        ),
        "src/app.py": "def checkout_total(cart):\n    return sum(item.price for item in cart)\n",
        "tests/test_login.py": 'def test_login():\n    password = "hunter2"\n    assert login("ann", password)\n',
    }
    for rel, text in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    return repo


SECRET_PATHS = {".env", "config/prod.yaml", "id_rsa", "src/deploy_keys.py"}
SECRET_TEXTS = ("abc123def", AWS_KEY_ID, "PRIVATE KEY")


def _ingest(repo: Path, settings: Settings):
    return ingest_repository(repo, settings, embedder_factory=FakeEmbedder)


def _index(settings: Settings) -> SearchIndex:
    return SearchIndex(open_generation(settings.resolved_index_dir), FakeEmbedder())


def _assert_no_secret_indexed(index: SearchIndex) -> None:
    files = set(index.generation.manifest.files)
    assert not files & SECRET_PATHS
    texts = [index.chunks.text(row) for row in range(len(index.chunks))]
    for secret in SECRET_TEXTS:
        assert not any(secret in text for text in texts), secret
        assert not any(secret in hit.chunk.text for hit in index.keyword(secret, 20)), secret
    assert index.generation.symbols().definitions("load_deploy_key") == []


def test_files_that_look_like_secrets_are_not_indexed_and_are_counted(leaky_repo: Path, settings: Settings) -> None:
    result = _ingest(leaky_repo, settings)

    index = _index(settings)
    assert set(index.generation.manifest.files) == {"src/app.py", "tests/test_login.py"}
    _assert_no_secret_indexed(index)
    assert [hit.chunk.path for hit in index.keyword("hunter2", 5)] == ["tests/test_login.py"]
    assert result.skipped["secret"] == 4
    assert result.secrets == {
        ".env": "credentials file",
        "config/prod.yaml": "AWS access key id",
        "id_rsa": "credentials file",
        "src/deploy_keys.py": "private key",
    }
    assert index.generation.manifest.counts.skipped["secret"] == 4
    tools = {t.name: t for t in load_tools(tool_context_for(index))}
    assert "not an indexed file" in tools["read_file"].invoke({"path": "src/deploy_keys.py"})
    assert tools["grep"].invoke({"pattern": "PRIVATE KEY"}) == "no matches"


def test_the_allow_setting_lets_a_flagged_file_back_in(leaky_repo: Path, settings: Settings) -> None:
    settings = settings.model_copy(update={"secrets_allow": ["src/deploy_keys.py"]})
    result = _ingest(leaky_repo, settings)

    assert "src/deploy_keys.py" in _index(settings).generation.manifest.files
    assert result.skipped["secret"] == 3 and "src/deploy_keys.py" not in result.secrets


def test_the_allow_setting_reads_a_comma_separated_list(monkeypatch) -> None:
    monkeypatch.setenv("CAIRN_SECRETS_ALLOW", "tests/fixtures/, .env.test")
    assert Settings(_env_file=None).secrets_allow == ["tests/fixtures/", ".env.test"]


def test_reingesting_an_index_built_before_the_scan_drops_the_secrets(
    leaky_repo: Path, settings: Settings, monkeypatch
) -> None:
    with monkeypatch.context() as before_the_scan:
        before_the_scan.setattr(SecretPolicy, "secret_name", lambda self, rel_path, is_dir=False: False)
        before_the_scan.setattr(SecretPolicy, "secret_content", lambda self, rel_path, data: None)
        _ingest(leaky_repo, settings)
        old = _index(settings)
        assert set(old.generation.manifest.files) >= SECRET_PATHS
        assert old.generation.symbols().definitions("load_deploy_key")

    # nothing changed on disk: the secrets were "unchanged" files, reusable by their size and mtime
    result = _ingest(leaky_repo, settings)

    assert result.changed_anything and result.files_deleted == 4 and result.files_unchanged == 2
    assert result.chunks_embedded == 0  # the files that stay keep their vectors
    _assert_no_secret_indexed(_index(settings))
    # and no older generation kept for slow readers holds them either
    generations = list(settings.resolved_index_dir.glob("gen-*"))
    assert generations == [_index(settings).generation.path]


def test_a_secret_written_between_the_walk_and_the_read_is_still_skipped(
    leaky_repo: Path, settings: Settings, monkeypatch
) -> None:
    from ingest import pipeline

    walk = pipeline.walk_repository

    def walk_then_write(*args, **kwargs):
        report = walk(*args, **kwargs)
        (leaky_repo / "src/app.py").write_text(f'KEY = """{_private_key()}"""\n')
        return report

    monkeypatch.setattr(pipeline, "walk_repository", walk_then_write)
    result = _ingest(leaky_repo, settings)

    assert result.secrets["src/app.py"] == "private key" and result.skipped["secret"] == 5
    assert "src/app.py" not in _index(settings).generation.manifest.files
