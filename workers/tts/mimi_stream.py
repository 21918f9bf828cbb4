"""Streaming Mimi decode: codes in small groups -> 24 kHz audio, bit-for-bit the one-shot decode.

transformers' `MimiModel.decode` is stateless: decoding frame groups one by one would restart
every causal convolution from zeros and click at each boundary. Mimi's decoder is fully causal,
so it can stream exactly if each layer keeps what it needs from the previous group:

    codes --quantizer--> emb --upsample (ConvTranspose, 2x)--> transformer --SEANet decoder--> audio
                                 keeps: overlap tail            keeps: KV cache   keeps: left context
                                                                                  of each causal conv,
                                                                                  tails of each
                                                                                  ConvTranspose

A causal ConvTranspose with all padding trimmed on the right emits `stride` samples per input step
that are final once the step is seen; the `kernel - stride` samples after them still wait for the
next step's contribution, so they are held back (minus the bias, added again once) until then.
Imports torch only when a `MimiStreamDecoder` is built (inside the CSM worker).
"""

from __future__ import annotations

from typing import Any


class MimiStreamDecoder:
    """Decodes one utterance's Mimi codes group by group (one instance per utterance)."""

    def __init__(self, codec: Any) -> None:
        import torch  # noqa: PLC0415 - model libraries are imported lazily, inside the worker
        from transformers.cache_utils import DynamicCache  # noqa: PLC0415
        from transformers.models.mimi.modeling_mimi import (  # noqa: PLC0415
            MimiConv1d,
            MimiConvTranspose1d,
            MimiResnetBlock,
        )

        self._torch = torch
        self._codec = codec
        self._conv_type = MimiConv1d
        self._tconv_type = MimiConvTranspose1d
        self._resnet_type = MimiResnetBlock
        self._kv = DynamicCache(config=codec.decoder_transformer.config)
        self._left: dict[int, Any] = {}  # id(conv) -> last inputs a causal conv needs as left context
        self._tail: dict[int, Any] = {}  # id(tconv) -> pending overlap of a transposed conv

    def decode(self, codes: Any) -> Any:
        """codes: LongTensor (num_codebooks, frames) -> float tensor (frames * frame_samples,)."""
        torch = self._torch
        codec = self._codec
        with torch.inference_mode():
            emb = codec.quantizer.decode(codes.unsqueeze(0))
            if codec.upsample is not None:
                emb = self._tconv(codec.upsample, emb)
            out = codec.decoder_transformer(emb.transpose(1, 2), past_key_values=self._kv, use_cache=True,
                                            return_dict=True)
            x = out.last_hidden_state.transpose(1, 2)
            for layer in codec.decoder.layers:
                x = self._layer(layer, x)
        return x[0, 0]

    def _layer(self, layer: Any, x: Any) -> Any:
        if isinstance(layer, self._conv_type):
            return self._conv(layer, x)
        if isinstance(layer, self._tconv_type):
            return self._tconv(layer, x)
        if isinstance(layer, self._resnet_type):
            residual = x
            for sub in layer.block:
                x = self._layer(sub, x)
            return self._layer(layer.shortcut, residual) + x
        return layer(x)  # stateless (ELU, Identity)

    def _conv(self, conv: Any, x: Any) -> Any:
        pad = int(conv.padding_total)
        if not conv.causal or int(conv.conv.stride[0]) != 1:
            raise ValueError("streaming Mimi decode needs causal stride-1 decoder convolutions")
        if pad == 0:
            return conv.conv(x)
        left = self._left.get(id(conv))
        if left is None:  # the one-shot decode pads the first step the same way
            if conv.pad_mode == "replicate":
                left = x[..., :1].expand(-1, -1, pad)
            else:
                left = x.new_zeros(x.shape[0], x.shape[1], pad)
        full = self._torch.cat([left, x], dim=-1)
        self._left[id(conv)] = full[..., -pad:]
        return conv.conv(full)

    def _tconv(self, tconv: Any, x: Any) -> Any:
        if tconv.padding_left != 0:
            raise ValueError("streaming Mimi decode needs causal transposed convolutions (trim_right_ratio 1)")
        y = tconv.conv(x)
        ready = x.shape[-1] * int(tconv.conv.stride[0])
        tail = self._tail.get(id(tconv))
        if tail is not None:
            y = y.clone()
            y[..., : tail.shape[-1]] += tail
        pending = y[..., ready:]
        if tconv.conv.bias is not None:  # the next step adds its own bias to these samples
            pending = pending - tconv.conv.bias[None, :, None]
        self._tail[id(tconv)] = pending
        return y[..., :ready]
