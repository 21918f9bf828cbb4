// Twilio's side of a bidirectional Media Stream (<Connect><Stream>), spoken from the browser to
// the very endpoint Twilio uses, so a browser call exercises exactly what a phone call does.
//
//   we (as Twilio) -> server:  connected, start, media*, (mark echo | dtmf)*, stop
//   server -> we:              media (play), mark (echo once played), clear (drop + echo marks)
//
// As Twilio does (shared/research/twilio.md §1): `connected` carries no sequenceNumber; `start`
// is sequenceNumber "1" and every later message takes the next one; sequenceNumber,
// media.chunk and media.timestamp are JSON strings; chunk counts inbound frames from "1";
// timestamp is ms since the stream started, on the media clock (20 ms per frame); each
// message after `connected` carries the streamSid; dtmf.track is "inbound_track".

const HEX = '0123456789abcdef';

/** A Twilio-shaped SID: two letters and 32 hex digits (e.g. CA..., MZ...). */
export function makeSid(prefix) {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  let s = prefix;
  for (const b of bytes) s += HEX[b >> 4] + HEX[b & 15];
  return s;
}

function toBase64(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
  return btoa(s);
}

function fromBase64(text) {
  const s = atob(text);
  const bytes = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) bytes[i] = s.charCodeAt(i);
  return bytes;
}

export class TwilioStreamClient {
  /**
   * @param {string} url  the media WebSocket (ws[s]://host/twilio/media)
   * @param {{accountSid: string, callSid: string, streamSid: string, customParameters: object}} call
   * @param {{onStart?, onMedia?, onMark?, onClear?, onClose?, onProblem?}} handlers
   */
  constructor(url, call, handlers) {
    this.call = call;
    this.handlers = handlers;
    this.seq = 0;
    this.chunk = 0;
    this.firstTimestamp = null;
    this.startedAt = 0;
    this.stopped = false;
    this.counts = { sent: 0, mediaIn: 0, marksIn: 0, clears: 0, marksEchoed: 0, problems: 0 };
    this.ws = new WebSocket(url);
    this.ws.onopen = () => this.begin();
    this.ws.onmessage = (e) => this.receive(e.data);
    this.ws.onclose = (e) => this.handlers.onClose?.(e.code, e.reason, this.stopped);
    this.ws.onerror = () => this.problem('media WebSocket error');
  }

  get open() { return this.ws.readyState === WebSocket.OPEN && !this.stopped; }

  send(obj) {
    if (this.ws.readyState !== WebSocket.OPEN) return;
    this.ws.send(JSON.stringify(obj));  // text frames only: Twilio never sends binary
    this.counts.sent++;
  }

  nextSeq() { this.seq += 1; return String(this.seq); }

  begin() {
    this.send({ event: 'connected', protocol: 'Call', version: '1.0.0' });
    this.startedAt = performance.now();
    const { accountSid, callSid, streamSid, customParameters } = this.call;
    this.send({
      event: 'start',
      sequenceNumber: this.nextSeq(),
      start: {
        accountSid, streamSid, callSid,
        tracks: ['inbound'],
        mediaFormat: { encoding: 'audio/x-mulaw', sampleRate: 8000, channels: 1 },
        customParameters: { ...customParameters },
      },
      streamSid,
    });
    this.handlers.onStart?.();
  }

  /** One 20 ms frame of caller audio (160 mu-law bytes). */
  sendMedia(bytes) {
    if (!this.open) return;
    this.chunk += 1;
    if (this.firstTimestamp === null) this.firstTimestamp = Math.round(performance.now() - this.startedAt);
    const timestamp = this.firstTimestamp + (this.chunk - 1) * 20;
    this.send({
      event: 'media',
      sequenceNumber: this.nextSeq(),
      media: { track: 'inbound', chunk: String(this.chunk), timestamp: String(timestamp), payload: toBase64(bytes) },
      streamSid: this.call.streamSid,
    });
  }

  sendDtmf(digit) {
    if (!this.open) return;
    this.send({
      event: 'dtmf', streamSid: this.call.streamSid, sequenceNumber: this.nextSeq(),
      dtmf: { track: 'inbound_track', digit },
    });
  }

  /** Tell the server a mark it sent was reached (played, or dropped by a clear). */
  echoMark(name) {
    if (!this.open) return;
    this.counts.marksEchoed++;
    this.send({ event: 'mark', sequenceNumber: this.nextSeq(), streamSid: this.call.streamSid, mark: { name } });
  }

  /** Hang up: `stop`, then close the socket, as when a caller puts the phone down. */
  stop() {
    if (this.stopped) return;
    const { accountSid, callSid, streamSid } = this.call;
    this.send({ event: 'stop', sequenceNumber: this.nextSeq(), stop: { accountSid, callSid }, streamSid });
    this.stopped = true;
    this.ws.close(1000, 'caller hung up');
  }

  problem(text) {
    this.counts.problems++;
    this.handlers.onProblem?.(text);
  }

  receive(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      this.problem('server sent a frame that is not JSON');
      return;
    }
    if (msg.streamSid !== this.call.streamSid) {
      this.problem(`server sent ${msg.event} with streamSid ${msg.streamSid}, not ours`);  // Twilio error 31951
      return;
    }
    if (msg.event === 'media') {
      if (typeof msg.media?.payload !== 'string') { this.problem('media without a payload'); return; }
      let bytes;
      try { bytes = fromBase64(msg.media.payload); } catch { this.problem('media payload is not base64'); return; }
      this.counts.mediaIn++;
      this.handlers.onMedia?.(bytes);
    } else if (msg.event === 'mark') {
      if (typeof msg.mark?.name !== 'string') { this.problem('mark without a name'); return; }
      this.counts.marksIn++;
      this.handlers.onMark?.(msg.mark.name);
    } else if (msg.event === 'clear') {
      this.counts.clears++;
      this.handlers.onClear?.();
    } else {
      this.problem(`unknown event ${JSON.stringify(msg.event)} from the server`);
    }
  }
}
