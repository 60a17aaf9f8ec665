"""Graceful stops: SIGTERM and Ctrl-C (SIGINT) become a flag the loop polls; a second signal acts
as it would without the handler (Ctrl-C: KeyboardInterrupt at once). The whole-run behaviour
(stop after the step, save, resume to the same losses) is in tests/reliability_test.py."""

import os
import signal

import pytest

from alexnet_jax import preemption


@pytest.mark.parametrize('signum,name', [(signal.SIGINT, 'SIGINT'), (signal.SIGTERM, 'SIGTERM')])
def test_the_first_signal_is_a_flag_and_a_second_acts_as_without_us(signum, name):
  inherited = signal.getsignal(signum)
  if signum == signal.SIGINT:
    # Python's Ctrl-C handler, whatever this process inherited: a non-interactive shell starts a
    # background job (`pytest &`) with SIGINT ignored, and ignored signals stay ignored (below).
    signal.signal(signum, signal.default_int_handler)
  try:
    _check_first_and_second_signal(signum, name)
  finally:
    signal.signal(signum, inherited)


def _check_first_and_second_signal(signum, name):
  before = signal.getsignal(signum)
  stop = preemption.StopRequest()
  with stop:
    assert not stop.received and not stop.reached(3)
    os.kill(os.getpid(), signum)  # Handled before the next statement runs.
    assert stop.received and stop.signal_name == name and stop.reached(3)
    if signum == signal.SIGINT:  # A second Ctrl-C: Python's default, KeyboardInterrupt.
      with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signum)
    else:  # The handler in place before us (a test one, so that the process survives).
      assert signal.getsignal(signum) == before
  assert signal.getsignal(signum) == before  # Leaving restores the handlers.


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_an_ignored_signal_stays_ignored(signum):
  inherited = signal.signal(signum, signal.SIG_IGN)  # As `pytest &` (SIGINT) may start us.
  try:
    stop = preemption.StopRequest()
    with stop:
      assert signal.getsignal(signum) == signal.SIG_IGN
      os.kill(os.getpid(), signum)
      assert not stop.received
    assert signal.getsignal(signum) == signal.SIG_IGN
  finally:
    signal.signal(signum, inherited)


def test_leaving_without_a_signal_restores_the_handlers():
  before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
  with preemption.StopRequest() as stop:
    assert signal.getsignal(signal.SIGTERM) == stop._handle  # pylint: disable=protected-access
  assert {signum: signal.getsignal(signum) for signum in before} == before


def test_without_entering_it_no_handler_is_installed():
  assert signal.getsignal(signal.SIGTERM) is not preemption.STOP._handle  # pylint: disable=protected-access
  assert not preemption.STOP.received
