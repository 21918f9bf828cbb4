"""Typed configuration: `configs/*.toml` decoded straight into msgspec Structs.

Unknown keys are errors; ranges are `msgspec.Meta` constraints on the fields (shared aliases in
`workers.config`). `load_config` reports every problem it finds at once, each naming the file,
the key path, what was expected and what came, e.g.::

    configs/cpu.toml: $.stt.vad.threshold: Expected `float`, got `str`
    configs/cpu.toml: $.stt.vad.threshold: Expected `float` < 1.0, got 1.5

Checks no field constraint can say (a power of two, one key needing another) are written below.
"""

from __future__ import annotations

import logging
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from voicecall.agents import E164, AgentConfig, agent_problems, load_agent_files
from voicecall.storage.engine import DEFAULT_URL as DEFAULT_RECORDS_URL
from voicecall.storage.engine import RecordsUrl, RecordsUrlError
from workers.config import AtLeastOne, EnvName, LlmConfig, NonNegative, Seconds, SttConfig, TtsConfig

#: Seconds, or 0 for "never" (the silence rules).
SecondsOrOff = Annotated[float, msgspec.Meta(ge=0.0)]
#: A shared-memory ring's size in bytes (also a power of two: checked in `_semantic_problems`).
RingBytes = Annotated[int, msgspec.Meta(ge=65536)]

log = logging.getLogger("voicecall.config")


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class ServerConfig(_Section):
    """The telephony process's HTTP/WebSocket server."""

    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 8080
    #: Public base URL Twilio reaches us at (e.g. "https://agent.example.com"); signatures are
    #: computed over it, and the TwiML stream URL is derived from it. Empty: derived from Host.
    public_url: str = ""
    #: Deprecated: set `[twilio] auth_token_env`. Still accepted (copied there, with a log line);
    #: after loading it always mirrors `twilio.auth_token_env`, which signature checks read.
    auth_token_env: EnvName = "TWILIO_AUTH_TOKEN"
    #: Deprecated: set `[twilio] account_sid_env` (same rules as above).
    account_sid_env: EnvName = "TWILIO_ACCOUNT_SID"
    #: Serve unsigned traffic on a non-loopback address (only for tunnels you trust).
    allow_unsigned: bool = False
    #: Live calls beyond this get a polite "busy" TwiML and are hung up. Count.
    max_calls: NonNegative = 32
    #: Largest WebSocket message accepted, bytes (a 20 ms media frame is ~300 B of JSON).
    max_ws_message_bytes: AtLeastOne = 65536
    #: Outbound audio is sent at most this far ahead of real time, ms (bounds what `clear` drops).
    playout_lead_ms: Annotated[int, msgspec.Meta(ge=20)] = 200  # one frame at least
    #: Seconds without any inbound message before a media stream is considered dead.
    idle_timeout_s: Seconds = 30.0
    #: Serve the browser softphone ("/", "/calls", their feeds; unsigned "/twilio/media" from a
    #: browser). Loopback clients only, unless the token below is set; false turns them all off.
    softphone: bool = True
    #: Environment variable holding the shared token that lets non-loopback clients in (they open
    #: "/?token=..."; the page keeps it in a cookie); unset or empty = loopback only.
    softphone_token_env: EnvName = "VOICECALL_SOFTPHONE_TOKEN"
    #: This box's name in the call records and /healthz; "" = the host name. Must differ between boxes sharing
    #: one database: at start-up a box closes the rows its own killed predecessor left open.
    instance_name: str = ""
    #: Other voicecall boxes behind the same number, as base URLs Twilio can reach
    #: ("https://box2.example.com"). A full box redirects a new call to the first peer whose
    #: /healthz says it is ready with room; none = the busy message.
    peers: list[str] = []
    #: Seconds a full box waits for each peer's /healthz before counting it as full.
    peer_timeout_s: Seconds = 0.5
    #: Environment variable holding the bearer token of the REST API (`/api/calls`); unset or
    #: empty = the API is off (every request gets 403).
    api_token_env: EnvName = "VOICECALL_API_TOKEN"


    def instance(self) -> str:
        """`instance_name`, or the host name when it is empty."""
        return self.instance_name or socket.gethostname()


class TwilioConfig(_Section):
    """Twilio's REST API (hang-up, transfer, outbound calls) and the credentials every Twilio use reads."""

    #: REST API base URL: a regional edge (e.g. "https://api.dublin.ie1.twilio.com") or, in tests,
    #: a local stand-in. Requests go to {api_base_url}/2010-04-01/Accounts/{AccountSid}/...
    api_base_url: Annotated[str, msgspec.Meta(pattern=r"^https?://")] = "https://api.twilio.com"
    #: Environment variable holding the account SID ("AC..."); REST calls need it.
    account_sid_env: EnvName = "TWILIO_ACCOUNT_SID"
    #: Environment variable holding the auth token (REST auth and webhook signatures; never in config).
    auth_token_env: EnvName = "TWILIO_AUTH_TOKEN"
    #: Our Twilio number in E.164 ("+15551234567"): `From` of outbound calls, caller ID of transfers.
    #: Empty: outbound calls need an explicit From; transfers show the original caller.
    caller_id: Annotated[str, msgspec.Meta(pattern=f"^({E164.pattern})?$")] = ""
    #: Seconds to open the TCP/TLS connection to the REST API.
    connect_timeout_s: Seconds = 3.0
    #: Seconds a whole REST request may take; a POST that times out is never re-sent.
    request_timeout_s: Seconds = 8.0


class SupervisorConfig(_Section):
    """Process supervision."""

    #: Seconds between health checks of each child.
    health_interval_s: Seconds = 2.0
    #: A child that does not answer a health check within this many seconds counts as hung.
    health_timeout_s: Seconds = 10.0
    #: First restart delay after a crash, seconds; doubles per consecutive crash.
    restart_backoff_s: Annotated[float, msgspec.Meta(ge=0.0)] = 0.5
    #: Longest restart delay, seconds.
    restart_backoff_max_s: Annotated[float, msgspec.Meta(ge=0.0)] = 10.0
    #: On SIGTERM/SIGINT, seconds live calls may continue before they are ended.
    drain_deadline_s: Annotated[float, msgspec.Meta(ge=0.0)] = 10.0
    #: Seconds a child gets to exit after `Stop` before SIGTERM, then again before SIGKILL.
    stop_grace_s: Seconds = 3.0


class IpcConfig(_Section):
    """Shared-memory ring sizes (bytes, powers of two)."""

    audio_in_ring_bytes: RingBytes = 1 << 21
    audio_out_ring_bytes: RingBytes = 1 << 22
    events_ring_bytes: RingBytes = 1 << 20
    requests_ring_bytes: RingBytes = 1 << 20


BACKCHANNELS = (
    "uh-huh", "uh huh", "mm-hmm", "mm hmm", "mhm", "hmm", "mm", "yeah", "yes", "yep", "okay", "ok",
    "right", "sure", "i see", "got it", "alright", "all right", "uh", "um", "oh", "thanks", "thank you",
    # tiny.en's spellings of "uh-huh" and "mm-hmm" (a soak: "Uh-huh, okay." heard "Aha, okay." 37 times of 93)
    "aha", "ah-ha", "mm-hm", "uh-hum",
    # ... and of an espeak "I see." (12 of its 13 misses offline in 6 voices, and live: "ID.", "I.E.",
    # "i-d", "I.B.", "I T."); no interruption came back as one
    "id", "i d", "i e", "i b", "i t",
    # acknowledgements a caller says to let the agent go on (Vocode's backchannel patterns, Vapi's
    # acknowledgementPhrases): never "no", "stop", "wait", "actually", which mean the opposite
    "yup", "mmhmm", "uhhuh", "gotcha", "understood", "i understand", "makes sense", "sounds good",
    "of course", "go on", "exactly", "cool", "great", "perfect",
)
#: Words a caller uses to stop the agent or ask it something: a short sound over the agent that holds
#: one is never taken for a murmur Whisper guessed at, however low it scores ("Pardon?" heard
#: "pardon" at -1.54 to -1.72 mean log-probability, "Say again?" heard "again" at -1.53).
INTERRUPTION_WORDS = (
    "wait", "stop", "hold", "hang", "pardon", "sorry", "excuse", "repeat", "again", "what", "when", "where",
    "why", "how", "who", "no", "actually", "hello",
)
#: Sounds, not words: Whisper writes them for coughs, sighs and hums ("ah ah ah ah", "Oh, oh, oh").
FILLERS = ("ah", "aah", "oh", "uh", "um", "umm", "er", "erm", "eh", "mm", "mmm", "hmm", "huh", "ha", "hm")


class CallConfig(_Section):
    """Conversation behaviour."""

    greeting: str = "Hello, thanks for calling. How can I help you today?"
    #: Spoken when a worker fails mid-turn and no fallback answer is available.
    apology: str = "Sorry, I had a problem just now. Could you say that again?"
    #: Spoken when the speech recogniser restarted while the caller was talking (their words are lost).
    missed_words: str = "Sorry, I missed that, could you say it again?"
    #: Spoken to callers when the system is full, starting up or shutting down.
    busy_message: str = "Sorry, all our lines are busy right now. Please call again later."
    #: Characters a first clause needs before it may be spoken early (shorter waits for more).
    first_clause_min_chars: NonNegative = 12
    #: History turns sent to the LLM (older ones are dropped). Count.
    max_history_turns: NonNegative = 20
    #: Seconds any single wait on a worker may take before the turn falls back.
    worker_deadline_s: Seconds = 5.0
    #: Said, from audio kept in the telephony process, when a caller whose turn has ended hears no
    #: answer within `wait_filler_after_ms`: a slow or stuck worker is never dead air
    #: (voicecall/conversation/wait_filler.py). Once per turn; empty: never.
    wait_filler: str = "One moment."
    #: Milliseconds from the end of the caller's turn (the stt worker's decision) to the filler while
    #: no answer audio has started. An answer that comes just after it waits for the clip. 0 = never.
    wait_filler_after_ms: NonNegative = 600
    #: While the stt worker has left call audio unread for `stt_stall_ms` (stopped, restarting, far
    #: behind) there is no turn end to time from: a caller quiet this many ms after a sound no turn
    #: has answered yet hears the filler.
    wait_filler_quiet_ms: NonNegative = 300
    #: Milliseconds the stt worker may leave call audio unread before it counts as stalled. 0 = never.
    stt_stall_ms: NonNegative = 400
    #: A reply still waiting for its first audio while the llm or tts worker it waits on has left
    #: its requests unread this many ms (stopped, hung: both read at once when healthy) says the
    #: filler now rather than `wait_filler_after_ms` after the turn end. 0 = never.
    worker_stall_ms: NonNegative = 300
    #: Speculative reply: when the caller pauses and the stt worker's end-of-turn wait for what they
    #: said has at most this long (ms) to go (at once for a short wait; `stt.vad.speculative_lead_ms`
    #: before the end of a long one), the reply is generated and synthesized right away without
    #: sending audio; it plays the moment the turn ends with the same transcript, and is aborted
    #: (LLM request and TTS job cancelled) if the caller goes on. 0 disables.
    speculative_max_silence_ms: NonNegative = 500
    #: While the agent speaks, caller speech stops its audio at once; if it then turns out to be one
    #: of these (a backchannel) or to hold no words (a cough, line noise), the answer resumes from
    #: the start of the sentence the caller stopped hearing: no new turn. Compared lower-case,
    #: without punctuation. An empty list makes every caller sound a real interruption.
    backchannels: list[str] = msgspec.field(default_factory=lambda: list(BACKCHANNELS))
    #: A backchannel is at most this many words (all of them from `backchannels`; a phrase said again
    #: in a row counts once: "Uh-huh, uh-huh" is two).
    backchannel_max_words: NonNegative = 3
    #: Resume at the caller's first pause, once its transcript is a backchannel or holds no words,
    #: instead of when their turn ends: a lone "uh-huh" often sounds unfinished to Smart Turn, and
    #: the endpointer's 1.2 s wait was then dead air. If the caller goes on, the audio stops again.
    backchannel_resume_at_pause: bool = True
    #: A sound over the agent holds no words (the answer resumes) when Whisper rates it no-speech
    #: at or above `no_words_prob` (0..1) AND its text scores below `no_words_logprob` (mean token
    #: log-probability): Whisper's own rule for skipping a silent segment (its no_speech_threshold
    #: 0.6 and logprob_threshold -1.0). Either alone misjudges: a cough comes back as "I'm going to
    #: go to the next" at no-speech 0.71, while "Actually, can I talk to a person?" in a synthetic
    #: voice scored 0.72; the made-up text is what scores low. 1.0 = trust the text alone.
    #: `no_words_logprob` also judges a start broken off: at most `backchannel_max_words` words
    #: (none of `interruption_words`) ending "..." and scored below it hold no words ("I'd be..."
    #: for an espeak "I see." at -1.17; offline 6 of 42 missed backchannels, no interruption more).
    no_words_prob: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.6
    no_words_logprob: Annotated[float, msgspec.Meta(le=0.0)] = -1.0
    #: A short sound (at most `backchannel_max_words` words, none of `interruption_words`) whose text
    #: scores below this mean token log-probability is Whisper guessing at a murmur, whatever its
    #: no-speech rating: no words. An "mm-hmm" came back as "And mm" at -1.82. Short real
    #: interruptions score lower than one would hope: offline, 20 of them ("Wait.", "Hold on.",
    #: "What?") in 9 voices, clean and under line noise, 58 of 360 came back below -1.0 and 18 below
    #: -1.5, so lowering this resumes over callers who meant to stop the agent. -inf (e.g. -99) = off.
    no_words_guess_logprob: Annotated[float, msgspec.Meta(le=0.0)] = -1.5
    #: Words that keep a short sound a real interruption against `no_words_guess_logprob` (compared
    #: lower-case, without punctuation). Empty: the guess rule alone.
    interruption_words: list[str] = msgspec.field(default_factory=lambda: list(INTERRUPTION_WORDS))
    #: Text made only of these (any number of them) is a sound, not words: the answer resumes.
    fillers: list[str] = msgspec.field(default_factory=lambda: list(FILLERS))
    #: Caller words (not a backchannel) that start before any of the answer was sent, or within
    #: this many ms of its first frame, continue the caller's turn: the answer is dropped and both
    #: parts are answered as one caller turn (one record, one reply). Later ones interrupt. 0 = off.
    went_on_window_ms: NonNegative = 1500
    #: Said (from the LLM's end_call or a goodbye entry) when the reply itself said nothing.
    goodbye: str = "Thank you for calling. Goodbye!"
    #: E.164 number ("+15551234567") the `transfer_call` tool puts callers through to (TwiML
    #: <Dial> via the REST API). Empty: the tool is not offered; a caller who asks is told no.
    transfer_number: Annotated[str, msgspec.Meta(pattern=f"^({E164.pattern})?$")] = ""
    #: Said before transferring when the reply has not already said something.
    transfer_message: str = "I'll put you through to a member of our staff now. Please hold."
    #: Said when a transfer is asked for but there is no number or no Twilio credentials.
    transfer_unavailable_message: str = "I'm sorry, I can't transfer your call right now. Can I help with something else?"
    #: Said when Twilio refuses the transfer (HTTP error); the call goes on.
    transfer_failed_message: str = "I'm sorry, the transfer didn't go through. Can I help with something else?"
    #: Seconds the handoff line may take to be heard (its mark echoed) before transferring anyway.
    transfer_heard_timeout_s: Seconds = 15.0
    #: Said while an HTTP tool has not answered after `tool_filler_after_ms` (empty: say nothing).
    tool_filler: str = "One moment while I check that."
    #: Milliseconds an HTTP tool may take before the filler is said.
    tool_filler_after_ms: NonNegative = 700
    #: Said when a tool times out or fails; the call goes on.
    tool_failed_message: str = "I'm sorry, I couldn't finish that just now. Can I help with something else?"
    #: Keypad digits are collected until this many seconds pass without one (or `#` is pressed),
    #: then reach the LLM as one message.
    dtmf_inter_digit_s: Seconds = 2.0
    #: Seconds of caller silence (after the agent finished speaking) before `idle_prompt` is
    #: said. 0 = never.
    idle_prompt_s: SecondsOrOff = 0.0
    idle_prompt: str = "Are you still there?"
    #: Seconds of caller silence (same clock as idle_prompt_s) before `idle_goodbye` is said
    #: and the call is hung up. 0 = never.
    idle_hangup_s: SecondsOrOff = 0.0
    idle_goodbye: str = "I haven't heard from you, so I'll end the call now. Goodbye!"
    #: Longest call, seconds: then `max_duration_message` is said (after the reply in flight)
    #: and the call ends. 0 = no limit.
    max_duration_s: SecondsOrOff = 0.0
    max_duration_message: str = "We've reached the time limit for this call. Thank you for calling. Goodbye!"

    #: Outbound calls: the agent waits for the callee's first words ("Hello?") or this many
    #: seconds after the call connects, then greets.
    outbound_greet_after_s: Seconds = 2.0
    #: Left on an answering machine after the beep (agents may override it); then the call ends.
    voicemail_message: str = "Hello, this is a message from the front desk. Please call us back when you can. Goodbye."


class ToolConfig(_Section, kw_only=True):
    """An operator's tool over HTTP (`[[tools]]`): the LLM may call it; telephony POSTs the
    arguments as JSON to `url` and gives the JSON answer back to the LLM."""

    #: Function name the LLM sees (letters, digits, _ and -; not transfer_call or end_call).
    name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")]
    #: What the tool does and when to use it (the LLM reads this).
    description: str = ""
    #: JSON Schema of the arguments (a TOML table), e.g. {type = "object", properties = {...}}.
    parameters: dict[str, Any] = msgspec.field(default_factory=lambda: {"type": "object", "properties": {}})
    #: Where the arguments are POSTed (application/json); the answer must be JSON.
    url: Annotated[str, msgspec.Meta(pattern=r"^https?://")]
    #: Seconds the tool may take; then `call.tool_failed_message` is said and the call goes on.
    timeout_s: Seconds = 5.0


class RecordsConfig(_Section):
    """Call records (voicecall/records.py): one SQLite file for one box, or PostgreSQL shared by several."""

    #: Where records go: "sqlite:///data/calls.db" (a file, relative to the working directory;
    #: sqlite:////abs/path.db for an absolute one) or "postgresql://user@host:5432/dbname" (no
    #: password here: it comes from the variable named by `password_env`).
    url: str = DEFAULT_RECORDS_URL
    #: Older spelling of a SQLite url: a file path. Set this or `url`, not both.
    db_path: str = ""
    #: Environment variable holding the PostgreSQL password (never logged; unset = none or ~/.pgpass).
    password_env: EnvName = "VOICECALL_DB_PASSWORD"
    #: Records kept in memory while PostgreSQL is unreachable mid-run (written in order on
    #: reconnect; beyond this new ones are dropped and counted). Count; ~1 KiB each.
    buffer_max: AtLeastOne = 10000
    #: Seconds to wait for a PostgreSQL connection (start-up fails after this; mid-run it retries).
    connect_timeout_s: Seconds = 5.0

    def resolved_url(self) -> str:
        """`url`, or the SQLite url of `db_path` when only that is set."""
        if self.db_path and self.url == DEFAULT_RECORDS_URL:
            return "sqlite:///" + self.db_path
        return self.url
    #: Directory for one two-channel WAV per call (left caller, right the agent as heard), 8 kHz
    #: 16-bit; empty = no recordings. Recording a call needs the caller's consent in many places.
    recordings_dir: str = ""
    #: Recordings older than this many days are deleted (at start-up and hourly); 0 = keep all.
    keep_recordings_days: Annotated[float, msgspec.Meta(ge=0.0)] = 30.0


class Config(_Section):
    """The whole voicecall configuration."""

    name: str = "voicecall"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    twilio: TwilioConfig = msgspec.field(default_factory=TwilioConfig)
    supervisor: SupervisorConfig = msgspec.field(default_factory=SupervisorConfig)
    ipc: IpcConfig = msgspec.field(default_factory=IpcConfig)
    call: CallConfig = msgspec.field(default_factory=CallConfig)
    records: RecordsConfig = msgspec.field(default_factory=RecordsConfig)
    stt: SttConfig = msgspec.field(default_factory=SttConfig)
    llm: LlmConfig = msgspec.field(default_factory=LlmConfig)
    tts: TtsConfig = msgspec.field(default_factory=TtsConfig)
    #: Operator tools over HTTP (`[[tools]]` tables).
    tools: list[ToolConfig] = msgspec.field(default_factory=list)
    #: Agent profiles (see voicecall/agents.py); more come from `agents_dir`.
    agents: list[AgentConfig] = msgspec.field(default_factory=list)
    #: Directory of agent profiles, one `*.toml` each (relative to the working directory); "" = none.
    agents_dir: str = ""


class ConfigError(Exception):
    """The configuration is invalid; `problems` lists every one found (not recoverable)."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  {path}: {p}" for p in problems)
        super().__init__(f"invalid config ({len(problems)} problem(s)):\n{lines}")


def _problems(data: Any, typ: Any, where: str = "$") -> list[str]:
    """Every problem in `data` read as `typ`, each at its key path.

    msgspec stops at the first error; a failing section is walked field by field so one run
    reports them all.
    """
    try:
        msgspec.convert(data, typ)
        return []
    except msgspec.ValidationError as exc:
        first = _relocate(str(exc), where, data)
    if not (isinstance(data, dict) and isinstance(typ, type) and issubclass(typ, msgspec.Struct)):
        return [first]
    fields = {f.name: f.type for f in msgspec.structs.fields(typ)}
    problems: list[str] = []
    for key, value in data.items():
        if key in fields:
            problems += _problems(value, fields[key], f"{where}.{key}")
        else:
            problems.append(f"{where}.{key}: unknown key (expected one of {', '.join(sorted(fields))})")
    return problems or [first]


def _relocate(message: str, where: str, value: Any) -> str:
    # msgspec says "... - at `$.vad.threshold`" relative to what it was given: lead with the full
    # path. A broken bound ("Expected `float` < 1.0") does not say what came: add the value.
    at = ""
    if " - at `$" in message:
        message, _, at = message.rpartition(" - at `$")
        at = at.rstrip("`")
    if message.startswith("Expected") and ", got " not in message:
        got = _value_at(value, at)
        if got is not _MISSING:
            message = f"{message}, got {got!r}"
    return f"{where}{at}: {message}"


_MISSING = object()


def _value_at(value: Any, at: str) -> Any:
    """The value at a msgspec path such as ".vad.threshold" (`_problems` walks to the leaves)."""
    for key in at.split(".")[1:]:
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
    return value


def _semantic_problems(cfg: Config) -> list[str]:
    problems = []
    for key in ("audio_in_ring_bytes", "audio_out_ring_bytes", "events_ring_bytes", "requests_ring_bytes"):
        v = getattr(cfg.ipc, key)
        if v & (v - 1):
            problems.append(f"$.ipc.{key}: expected a power of two, got {v}")
    vad = cfg.stt.vad
    waits = [vad.silence_ms_confident, vad.silence_ms, vad.silence_ms_neutral, vad.silence_ms_incomplete,
             vad.silence_ms_max]
    if waits != sorted(waits):
        problems.append("$.stt.vad: expected silence_ms_confident <= silence_ms <= silence_ms_neutral <= "
                        f"silence_ms_incomplete <= silence_ms_max, got {waits}")
    if not vad.silence_ms_neutral <= vad.silence_ms_unpunctuated <= vad.silence_ms_max:
        problems.append("$.stt.vad: expected silence_ms_neutral <= silence_ms_unpunctuated <= silence_ms_max, "
                        f"got {vad.silence_ms_unpunctuated}")
    if not vad.silence_ms_confident <= vad.silence_ms_question <= vad.silence_ms:
        problems.append("$.stt.vad: expected silence_ms_confident <= silence_ms_question <= silence_ms, "
                        f"got {vad.silence_ms_question}")
    if not vad.silence_ms <= vad.silence_ms_question_disputed <= vad.silence_ms_incomplete:
        problems.append("$.stt.vad: expected silence_ms <= silence_ms_question_disputed <= silence_ms_incomplete, "
                        f"got {vad.silence_ms_question_disputed}")
    if vad.second_look_ms and not vad.settle_ms < vad.second_look_ms < vad.silence_ms_incomplete:
        problems.append("$.stt.vad.second_look_ms: expected 0 (off) or between settle_ms and silence_ms_incomplete "
                        f"({vad.settle_ms} < x < {vad.silence_ms_incomplete}), got {vad.second_look_ms}")
    if vad.turn_incomplete_prob > vad.turn_complete_prob:
        problems.append("$.stt.vad: expected turn_incomplete_prob <= turn_complete_prob, got "
                        f"{vad.turn_incomplete_prob} and {vad.turn_complete_prob}")
    if cfg.llm.end_call_match_threshold < cfg.llm.match_threshold:
        problems.append(f"$.llm.end_call_match_threshold: {cfg.llm.end_call_match_threshold} is below "
                        f"llm.match_threshold ({cfg.llm.match_threshold}): a goodbye would need less than any answer")
    if cfg.llm.backend == "vllm" and not cfg.llm.model:
        problems.append("$.llm.model: the vllm backend needs a model directory or hub id")
    if cfg.llm.backend == "openai" and not (cfg.llm.base_url or cfg.llm.base_urls):
        problems.append("$.llm.base_url: the openai backend needs a base URL (or llm.base_urls)")
    if cfg.records.db_path and cfg.records.url != DEFAULT_RECORDS_URL:
        problems.append("$.records.db_path: set records.url or records.db_path (its older spelling), not both")
    try:
        RecordsUrl.parse(cfg.records.resolved_url())
    except RecordsUrlError as exc:
        problems.append(f"$.records.url: {exc}")
    problems += _tool_problems(cfg.tools)
    if cfg.tts.backend == "csm" and not cfg.tts.model:
        problems.append("$.tts.model: the csm backend needs a model directory or hub id")
    return problems


_BUILT_IN_TOOLS = ("transfer_call", "end_call")


def _tool_problems(tools: list[ToolConfig]) -> list[str]:
    """What the field constraints cannot say: unique names, no built-in name, an object schema."""
    problems, seen = [], set()
    for i, tool in enumerate(tools):
        where = f"$.tools[{i}]"
        if tool.name in _BUILT_IN_TOOLS:
            problems.append(f"{where}.name: {tool.name!r} is a built-in tool; choose another name")
        if tool.name in seen:
            problems.append(f"{where}.name: {tool.name!r} is defined twice")
        seen.add(tool.name)
        if tool.parameters.get("type") != "object":
            problems.append(f"{where}.parameters: expected a JSON Schema with type = \"object\"")
    return problems


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML config; raises ConfigError listing every problem."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read file: {exc.strerror}"]) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [f"not UTF-8: {exc}"]) from exc
    return config_from_toml(text, str(path))


def config_from_toml(text: str, path: str = "<string>") -> Config:
    """Validate a config given as TOML text (tests, `--check` on stdin)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [f"not valid TOML: {exc}"]) from exc
    problems = _problems(data, Config)
    if problems:
        raise ConfigError(path, problems)
    cfg = msgspec.convert(data, Config)
    _move_deprecated_twilio_keys(data, cfg, path)
    problems = []
    if cfg.agents_dir:
        agents, problems = load_agent_files(cfg.agents_dir)
        cfg.agents.extend(agents)
    problems += _semantic_problems(cfg) + agent_problems(cfg, {"transfer_call", "end_call", *(t.name for t in cfg.tools)})
    cfg.llm.more_knowledge = list(dict.fromkeys(
        [*cfg.llm.more_knowledge, *(a.knowledge for a in cfg.agents if a.knowledge and a.knowledge != cfg.llm.knowledge)]))
    if problems:
        raise ConfigError(path, problems)
    return cfg


def _move_deprecated_twilio_keys(data: dict[str, Any], cfg: Config, path: str) -> None:
    """`[server] auth_token_env/account_sid_env` moved to `[twilio]`: honour the old spelling once."""
    server, twilio = data.get("server", {}), data.get("twilio", {})
    for key in ("auth_token_env", "account_sid_env"):
        if key in server:
            if key in twilio:
                log.warning("%s: server.%s is deprecated and ignored (twilio.%s is set)", path, key, key)
            else:
                log.warning("%s: server.%s is deprecated; move it to [twilio]", path, key)
                setattr(cfg.twilio, key, server[key])
        setattr(cfg.server, key, getattr(cfg.twilio, key))  # one value for every reader
