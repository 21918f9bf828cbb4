"""Hypothesis strategies for malformed Twilio Media Streams frames (what a broken or hostile peer sends).

Each example is a `Junk`: the frame (text or binary) and whether it is safe to inject into a
live call we still want to hold a conversation on. Everything here is wrong in some way: not
JSON, not an object, no or a non-string `event`, an unknown event, a known event with missing
fields, wrong types or absurd numbers, bad base64, or the wrong `streamSid`. Frames that name
the stream's own sid (`OWN_SID`, replaced per socket) are kept off the live call when a
tolerant server could act on them (valid audio, a keypad digit), so the live call's words stay
the caller's words.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from hypothesis import strategies as st

OWN_SID = "\x00OWN_SID\x00"  # placeholder: the socket's real streamSid is put here before sending


@dataclass(frozen=True)
class Junk:
    frame: str | bytes
    live_safe: bool

    def for_stream(self, sid: str) -> str | bytes:
        if isinstance(self.frame, bytes):
            return self.frame
        return self.frame.replace(json.dumps(OWN_SID)[1:-1], sid)


huge_ints = st.sampled_from([2**31, 2**63 - 1, 2**63, 2**64, 2**64 + 1, 10**30, -(2**63), -(2**64), -1])
numbers = st.one_of(st.integers(), huge_ints, st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([1e308, -1e308, 1e-320]))
numeric_strings = numbers.map(str) | st.sampled_from(["", "NaN", "1e999", "0x10", " 5", "5.5", "-0", "١٢"])
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=40))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)
wrong_sids = st.one_of(st.just(""), st.text(max_size=40), st.just("MZ" + "0" * 32), st.integers(), st.none())
any_sid = st.one_of(wrong_sids, st.just(OWN_SID))
bad_base64 = st.one_of(
    st.text(max_size=300).filter(lambda s: not _is_b64(s)),
    st.sampled_from(["====", "a", "abc", "*" * 160, "\u00ff" * 10, "AAAA====AAAA", "data:audio/x-mulaw;base64,AAAA"]),
)
good_base64 = st.binary(min_size=1, max_size=1600).map(lambda b: base64.b64encode(b).decode())


def _is_b64(s: str) -> bool:
    try:
        base64.b64decode(s, validate=True)
    except ValueError:
        return False
    return True


def _dumps(obj: object) -> str:
    return json.dumps(obj, allow_nan=False)


@st.composite
def media_messages(draw: st.DrawFn) -> Junk:
    """`media` frames, each broken somewhere; the live call gets the ones it must drop."""
    sid = draw(any_sid)
    payload = draw(st.one_of(bad_base64, good_base64, json_values, st.just("")))
    media: dict[str, object] = {"payload": payload}
    for key in ("track", "chunk", "timestamp"):
        if draw(st.booleans()):
            media[key] = draw(st.one_of(numeric_strings, numbers, json_values, st.sampled_from(["inbound", "outbound"])))
    body: object = media if draw(st.integers(0, 9)) else draw(json_values)
    msg = {"event": "media", "streamSid": sid, "sequenceNumber": draw(numeric_strings), "media": body}
    acts = sid == OWN_SID and isinstance(payload, str) and _is_b64(payload) and payload != ""
    return Junk(_dumps(msg), live_safe=not acts)


@st.composite
def control_messages(draw: st.DrawFn) -> Junk:
    """`start`, `mark`, `dtmf`, `stop`, `connected` with wrong sids, wrong types, missing parts."""
    event = draw(st.sampled_from(["start", "mark", "dtmf", "stop", "connected"]))
    sid = draw(wrong_sids)  # never the stream's own sid: a real `stop` would end the call
    msg: dict[str, object] = {"event": event, "streamSid": sid}
    if event == "start":
        msg["start"] = draw(st.one_of(json_values, st.fixed_dictionaries(
            {"streamSid": wrong_sids, "mediaFormat": st.one_of(json_values, st.fixed_dictionaries(
                {"encoding": scalars, "sampleRate": numbers, "channels": numbers}))})))
    elif event == "mark":
        msg["mark"] = draw(st.one_of(json_values, st.fixed_dictionaries({"name": st.text(max_size=20).map("fuzz-".__add__)})))
    elif event == "dtmf":
        msg["dtmf"] = draw(st.one_of(json_values, st.fixed_dictionaries({"digit": scalars})))
    elif event == "stop":
        msg["stop"] = draw(json_values)
    if draw(st.booleans()):
        msg["sequenceNumber"] = draw(st.one_of(numeric_strings, numbers, json_values))
    return Junk(_dumps(msg), live_safe=True)


@st.composite
def own_sid_actions(draw: st.DrawFn) -> Junk:
    """Frames a tolerant server acts on: a keypad digit, an echo of a mark never sent (fuzz socket only)."""
    kind = draw(st.sampled_from(["dtmf", "mark", "start", "connected"]))
    if kind == "dtmf":
        msg: dict[str, object] = {"event": "dtmf", "streamSid": OWN_SID, "dtmf": {"digit": draw(st.text(max_size=3))}}
    elif kind == "mark":
        msg = {"event": "mark", "streamSid": OWN_SID, "mark": {"name": draw(st.text(max_size=30))}}
    elif kind == "start":
        msg = {"event": "start", "streamSid": OWN_SID, "start": {"streamSid": OWN_SID, "callSid": draw(st.text(max_size=10))}}
    else:
        msg = {"event": "connected", "protocol": draw(scalars), "version": draw(scalars)}
    return Junk(_dumps(msg), live_safe=kind in ("start", "connected"))


structural_junk = st.one_of(
    st.text(max_size=200).map(lambda t: Junk(t, True)),  # mostly not JSON at all
    json_values.map(lambda v: Junk(_dumps(v), True)),  # JSON, but not a Twilio message
    st.dictionaries(st.text(max_size=10), json_values, max_size=5).map(lambda d: Junk(_dumps(d), True)),  # no `event`
    st.builds(lambda e, rest: Junk(_dumps({"event": e, **rest}), True), st.one_of(numbers, st.none(), st.lists(scalars)),
              st.dictionaries(st.text(max_size=6), scalars, max_size=3)),  # `event` not a string
    st.builds(lambda e: Junk(_dumps({"event": e, "streamSid": OWN_SID}), True),
              st.text(max_size=20).filter(lambda e: e not in ("connected", "start", "media", "mark", "dtmf", "stop"))),
    st.binary(max_size=400).map(lambda b: Junk(b, True)),  # binary frames: Twilio sends only text
    st.sampled_from(["{", "[]", "null", '{"event":', '{"event":"media"', '\x00', "{}" * 300]).map(lambda t: Junk(t, True)),
)

malformed_frames = st.one_of(media_messages(), control_messages(), own_sid_actions(), structural_junk)
