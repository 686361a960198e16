"""Cairn's own web page: a no-build static page (``static/``), the code view it shows, its API's schemas."""

from pathlib import Path

#: The page and its assets, served at / and /static/ without a key (they hold no secrets).
STATIC_DIR = Path(__file__).parent / "static"
