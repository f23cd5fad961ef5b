"""``gemminer sweep FILE --jobs N``: a sweep's runs as N processes at once.

Each unfinished run (grid point or sanity check) is its own ``gemminer`` process, started
with the command ``gemminer sweep --commands`` prints for it, so it resolves, resumes and
writes its folder exactly as that command would. At most N run at once; a sanity check
starts once its run has finished. Processes are spread over the visible GPUs (job slot k
gets GPU k mod G, through ``CUDA_VISIBLE_DEVICES``); on a machine without GPUs each gets
an equal share of the CPU cores (``OMP_NUM_THREADS``, unless set or the run sets
``threads``).

Every line a run prints (its progress line every ``GEMMINER_PROGRESS_SECONDS``, 30 s by
default, then its result) is shown prefixed with the run's tag and kept in
``<sweep folder>/logs/<run>.log``. A stop signal (Ctrl-C, SIGTERM) is passed on to every
running process, which checkpoints at its next step and exits; re-running the same
command resumes them. A second Ctrl-C is passed on too and interrupts at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ..errors import ConfigError
from ..training.checkpoint import TrainingInterrupted

#: The exit status of a gemminer process stopped by a signal after checkpointing.
EXIT_STOPPED = 130


def visible_gpus(environ: dict[str, str] | None = None) -> list[str]:
    """The GPUs the jobs are spread over: ``CUDA_VISIBLE_DEVICES``'s entries when it is
    set, else every CUDA device PyTorch sees (none without CUDA)."""
    environ = os.environ if environ is None else environ
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip() and d.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


@dataclass(frozen=True)
class Slot:
    """Where one of the parallel processes runs: its environment, and its GPU if any."""

    environ: dict[str, str]
    gpu: str | None = None


def slots(jobs: int, environ: dict[str, str] | None = None) -> list[Slot]:
    """The ``jobs`` process slots: slot k on GPU k mod G, or, without GPUs, each with an
    equal share of the CPU cores (unless ``OMP_NUM_THREADS`` is set)."""
    environ = dict(os.environ if environ is None else environ)
    gpus = visible_gpus(environ)
    if gpus:
        return [
            Slot(environ | {"CUDA_VISIBLE_DEVICES": gpus[k % len(gpus)]}, gpus[k % len(gpus)])
            for k in range(jobs)
        ]
    if "OMP_NUM_THREADS" not in environ:
        environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    return [Slot(environ) for _ in range(jobs)]


@dataclass
class Task:
    """One run of the sweep: its tag, folder, ``gemminer`` arguments, and the folder of
    the run it needs finished first (a sanity check's run), if any."""

    tag: str
    folder: Path
    argv: list[str]
    after: Path | None = None


@dataclass
class _Running:
    task: Task
    slot: int
    process: subprocess.Popen
    reader: threading.Thread


@dataclass
class Outcome:
    """How the jobs ended: the folders finished, failed (with the reason) and stopped."""

    done: list[Path] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    stopped: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


class JobRunner:
    """Runs ``tasks`` as at most ``jobs`` ``gemminer`` processes at once (see the module
    docstring). ``log`` prints one line (to stderr); ``logs`` is the folder of the runs'
    own log files; ``keep_going`` goes on after a run failed (else the others are
    stopped, checkpointing, and nothing new starts)."""

    def __init__(
        self,
        tasks: Sequence[Task],
        jobs: int,
        logs: Path,
        *,
        keep_going: bool = False,
        log: Callable[[str], None] | None = None,
        environ: dict[str, str] | None = None,
        python: str = sys.executable,
    ) -> None:
        if jobs < 1:
            raise ConfigError(f"--jobs must be at least 1, got {jobs}")
        self.tasks = list(tasks)
        self.jobs = jobs
        self.logs = logs
        self.keep_going = keep_going
        self.python = python
        self.slots = slots(jobs, environ)
        self._print_lock = threading.Lock()
        self._log = log or self._stderr
        self._stop_signal: int | None = None  # a signal asked the sweep to stop
        self._stopping = False  # the running processes were asked to stop

    def _stderr(self, line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    def _say(self, line: str) -> None:
        with self._print_lock:
            self._log(line)

    # -- processes ---------------------------------------------------------------------
    def _start(self, task: Task, slot: int) -> _Running:
        self.logs.mkdir(parents=True, exist_ok=True)
        env = self.slots[slot].environ | {"PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(
            [self.python, "-m", "gemminer", *task.argv],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            # a terminal's Ctrl-C reaches the sweep alone, which passes it on once
            start_new_session=True,
        )
        log_file = open(self.logs / f"{task.folder.name}.log", "a", encoding="utf-8")  # noqa: SIM115
        reader = threading.Thread(
            target=self._relay, args=(task.tag, process.stdout, log_file), daemon=True
        )
        reader.start()
        gpu = self.slots[slot].gpu
        where = f" on GPU {gpu}" if gpu is not None else ""
        self._say(f"{task.tag}: started{where} (log: {log_file.name})")
        return _Running(task, slot, process, reader)

    def _relay(self, tag: str, stream: TextIO, log_file: TextIO) -> None:
        with log_file:
            for line in stream:
                log_file.write(line)
                log_file.flush()
                # a progress bar's carriage returns: show the last state of the line
                shown = line.rstrip("\n").split("\r")[-1].rstrip()
                if shown:
                    self._say(f"{tag}: {shown}")

    def _signal_all(self, running: Sequence[_Running], signum: int) -> None:
        for job in running:
            if job.process.poll() is None:
                try:
                    os.kill(job.process.pid, signum)
                except ProcessLookupError:
                    pass

    # -- scheduling --------------------------------------------------------------------
    def run(self) -> Outcome:
        """Run every task; returns how they ended. Raises :class:`TrainingInterrupted`
        after a stop signal, once every process has checkpointed and exited."""
        outcome = Outcome()
        pending = list(self.tasks)
        running: list[_Running] = []
        free = list(range(self.jobs))
        broken: set[Path] = set()
        wake = threading.Event()

        def on_signal(signum: int, frame: object) -> None:
            self._stop_signal = signum
            self._stopping = True
            self._signal_all(running, signum)
            wake.set()

        previous = {}
        if threading.current_thread() is threading.main_thread():
            previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while pending or running:
                if self._stopping:
                    pending.clear()
                else:
                    self._start_ready(pending, running, free, outcome, broken)
                if not running:
                    break
                wake.wait(0.2)
                wake.clear()
                for job in [j for j in running if j.process.poll() is not None]:
                    running.remove(job)
                    job.reader.join()
                    free.append(job.slot)
                    self._finished(job, outcome, broken, running)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        if self._stop_signal is not None:
            name = signal.Signals(self._stop_signal).name
            raise TrainingInterrupted(
                f"{name}: {len(outcome.stopped)} running runs checkpointed and stopped "
                f"({len(outcome.done)} finished); run the same command to resume"
            )
        return outcome

    def _start_ready(
        self,
        pending: list[Task],
        running: list[_Running],
        free: list[int],
        outcome: Outcome,
        broken: set[Path],
    ) -> None:
        """Start pending tasks whose run they need is finished, while slots are free."""
        busy = {job.task.folder for job in running} | {t.folder for t in pending}
        for task in list(pending):
            if not free:
                return
            if task.after is not None and task.after in broken:
                pending.remove(task)
                outcome.skipped.append(f"{task.tag}: skipped, its run failed")
                self._say(f"{task.tag}: skipped, its run failed")
                continue
            if task.after is not None and task.after in busy:
                continue  # its run is still to finish
            pending.remove(task)
            running.append(self._start(task, free.pop(0)))

    def _finished(
        self, job: _Running, outcome: Outcome, broken: set[Path], running: list[_Running]
    ) -> None:
        code = job.process.returncode
        tag = job.task.tag
        if code == 0:
            outcome.done.append(job.task.folder)
            self._say(f"{tag}: finished")
        elif code == EXIT_STOPPED and self._stopping:
            outcome.stopped.append(job.task.folder)
            self._say(f"{tag}: stopped (checkpointed; the same command resumes it)")
        else:
            broken.add(job.task.folder)
            log = self.logs / f"{job.task.folder.name}.log"
            outcome.failed.append(f"{job.task.folder}: exit status {code}, see {log}")
            self._say(f"{tag}: failed with exit status {code} (log: {log})")
            if not self.keep_going:
                self._stopping = True
                if running:
                    self._say("stopping the other runs (they checkpoint; --keep-going goes on)")
                    self._signal_all(running, signal.SIGTERM)
