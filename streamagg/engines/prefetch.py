"""Run per-file work on a few threads ahead of the consumer, handing results back in file order."""

from __future__ import annotations

import collections
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

_DONE = object()


class _Waiting:
    """The results waiting for the consumer, across all jobs, bounded in bytes as well as in
    results per job: one lock, so the bound holds however the threads interleave."""

    def __init__(self, share: int | None, stop: threading.Event) -> None:
        self.share, self.stop = share, stop
        self.bytes = 0
        self.head: object = None  # the job the consumer is reading
        self.changed = threading.Condition()

    def admits(self, job: _Job[Item, Result], size: int) -> bool:
        # The head job may always queue one result, however large: the consumer is waiting for
        # it, so a result bigger than the share still gets through instead of stalling the day.
        if job is self.head and not job.results:
            return True
        if len(job.results) >= job.depth:
            return False
        return self.share is None or self.bytes + size <= self.share


class _Job(Generic[Item, Result]):
    """Produces one item's results into a small queue that `_Waiting` bounds."""

    def __init__(self, produce: Callable[[Item], Iterable[Result]], item: Item, depth: int,
                 waiting: _Waiting, size: Callable[[Result], int]) -> None:
        self.produce, self.item, self.depth, self.waiting, self.size = (
            produce, item, depth, waiting, size)
        self.results: collections.deque[tuple[object, int]] = collections.deque()
        self.finished = threading.Event()

    def run(self) -> None:
        try:
            results = iter(self.produce(self.item))
            try:
                for result in results:
                    if not self._put(result, self.size(result)):
                        return
                self._put(_DONE, 0)
            finally:
                # A stopped reader closes its file and Arrow reader here, on its own thread,
                # not whenever the garbage collector gets to them (possibly at interpreter exit).
                close = getattr(results, "close", None)
                if close is not None:
                    close()
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, which re-raises
            self._put(_Failure(err), 0)
        finally:
            self.finished.set()

    def _put(self, value: object, size: int) -> bool:
        waiting = self.waiting
        with waiting.changed:
            while not waiting.admits(self, size):
                if waiting.stop.is_set():
                    return False
                waiting.changed.wait()
            if waiting.stop.is_set():
                return False
            self.results.append((value, size))
            waiting.bytes += size
            waiting.changed.notify_all()
        return True

    def take(self) -> object:
        """The next result, waiting for it (on the consumer's thread, for the head job)."""
        waiting = self.waiting
        with waiting.changed:
            while not self.results:
                waiting.changed.wait()
            value, size = self.results.popleft()
            waiting.bytes -= size
            waiting.changed.notify_all()
        return value


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def _serve(jobs: queue.SimpleQueue[_Job[Item, Result] | None]) -> None:
    while (job := jobs.get()) is not None:
        job.run()


def ordered_prefetch(
    produce: Callable[[Item], Iterable[Result]], items: list[Item], *, workers: int = 2,
    depth: int = 2, size: Callable[[Result], int] | None = None, share: int | None = None,
) -> Iterator[tuple[Item, Result | None]]:
    """Yield ``(item, result)`` for every result of every item, items in their given order.

    Up to ``workers`` items are produced at once; each keeps at most ``depth`` results waiting.
    With ``size`` and ``share``, the results waiting across all items also stay within
    ``share`` bytes as ``size`` measures them, but for one result of the item being consumed,
    which is always let through (so a result larger than the share never stalls the run).
    After an item's last result comes ``(item, None)``. An error in a worker is raised here, at
    its place in the order; leaving the loop early stops the workers.
    """
    stop = threading.Event()
    waiting = _Waiting(share if size is not None else None, stop)
    measure: Callable[[Result], int] = size or (lambda _: 0)
    running: list[_Job[Item, Result]] = []
    upcoming = list(reversed(items))
    # The same few threads take one item after another: a thread started per item cost its
    # start-up hand-over (the consumer waits until the new thread runs) once per file, 7% of
    # the samples of a day of 200 small files on a busy machine.
    jobs: queue.SimpleQueue[_Job[Item, Result] | None] = queue.SimpleQueue()
    threads = [threading.Thread(target=_serve, args=(jobs,), daemon=True, name="streamagg-reader")
               for _ in range(min(max(1, workers), len(items)))]
    for thread in threads:
        thread.start()

    def start_next() -> None:
        if upcoming:
            job = _Job(produce, upcoming.pop(), depth, waiting, measure)
            running.append(job)
            jobs.put(job)

    try:
        for _ in range(max(1, workers)):
            start_next()
        while running:
            job = running.pop(0)
            with waiting.changed:
                waiting.head = job  # its one result is let through from now on
                waiting.changed.notify_all()
            while True:
                value = job.take()
                if value is _DONE:
                    break
                if isinstance(value, _Failure):
                    raise value.error
                yield job.item, value  # type: ignore[misc]
            yield job.item, None
            job.finished.wait()
            start_next()
    finally:
        with waiting.changed:
            stop.set()  # a job taken up from here on stops at its first result
            waiting.changed.notify_all()
        for _ in threads:
            jobs.put(None)
        for thread in threads:
            thread.join()
