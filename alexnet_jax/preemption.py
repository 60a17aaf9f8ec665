"""Graceful stops: SIGTERM (preemption) and SIGINT (Ctrl-C) end training at a step boundary.

Signals belong to the process, so the entry point enters `STOP` around training (run.py does);
the trainer polls `STOP.reached(step)` after every step and, when it says so, saves a checkpoint
and returns normally: the process exits 0 and a restart resumes from that step. A second signal
gets the usual behaviour (SIGINT: KeyboardInterrupt, SIGTERM: termination), so a stuck save can
still be aborted. A signal the process inherited as ignored stays ignored. Code that calls
`train_and_evaluate` without entering `STOP` keeps Python's default signal handling.

With several processes, every process has to stop at the same step or the collectives and the
checkpoint barrier hang. There JAX's preemption service (started by `jax.distributed.initialize`,
it receives the cluster's SIGTERM) agrees on the step, and no Python handler is installed.
"""

import signal
import threading
import types

import jax
from jax.experimental import multihost_utils

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
  """Context manager that turns the first SIGTERM/SIGINT into a flag the training loop polls."""

  def __init__(self):
    self.signal_name: str | None = None
    self._previous_handlers: dict[int, object] = {}

  def __enter__(self) -> 'StopRequest':
    self.signal_name = None
    # Python only lets the main thread install handlers; elsewhere (e.g. a notebook worker thread)
    # training simply runs without graceful stops.
    if self._one_process() and threading.current_thread() is threading.main_thread():
      for signum in _SIGNALS:
        # An ignored signal stays ignored, as Python leaves it (a shell starts background jobs
        # with SIGINT ignored): whoever ignored it meant it.
        if signal.getsignal(signum) != signal.SIG_IGN:
          self._previous_handlers[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc_info) -> None:
    self._restore_handlers()

  def _one_process(self) -> bool:
    """Whether this process trains alone (signal handlers), not in a jax.distributed run (JAX's
    preemption service). Asking JAX starts its backend."""
    return jax.process_count() == 1

  def _handle(self, signum: int, frame: types.FrameType | None) -> None:
    del frame
    self.signal_name = signal.Signals(signum).name
    self._restore_handlers()  # A second signal acts as it would without us.

  def _restore_handlers(self) -> None:
    for signum, handler in self._previous_handlers.items():
      signal.signal(signum, handler)
    self._previous_handlers = {}

  @property
  def received(self) -> bool:
    """True once this process was asked to stop (polled inside evaluation too)."""
    return self.signal_name is not None

  def reached(self, step: int) -> bool:
    """Whether to stop after `step`; with several processes, call it once per step on all."""
    if not self._one_process():
      try:
        if multihost_utils.reached_preemption_sync_point(step):
          self.signal_name = self.signal_name or 'a preemption notice'
      except RuntimeError:  # jax.distributed started without the preemption service.
        pass
    return self.received


STOP = StopRequest()  # The process's one stop request.
