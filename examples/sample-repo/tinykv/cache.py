"""A least-recently-used cache for values read from the store."""

from collections import OrderedDict


class LRUCache:
    """Keep at most `capacity` entries, evicting the least recently used one first."""

    def __init__(self, capacity=1024):
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self._entries = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key):
        """Return the cached value or None, marking the entry as recently used."""
        if key in self._entries:
            self._entries.move_to_end(key)
            self.hits += 1
            return self._entries[key]
        self.misses += 1
        return None

    def put(self, key, value):
        """Insert or refresh an entry, evicting the oldest when over capacity."""
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def invalidate(self, key):
        """Drop an entry if present."""
        self._entries.pop(key, None)

    def hit_ratio(self):
        """Return hits / (hits + misses), or 0.0 before any lookup."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
