"""Settings shared by every part of Cairn."""

from config.settings import BUNDLED_EMBEDDING_MODEL, DEFAULT_EXCLUDES, Settings, get_settings

__all__ = ["BUNDLED_EMBEDDING_MODEL", "DEFAULT_EXCLUDES", "Settings", "get_settings"]
