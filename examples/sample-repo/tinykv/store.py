"""The Store: a dict in memory, made durable by the write-ahead log."""

import os

from tinykv.cache import LRUCache
from tinykv.wal import OP_DELETE, OP_PUT, WriteAheadLog, encode_record


class Store:
    """A persistent mapping from string keys to bytes values."""

    def __init__(self, path, cache_size=1024, compact_threshold=64 * 1024 * 1024):
        self.path = path
        self.compact_threshold = compact_threshold
        self._data = {}
        self._cache = LRUCache(cache_size)
        self._wal = WriteAheadLog(path)
        self._recover()

    def _recover(self):
        """Rebuild the in-memory map by replaying the write-ahead log."""
        for op, key, value in self._wal.replay():
            if op == OP_PUT:
                self._data[key] = value
            elif op == OP_DELETE:
                self._data.pop(key, None)

    def put(self, key, value):
        """Store value under key; durable when this returns."""
        if not isinstance(value, bytes):
            raise TypeError("values must be bytes")
        self._wal.append(OP_PUT, key, value)
        self._data[key] = value
        self._cache.invalidate(key)
        if self._wal.size() > self.compact_threshold:
            self.compact()

    def get(self, key, default=None):
        """Return the value for key, or default when absent."""
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        value = self._data.get(key, default)
        if value is not None:
            self._cache.put(key, value)
        return value

    def delete(self, key):
        """Remove key; durable when this returns."""
        self._wal.append(OP_DELETE, key)
        self._data.pop(key, None)
        self._cache.invalidate(key)

    def compact(self):
        """Rewrite the log with only live keys and atomically replace the old log."""
        tmp_path = self.path + ".compact"
        with open(tmp_path, "wb") as handle:
            for key, value in self._data.items():
                handle.write(encode_record(OP_PUT, key, value))
            handle.flush()
            os.fsync(handle.fileno())
        self._wal.close()
        os.replace(tmp_path, self.path)
        self._wal = WriteAheadLog(self.path)

    def close(self):
        """Close the log file."""
        self._wal.close()
