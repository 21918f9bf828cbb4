"""Agent profiles: which persona answers (or places) a call, chosen per call.

    [[agents]] in the config   and/or   agents_dir = "configs/agents"  (one agent per *.toml)
        -> load_agent_files() + agent_problems()       at start-up: every problem listed at once
        -> AgentDirectory(cfg).choose(to, requested)   per call:
             requested name (TwiML <Parameter name="agent">, or the API's "agent")
             else the agent whose `numbers` holds the dialled `To`
             else the default agent (the one with default = true, else the first, else built-in)

Empty fields fall back to the process-wide settings (`call.greeting`, `llm.system_prompt`, ...),
so a profile states only what differs. The voice webhook resolves the agent and hands its name
to the media stream as the custom parameter `agent`.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from voicecall.config import Config

#: E.164: "+", a country code that does not start with 0, at most 15 digits in all.
E164 = re.compile(r"\+[1-9][0-9]{1,14}")  # use with fullmatch
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
BUILT_IN = "default"


def is_e164(number: str) -> bool:
    return E164.fullmatch(number) is not None


class AgentConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One agent profile; empty strings mean "the process-wide setting"."""

    #: Unique name (letters, digits, "_", "-", "."); the API's "agent" and the TwiML parameter.
    name: str = ""
    #: Dialled numbers (E.164) this agent answers; a call to one of them gets this agent.
    numbers: list[str] = []
    #: The agent for calls nothing else chooses (at most one; default: the first listed).
    default: bool = False
    #: First words on an inbound call; on an outbound call, said once the callee has answered.
    greeting: str = ""
    #: System prompt for LLM backends that take one (the API's `context` is appended to it).
    system_prompt: str = ""
    #: Knowledge file (TOML) for the faq backend.
    knowledge: str = ""
    #: TTS voice (Piper .onnx path or "package:NAME"). Not yet used: the TTS worker speaks every
    #: call with `tts.voice` (a start-up warning names the agents that set one).
    voice: str = ""
    #: Names of the tools this agent may use.
    tools: list[str] = []
    #: E.164 number a transfer goes to.
    transfer_number: str = ""
    #: Left on an answering machine (after the beep) on outbound calls; then the call ends.
    voicemail_message: str = ""


def load_agent_files(directory: str) -> tuple[list[AgentConfig], list[str]]:
    """Every `*.toml` in `directory` as one agent (name defaults to the file's stem).

    Returns the agents that decoded and one problem line per file that did not.
    """
    agents: list[AgentConfig] = []
    problems: list[str] = []
    root = Path(directory)
    if not root.is_dir():
        return [], [f"$.agents_dir: {directory!r} is not a directory"]
    for path in sorted(root.glob("*.toml")):
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            problems.append(f"{path}: cannot read: {exc}")
            continue
        data.setdefault("name", path.stem)
        try:
            agents.append(msgspec.convert(data, AgentConfig))
        except msgspec.ValidationError as exc:
            text, _, where = str(exc).rpartition(" - at `$")
            problems.append(f"{path}: $.{where.rstrip('`').lstrip('.')}: {text}" if where else f"{path}: {exc}")
    return agents, problems


def agent_problems(cfg: Config, known_tools: set[str] | None = None) -> list[str]:
    """Everything wrong with the agent profiles, all at once (empty when they are fine)."""
    problems: list[str] = []
    seen_names: dict[str, int] = {}
    seen_numbers: dict[str, str] = {}
    defaults = [a.name for a in cfg.agents if a.default]
    if len(defaults) > 1:
        problems.append(f"$.agents: more than one default agent: {', '.join(defaults)}")
    for i, agent in enumerate(cfg.agents):
        where = f"$.agents[{i}] ({agent.name or 'unnamed'})"
        if not _NAME.match(agent.name):
            problems.append(f"{where}.name: expected letters, digits, '_', '-' or '.', got {agent.name!r}")
        elif agent.name in seen_names:
            problems.append(f"{where}.name: {agent.name!r} is also agents[{seen_names[agent.name]}]")
        else:
            seen_names[agent.name] = i
        for number in agent.numbers:
            if not is_e164(number):
                problems.append(f"{where}.numbers: {number!r} is not an E.164 number (like +15551234567)")
            elif number in seen_numbers:
                problems.append(f"{where}.numbers: {number} is also answered by {seen_numbers[number]!r}")
            else:
                seen_numbers[number] = agent.name
        if agent.transfer_number and not is_e164(agent.transfer_number):
            problems.append(f"{where}.transfer_number: {agent.transfer_number!r} is not an E.164 number")
        if agent.knowledge and not Path(agent.knowledge).is_file():
            problems.append(f"{where}.knowledge: no such file {agent.knowledge!r}")
        if agent.voice and not agent.voice.startswith("package:") and agent.voice.endswith(".onnx") \
                and not Path(agent.voice).is_file():
            problems.append(f"{where}.voice: no such file {agent.voice!r}")
        if known_tools is not None:
            unknown = [t for t in agent.tools if t not in known_tools]
            if unknown:
                problems.append(f"{where}.tools: unknown tool(s) {', '.join(unknown)} "
                                f"(known: {', '.join(sorted(known_tools)) or 'none'})")
    return problems


class AgentDirectory:
    """Resolves the agent of a call; built once per process from the validated config."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.by_name = {a.name: a for a in cfg.agents}
        self.by_number = {n: a for a in cfg.agents for n in a.numbers}
        explicit = [a for a in cfg.agents if a.default]
        self.default = explicit[0] if explicit else (cfg.agents[0] if cfg.agents else AgentConfig(name=BUILT_IN))
        self.by_name.setdefault(self.default.name, self.default)

    def get(self, name: str) -> AgentConfig | None:
        return self.by_name.get(name)

    def choose(self, to_number: str = "", requested: str = "") -> AgentConfig:
        """The requested agent if it exists, else the one answering `to_number`, else the default."""
        if requested and requested in self.by_name:
            return self.by_name[requested]
        return self.by_number.get(to_number, self.default)

    # Effective settings: the profile's value, else the process-wide one.

    def greeting(self, agent: AgentConfig) -> str:
        return agent.greeting or self.cfg.call.greeting

    def system_prompt(self, agent: AgentConfig, context: dict[str, Any] | None = None) -> str:
        prompt = agent.system_prompt or self.cfg.llm.system_prompt
        if context:
            prompt += "\n\nAbout this call (from the operator): " + msgspec.json.encode(context).decode()
        return prompt

    def voicemail_message(self, agent: AgentConfig) -> str:
        return agent.voicemail_message or self.cfg.call.voicemail_message
