"""Stop signals: a SIGTERM or SIGUSR1 becomes a flag, heard by every enclosing listener."""
import os
import signal

from segtrain.train.stopping import StopSignals


def test_a_signal_sets_the_flag_and_the_previous_handler_comes_back():
    before = signal.getsignal(signal.SIGUSR1)
    with StopSignals() as signals:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert signals.received == "SIGUSR1"
    assert signal.getsignal(signal.SIGUSR1) is before


def test_a_signal_caught_by_a_trainer_inside_a_search_worker_stops_the_worker_too():
    """A trial's trainer listens inside the worker's listener: a signal that comes as the trial ends
    (pruned or done, so the trainer does not stop for it) must still stop the worker before its next trial."""
    with StopSignals() as worker:
        with StopSignals() as trainer:
            os.kill(os.getpid(), signal.SIGTERM)
        assert trainer.received == "SIGTERM"
        assert worker.received == "SIGTERM"
