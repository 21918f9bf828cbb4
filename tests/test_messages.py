"""Wire messages: every union decodes what it should and rejects what it should not."""

from __future__ import annotations

import enum
import subprocess
import sys

import msgspec
import pytest

from ipc import messages as m

UNIONS = [m.ToChild, m.FromChild, m.SttRequest, m.SttEvent, m.LlmRequest, m.LlmEvent, m.TtsRequest, m.TtsEvent]


@pytest.mark.parametrize("union", UNIONS, ids=lambda u: "|".join(t.__name__ for t in u.__args__))
def test_every_union_round_trips(union) -> None:
    codec = m.Codec(union)
    for cls in union.__args__:
        fields = msgspec.structs.fields(cls)
        sample = {f.name: _sample(f.type) for f in fields if f.required}
        msg = cls(**sample)
        assert codec.decode(codec.encode(msg)) == msg


def _sample(tp):
    if tp is int:
        return 3
    if tp is str:
        return "x"
    if tp is float:
        return 1.5
    if tp is bool:
        return True
    args = getattr(tp, "__args__", ())
    if args and all(isinstance(a, str) for a in args):  # Literal
        return args[0]
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return next(iter(tp))
    if getattr(tp, "__origin__", None) is list:
        return [m.ChatMessage(role="user", content="hi")]
    raise AssertionError(f"no sample for {tp}")


def test_worker_state_travels_by_value() -> None:
    data = msgspec.msgpack.encode(m.WorkerStatus(worker="tts", state=m.WorkerState.RESTARTING))
    assert msgspec.msgpack.decode(data)["state"] == "restarting"
    assert m.Codec(m.ToChild).decode(data).state is m.WorkerState.RESTARTING


def test_wrong_message_for_channel_is_a_validation_error() -> None:
    codec = m.Codec(m.LlmRequest)
    data = msgspec.msgpack.encode(m.Synthesize(call_id=1, turn_id=1, seq=0, text="hi"))
    with pytest.raises(msgspec.ValidationError):
        codec.decode(data)


def test_unknown_field_rejected() -> None:
    data = msgspec.msgpack.encode({"type": "Cancel", "call_id": 1, "turn_id": 2, "bogus": 3})
    with pytest.raises(msgspec.ValidationError, match="bogus"):
        m.Codec(m.LlmRequest).decode(data)


def test_messages_module_imports_nothing_heavy() -> None:
    code = "import sys, ipc.messages; bad = [n for n in ('torch', 'numpy', 'vllm', 'aiohttp') if n in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
