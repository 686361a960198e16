"""Helpers for tests with several repositories under one data folder (ingested with the fake embedder)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from config import Settings
from ingest.pipeline import ingest_repository
from ingest.repos import Repositories, default_name
from tests.conftest import FakeEmbedder

BILLING_FILES = {
    "billing/invoice.py": (
        "def round_invoice_total(amount: float) -> float:\n"
        '    """Round an invoice total to whole cents, half up."""\n'
        "    return int(amount * 100 + 0.5) / 100\n"
        "\n\n"
        "class InvoiceLedger:\n"
        '    """Keeps every invoice issued, by number."""\n'
        "\n"
        "    def __init__(self) -> None:\n"
        "        self.invoices: dict[int, float] = {}\n"
        "\n"
        "    def issue(self, number: int, amount: float) -> None:\n"
        "        self.invoices[number] = round_invoice_total(amount)\n"
    ),
    "README.md": "# Billing\n\nInvoices are rounded half up to whole cents by round_invoice_total.\n",
}


def write_billing_repo(root: Path) -> Path:
    """Write a second small repository (invoices), unlike the sample one; return its folder."""
    for rel, text in BILLING_FILES.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return root


def repo_settings(data_dir: Path, **values: Any) -> Settings:
    """Settings of a data folder with repositories (no index folder, no .env)."""
    return Settings(_env_file=None, data_dir=data_dir, **values)


def ingest_as(data_dir: Path, source: Path, name: str | None = None, **values: Any) -> Path:
    """Ingest ``source`` as a named repository of ``data_dir`` with the fake embedder; return its index folder."""
    settings = repo_settings(data_dir, **values)
    claim = Repositories.of(settings).claim(name or default_name(source), source)
    ingest_repository(source, settings.model_copy(update={"index_dir": claim.index_dir}), embedder_factory=FakeEmbedder)
    return claim.index_dir
