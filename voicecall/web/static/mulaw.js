// G.711 mu-law by lookup tables: the same codes as voicecall/audio.py (audioop's 14-bit
// algorithm: bias 0x21, clip 8159), so the browser puts on the wire exactly what a phone
// line through Twilio would. Shared by the page and the AudioWorklet (both load ES modules).

/** mu-law code -> int16 sample. */
export const ULAW_DECODE = (() => {
  const table = new Int16Array(256);
  for (let i = 0; i < 256; i++) {
    const code = i ^ 0xff;
    const exponent = (code >> 4) & 0x07;
    const magnitude = ((((code & 0x0f) << 3) + 0x84) << exponent) - 0x84;
    table[i] = code & 0x80 ? -magnitude : magnitude;
  }
  return table;
})();

/** int16 sample (as uint16: sample & 0xffff) -> mu-law code. */
export const ULAW_ENCODE = (() => {
  const table = new Uint8Array(65536);
  for (let s = -32768; s < 32768; s++) {
    const pcm = s >> 2;  // 14-bit, like audioop
    const sign = pcm < 0 ? 0x7f : 0xff;
    const mag = Math.min(pcm < 0 ? -pcm : pcm, 8159) + 0x21;
    let exponent = 0;
    for (let seg = 0; seg < 8; seg++) if (mag >= (0x40 << seg)) exponent = seg + 1;
    const code = exponent >= 8 ? 0x7f : (exponent << 4) | ((mag >> (exponent + 1)) & 0x0f);
    table[s & 0xffff] = code ^ sign;
  }
  return table;
})();

/** Float sample in [-1, 1] -> mu-law code (rounded like voicecall.audio.ulaw_encode). */
export function encodeFloat(x) {
  let s = Math.round(x * 32768);
  if (s > 32767) s = 32767; else if (s < -32768) s = -32768;
  return ULAW_ENCODE[s & 0xffff];
}

/** mu-law bytes -> float samples in [-1, 1). */
export function decodeToFloat(bytes, out = new Float32Array(bytes.length)) {
  for (let i = 0; i < bytes.length; i++) out[i] = ULAW_DECODE[bytes[i]] / 32768;
  return out;
}
