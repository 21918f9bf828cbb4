"""A simulated Twilio: places a call against our server the way Twilio does, and plays what comes back.

    POST /twilio/voice (form, signed) -> TwiML -> <Stream url> + <Parameter>s
    WS upgrade to that url (signed over the wss:// url, mapped to --server)
    -> connected, start (customParameters), media every 20 ms (string numbers, like Twilio) ...
    <- media/mark/clear into a simulated playback buffer:
         media  queues audio that plays in real time from when the buffer runs dry
         mark   is echoed when the audio queued before it has played (at once if none)
         clear  drops the queued audio and echoes every pending mark at once
    -> stop, close

Used by `voicecall sim` and the tests; a `CallScript` (voicecall/sim/script.py) is a list of
`Utterance`s (each after a pause, or barging in N ms after the server starts talking) plus DTMF.
The playback buffer standing for Twilio's outbound side is voicecall/sim/playback.py.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import secrets
import time
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
import msgspec
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from ipc.audio import FRAME_BYTES, FRAME_MS, SAMPLE_RATE, ULAW_SILENCE
from voicecall.sim.phone_line import PhoneLine
from voicecall.sim.playback import TwilioBuffer
from voicecall.sim.script import CallReport, CallScript, Utterance, voiced_span_ms
from voicecall.twilio.protocol import OUTBOUND_DECODER, OutClear, OutMark, OutMedia

SILENT_FRAME = bytes([ULAW_SILENCE]) * FRAME_BYTES
FRAME_NS = FRAME_MS * 1_000_000
#: A caller that sent nothing for longer than this (a test's deliberate gap) starts its pacing afresh.
RESYNC_NS = 100_000_000
_JSON = msgspec.json.Encoder()


#: `<Redirect>`s a simulated call follows before giving up (Twilio's own limit is higher).
MAX_REDIRECTS = 5


def _redirect_target(twiml: str) -> str | None:
    try:
        node = ET.fromstring(twiml).find("Redirect")
    except ET.ParseError:
        return None
    return (node.text or "").strip() or None if node is not None else None


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


class SimulatedCall:
    """One call from webhook to `stop`; the step methods exist so tests can misbehave on purpose."""

    def __init__(self, server: str, *, public_url: str = "", auth_token: str = "", from_number: str = "+15550100001",
                 to_number: str = "+15550100002", tick_ms: int = FRAME_MS, session: aiohttp.ClientSession | None = None,
                 line: PhoneLine | None = None) -> None:
        self.server = server.rstrip("/")
        self.public_url = (public_url or server).rstrip("/")
        self.validator = RequestValidator(auth_token) if auth_token else None
        self.from_number, self.to_number = from_number, to_number
        self.frames_per_tick = max(1, tick_ms // FRAME_MS)
        self._session = session
        #: a noisy or quiet line: every frame sent (speech and silence alike) goes through it
        self.line = line
        self.call_sid = new_sid("CA")
        self.account_sid = new_sid("AC")
        self.stream_sid = new_sid("MZ")
        self.stream_url = ""
        self.report = CallReport(call_sid=self.call_sid, stream_sid=self.stream_sid)
        self.ws: ClientConnection | None = None
        self.buffer = TwilioBuffer(self._echo_mark)
        self.origin_ns = 0
        self._seq = 0
        self._next_due_ns = -(2**62)  # when the frame after the last one sent is due (real-time pacing)
        self._chunk = 0
        self._receiver: asyncio.Task[None] | None = None
        self.first_audio_ns: list[int] = []  # first media after each moment we marked
        self._await_audio_since: int | None = None
        self._await_mark_since: int | None = None
        self.clear_ns: list[int] = []
        self.server_audio = asyncio.Event()
        self.received: list[Any] = []  # every decoded server message (tests inspect it)

    # ------------------------------------------------------------------ webhook and connect

    def sign(self, url: str, params: dict[str, str]) -> dict[str, str]:
        return {"X-Twilio-Signature": self.validator.compute_signature(url, params)} if self.validator else {}

    async def place(self, extra: dict[str, str] | None = None) -> int:
        """POST the voice webhook like Twilio; returns the HTTP status (TwiML parsed on 200).

        Like Twilio, a `<Redirect>` is followed: the same parameters are POSTed to its URL, which
        becomes the server this call talks to (a full box handing the call to a peer).
        """
        params = {"CallSid": self.call_sid, "AccountSid": self.account_sid, "From": self.from_number,
                  "To": self.to_number, "CallStatus": "ringing", "Direction": "inbound", "ApiVersion": "2010-04-01"}
        params.update(extra or {})
        local, public = self.server + "/twilio/voice", self.public_url + "/twilio/voice"
        session = self._session or aiohttp.ClientSession()
        try:
            for _hop in range(MAX_REDIRECTS + 1):
                async with session.post(local, data=params, headers=self.sign(public, params)) as resp:
                    self.report.twiml = await resp.text()
                    status = resp.status
                target = _redirect_target(self.report.twiml) if status == 200 else None
                if target is None:
                    break
                self.report.redirects.append(target)
                local = public = urljoin(public, target)
                parts = urlsplit(local)
                self.server = self.public_url = f"{parts.scheme}://{parts.netloc}"
        finally:
            if self._session is None:
                await session.close()
        if status == 200:
            self._parse_twiml(self.report.twiml)
        return status

    def _parse_twiml(self, twiml: str) -> None:
        root = ET.fromstring(twiml)
        stream = root.find("./Connect/Stream")
        if stream is None:
            self.report.busy = root.find("Hangup") is not None
            return
        self.stream_url = stream.get("url", "")
        self.report.parameters = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
        if not self.stream_url.startswith("wss://") or "?" in self.stream_url:
            self.report.protocol_errors.append(f"stream url {self.stream_url!r} is not a wss:// url without query")

    def local_ws_url(self) -> str:
        """The TwiML's public wss:// URL, pointed at the server we actually test."""
        local = urlsplit(self.server)
        path = urlsplit(self.stream_url).path if self.stream_url else "/twilio/media"
        return f"{'wss' if local.scheme == 'https' else 'ws'}://{local.netloc}{path}"

    async def connect(self, headers: dict[str, str] | None = None, start: bool = True) -> None:
        """Open the Media Stream (signed over the public wss:// URL) and send connected + start."""
        signed = self.stream_url or self.public_url.replace("http", "ws", 1) + "/twilio/media"
        hdrs = {k.lower(): v for k, v in self.sign(signed, {}).items()}  # Twilio sends it lowercase here
        hdrs.update(headers or {})
        self.ws = await connect(self.local_ws_url(), additional_headers=hdrs, compression=None, max_size=2**20,
                                open_timeout=10)
        self.origin_ns = time.monotonic_ns()
        self._receiver = asyncio.get_running_loop().create_task(self._receive())
        await self.send_json({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        if start:
            await self.send_start()

    async def send_start(self, stream_sid: str | None = None) -> None:
        await self.send_json({"event": "start", "sequenceNumber": self._next_seq(), "start": {
            "accountSid": self.account_sid, "streamSid": stream_sid or self.stream_sid, "callSid": self.call_sid,
            "tracks": ["inbound"], "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": self.report.parameters}, "streamSid": stream_sid or self.stream_sid})

    # ------------------------------------------------------------------ sending (Twilio's numbers are strings)

    def _next_seq(self) -> str:
        self._seq += 1
        return str(self._seq)

    async def send_json(self, obj: dict[str, Any]) -> None:
        await self.send_text(_JSON.encode(obj).decode())

    async def send_text(self, text: str) -> None:
        assert self.ws is not None
        await self.ws.send(text)

    @property
    def next_media_ms(self) -> int:
        """The media timestamp the next frame sent will carry (as Twilio's: 20 ms a frame)."""
        return (self._chunk + 1) * FRAME_MS

    async def send_frame(self, frame: bytes, stream_sid: str | None = None) -> None:
        self._chunk += 1
        self.report.frames_sent += 1
        await self.send_json({"event": "media", "sequenceNumber": self._next_seq(), "media": {
            "track": "inbound", "chunk": str(self._chunk), "timestamp": str((self._chunk - 1) * FRAME_MS + 20),
            "payload": base64.b64encode(frame).decode()}, "streamSid": stream_sid or self.stream_sid})

    async def send_dtmf(self, digit: str) -> None:
        await self.send_json({"event": "dtmf", "streamSid": self.stream_sid, "sequenceNumber": self._next_seq(),
                              "dtmf": {"track": "inbound_track", "digit": digit}})

    async def _echo_mark(self, name: str) -> None:
        try:
            await self.send_json({"event": "mark", "sequenceNumber": self._next_seq(), "streamSid": self.stream_sid,
                                  "mark": {"name": name}})
        except ConnectionClosed:
            pass

    async def stop(self) -> None:
        await self.send_json({"event": "stop", "sequenceNumber": self._next_seq(), "streamSid": self.stream_sid,
                              "stop": {"accountSid": self.account_sid, "callSid": self.call_sid}})

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        await self._finish()

    async def vanish(self) -> None:
        """Drop the TCP connection without `stop` or a close frame (a crashed peer)."""
        if self.ws is not None:
            self.ws.transport.abort()
        await self._finish()

    async def _finish(self) -> None:
        if self._receiver is not None:
            try:
                await asyncio.wait_for(self._receiver, 5.0)
            except (TimeoutError, asyncio.CancelledError):
                self._receiver.cancel()
        self.buffer.cancel()
        self.report.clears = len(self.clear_ns)
        self.report.marks = [{"name": m.name, "dropped": m.dropped,
                              "echo_after_ms": round((m.echoed_ns - m.received_ns) / 1e6, 1) if m.echoed_ns else None}
                             for m in self.buffer.marks]
        self.report.heard_ms = len(self.heard()) * 1000 // SAMPLE_RATE

    def heard(self) -> bytes:
        return self.buffer.heard(self.origin_ns)

    # ------------------------------------------------------------------ receiving

    async def _receive(self) -> None:
        assert self.ws is not None
        try:
            async for raw in self.ws:
                self._on_message(raw, time.monotonic_ns())
            self.report.closed_by = f"server ({self.ws.close_code})"
        except ConnectionClosed as exc:
            self.report.closed_by = f"connection closed ({exc.rcvd.code if exc.rcvd else 'no close frame'})"

    def _on_message(self, raw: str | bytes, now: int) -> None:
        errors = self.report.protocol_errors
        if isinstance(raw, bytes):
            errors.append("binary frame from the server (Twilio error 31950)")
            return
        try:
            msg = OUTBOUND_DECODER.decode(raw)
        except msgspec.DecodeError as exc:
            errors.append(f"invalid message (Twilio error 31951): {exc}: {raw[:80]}")
            return
        self.received.append(msg)
        if msg.stream_sid != self.stream_sid:
            errors.append(f"wrong streamSid {msg.stream_sid!r} in {type(msg).__name__}")
            return
        if isinstance(msg, OutMedia):
            try:
                audio = base64.b64decode(msg.media.payload, validate=True)
            except binascii.Error:
                errors.append("media payload is not base64")
                return
            if len(audio) != FRAME_BYTES:
                errors.append(f"outbound media of {len(audio)} bytes, not 160 (20 ms)")
            self.report.media_received += 1
            self.report.bytes_received += len(audio)
            answer_starts = self._await_audio_since is not None and now >= self._await_audio_since
            if answer_starts:
                self.report.response_ms.append(round((now - self._await_audio_since) / 1e6, 1))
                self._await_mark_since = self._await_audio_since
                self._await_audio_since = None
            if answer_starts or not self.server_audio.is_set():
                self.first_audio_ns.append(now)
                self.server_audio.set()
            self.buffer.media(audio, now)
            ahead = (self.buffer.play_end_ns - now) / 1e6
            if ahead > self.report.max_buffered_ms:
                self.report.max_buffered_ms = round(ahead, 1)
        elif isinstance(msg, OutMark):
            self.buffer.mark(msg.mark.name, now)
            if self._await_mark_since is not None:
                due = max(now, self.buffer.play_end_ns)
                self.report.answer_heard_ms.append(round((due - self._await_mark_since) / 1e6, 1))
                self._await_mark_since = None
        elif isinstance(msg, OutClear):
            self.clear_ns.append(now)
            self.buffer.clear(now)

    # ------------------------------------------------------------------ a whole call

    async def stream_audio(self, mulaw: bytes) -> tuple[int, int]:
        """Send caller audio paced in real time (`tick_ms` per wake-up); returns (start, end) ns."""
        frames = [mulaw[i : i + FRAME_BYTES] for i in range(0, len(mulaw), FRAME_BYTES)]
        if frames and len(frames[-1]) < FRAME_BYTES:
            frames[-1] += SILENT_FRAME[len(frames[-1]) :]
        return await self._paced(frames)

    async def silence(self, ms: int) -> None:
        await self._paced([SILENT_FRAME] * (ms // FRAME_MS))

    async def _paced(self, frames: list[bytes]) -> tuple[int, int]:
        """Send `frames` in real time, on from where the last ones ended: back-to-back calls (a wait
        made of `silence(20)`s) keep Twilio's pace instead of falling ~1 ms behind at each (0.4%
        of real time seen in a bench call: 2 s over a 9 min call, and an echo that drifted)."""
        now = time.monotonic_ns()
        start = self._next_due_ns if 0 <= now - self._next_due_ns <= RESYNC_NS else now
        for i, frame in enumerate(frames):
            if i and i % self.frames_per_tick == 0:
                due = start + i * FRAME_NS
                delay = (due - time.monotonic_ns()) / 1e9
                if delay > 0:
                    await asyncio.sleep(delay)
            await self.send_frame(frame if self.line is None else self._through_line(frame, start + i * FRAME_NS))
        end = start + len(frames) * FRAME_NS
        self._next_due_ns = end
        delay = (end - time.monotonic_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        return start, time.monotonic_ns()

    def _through_line(self, frame: bytes, captured_ns: int) -> bytes:
        """`frame` (the 20 ms up to `captured_ns`, when it is sent) as the line delivers it: level, noise, and the
        echo of what the caller heard `echo_delay_ms` before."""
        line = self.line
        assert line is not None
        played = None
        if line.echo_db is not None:
            played = self.buffer.played(captured_ns - (line.echo_delay_ms + FRAME_MS) * 1_000_000, len(frame))
        return line.mix(frame, played)

    async def run(self, script: CallScript) -> CallReport:
        """Webhook, stream, the script's utterances and DTMF, tail, `stop`; returns the report."""
        try:
            async with asyncio.timeout(script.max_s):
                status = await self.place()
                if status != 200:
                    self.report.protocol_errors.append(f"webhook answered HTTP {status}")
                    return self.report
                if not self.stream_url:
                    return self.report  # busy: <Say> + <Hangup/>
                await self.connect()
                dtmf = sorted(script.dtmf)
                for utt in script.utterances:
                    await self._utterance(utt, dtmf)
                await self.silence(script.tail_ms)
                for _, digit in dtmf:
                    await self.send_dtmf(digit)
                await self.stop()
        except TimeoutError:
            self.report.protocol_errors.append(f"call did not finish within {script.max_s} s")
        except (ConnectionClosed, OSError) as exc:
            self.report.protocol_errors.append(f"connection lost: {exc!r}")
        finally:
            await self.close()
        return self.report

    async def _utterance(self, utt: Utterance, dtmf: list[tuple[int, str]]) -> None:
        audio = utt.audio()
        if utt.barge_in_after_ms is not None:
            # Caller keeps quiet until the server talks, then talks over it.
            while not self.server_audio.is_set():
                await self.silence(FRAME_MS * self.frames_per_tick)
            talk_at = self.first_audio_ns[-1] + utt.barge_in_after_ms * 1_000_000
            while time.monotonic_ns() < talk_at:
                await self.silence(FRAME_MS)
            clears_before = len(self.clear_ns)
            start, _ = await self._speak(audio, dtmf)
            onset = start + voiced_span_ms(audio)[0] * 1_000_000
            later = [t for t in self.clear_ns[clears_before:] if t >= start]
            if later:
                self.report.barge_in_stop_ms.append(round((later[0] - onset) / 1e6, 1))
            return
        if utt.after_reply:
            await self._wait_for_quiet(quiet_ms=400, limit_s=30.0)
        if utt.pause_before_ms:
            await self.silence(utt.pause_before_ms)
        await self._speak(audio, dtmf)

    async def _wait_for_quiet(self, quiet_ms: int, limit_s: float) -> None:
        """Silence until the server's reply has started and then played out (or `limit_s`)."""
        end = time.monotonic_ns() + int(limit_s * 1e9)
        while time.monotonic_ns() < end:
            now = time.monotonic_ns()
            if self.server_audio.is_set() and now - self.buffer.play_end_ns > quiet_ms * 1_000_000:
                return
            await self.silence(FRAME_MS * self.frames_per_tick)

    async def _speak(self, audio: bytes, dtmf: list[tuple[int, str]]) -> tuple[int, int]:
        while dtmf and (time.monotonic_ns() - self.origin_ns) / 1e6 >= dtmf[0][0]:
            await self.send_dtmf(dtmf.pop(0)[1])
        # The answer may start while this audio's trailing silence is still being sent: arm the
        # timer now, at the moment the voiced part will end, and count only audio after it.
        self._await_audio_since = time.monotonic_ns() + voiced_span_ms(audio)[1] * 1_000_000
        self._await_mark_since = None
        start, end = await self.stream_audio(audio)
        if self._await_audio_since is not None:  # no answer during the trailing silence yet
            self.server_audio.clear()  # from here on, server audio is the answer
        return start, end
