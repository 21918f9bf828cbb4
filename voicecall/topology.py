"""The process map as data: which rings exist, who produces and consumes them, and each child's spec.

    telephony --stt_in-->  stt   --stt_out--> telephony     (mulaw frames + call control / speech events)
    telephony --llm_in-->  llm   --llm_out--> telephony     (Generate, Cancel / token text + done)
    telephony --tts_in-->  tts   --tts_out--> telephony     (Synthesize, Cancel / mulaw frames + sentence done)

The supervisor creates (and alone unlinks) every ring; a restarted child re-attaches to the
same segments, so the peer that stayed up never notices more than a pause.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from multiprocessing.connection import Connection

import msgspec

from ipc.ring import OwnedRing, RingSpec
from voicecall.config import Config
from workers.base import WorkerSpec

WORKERS = ("stt", "llm", "tts")
WORKER_TARGETS = {"stt": "workers.stt.worker:SttWorker", "llm": "workers.llm.worker:LlmWorker", "tts": "workers.tts.worker:TtsWorker"}


@dataclass
class TelephonySpec:
    """What the telephony process is handed at spawn."""

    config_json: bytes
    rings: dict[str, RingSpec] = field(default_factory=dict)
    control: Connection | None = None
    death: Connection | None = None
    log_level: str = "INFO"


class Topology:
    """Owns every ring of one running system."""

    def __init__(self, cfg: Config) -> None:
        sizes = {
            "stt_in": cfg.ipc.audio_in_ring_bytes,
            "stt_out": cfg.ipc.events_ring_bytes,
            "llm_in": cfg.ipc.requests_ring_bytes,
            "llm_out": cfg.ipc.events_ring_bytes,
            "tts_in": cfg.ipc.requests_ring_bytes,
            "tts_out": cfg.ipc.audio_out_ring_bytes,
        }
        self.rings: dict[str, OwnedRing] = {}
        try:
            for label, size in sizes.items():
                self.rings[label] = OwnedRing(label, size)
        except BaseException:
            self.close()  # roll back a partial start
            raise
        self.cfg = cfg

    def worker_spec(self, name: str, target: str | None = None) -> WorkerSpec:
        section = getattr(self.cfg, name)
        proc = section.process
        return WorkerSpec(
            name=name,
            target=target or WORKER_TARGETS[name],
            config_json=msgspec.json.encode(section),
            device=proc.device,
            threads=proc.threads,
            cuda_visible_devices=proc.cuda_visible_devices,
            env=dict(proc.env),
            inbound=self.rings[f"{name}_in"].spec,
            outbound=self.rings[f"{name}_out"].spec,
            log_level=self.cfg.log_level,
        )

    def telephony_spec(self) -> TelephonySpec:
        return TelephonySpec(
            config_json=msgspec.json.encode(self.cfg),
            rings={label: ring.spec for label, ring in self.rings.items()},
            log_level=self.cfg.log_level,
        )

    def close(self) -> None:
        """Unlink every segment and close every doorbell. Idempotent."""
        for ring in self.rings.values():
            ring.close()
