"""The trio side of the job runner: takes server commands one at a time, carries out the
runner's actions, supervises the job process and its pipes (agent.md §8, §10, §14)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import trio

from pushjobs.agent.cgroup import JobCgroups
from pushjobs.agent.process import PIPE_DRAIN_AFTER_EXIT, JobProcess, StartError
from pushjobs.agent.runner import Action, JobRunner, ProcessPlan, Send, StartProcess, Terminate
from pushjobs.protocol.vocabulary import MessageType

COMMAND_QUEUE = 64


class JobWorker:
    """Runs the `JobRunner` against real processes; job messages go to `send`."""

    def __init__(
        self,
        runner: JobRunner,
        send: Callable[[Send], None],
        *,
        kill_grace: float,
        log: logging.Logger | logging.LoggerAdapter[Any],
        cgroups: JobCgroups | None = None,
    ) -> None:
        self.runner = runner
        self.cgroups = cgroups  # None: process-group kill only
        self.send = send
        self.kill_grace = kill_grace
        self.log = log
        self._commands_in, self._commands_out = trio.open_memory_channel[Mapping[str, Any]](
            COMMAND_QUEUE
        )
        self._nursery: trio.Nursery | None = None
        self._process: JobProcess | None = None
        self._job_done: trio.Event | None = None
        self._starting: trio.Event | None = None  # set once a spawn in progress has finished
        self._shutting_down = False
        self._flush_wakeup = trio.Event()
        self._dropped = 0
        self._supervisor: trio.lowlevel.Task | None = None

    # ---- input -------------------------------------------------------------------------

    def submit(self, fields: Mapping[str, Any]) -> None:
        """Queue a validated server command (`commit`, `run`, `abort`, `ack`)."""
        if fields.get("type") == MessageType.ACK:
            return  # only proves the channel works
        try:
            self._commands_in.send_nowait(fields)
        except trio.WouldBlock:
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 100 == 0:
                self.log.warning(
                    "command queue full, dropped %s (%d dropped so far)",
                    fields.get("type"),
                    self._dropped,
                )

    # ---- main loop ---------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Handle commands in arrival order until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            async for fields in self._commands_out:
                await self._handle(fields)

    async def _handle(self, fields: Mapping[str, Any]) -> None:
        kind = fields.get("type")
        try:
            if kind == MessageType.COMMIT:
                actions = self.runner.on_commit(fields)
            elif kind == MessageType.RUN:
                actions = self.runner.on_run(fields)
            elif kind == MessageType.ABORT:
                actions = self.runner.on_abort()
            else:
                self.log.warning("dropped command of unknown type %r", kind)
                return
            await self._execute(actions)
        except Exception as exc:
            await self._internal_error(exc)

    async def _execute(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self.send(action)
            elif isinstance(action, StartProcess):
                await self._start(action.plan)
            elif isinstance(action, Terminate):
                await self._terminate_and_wait()

    async def _internal_error(self, exc: BaseException) -> None:
        job_id = self.runner.job_id
        self.log.error("job %s: internal error: %r", job_id, exc, exc_info=exc)
        try:
            await self._execute(self.runner.on_internal_error(str(exc), trio.current_time()))
        except Exception as second:
            # Never leave the runner stuck: kill what is left and forget the job.
            self.log.error("job %s: internal error while failing the job: %r", job_id, second)
            if self._process is not None:
                self._process.kill_now()
            self.runner.forget()

    # ---- process supervision -----------------------------------------------------------

    async def _start(self, plan: ProcessPlan) -> None:
        starting = self._starting = trio.Event()
        try:
            process = await JobProcess.start(plan, self.cgroups)
        except StartError as exc:
            starting.set()
            if self._shutting_down:
                return
            actions = self.runner.on_start_failed(exc.reason, exc.exit_status, trio.current_time())
            await self._execute(actions)
            return
        except BaseException:
            starting.set()
            raise
        self._process = process
        self._job_done = trio.Event()
        starting.set()
        assert self._nursery is not None
        if self._shutting_down:
            # shutdown() came while the process was being spawned and waits for this start:
            # it terminates the process through the supervisor; nothing is reported
            self._nursery.start_soon(self._supervise, process, plan, self._job_done)
            return
        try:
            await self._execute(self.runner.on_started())
        finally:
            self._nursery.start_soon(self._supervise, process, plan, self._job_done)

    async def _supervise(self, process: JobProcess, plan: ProcessPlan, done: trio.Event) -> None:
        self._supervisor = trio.lowlevel.current_task()
        deadline = trio.current_time() + plan.time_limit
        try:
            async with trio.open_nursery() as nursery:
                pipes_done = trio.Event()

                async def read_pipes() -> None:
                    await process.read_pipes(self._on_output)
                    pipes_done.set()

                nursery.start_soon(process.watch_exit)
                nursery.start_soon(read_pipes)
                nursery.start_soon(self._flusher)
                with trio.move_on_at(deadline):
                    await process.exited.wait()
                if not process.exited.is_set():
                    await self._guarded(self.runner.on_deadline)
                await process.exited.wait()
                with trio.move_on_after(PIPE_DRAIN_AFTER_EXIT):
                    await pipes_done.wait()
                if process.terminating:
                    await process.terminated.wait()
                nursery.cancel_scope.cancel()
            returncode = await process.reap()
        except Exception as exc:
            # A bug while supervising: kill the group and end the job as failed, never hang.
            self.log.error("job %s: supervision failed: %r", plan.job_id, exc, exc_info=exc)
            process.kill_now()
            returncode = await process.reap()
            self.runner.note_error(str(exc))
        except BaseException:
            process.kill_now()
            await process.reap()
            raise
        finally:
            self._process = None
        if self._shutting_down:
            done.set()
            return
        try:
            await self._guarded(lambda: self.runner.on_exited(returncode, trio.current_time()))
        finally:
            done.set()

    async def _guarded(self, step: Callable[[], list[Action]]) -> None:
        try:
            await self._execute(step())
        except Exception as exc:
            await self._internal_error(exc)

    def _on_output(self, channel: str, data: bytes) -> None:
        try:
            for action in self.runner.on_output(channel, data, trio.current_time()):
                if isinstance(action, Send):
                    self.send(action)
        except Exception as exc:
            self.log.error("job %s: output handling failed: %r", self.runner.job_id, exc)
        self._flush_wakeup.set()

    async def _flusher(self) -> None:
        """Release output chunks 100 ms after their first byte."""
        while True:
            due = self.runner.next_flush()
            if due is None:
                await self._flush_wakeup.wait()
                self._flush_wakeup = trio.Event()
                continue
            await trio.sleep_until(due)
            for action in self.runner.on_tick(trio.current_time()):
                if isinstance(action, Send):
                    self.send(action)

    async def _terminate_and_wait(self) -> None:
        """Terminate the job's group; wait until the supervisor has sent the final message."""
        process, done = self._process, self._job_done
        if process is None or done is None:
            return
        await process.terminate(self.kill_grace, self.runner.on_signal_sent)
        if trio.lowlevel.current_task() is not self._supervisor:
            await done.wait()  # the supervisor itself reports after this returns

    # ---- shutdown ----------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Terminate a running job's group, clean up files and lock; send nothing."""
        self._shutting_down = True
        with trio.CancelScope(shield=True):
            if self._starting is not None:
                # a process being spawned right now must not escape the termination
                with trio.move_on_after(30):
                    await self._starting.wait()
            process, done = self._process, self._job_done
            if process is not None and done is not None:
                self.log.info("job %s: terminating the process group", self.runner.job_id)
                await process.terminate(self.kill_grace, self.runner.on_signal_sent)
                with trio.move_on_after(self.kill_grace + PIPE_DRAIN_AFTER_EXIT + 5):
                    await done.wait()
        self.runner.forget()
