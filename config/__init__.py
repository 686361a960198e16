"""Settings shared by every part of Cairn."""

from config.settings import BUNDLED_EMBEDDING_MODEL, DEFAULT_EXCLUDES, MODEL_NODES, Node, Settings

__all__ = ["BUNDLED_EMBEDDING_MODEL", "DEFAULT_EXCLUDES", "MODEL_NODES", "Node", "Settings"]
