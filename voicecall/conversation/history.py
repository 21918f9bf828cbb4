"""What was said on a call, as the caller heard it.

The agent's reply is spoken sentence by sentence, each followed by a Twilio mark. Only a mark
echoed back *as played* proves the caller heard the audio before it (a mark returned because
of a `clear` was dropped, not played). On barge-in the assistant's message is cut to the
sentences proven heard and flagged `interrupted`, so the model knows it was cut off.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ipc.messages import ChatMessage, ToolCallInfo


@dataclass
class SpokenSentence:
    """One piece of an agent reply on its way to the caller."""

    seq: int
    text: str
    mark: str = ""
    frames: int = 0
    played: bool = False


@dataclass
class AgentReply:
    """The agent's side of one turn."""

    turn_id: int
    sentences: list[SpokenSentence] = field(default_factory=list)
    generated: str = ""  # everything the model produced (for the record)
    interrupted: bool = False
    end_call: bool = False
    fallback: bool = False
    apologised: bool = False  # the apology replaced this reply; later worker output is ignored
    #: Tool calls run during this reply, with the result each gave the LLM (JSON text).
    tool_steps: list[tuple[ToolCallInfo, str]] = field(default_factory=list)
    #: a request the caller's next words cannot take back went out (a tool's POST, the transfer)
    acting: bool = False
    #: mu-law of each sentence as synthesized, by seq (kept so a held reply can be replayed)
    audio: dict[int, bytearray] = field(default_factory=dict)
    #: nothing is sent while held: a speculative reply before its turn ended, or a reply the caller
    #: talked over until we know whether it was a backchannel (voicecall/conversation/held.py)
    on_hold: bool = False

    def add(self, seq: int, text: str) -> SpokenSentence:
        sentence = SpokenSentence(seq, text)
        self.sentences.append(sentence)
        return sentence

    def by_mark(self, mark: str) -> SpokenSentence | None:
        return next((s for s in self.sentences if s.mark == mark), None)

    @property
    def spoken_text(self) -> str:
        return " ".join(s.text for s in self.sentences)

    @property
    def heard_text(self) -> str:
        """The sentences whose marks were echoed as played, in order, up to the first gap."""
        heard = []
        for s in self.sentences:
            if not s.played:
                break
            heard.append(s.text)
        return " ".join(heard)

    @property
    def all_heard(self) -> bool:
        return bool(self.sentences) and all(s.played for s in self.sentences)


class Conversation:
    """The history sent to the LLM with each turn (the system prompt is the worker's, unless the
    call's agent profile has its own: then it goes first, as a system message)."""

    def __init__(self, max_turns: int = 20, system_prompt: str = "") -> None:
        self.max_turns = max_turns
        self.entries: list[ChatMessage] = []
        #: this call's own system prompt (its agent profile's, with the operator's context);
        #: "" = the LLM worker's configured one
        self.system_prompt = system_prompt

    def add_caller(self, text: str) -> None:
        if self.entries and self.entries[-1].role == "user":  # two caller turns in a row: one message
            last = self.entries[-1]
            self.entries[-1] = ChatMessage(role="user", content=f"{last.content} {text}".strip())
        else:
            self.entries.append(ChatMessage(role="user", content=text))

    def with_caller(self, text: str) -> Conversation:
        """A copy with `text` added as the caller's (a speculative turn's history), this one untouched."""
        copy = Conversation(self.max_turns, self.system_prompt)
        copy.entries = list(self.entries)
        copy.add_caller(text)
        return copy

    def add_agent(self, reply: AgentReply) -> ChatMessage | None:
        """Record the reply as heard: cut to the played sentences when interrupted. Tool calls it
        made come first (assistant `tool_calls`, then each `role: "tool"` result), so later turns
        know what was looked up or done."""
        if reply.tool_steps:
            self.entries.append(ChatMessage(role="assistant", content="", tool_calls=[c for c, _ in reply.tool_steps]))
            self.entries += [ChatMessage(role="tool", content=result, tool_call_id=c.id) for c, result in reply.tool_steps]
        text = reply.heard_text if reply.interrupted else reply.spoken_text
        if not text and not reply.interrupted:
            return None
        msg = ChatMessage(role="assistant", content=text, interrupted=reply.interrupted)
        self.entries.append(msg)
        return msg

    def add_greeting(self, text: str) -> None:
        self.entries.append(ChatMessage(role="assistant", content=text))

    def messages(self) -> list[ChatMessage]:
        """The most recent `max_turns` entries, starting with a caller message."""
        recent = self.entries[-2 * self.max_turns :]
        while recent and recent[0].role != "user" and len(recent) > 1:
            recent = recent[1:]
        if self.system_prompt:
            return [ChatMessage(role="system", content=self.system_prompt), *recent]
        return list(recent)
