"""Every cross-process message: tagged msgspec Structs, one union per channel direction.

Imports only msgspec and the standard library, so the supervisor and the telephony process
never pull in a model library through the wire types.

Channels (see DESIGN.md §3)::

    supervisor  --ToChild-->    every child      (Pipe, msgpack)
    every child --FromChild-->  supervisor       (Pipe, msgpack)
    telephony   --SttRequest--> stt   (ring: AUDIO records of mulaw + MESSAGE records)
    stt         --SttEvent-->   telephony (ring: MESSAGE records)
    telephony   --LlmRequest--> llm   (ring: MESSAGE records; ToolResult answers a ToolCall)
    llm         --LlmEvent-->   telephony (ring: TEXT records of token text + MESSAGE records)
    telephony   --TtsRequest--> tts   (ring: MESSAGE records)
    tts         --TtsEvent-->   telephony (ring: AUDIO records of mulaw 8 kHz + MESSAGE records)

Data and the messages that close it travel on the *same* ring so they can never overtake each
other (a `GenerationDone` never arrives before the last token it counts).

Hot per-chunk structs skip GC tracking (`gc=False`); `array_like` is not used because msgspec
unions cannot mix array-like and map-like structs.

Every per-call record names its call and turn in the ring record header (`Record.call_id`,
`.turn_id`, `.seq`): the one authority, because data records (AUDIO, TEXT) carry nothing else
and routing needs no decode. A consumer drops anything for a turn older than the call's
current one. The `call_id`/`turn_id` fields of the Structs below repeat the header (always
equal; redundant, to be removed, see `ipc/ring.py`): new code reads the header. Timestamps are `time.monotonic_ns()`,
comparable across processes on one host. Schema evolution: new fields get defaults.
"""

from __future__ import annotations

import enum
from typing import Literal

import msgspec

# Ring record kinds (the `kind` field of a ring record header).
KIND_MESSAGE = 1  # payload: msgpack of the ring's message union
KIND_AUDIO = 2  # payload: mulaw 8 kHz mono bytes
KIND_TEXT = 3  # payload: UTF-8 text (LLM token deltas)
KIND_PLAYED = 4  # payload: mulaw 8 kHz the agent sent; ts_ns: when the caller hears it (telephony's estimate)



class WorkerState(enum.Enum):
    """A child's state as the supervisor sees it (sent to telephony in `WorkerStatus`, by value)."""

    STARTING = "starting"
    LOADING = "loading"
    READY = "ready"
    RESTARTING = "restarting"
    FAILED = "failed"
    STOPPED = "stopped"


class _Msg(msgspec.Struct, tag=True, forbid_unknown_fields=True, kw_only=True):
    """Base: tagged by class name, unknown fields rejected."""


# ---------------------------------------------------------------- lifecycle: supervisor -> child


class Stop(_Msg):
    """Finish (or abandon) in-flight work within `deadline_s`, then exit 0."""

    deadline_s: float = 5.0


class HealthCheck(_Msg):
    """Answer with a `HealthReply` carrying the same nonce; silence means hung."""

    nonce: int
    sent_ns: int


class Drain(_Msg):
    """Telephony only: refuse new calls politely, let live ones end within `deadline_s`."""

    deadline_s: float


class WorkerStatus(_Msg):
    """Telephony only: a worker changed state (so live calls can apologise or fall back)."""

    worker: str
    state: WorkerState
    detail: str = ""
    restarts: int = 0


ToChild = Stop | HealthCheck | Drain | WorkerStatus


# ---------------------------------------------------------------- lifecycle: child -> supervisor


class LoadProgress(_Msg):
    """A step of model loading; `total` 0 means the step's size is unknown."""

    worker: str
    stage: str
    done: float = 0.0
    total: float = 0.0
    detail: str = ""


class Ready(_Msg):
    """The child can serve (its warm-up inference has run)."""

    worker: str
    load_s: float
    detail: str = ""


class HealthReply(_Msg):
    """Answer to `HealthCheck`; `ok` False (with `detail`) means stuck, treated as hung."""

    nonce: int
    worker: str
    ok: bool = True
    busy_calls: int = 0
    detail: str = ""


class Failed(_Msg):
    """The child cannot continue; `recoverable` says whether a restart may help."""

    worker: str
    reason: str
    recoverable: bool = True


class Drained(_Msg):
    """Telephony: every live call has ended (or the drain deadline ended them)."""

    calls_ended: int = 0
    calls_cut: int = 0


FromChild = LoadProgress | Ready | HealthReply | Failed | Drained


# ---------------------------------------------------------------- per-call messages shared by workers


class CallOpened(_Msg, gc=False):
    """A call started: the worker may allocate per-call state."""

    call_id: int
    opened_ns: int = 0


class CallClosed(_Msg, gc=False):
    """A call ended: the worker drops all per-call state and in-flight work."""

    call_id: int


class Cancel(_Msg, gc=False):
    """Stop everything for this call's turn `turn_id` (and anything older)."""

    call_id: int
    turn_id: int


# ---------------------------------------------------------------- stt


class PlaybackState(_Msg, gc=False):
    """Telephony tells STT whether the agent is audible, for echo-aware barge-in."""

    call_id: int
    turn_id: int
    playing: bool
    ts_ns: int = 0


SttRequest = CallOpened | CallClosed | PlaybackState


class SpeechStarted(_Msg, gc=False):
    """Caller speech passed `min_speech_ms` (barge-in trigger); `media_ms` = its onset."""

    call_id: int
    turn_id: int
    media_ms: int
    detected_ns: int


class Partial(_Msg):
    """An interim transcript of the caller's speech so far (may change)."""

    call_id: int
    turn_id: int
    text: str
    ts_ns: int


class TurnEnded(_Msg):
    """The caller's turn ended; `text` is the final transcript, with the stamps of DESIGN §7."""

    call_id: int
    turn_id: int
    text: str
    speech_start_media_ms: int
    speech_end_media_ms: int
    speech_end_ns: int  # wall stamp of the last voiced inbound frame's arrival
    turn_end_ns: int  # endpoint decided
    stt_final_ns: int  # final transcript ready
    audio_ms: int = 0
    no_speech_prob: float = 0.0
    avg_logprob: float = 0.0  # Whisper's mean token log-probability of `text` (0.0: no tokens)
    turn_end_media_ms: int = 0  # media timestamp at which the endpoint was decided
    endpoint_silence_ms: int = 0  # silence the adaptive endpointer required for this turn
    speculative: bool = False  # the final is the transcript made during the pause (no end-of-turn decode)
    turn_prob: float = -1.0  # Smart Turn's P(complete) at the last pause; -1 = not checked (off, failed, no pause)
    turn_check_ms: float = 0.0  # what that check cost (ms, on the check thread)
    turn_model_failed: bool = False  # the model failed at this turn's last pause: the rules decided alone
    forced: bool = False  # ended by stt.commit_after_ms of speech without a pause, not by silence
    second_look: bool = False  # the last pause was judged again (stt.vad.second_look_ms) before it ended


class SpeculativeFinal(_Msg):
    """The caller paused; `text` covers all their speech so far and may become this turn's final.

    Sent once the pause transcript is in (Smart Turn may still change the wait afterwards), and
    again `stt.vad.speculative_lead_ms` before a long wait runs out; `silence_ms` is the silence
    the endpointer now requires before the turn ends, `waited_ms` how much of it had passed when
    this was sent. Telephony may start the reply for it without sending audio (when the wait still
    to go is short), then use it if `TurnEnded` brings the same text;
    while an answer is held for caller speech, a backchannel (or a sound with no words, by these
    scores) here resumes it before the turn ends.
    """

    call_id: int
    turn_id: int
    text: str
    silence_ms: int
    turn_prob: float = -1.0
    ts_ns: int = 0
    no_speech_prob: float = 0.0  # Whisper's scores of `text`, as `TurnEnded` will carry them if
    avg_logprob: float = 0.0  # the caller says no more (0.0: no tokens)
    waited_ms: int = 0  # silence already past when sent: the turn ends silence_ms - waited_ms later


class SpeechResumed(_Msg, gc=False):
    """The caller spoke again after a pause of the same turn: any `SpeculativeFinal` is stale."""

    call_id: int
    turn_id: int
    media_ms: int = 0
    ts_ns: int = 0


class EchoIgnored(_Msg, gc=False):
    """Speech that started at `media_ms` was the agent's own audio coming back on the line
    (workers/stt/echo_gate.py): no `SpeechStarted`, no barge-in. `delay_ms` after it played,
    `echo_db` relative to it, the fit leaving `explained_db` less of the sound."""

    call_id: int
    turn_id: int
    media_ms: int
    delay_ms: float
    echo_db: float
    explained_db: float
    check_ms: float = 0.0


SttEvent = SpeechStarted | Partial | TurnEnded | SpeculativeFinal | SpeechResumed | EchoIgnored


# ---------------------------------------------------------------- llm


class ToolSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A function the model may call: OpenAI's `tools[].function`, parameters as JSON Schema text."""

    name: str
    description: str = ""
    parameters_json: str = '{"type": "object", "properties": {}}'


class ToolCallInfo(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A call the model made: its id (pairs it with the result), the function, JSON arguments."""

    id: str
    name: str
    arguments_json: str = "{}"


class ChatMessage(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One entry of the conversation history, as the caller heard it.

    Tool use: an assistant message may carry `tool_calls`; each result follows as a
    `role="tool"` message naming its call in `tool_call_id`.
    """

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    interrupted: bool = False
    tool_calls: list[ToolCallInfo] = []
    tool_call_id: str = ""


class Generate(_Msg):
    """Stream a reply to `messages` (the history lives on the telephony side)."""

    call_id: int
    turn_id: int
    messages: list[ChatMessage]
    max_tokens: int = 200
    temperature: float = 0.7
    sent_ns: int = 0
    #: Functions offered this turn (empty: plain text, no tool calling).
    tools: list[ToolSpec] = []
    #: The call's agent profile's knowledge file for the faq backend ("" = `llm.knowledge`).
    knowledge: str = ""


class ToolResult(_Msg):
    """Telephony ran the turn's tool call `tool_call_id`; `content` (JSON text) goes back to the model.

    `final`: the turn is over (a transfer happened, an apology was spoken): no follow-up reply.
    """

    call_id: int
    turn_id: int
    tool_call_id: str
    content: str
    ok: bool = True
    final: bool = False


LlmRequest = Generate | Cancel | CallClosed | ToolResult


class GenerationDone(_Msg):
    """The reply for this turn is complete (after its last TEXT record on the same ring)."""

    call_id: int
    turn_id: int
    finish_reason: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    end_call: bool = False
    backend: str = ""
    fallback: bool = False
    first_token_ns: int = 0
    done_ns: int = 0


class GenerationFailed(_Msg):
    """No reply could be produced; telephony speaks its apology."""

    call_id: int
    turn_id: int
    reason: str
    backend: str = ""


class ToolCall(_Msg):
    """The model called a tool telephony runs (transfer, an operator's HTTP tool); the turn waits
    for the `ToolResult`. Sent after the TEXT records said before the call, on the same ring."""

    call_id: int
    turn_id: int
    tool_call_id: str
    name: str
    arguments_json: str = "{}"


LlmEvent = GenerationDone | GenerationFailed | ToolCall


# ---------------------------------------------------------------- tts


class Synthesize(_Msg):
    """Speak one sentence of a turn; `seq` orders sentences within the turn."""

    call_id: int
    turn_id: int
    seq: int
    text: str
    sent_ns: int = 0


class ContextTurn(_Msg):
    """A turn of the conversation for context-aware voices (CSM); others ignore it."""

    call_id: int
    turn_id: int
    speaker: Literal["caller", "agent"]
    text: str


TtsRequest = Synthesize | Cancel | CallClosed | CallOpened | ContextTurn


class SentenceDone(_Msg):
    """All audio of sentence `seq` is in the ring; `duration_ms` is exactly frames * 20."""

    call_id: int
    turn_id: int
    seq: int
    frames: int
    duration_ms: int
    first_audio_ns: int
    text: str = ""


class SynthesisFailed(_Msg):
    call_id: int
    turn_id: int
    seq: int
    reason: str


TtsEvent = SentenceDone | SynthesisFailed

#: Whatever a worker's event ring carries in MESSAGE records (each ring decodes its own union).
WorkerEvent = SttEvent | LlmEvent | TtsEvent


# ---------------------------------------------------------------- codecs


class Codec:
    """A msgpack encoder and a decoder for one union, built once per channel."""

    __slots__ = ("decode", "encode")

    def __init__(self, union: object) -> None:
        self.encode = msgspec.msgpack.Encoder().encode
        self.decode = msgspec.msgpack.Decoder(union).decode  # type: ignore[arg-type]
