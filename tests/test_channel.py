"""Typed control channel between spawned processes: round trip, and ChannelClosed on peer death."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal

import msgspec
import pytest

from ipc import messages as m
from ipc.channel import ChannelClosed, ControlChannel
from tests import ring_children as rc

CTX = mp.get_context("spawn")


def _spawn(target) -> tuple[ControlChannel, mp.Process]:  # noqa: ANN001
    mine, theirs = CTX.Pipe(duplex=True)
    proc = CTX.Process(target=target, args=(theirs,), daemon=True)
    proc.start()
    theirs.close()  # so the child's death reads as EOF here
    return ControlChannel(mine, m.FromChild), proc


def test_round_trip_with_a_spawned_child() -> None:
    chan, proc = _spawn(rc.channel_echo)
    try:
        for nonce in range(5):
            chan.send(m.HealthCheck(nonce=nonce, sent_ns=0))
            reply = chan.recv(20.0)
            assert reply == m.HealthReply(nonce=nonce, worker="echo")
        chan.send(m.Stop(deadline_s=1.0))
        proc.join(10.0)
        assert proc.exitcode == 0
        assert (chan.sent, chan.received) == (6, 5)
        with pytest.raises(ChannelClosed):
            chan.recv(5.0)
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(5.0)
        chan.close()


def test_peer_killed_raises_channel_closed_on_recv_and_send() -> None:
    chan, proc = _spawn(rc.sleep_forever)
    try:
        assert isinstance(chan.recv(20.0), m.Ready)
        assert chan.recv(0.01) is None  # nothing yet: a timeout is not a closed channel
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(5.0)
        with pytest.raises(ChannelClosed):
            chan.recv(5.0)
        with pytest.raises(ChannelClosed):
            for _ in range(100):  # the first sends may still fit the dead pipe's buffer
                chan.send(m.Stop())
    finally:
        chan.close()


def test_unexpected_message_is_a_validation_error_naming_the_type() -> None:
    a, b = CTX.Pipe(duplex=True)
    sender, receiver = ControlChannel(a, m.ToChild), ControlChannel(b, m.FromChild)
    sender.send(m.Stop())  # a ToChild message arriving where FromChild is expected
    with pytest.raises(msgspec.ValidationError, match="Stop"):
        receiver.recv(1.0)
    sender.close()
    receiver.close()
