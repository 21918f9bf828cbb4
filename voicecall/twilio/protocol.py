"""Twilio Media Streams messages as tagged msgspec Structs (bidirectional `<Connect><Stream>`).

    Twilio -> us:  connected, start, media*, (mark | dtmf)*, stop        (JSON text frames)
    us -> Twilio:  media, mark, clear                                     (JSON text frames)

Decoding rules (Twilio's Media Streams WebSocket messages, as Twilio documents and sends them):

- Twilio sends `sequenceNumber`, `media.chunk` and `media.timestamp` as JSON *strings*; the
  decoder is lax (`strict=False`), so "5" and 5 both become int 5.
- Inbound structs accept unknown fields (Twilio may add some); outbound ones are exact.
- A message that is not JSON, lacks a required field or has the wrong type is a `BadMessage`
  carrying msgspec's located error (`Expected str, got int - at $.media.payload`); an event we
  do not know is an `UnknownEvent`. Neither raises: one bad frame must never end a call.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

# Twilio's counters are small non-negative numbers; they travel on in the rings' 32-bit header
# fields (seq, aux), so anything outside that range is a protocol error at the edge, not a crash
# deep in a ring write.
Counter = Annotated[int, msgspec.Meta(ge=0, lt=2**32)]


class _Inbound(msgspec.Struct, tag_field="event", kw_only=True, rename="camel"):
    """Base of Twilio -> us messages; `streamSid` is absent only on `connected`."""

    stream_sid: str = ""
    sequence_number: Counter = 0


class Connected(_Inbound, tag="connected"):
    protocol: str = "Call"
    version: str = ""


class MediaFormat(msgspec.Struct, kw_only=True, rename="camel"):
    encoding: str = "audio/x-mulaw"
    sample_rate: int = 8000
    channels: int = 1


class StartInfo(msgspec.Struct, kw_only=True, rename="camel"):
    stream_sid: str
    account_sid: str = ""
    call_sid: str = ""
    tracks: list[str] = msgspec.field(default_factory=lambda: ["inbound"])
    media_format: MediaFormat = msgspec.field(default_factory=MediaFormat)
    #: the TwiML's `<Parameter name= value=>` pairs, verbatim
    custom_parameters: dict[str, str] = msgspec.field(default_factory=dict)


class Start(_Inbound, tag="start"):
    start: StartInfo


class MediaInfo(msgspec.Struct, kw_only=True, gc=False):
    payload: str
    track: str = "inbound"
    #: per-track counter from 1; gaps mean lost audio
    chunk: Counter = 0
    #: presentation time (ms since the stream started); -1 when Twilio omitted it
    timestamp: Annotated[int, msgspec.Meta(ge=-1, lt=2**32)] = -1


class Media(_Inbound, tag="media", gc=False):
    media: MediaInfo


class MarkInfo(msgspec.Struct, kw_only=True):
    name: str


class Mark(_Inbound, tag="mark"):
    mark: MarkInfo


class DtmfInfo(msgspec.Struct, kw_only=True):
    digit: str
    track: str = "inbound_track"


class Dtmf(_Inbound, tag="dtmf"):
    dtmf: DtmfInfo


class StopInfo(msgspec.Struct, kw_only=True, rename="camel"):
    account_sid: str = ""
    call_sid: str = ""


class Stop(_Inbound, tag="stop"):
    stop: StopInfo = msgspec.field(default_factory=StopInfo)


Inbound = Connected | Start | Media | Mark | Dtmf | Stop
INBOUND_EVENTS = frozenset(("connected", "start", "media", "mark", "dtmf", "stop"))


# ---------------------------------------------------------------- us -> Twilio


class _Outbound(msgspec.Struct, tag_field="event", kw_only=True, rename="camel", forbid_unknown_fields=True):
    stream_sid: str


class OutPayload(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    payload: str


class OutMedia(_Outbound, tag="media", gc=False):
    media: OutPayload


class OutMarkName(msgspec.Struct, forbid_unknown_fields=True):
    name: str


class OutMark(_Outbound, tag="mark"):
    mark: OutMarkName


class OutClear(_Outbound, tag="clear"):
    pass


Outbound = OutMedia | OutMark | OutClear


# ---------------------------------------------------------------- decoding results


class UnknownEvent(msgspec.Struct, frozen=True):
    """A JSON object whose `event` we do not handle: logged and ignored."""

    event: str


class BadMessage(msgspec.Struct, frozen=True):
    """A frame we could not decode; `error` says what and where."""

    error: str


class _Peek(msgspec.Struct):
    """Lenient view used only after a typed decode failed: is it an unknown event or bad data?"""

    event: str


class InboundDecoder:
    """Built once per process: typed decode first (the hot path), a lenient peek on failure."""

    def __init__(self) -> None:
        self._typed = msgspec.json.Decoder(Inbound, strict=False)
        self._peek = msgspec.json.Decoder(_Peek)

    def decode(self, data: str | bytes) -> Inbound | UnknownEvent | BadMessage:
        try:
            return self._typed.decode(data)
        except msgspec.DecodeError as exc:
            typed_error = str(exc)
        # Two steps only on failure: a frame with a valid shape never pays for the peek.
        try:
            event = self._peek.decode(data).event
        except msgspec.DecodeError as exc:
            return BadMessage(f"not a JSON object with a string `event`: {exc}")
        if event not in INBOUND_EVENTS:
            return UnknownEvent(event)
        return BadMessage(f"bad `{event}` message: {typed_error}")


class OutboundEncoder:
    """Outbound frames as JSON text (Twilio rejects binary frames, error 31950)."""

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder()

    def encode(self, msg: Outbound) -> str:
        return self._encoder.encode(msg).decode("ascii")

    def media(self, stream_sid: str, payload_b64: str) -> str:
        return self.encode(OutMedia(stream_sid=stream_sid, media=OutPayload(payload_b64)))

    def mark(self, stream_sid: str, name: str) -> str:
        return self.encode(OutMark(stream_sid=stream_sid, mark=OutMarkName(name)))

    def clear(self, stream_sid: str) -> str:
        return self.encode(OutClear(stream_sid=stream_sid))


# What the simulator (Twilio's side) decodes: our outbound messages, strictly.
OUTBOUND_DECODER = msgspec.json.Decoder(Outbound)
