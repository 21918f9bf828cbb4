"""Twilio's messages exactly as documented (string numbers), and every way a frame can be bad."""

from __future__ import annotations

import json

from voicecall.twilio.protocol import (
    OUTBOUND_DECODER,
    BadMessage,
    Connected,
    Dtmf,
    InboundDecoder,
    Mark,
    Media,
    OutboundEncoder,
    OutClear,
    Start,
    Stop,
    UnknownEvent,
)

SID = "MZ" + "0" * 32
DECODER = InboundDecoder()

DOC_START = {
    "event": "start", "sequenceNumber": "1",
    "start": {"accountSid": "AC" + "1" * 32, "streamSid": SID, "callSid": "CA" + "2" * 32, "tracks": ["inbound"],
              "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
              "customParameters": {"FirstName": "Jane", "LastName": "Doe", "RemoteParty": "Bob"}},
    "streamSid": SID,
}


def decode(obj: object) -> object:
    return DECODER.decode(json.dumps(obj))


def test_documented_messages() -> None:
    assert isinstance(decode({"event": "connected", "protocol": "Call", "version": "1.0.0"}), Connected)
    start = decode(DOC_START)
    assert isinstance(start, Start)
    assert start.sequence_number == 1 and start.stream_sid == SID
    assert start.start.custom_parameters["RemoteParty"] == "Bob"
    assert start.start.media_format.sample_rate == 8000 and start.start.tracks == ["inbound"]
    media = decode({"event": "media", "sequenceNumber": "4", "streamSid": SID,
                    "media": {"track": "inbound", "chunk": "2", "timestamp": "5", "payload": "no+JhoaJjpzS"}})
    assert isinstance(media, Media)
    assert (media.sequence_number, media.media.chunk, media.media.timestamp) == (4, 2, 5)
    dtmf = decode({"event": "dtmf", "streamSid": SID, "sequenceNumber": "5",
                   "dtmf": {"track": "inbound_track", "digit": "1"}})
    assert isinstance(dtmf, Dtmf) and dtmf.dtmf.digit == "1"
    mark = decode({"event": "mark", "sequenceNumber": "4", "streamSid": SID, "mark": {"name": "my label"}})
    assert isinstance(mark, Mark) and mark.mark.name == "my label"
    stop = decode({"event": "stop", "sequenceNumber": "5", "streamSid": SID,
                   "stop": {"accountSid": "AC1", "callSid": "CA1"}})
    assert isinstance(stop, Stop) and stop.stop.call_sid == "CA1"


def test_numbers_as_ints_and_extra_fields_are_accepted() -> None:
    media = decode({"event": "media", "sequenceNumber": 4, "streamSid": SID, "future": 1,
                    "media": {"track": "inbound", "chunk": 2, "timestamp": 5, "payload": "", "extra": "x"}})
    assert isinstance(media, Media) and media.media.timestamp == 5


def test_unknown_event_is_not_an_error() -> None:
    assert decode({"event": "transcription", "streamSid": SID}) == UnknownEvent("transcription")


def test_bad_frames_say_what_and_where() -> None:
    for raw in ("not json", "[1, 2]", '{"no_event": 1}', '{"event": 5}', ""):
        assert isinstance(DECODER.decode(raw), BadMessage), raw
    missing = decode({"event": "media", "streamSid": SID, "media": {"chunk": "1"}})
    assert isinstance(missing, BadMessage) and "payload" in missing.error and "$.media" in missing.error
    wrong = decode({"event": "media", "streamSid": SID, "sequenceNumber": "four", "media": {"payload": ""}})
    assert isinstance(wrong, BadMessage) and "sequenceNumber" in wrong.error
    no_start = decode({"event": "start", "streamSid": SID})
    assert isinstance(no_start, BadMessage) and "start" in no_start.error


def test_outbound_shapes_are_twilios() -> None:
    enc = OutboundEncoder()
    assert json.loads(enc.media(SID, "AAA=")) == {"event": "media", "streamSid": SID, "media": {"payload": "AAA="}}
    assert json.loads(enc.mark(SID, "t1-s0")) == {"event": "mark", "streamSid": SID, "mark": {"name": "t1-s0"}}
    assert json.loads(enc.clear(SID)) == {"event": "clear", "streamSid": SID}
    assert OUTBOUND_DECODER.decode(enc.clear(SID)) == OutClear(stream_sid=SID)
