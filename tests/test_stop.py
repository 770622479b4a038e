"""Stops on SIGINT/SIGTERM outside the training loop (mlip.stop): a stop that a library swallows
(HDF5 calling back into Python while writing data.h5) is raised again at the next frame, and the
dataset file is not written."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from mlip import fileio
from mlip.data import write_dataset
from mlip.stop import Stopped, raise_if_stopped, stop_on_signals
from parsers.frame import Frame


def frames(n: int):
    for k in range(n):
        positions = np.array([[0.0, 0.0, 0.0], [1.6 + 0.01 * k, 1.5, 0.0]])
        yield Frame(numbers=np.array([29, 29]), positions=positions, cell=np.eye(3) * 4.0,
                    pbc=np.array([True, True, True]), energy=-1.0, source="mem", index=k)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_swallowed_stop_is_raised_again(signum):
    with stop_on_signals():
        try:
            os.kill(os.getpid(), signum)
        except Stopped as exc:  # what a C library's callback wrapper does
            assert exc.signum == signum
        with pytest.raises(Stopped) as info:
            raise_if_stopped()
        assert info.value.signum == signum
    raise_if_stopped()  # outside the block nothing is pending
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_stop_swallowed_inside_an_hdf5_callback_ends_the_write(tmp_path, monkeypatch):
    """The signal arrives while HDF5 seeks in the output file; h5py's file driver swallows the
    exception, and write_dataset stops at the next frame, leaving no file."""
    seek = fileio.OutputFile.seek
    sent = []

    def seek_and_signal(self, *args):
        if not sent:
            sent.append(True)
            try:
                os.kill(os.getpid(), signal.SIGTERM)
            except Stopped:
                pass  # swallowed, as h5py's callback does
        return seek(self, *args)

    monkeypatch.setattr(fileio.OutputFile, "seek", seek_and_signal)
    with stop_on_signals(), pytest.raises(Stopped):
        write_dataset(frames(20), tmp_path / "data.h5")
    assert sent and list(tmp_path.iterdir()) == []
