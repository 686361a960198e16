"""tinykv: an embedded key-value store with a write-ahead log."""

from tinykv.cache import LRUCache
from tinykv.store import Store

__all__ = ["LRUCache", "Store"]
