"""Where the API runs CPU-heavy checks (journey publishes, large bodies): a bounded pool of processes.

In threads, a hostile publish competes with every other request for the interpreter lock; in processes of their
own it costs the API process nothing but the bytes sent over. ``ValidationPool``:

- ``PARCOURS_VALIDATION_PROCESSES`` processes (0: ``PARCOURS_VALIDATION_THREADS`` threads instead, no time limit),
  started by a fork server that has imported the journey language once, so a pool starts in milliseconds;
- each check stops after ``PARCOURS_VALIDATION_TIMEOUT_SECONDS`` (``TooSlow``: the route answers 422 naming the
  body); a process that does not come back within the longest time a queued check can legitimately take is
  killed and the pool replaced (a last resort: the timer inside the process normally stops the check);
- at most ``PARCOURS_VALIDATION_QUEUE`` checks wait for a process; beyond, ``Busy`` (the route answers 429 with
  ``Retry-After``) rather than a queue that grows without bound.

One pool per process and configuration (``shared``): the apps of a process (the test suite makes many) use it;
an app's lifespan starts it at start-up (pre-warmed) and the last running app's shutdown stops it.
"""

from __future__ import annotations

import asyncio
import functools
import math
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from config.settings import Settings
from journeys import isolated
from journeys.isolated import TooSlow

log = structlog.get_logger(__name__)

R = TypeVar("R")

# What a refused caller is told to wait: checks take milliseconds, so the queue moves within a second or two.
RETRY_AFTER_SECONDS = 1

__all__ = ["Busy", "TooSlow", "ValidationPool", "shared"]


class Busy(Exception):
    """Every process is busy and the queue is full: try again after ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"validation is busy; retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class _Config:
    processes: int
    threads: int
    timeout: float
    queue: int

    @classmethod
    def of(cls, settings: Settings) -> _Config:
        return cls(
            settings.validation_processes,
            settings.validation_threads,
            settings.validation_timeout_seconds,
            settings.validation_queue,
        )


_PRELOAD = ["journeys.isolated", "journeys.validation"]
_preload_set = False


def _context() -> multiprocessing.context.BaseContext:
    """A fork server where the platform has one (it imports the journey language once; each process forks from it
    single-threaded), else spawn. Never plain fork: the API process has threads."""
    global _preload_set
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    if not _preload_set:
        context.set_forkserver_preload(_PRELOAD)
        _preload_set = True
    return context


class ValidationPool:
    def __init__(self, config: _Config) -> None:
        self.config = config
        self.users = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._executor: Executor = self._new_executor()
        self._closed = False

    @property
    def in_processes(self) -> bool:
        return self.config.processes > 0

    @property
    def workers(self) -> int:
        return self.config.processes or self.config.threads

    def _new_executor(self) -> Executor:
        if not self.in_processes:
            return ThreadPoolExecutor(self.config.threads, thread_name_prefix="parcours-validate")
        return ProcessPoolExecutor(self.config.processes, mp_context=_context(), initializer=isolated.prepare)

    @property
    def hard_limit(self) -> float:
        """The longest a call can take when every check stops at its time limit: its own check and those queued
        ahead of it, in turns of ``workers`` at once; plus a margin for starting processes."""
        turns = math.ceil((self.workers + self.config.queue) / self.workers)
        return self.config.timeout * turns + 10.0

    async def start(self) -> None:
        """Start every process now (not on the first publish) and wait until each has imported the checks."""
        if not self.in_processes:
            return
        loop = asyncio.get_running_loop()
        executor = self._executor
        await asyncio.gather(*(loop.run_in_executor(executor, isolated.ready) for _ in range(self.workers)))

    async def run(self, function: Callable[..., R], *args: Any) -> R:
        """``function(*args)`` in the pool: ``Busy`` when the queue is full, ``TooSlow`` past the time limit."""
        with self._lock:
            if self._in_flight >= self.workers + self.config.queue:
                raise Busy(RETRY_AFTER_SECONDS)
            self._in_flight += 1
        try:
            if not self.in_processes:
                call = functools.partial(function, *args)
                return await asyncio.get_running_loop().run_in_executor(self._executor, call)
            try:
                return await self._in_process(function, args)
            except BrokenProcessPool:
                # The pool was replaced under this call (another call's process was killed), or a process died
                # while checking this one: once more on a fresh pool; a second death is this input's doing.
                try:
                    return await self._in_process(function, args)
                except BrokenProcessPool:
                    raise TooSlow(self.config.timeout) from None
        finally:
            with self._lock:
                self._in_flight -= 1

    async def _in_process(self, function: Callable[..., R], args: tuple[Any, ...]) -> R:
        executor = self._executor
        call = functools.partial(isolated.within, self.config.timeout, function, *args)
        future = asyncio.get_running_loop().run_in_executor(executor, call)
        try:
            return await asyncio.wait_for(future, self.hard_limit)
        except TimeoutError:
            log.warning("validation.process_stuck", seconds=self.hard_limit)
            self._replace(executor)
            raise TooSlow(self.config.timeout) from None
        except BrokenProcessPool:
            self._replace(executor)
            raise

    def _replace(self, broken: Executor) -> None:
        """Kill ``broken``'s processes and use a new pool (unless that was done already)."""
        with self._lock:
            if self._executor is not broken or self._closed:
                return
            self._executor = self._new_executor()
        _kill(broken)

    async def close(self) -> None:
        """No new checks; waits for the processes to exit once the running ones are done (each within its time
        limit), so a stopped API leaves no process behind; one that has not exited by then is killed."""
        self._closed = True
        executor = self._executor
        done = asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
        try:
            await asyncio.wait_for(done, self.config.timeout + 5.0)
        except TimeoutError:
            _kill(executor)


def _kill(executor: Executor) -> None:
    """Stop a process pool now, its running checks too."""
    kill = getattr(executor, "kill_workers", None)  # Python 3.14
    if kill is not None:
        kill()
    else:  # before 3.14 a pool cannot stop a running call: its processes are killed directly
        for process in list((getattr(executor, "_processes", None) or {}).values()):
            process.kill()
    executor.shutdown(wait=False, cancel_futures=True)


_shared: dict[_Config, ValidationPool] = {}


def shared(settings: Settings) -> ValidationPool:
    """This process's pool for ``settings`` (created on first use)."""
    config = _Config.of(settings)
    pool = _shared.get(config)
    if pool is None:
        pool = _shared[config] = ValidationPool(config)
    return pool


async def acquire(settings: Settings) -> ValidationPool:
    """For an app's lifespan: the shared pool, started."""
    pool = shared(settings)
    pool.users += 1
    await pool.start()
    return pool


async def release(pool: ValidationPool) -> None:
    """The app stopped: the last one stops the pool."""
    pool.users -= 1
    if pool.users <= 0 and _shared.get(pool.config) is pool:
        del _shared[pool.config]
        await pool.close()
