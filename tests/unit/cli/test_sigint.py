"""Ctrl-C while following (cli/interrupt.py): the worker thread, its signal mask, the gate."""

import io
import os
import signal
import threading

import pytest

from pushjobs.cli.display import EventsDisplay
from pushjobs.cli.follow import JobProgress
from pushjobs.cli.interrupt import GatedDisplay, honour_sigint, run_in_worker, sigint_ignored
from pushjobs.cli.sse import SseEvent


def test_result_and_exception_come_back_to_the_caller() -> None:
    assert run_in_worker(lambda: threading.current_thread().name) == "pushjobs-follow"

    def boom() -> None:
        raise ValueError("bad answer")

    with pytest.raises(ValueError, match="bad answer"):
        run_in_worker(boom)


def test_sigint_is_blocked_in_the_worker_and_raised_in_the_main_thread() -> None:
    release = threading.Event()

    def work() -> set[int]:
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        release.wait(10)
        return mask

    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_in_worker(work)
    finally:
        release.set()
        timer.cancel()
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])  # main: unblocked
    assert signal.SIGINT in run_in_worker(lambda: signal.pthread_sigmask(signal.SIG_BLOCK, []))


def test_gated_display_writes_nothing_once_shut() -> None:
    out = io.StringIO()
    display = GatedDisplay(EventsDisplay(out))
    progress = JobProgress("j", ["n1"])
    display.event(SseEvent("start", "{}", "job-1"))
    display.shut(progress)
    display.event(SseEvent("job_complete", "{}", "job-2"))
    display.update(progress)
    display.close(progress)
    assert out.getvalue() == '{"event":"start","id":"job-1","data":{}}\n'


def test_inherited_ignore_is_replaced_and_closing_message_is_shielded() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        honour_sigint()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        with sigint_ignored():
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)
