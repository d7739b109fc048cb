"""A discrete-event loop on a virtual clock, with greenlets for the code under test.

Every Lambda invocation runs the real service code in a greenlet of its own. When that code makes a call that
takes time (Braze, DynamoDB, SQS), the model schedules the greenlet's resumption at the call's virtual completion
time and switches back to the loop, which runs whatever is due next. No thread, no real sleeping: a million
webhooks take minutes of wall time whatever virtual time they span.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

from greenlet import getcurrent, greenlet

from sandbox.memory import Clock


class Loop:
    def __init__(self, clock: Clock):
        self.clock = clock
        self.hub = getcurrent()  # the greenlet that runs `run`: every suspended greenlet switches back to it
        self._heap: list = []
        self._seq = itertools.count()
        self._idle: list[greenlet] = []  # greenlets whose function returned, to run the next one spawned

    def at(self, when: float, function: Callable, *args) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), function, args))

    def soon(self, function: Callable, *args) -> None:
        self.at(self.clock.now, function, *args)

    def spawn(self, function: Callable, *args) -> None:
        """Start `function` now in a greenlet of its own: an idle one whose last function returned, else a new one."""
        runner = self._idle.pop() if self._idle else greenlet(self._run_jobs, parent=self.hub)
        self.soon(runner.switch, function, args)

    def _run_jobs(self, function: Callable, args: tuple) -> None:
        """A greenlet that runs one spawned function after another. A new greenlet for each would map and unmap a
        fresh Python frame stack every time: a system call pair and page faults per webhook."""
        while True:
            function(*args)
            self._idle.append(getcurrent())
            function, args = self.hub.switch()

    def sleep(self, seconds: float) -> None:
        """Suspend the calling greenlet for `seconds` of virtual time (called from inside a spawned greenlet)."""
        me = getcurrent()
        if me is self.hub:
            raise RuntimeError("the loop itself cannot sleep")
        self.at(self.clock.now + max(seconds, 0.0), me.switch)
        self.hub.switch()

    def gather(self, function: Callable, items: list, width: int) -> list:
        """`function` over `items`, `width` at a time, like a thread pool's `map`: suspends the caller until all
        are done; the first exception is raised in the caller."""
        results: list = [None] * len(items)
        errors: list[BaseException] = []
        work = iter(enumerate(items))
        caller = getcurrent()
        left = [min(width, len(items))]

        def worker() -> None:
            for index, item in work:
                try:
                    results[index] = function(item)
                except Exception as exc:
                    errors.append(exc)
            left[0] -= 1
            if left[0] == 0:
                self.soon(caller.switch)

        for _ in range(left[0]):
            self.spawn(worker)
        self.hub.switch()
        if errors:
            raise errors[0]
        return results

    def run(self, until: Callable[[], bool] | None = None) -> None:
        heap, clock = self._heap, self.clock
        while heap:
            when, _, function, args = heapq.heappop(heap)
            if when > clock.now:
                clock.now = when
            function(*args)
            if until is not None and until():
                break
