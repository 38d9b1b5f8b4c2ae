"""A bounded hand-off from the request path to one worker thread that never blocks or raises.

The inference log's writer (`inference_log/stream.py`) and the shadow challenger's thread
(`shadow.py`) each take work the event loop offers. `put` is a length check and one deque append
(no lock, no exception for a full box: the caller counts the drop) and wakes the thread only
when it sleeps on an empty box, so a busy thread costs the loop no wake-up per item; `wait` is
that sleep; `take` empties up to n items, safe against another thread taking or clearing them.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Mailbox(Generic[T]):
    """At most `size` items from any thread (the event loop) to one consumer thread."""

    __slots__ = ("_items", "_wake", "idle", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: deque[T] = deque()
        self._wake = threading.Event()
        self.idle = False
        """Set while the consumer sleeps on an empty box: the next `put` wakes it."""

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> bool:
        """Append `item`, False when the box is full (the caller counts the drop)."""
        if len(self._items) >= self.size:
            return False
        self._items.append(item)
        if self.idle:  # the consumer sleeps on an empty box: one wake-up, not one an item
            self.idle = False
            self._wake.set()
        return True

    def wait(self, timeout_s: float) -> None:
        """In the consumer: sleep until an item arrives, `wake` is called or `timeout_s` passes;
        return at once when the box holds items."""
        if self._items:
            return
        self._wake.clear()
        self.idle = True
        if not self._items:  # checked again after saying so: a put in between saw `idle`
            self._wake.wait(timeout_s)
        self.idle = False

    def wake(self) -> None:
        """End the consumer's current or next `wait` (to stop it)."""
        self._wake.set()

    def take(self, n: int | None = None) -> list[T]:
        """Up to `n` items (all, without `n`), oldest first, taken off the box."""
        items: list[T] = []
        for _ in range(len(self._items) if n is None else min(n, len(self._items))):
            try:
                items.append(self._items.popleft())
            except IndexError:  # another thread took or cleared them meanwhile
                break
        return items
