"""Tell files that hold secrets (keys, tokens, passwords) from code, so that none ever enters an index.

Two checks, both made by the walk (``ingest/walker.py``) on every file it would otherwise keep:

- **By name** (``SECRET_FILES``, gitignore-style): files whose purpose is to hold credentials, such as
  ``.env``, private keys and keystores, credential stores (``.netrc``, ``.aws/``, ``.ssh/``,
  ``*.tfstate``). They are skipped without being read. ``.env.example``, ``.env.sample`` and
  ``.env.template`` are the exception: by convention they list variables without values, so they are
  read and scanned like any other file.
- **By content** (``find_secret``): named, high-confidence patterns of credentials that have a fixed
  shape (a private key block, provider tokens with their prefixes), searched in every file; and, in
  config-like files only (``.env``-like, ``.ini``, ``.cfg``, ``.conf``, ``.properties``, ``.toml``,
  ``.yaml``, ``.json``, ``.tfvars``), a ``password``/``secret``/``token``/``api_key`` key with a literal
  value that is not a placeholder. Source code is left out of that last rule on purpose:
  ``password = "hunter2"`` in a test or an example is common, and a real credential pasted into code
  with a provider's shape is caught by the patterns anyway. JSON Web Tokens are not searched for:
  tests and docs are full of sample ones, and a live one in a config file is caught by the key rule.

A flagged file is skipped with the reason "secret": it is not embedded, not in the keyword index, not
in the symbol graph, and the tools refuse to read it (``tools/builtin.py`` checks again, when the
file changed after ingest). ``CAIRN_SECRETS_ALLOW`` takes gitignore-style patterns of paths let in
despite either check, for test fixtures and the like (``SecretPolicy``).

Files are scanned as bytes, without decoding, and every pattern starts with a literal (``ghp_``,
``AKIA``), which ``re`` looks for at the speed of a byte search before it tries anything else; one
alternation of all the prefixes would be 3x slower than all of them one by one, since ``re`` then
tries every position. Measured on the transformers package (2,950 files, 54 MB, 2 cores): the scan
takes 0.58 s (5,100 files/s), and it flags none of them; on all 37,530 text files of Cairn's
virtual environment, it flags none either (the name rule skips 3 bundled CA ``.pem`` files).
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pathspec

#: Files and folders that hold credentials by their very name (gitignore-style, at any depth).
SECRET_FILES: tuple[str, ...] = (
    # environment files; the three conventional templates are scanned instead (a negation re-includes them)
    ".env",
    ".env.*",
    "*.env",
    "!.env.example",
    "!.env.sample",
    "!.env.template",
    # private keys, key pairs (public halves too: simpler and safe), keystores, password databases
    "*.pem",
    "*.key",
    "*.ppk",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    "*.p12",
    "*.pfx",
    "*.jks",
    "*.keystore",
    "*.kdbx",
    # credential stores of tools
    ".netrc",
    "_netrc",
    ".npmrc",
    ".pypirc",
    ".pgpass",
    ".git-credentials",
    ".htpasswd",
    ".dockercfg",
    ".s3cfg",
    "**/.docker/config.json",
    ".aws/",
    ".ssh/",
    ".gnupg/",
    ".kube/",
    "credentials.json",
    "client_secret*.json",
    "*.tfstate",
    "*.tfstate.*",
    "secrets.yml",
    "secrets.yaml",
    "secrets.json",
    "secrets.toml",
)

#: Suffixes of the config-like files in which a secret-named key with a literal value counts as a secret.
CONFIG_SUFFIXES = frozenset(
    {".env", ".ini", ".cfg", ".conf", ".properties", ".toml", ".yaml", ".yml", ".json", ".tfvars"}
)


#: Bytes a token is made of: a match preceded by one is the tail of a longer word (``disk-``), not a token.
_WORD_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


@dataclass(frozen=True, slots=True)
class SecretPattern:
    """A kind of credential and how to find it.

    ``regex`` starts with the credential's literal prefix, which ``re`` searches for before it tries
    anything else: a whole file is ruled out at the speed of a byte search. ``anchors``, when given,
    are searched first instead (for a pattern without such a prefix). ``check`` judges the ``secret``
    group: a placeholder or a documentation sample is not a secret. ``word_start``: the match must
    not continue a longer word; ``before``: what must come right before it (searched up to the match).
    """

    name: str
    regex: re.Pattern[bytes]
    check: Callable[[bytes], bool]
    anchors: tuple[bytes, ...] = ()
    word_start: bool = False
    before: re.Pattern[bytes] | None = None

    def found_in(self, data: bytes) -> bool:
        """Return True when ``data`` holds a credential of this kind."""
        if self.anchors and not any(anchor in data for anchor in self.anchors):
            return False
        for match in self.regex.finditer(data):
            start = match.start()
            if self.word_start and start > 0 and data[start - 1] in _WORD_BYTES:
                continue
            if self.before is not None and not self.before.search(data, max(0, start - 32), start):
                continue
            if self.check(match["secret"]):
                return True
        return False


# EXAMPLE is how AWS's documentation spells its sample keys.
_SAMPLE = re.compile(rb"(.)\1{3}|EXAMPLE|example")
_UPPER = re.compile(rb"[A-Z]")
_LOWER = re.compile(rb"[a-z]")
_DIGIT = re.compile(rb"[0-9]")


def _filler(token: bytes) -> bool:
    """Return True when a token has what hand-written samples have: XXXX, 0000, ABCD, 1234, EXAMPLE.

    Four equal or consecutive characters in a row hardly ever occur in a random token of these
    lengths (about 1 in 2,500 for a 16-character AWS key id), and in nearly every made-up one.
    """
    if _SAMPLE.search(token):
        return True
    run = 1
    for previous, current in itertools.pairwise(token):
        run = run + 1 if current == previous + 1 else 1
        if run == 4:
            return True
    return False


def _random(token: bytes) -> bool:
    """Return True when a token looks randomly generated: no filler, and digits and letters of both cases."""
    return (
        not _filler(token)
        and _UPPER.search(token) is not None
        and _LOWER.search(token) is not None
        and _DIGIT.search(token) is not None
    )


def _not_filler(token: bytes) -> bool:
    return not _filler(token)


def _mixed_case(token: bytes) -> bool:
    return not _filler(token) and _UPPER.search(token) is not None and _LOWER.search(token) is not None


# Values of a config key that are not secrets: references to a variable or a template, markup, file
# paths and URLs, and what people write where a value is to be filled in. Matched on lowercased bytes.
_PLACEHOLDER = re.compile(
    rb"""(?x) ^(?: [$<\[{(%!*/~.@]   # ${VAR} $VAR <your-key> [PAD] {{ x }} %(x)s !secret *** /path ./path
        | [a-z][a-z0-9+.-]*://        # a URL (credentials inside one are a pattern of their own)
        | (?:env|vault|file|op|arn|ssm|sm|secret|secrets|ref|aws|gcp|azure):   # references to a secret store
        | (?:your|my|some|the|test|fake)[_-]   # your-api-key, test-token
        | none$ | null$ | nil$ | true$ | false$ | string$ | required$ | optional$ ) """
    rb"""| changeme | change[_-]me | replace[_-]?me | example | sample | placeholder | dummy | redacted
        | xxx | \.\.\. | \$\{ | \{\{ """
)
_LETTER = re.compile(rb"[a-z]")
_DIGIT_OR_SYMBOL = re.compile(rb"""[0-9!#$%&*+/=?@^_~.-]""")


def _config_value(value: bytes) -> bool:
    """Return True when a (lowercased) config value looks like a real secret rather than a placeholder."""
    value = value.strip(b"\"'")
    return (
        8 <= len(value) <= 200
        and not any(byte <= 0x20 or byte >= 0x7F for byte in value)  # one printable ASCII word
        and not _PLACEHOLDER.search(value)
        and not _SAMPLE.search(value)  # not _filler: people do choose passwords with 1234 in them
        and _LETTER.search(value) is not None
        and _DIGIT_OR_SYMBOL.search(value) is not None
    )


_VALUE = rb"""(?P<secret>"[^"\n]{1,200}"|'[^'\n]{1,200}'|[^\s"'#;,}\]]{1,200})"""

#: Found in any file: credentials with a shape of their own.
PATTERNS: tuple[SecretPattern, ...] = (
    SecretPattern(
        "private key",
        # The header alone is not enough (code that parses keys names it); a base64 body must follow,
        # on the next lines or after \n escapes and string quotes (a key inside JSON or a literal).
        re.compile(
            rb"-----BEGIN[ A-Z0-9]{0,24}PRIVATE KEY(?: BLOCK)?-----[\s\S]{0,300}?"
            rb"(?<![A-Za-z0-9+/])(?P<secret>[A-Za-z0-9+/]{48,})"
        ),
        _random,
        anchors=(b"PRIVATE KEY",),
    ),
    SecretPattern(
        "AWS access key id",
        re.compile(rb"(?P<secret>(?:AKIA|ASIA)[A-Z0-9]{16})(?![A-Za-z0-9])"),
        _not_filler,
        word_start=True,
    ),
    SecretPattern(
        "AWS secret access key",
        re.compile(rb"(?i)secret_?access_?key[\"']?\s*[:=]\s*[\"']?(?P<secret>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"),
        _random,
        anchors=(b"ecret_access_key", b"ECRET_ACCESS_KEY", b"ecretAccessKey"),
    ),
    SecretPattern(
        "GitHub token",
        re.compile(rb"(?P<secret>gh[pousr]_[A-Za-z0-9]{36})(?![A-Za-z0-9_])"),
        _random,
        word_start=True,
    ),
    SecretPattern(
        "GitHub token",
        re.compile(rb"(?P<secret>github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59})(?![A-Za-z0-9_])"),
        _random,
        word_start=True,
    ),
    SecretPattern(
        "GitLab token",
        re.compile(rb"(?P<secret>glpat-[A-Za-z0-9_-]{20,})(?![A-Za-z0-9_-])"),
        _random,
        word_start=True,
    ),
    SecretPattern(
        "Slack token",
        re.compile(rb"(?P<secret>xox[baprse]-[0-9]{6,}-[0-9A-Za-z-]{10,})"),
        _not_filler,
        word_start=True,
    ),
    SecretPattern(
        "Slack webhook",
        re.compile(rb"hooks\.slack\.com/services/T[A-Z0-9]{8,}/B[A-Z0-9]{8,}/(?P<secret>[A-Za-z0-9]{24})"),
        _mixed_case,
    ),
    *(
        SecretPattern(
            "Stripe live key",
            re.compile(rb"(?P<secret>" + prefix + rb"_live_[A-Za-z0-9]{24,})"),
            _random,
            word_start=True,
        )
        for prefix in (rb"sk", rb"rk")  # secret and restricted keys; [sr]k would not start with a literal
    ),
    SecretPattern(
        "Google API key",
        re.compile(rb"(?P<secret>AIza[0-9A-Za-z_-]{35})(?![A-Za-z0-9_-])"),
        _random,
        word_start=True,
    ),
    SecretPattern(
        "OpenAI or Anthropic API key",
        re.compile(rb"sk-(?:ant-[a-z0-9]+-|proj-|svcacct-|admin-)?(?P<secret>[A-Za-z0-9_-]{32,})"),
        _random,
        word_start=True,
    ),
    SecretPattern(
        "npm token",
        re.compile(rb"(?P<secret>npm_[A-Za-z0-9]{36})(?![A-Za-z0-9_])"),
        _random,
        word_start=True,
    ),
    SecretPattern(
        "Hugging Face token",
        re.compile(rb"(?P<secret>hf_[A-Za-z]{34})(?![A-Za-z0-9_])"),
        _mixed_case,
        word_start=True,
    ),
)

# A key, then = or :, then a literal value (quoted or not).
_ASSIGNED = rb"[\"']?[ \t]*[:=][ \t]*" + _VALUE

#: Found in config-like files only, searched in their lowercased bytes. A key counts when it ends in
#: one of these words (one pattern each: a literal start is what makes a search fast).
CONFIG_PATTERNS: tuple[SecretPattern, ...] = (
    SecretPattern(
        "password in a URL",
        re.compile(rb"://[^/\s:@\"']+:(?P<secret>[^/\s:@\"']+)@"),
        _config_value,
    ),
    *(
        SecretPattern("secret in a config value", re.compile(word + _ASSIGNED), _config_value)
        for word in (rb"secret", rb"token", rb"passw(?:or)?d", rb"pwd", rb"credentials?")
    ),
    SecretPattern(
        "secret in a config value",
        re.compile(rb"key" + _ASSIGNED),
        _config_value,
        # api_key, secret-key, accesskey; a bare "key" is any YAML mapping's
        before=re.compile(rb"(?:api|access|secret|private|signing|encryption|master|client|auth|app)[_.-]?\Z"),
    ),
)

# In .env-like files every *KEY variable counts (STRIPE_KEY, APP_KEY): there, that is what they are.
_ENV_KEY = SecretPattern(
    "secret in an environment file",
    re.compile(rb"key[ \t]*=[ \t]*" + _VALUE),
    _config_value,
)


def is_env_file(path: str) -> bool:
    """Return True for an environment file: ``.env``, ``.env.local``, ``.envrc``, ``prod.env``."""
    name = PurePosixPath(path).name
    return name.startswith(".env") or name.endswith(".env")


def is_config_file(path: str) -> bool:
    """Return True for the config-like files in which secret-named keys with literal values are looked for."""
    return is_env_file(path) or PurePosixPath(path).suffix.lower() in CONFIG_SUFFIXES


def find_secret(path: str, data: bytes) -> str | None:
    """Return the kind of the first credential found in a file's bytes, or None when it holds none."""
    for pattern in PATTERNS:
        if pattern.found_in(data):
            return pattern.name
    if is_config_file(path):
        lowered = data.lower()
        for pattern in (*CONFIG_PATTERNS, _ENV_KEY) if is_env_file(path) else CONFIG_PATTERNS:
            if pattern.found_in(lowered):
                return pattern.name
    return None


class SecretPolicy:
    """Which paths look like secrets, by name or by content, and which the user let in anyway."""

    def __init__(self, allow: Iterable[str] = ()) -> None:
        self._names = pathspec.GitIgnoreSpec.from_lines(SECRET_FILES)
        allow = [line for line in allow if line.strip()]
        self._allow = pathspec.GitIgnoreSpec.from_lines(allow) if allow else None
        self.allow = tuple(allow)

    @functools.cached_property
    def fingerprint(self) -> str:
        """Return a digest of the content checks and the allow list: equal, a file judged once is judged alike.

        It covers the source of this module (every pattern, threshold and check) and of the walk's other
        content rules (``ingest/walker.py``: binary, minified), and the allow list: any change to either
        makes the next walk read every file again.
        """
        import hashlib

        from ingest import walker

        digest = hashlib.sha256(Path(__file__).read_bytes())
        digest.update(Path(walker.__file__).read_bytes())
        digest.update(repr(self.allow).encode())
        return digest.hexdigest()[:16]

    def allowed(self, rel_path: str, *, is_dir: bool = False) -> bool:
        """Return True when CAIRN_SECRETS_ALLOW lets this repository-relative path in."""
        return self._allow is not None and self._allow.match_file(rel_path + "/" if is_dir else rel_path)

    def secret_name(self, rel_path: str, *, is_dir: bool = False) -> bool:
        """Return True when the path's name says it holds credentials (and it is not allowed)."""
        probe = rel_path + "/" if is_dir else rel_path
        return self._names.match_file(probe) and not self.allowed(rel_path, is_dir=is_dir)

    def secret_content(self, rel_path: str, data: bytes) -> str | None:
        """Return the kind of credential the file's bytes hold, or None (also for allowed paths)."""
        if self.allowed(rel_path):
            return None
        return find_secret(rel_path, data)
