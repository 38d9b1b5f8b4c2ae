"""The mailbox between the request path and a worker thread: bounded, woken only when asleep."""

from __future__ import annotations

import threading

from model_api.mailbox import Mailbox
from tests.support import wait_until


def test_a_full_mailbox_refuses_and_take_empties_oldest_first() -> None:
    box: Mailbox[int] = Mailbox(3)
    assert [box.put(i) for i in range(4)] == [True, True, True, False]
    assert len(box) == 3
    assert box.take(2) == [0, 1] and box.take() == [2] and box.take() == [] and not box


def test_a_put_wakes_a_consumer_asleep_on_an_empty_mailbox() -> None:
    box: Mailbox[str] = Mailbox(8)
    got: list[str] = []

    def consume() -> None:
        box.wait(3600.0)  # only a put (or wake) ends this within the test
        got.extend(box.take())

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    wait_until(lambda: box.idle, 30, "the consumer to sleep on the empty box")
    assert box.put("job")
    thread.join(30)
    assert got == ["job"] and not box.idle
    box.put("second")
    box.wait(3600.0)  # not empty: returns at once
    assert box.take() == ["second"]
