from pathlib import Path

from config import Settings


def test_defaults_work_offline_and_index_lives_in_the_data_dir(monkeypatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("CAIRN_"):
            monkeypatch.delenv(name)
    settings = Settings(_env_file=None)
    assert settings.embedding_model == "all-MiniLM-L6-v2"
    assert settings.resolved_index_dir == Path(".cairn") / "index"
    assert settings.faiss_index == "auto"


def test_environment_and_dotenv_override_defaults(monkeypatch, tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("CAIRN_SEARCH_K=3\nCAIRN_DATA_DIR=/srv/cairn\n")
    monkeypatch.setenv("CAIRN_EXCLUDE", "generated/, *.gen.py")
    monkeypatch.setenv("CAIRN_FAISS_INDEX", "hnsw")
    settings = Settings(_env_file=env_file)
    assert settings.search_k == 3
    assert settings.resolved_index_dir == Path("/srv/cairn/index")
    assert settings.exclude == ["generated/", "*.gen.py"]
    assert settings.faiss_index == "hnsw"


def test_every_setting_is_documented() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "settings.md").read_text()
    for name, field in Settings.model_fields.items():
        assert field.description, name
        assert f"`CAIRN_{name.upper()}`" in page, f"CAIRN_{name.upper()} is missing from docs/settings.md (make docs)"


def test_exclude_also_accepts_a_json_list(monkeypatch) -> None:
    monkeypatch.setenv("CAIRN_EXCLUDE", '["a/", "b/*.py"]')
    assert Settings(_env_file=None).exclude == ["a/", "b/*.py"]
