"""A small thread-safe LRU, used for class embeddings by the zero-shot runners and the gateway."""

from __future__ import annotations

import collections
import threading
from typing import Any, Callable, Hashable

import numpy as np


class LRU:
    """A bounded mapping that evicts the least recently used entries.

    ``capacity`` counts entries, or whatever ``weight`` returns per value (e.g. embedding rows).
    """

    def __init__(self, capacity: int, weight: Callable[[np.ndarray], int] = lambda value: 1) -> None:
        self.capacity, self.hits, self.misses = capacity, 0, 0
        self._weight, self._total = weight, 0
        self._data: collections.OrderedDict[Hashable, tuple[np.ndarray, int]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> np.ndarray | None:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                self.hits += 1
                return self._data[key][0]
            self.misses += 1
            return None

    def put(self, key: Hashable, value: np.ndarray) -> None:
        """Keep ``value``; one heavier than the whole capacity is not kept."""
        weight = self._weight(value)
        with self._lock:
            if key in self._data:
                self._total -= self._data.pop(key)[1]
            if weight > self.capacity:
                return
            self._data[key] = (value, weight)
            self._total += weight
            while self._total > self.capacity:
                self._total -= self._data.popitem(last=False)[1][1]

    def stats(self) -> dict[str, Any]:
        """Entries, weight held, hits and misses."""
        with self._lock:
            return {"size": len(self._data), "weight": self._total, "hits": self.hits, "misses": self.misses}

    def __len__(self) -> int:
        return len(self._data)
