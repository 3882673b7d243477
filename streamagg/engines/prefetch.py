"""Run per-file work on a few threads ahead of the consumer, handing results back in file order."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

_DONE = object()


class _Worker(threading.Thread, Generic[Item, Result]):
    """Produces one item's results into a small bounded queue, so memory stays bounded."""

    def __init__(self, produce: Callable[[Item], Iterable[Result]], item: Item, depth: int,
                 stop: threading.Event) -> None:
        super().__init__(daemon=True, name="streamagg-reader")
        self.produce, self.item, self.stop = produce, item, stop
        self.results: queue.Queue[object] = queue.Queue(maxsize=depth)

    def run(self) -> None:
        results = iter(self.produce(self.item))
        try:
            for result in results:
                if not self._put(result):
                    return
            self._put(_DONE)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, which re-raises
            self._put(_Failure(err))
        finally:
            # A stopped reader closes its file and Arrow reader here, on its own thread, not
            # whenever the garbage collector gets to them (possibly during interpreter exit).
            close = getattr(results, "close", None)
            if close is not None:
                close()

    def _put(self, value: object) -> bool:
        while not self.stop.is_set():
            try:
                self.results.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def ordered_prefetch(
    produce: Callable[[Item], Iterable[Result]], items: list[Item], *, workers: int = 2,
    depth: int = 2,
) -> Iterator[tuple[Item, Result | None]]:
    """Yield ``(item, result)`` for every result of every item, items in their given order.

    Up to ``workers`` items are produced at once; each keeps at most ``depth`` results waiting.
    After an item's last result comes ``(item, None)``. An error in a worker is raised here, at
    its place in the order; leaving the loop early stops the workers.
    """
    stop = threading.Event()
    running: list[_Worker[Item, Result]] = []
    upcoming = list(reversed(items))

    def start_next() -> None:
        if upcoming:
            worker = _Worker(produce, upcoming.pop(), depth, stop)
            worker.start()
            running.append(worker)

    try:
        for _ in range(max(1, workers)):
            start_next()
        while running:
            worker = running.pop(0)
            while True:
                value = worker.results.get()
                if value is _DONE:
                    break
                if isinstance(value, _Failure):
                    raise value.error
                yield worker.item, value  # type: ignore[misc]
            yield worker.item, None
            worker.join()
            start_next()
    finally:
        stop.set()
        for worker in running:
            worker.join()
