// The softphone's audio thread: the microphone side and the loudspeaker side of a phone line.
//
//   mic (browser rate) -> phone-capture:  low-pass FIR + fractional decimation to 8 kHz,
//                                          mu-law, 160-byte (20 ms) frames posted to the page
//   page -> phone-playout:                 mu-law audio, marks and clears, in the order Twilio
//                                          would get them; a small jitter buffer plays the audio
//                                          at 8 kHz (upsampled to the browser rate) and reports
//                                          each mark only once every sample before it was played
//
// Both run on the rendering thread, so the page's main thread can stall without a click or gap.
import { decodeToFloat, encodeFloat } from './mulaw.js';

const LINE_RATE = 8000;
const FRAME_SAMPLES = 160;  // 20 ms at 8 kHz

/** Windowed-sinc low-pass taps (Blackman), unity DC gain; `cutoff` as a fraction of the rate. */
function lowPass(cutoff, half) {
  const taps = new Float32Array(2 * half + 1);
  let sum = 0;
  for (let k = -half; k <= half; k++) {
    const x = 2 * cutoff * k;
    const sinc = k === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
    const n = (k + half) / (2 * half);
    const w = 0.42 - 0.5 * Math.cos(2 * Math.PI * n) + 0.08 * Math.cos(4 * Math.PI * n);
    taps[k + half] = 2 * cutoff * sinc * w;
    sum += taps[k + half];
  }
  for (let i = 0; i < taps.length; i++) taps[i] /= sum;
  return taps;
}

class CaptureProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.ratio = sampleRate / LINE_RATE;          // input samples per output sample (e.g. 6, 5.5125)
    this.half = Math.ceil(4 * this.ratio);        // filter reach on each side, input samples
    this.taps = lowPass(3600 / sampleRate, this.half);  // passes the telephone band, stops aliasing
    this.ring = new Float32Array(8192);           // recent input; absolute index & mask
    this.mask = this.ring.length - 1;
    this.written = 0;                             // input samples seen
    this.pos = this.half;                         // input position of the next output sample
    this.frame = new Uint8Array(FRAME_SAMPLES);
    this.fill = 0;
    this.active = false;                          // frames flow only after the stream's `start`
    this.energy = 0;
    this.frames = 0;
    this.port.onmessage = (e) => {
      if (e.data.type === 'start') this.active = true;
      else if (e.data.type === 'stop') this.active = false;
    };
  }

  filtered(center) {
    const { ring, mask, taps, half } = this;
    let acc = 0;
    for (let k = -half; k <= half; k++) acc += taps[k + half] * ring[(center + k) & mask];
    return acc;
  }

  process(inputs) {
    const channels = inputs[0];
    const block = channels && channels.length ? channels[0] : null;
    const n = block ? block.length : 128;          // no input yet: the line carries silence
    for (let i = 0; i < n; i++) this.ring[(this.written + i) & this.mask] = block ? block[i] : 0;
    this.written += n;
    while (Math.floor(this.pos) + 1 + this.half < this.written) {
      const i0 = Math.floor(this.pos);
      const frac = this.pos - i0;
      const v0 = this.filtered(i0);
      const v = frac > 1e-6 ? v0 + (this.filtered(i0 + 1) - v0) * frac : v0;
      this.pos += this.ratio;
      this.energy += v * v;
      this.frame[this.fill++] = encodeFloat(v);
      if (this.fill === FRAME_SAMPLES) this.flush();
    }
    return true;
  }

  flush() {
    this.fill = 0;
    this.frames++;
    if (this.active) {
      const bytes = this.frame;
      this.frame = new Uint8Array(FRAME_SAMPLES);
      this.port.postMessage({ type: 'frame', bytes }, [bytes.buffer]);
    }
    if (this.frames % 5 === 0) {  // a level reading every 100 ms for the meter
      this.port.postMessage({ type: 'level', rms: Math.sqrt(this.energy / (5 * FRAME_SAMPLES)) });
      this.energy = 0;
    }
  }
}

class PlayoutProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.prebuffer = Math.round(((opts.prebufferMs ?? 60) * LINE_RATE) / 1000);
    this.maxWait = (opts.maxWaitMs ?? 120) / 1000;
    this.ring = new Float32Array(LINE_RATE * 120);  // 2 min of line audio: far beyond any lead
    this.wpos = 0;                                  // absolute 8 kHz sample positions
    this.rpos = 0;                                  // fractional: the read head moves 8000/rate
    this.step = LINE_RATE / sampleRate;
    this.marks = [];                                // {name, at}: at = wpos when it arrived
    this.playing = false;
    this.waitingSince = null;
    this.stats = { playedSamples: 0, underruns: 0, overflowSamples: 0, clearedSamples: 0 };
    this.lastStats = 0;
    this.port.onmessage = (e) => this.onMessage(e.data);
  }

  onMessage(msg) {
    if (msg.type === 'audio') this.append(msg.bytes);
    else if (msg.type === 'mark') this.mark(msg.name);
    else if (msg.type === 'clear') this.clear();
  }

  append(bytes) {
    const pcm = decodeToFloat(bytes);
    const cap = this.ring.length;
    const over = this.wpos + pcm.length - Math.floor(this.rpos) - cap;
    if (over > 0) {  // never lose the newest audio: skip the oldest unplayed instead
      this.rpos += over;
      this.stats.overflowSamples += over;
    }
    for (let i = 0; i < pcm.length; i++) this.ring[(this.wpos + i) % cap] = pcm[i];
    this.wpos += pcm.length;
    if (!this.playing && this.waitingSince === null) this.waitingSince = currentTime;
  }

  mark(name) {
    // Twilio answers a mark at once when no audio is buffered, else when the audio before it ends.
    if (this.marks.length === 0 && this.rpos >= this.wpos) this.port.postMessage({ type: 'played', names: [name] });
    else this.marks.push({ name, at: this.wpos });
  }

  clear() {
    // `clear`: drop every buffered sample and return every pending mark now, in order.
    this.stats.clearedSamples += Math.max(0, this.wpos - Math.floor(this.rpos));
    this.rpos = this.wpos;
    this.playing = false;
    this.waitingSince = null;
    const names = this.marks.map((m) => m.name);
    this.marks = [];
    this.port.postMessage({ type: 'cleared', names });
  }

  process(_inputs, outputs) {
    const out = outputs[0][0];
    const avail = this.wpos - this.rpos;
    if (!this.playing && avail > 0) {
      // Jitter buffer: start once a little is queued, or the sentence is complete (a mark is
      // queued behind it), or the first audio has waited long enough.
      const waited = this.waitingSince !== null && currentTime - this.waitingSince >= this.maxWait;
      if (avail >= this.prebuffer || this.marks.length > 0 || waited) {
        this.playing = true;
        this.waitingSince = null;
      }
    }
    const cap = this.ring.length;
    for (let i = 0; i < out.length; i++) {
      if (!this.playing) { out[i] = 0; continue; }
      const i0 = Math.floor(this.rpos);
      if (i0 >= this.wpos) {  // underrun: silence until the buffer refills
        this.playing = false;
        this.rpos = this.wpos;
        this.stats.underruns++;
        out[i] = 0;
        continue;
      }
      const a = this.ring[i0 % cap];
      const b = i0 + 1 < this.wpos ? this.ring[(i0 + 1) % cap] : a;
      out[i] = a + (b - a) * (this.rpos - i0);
      this.rpos += this.step;
      this.stats.playedSamples += this.step;
    }
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    const played = [];
    while (this.marks.length && this.rpos >= this.marks[0].at) played.push(this.marks.shift().name);
    if (played.length) this.port.postMessage({ type: 'played', names: played });
    if (currentTime - this.lastStats >= 0.2) {
      this.lastStats = currentTime;
      this.port.postMessage({
        type: 'stats', ...this.stats, bufferedSamples: Math.max(0, this.wpos - this.rpos), playing: this.playing,
      });
    }
    return true;
  }
}

registerProcessor('phone-capture', CaptureProcessor);
registerProcessor('phone-playout', PlayoutProcessor);
