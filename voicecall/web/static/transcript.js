// Renders a call's events (from /softphone/events) as a transcript: caller partials that firm
// up into finals, agent sentences gathered per reply turn, interruptions with what was heard.
// Used by the softphone page and, one per live call, by the call view.

const LATENCY_KEYS = ['voice_to_voice', 'turn_end_to_first_media', 'stt_final', 'llm_first_token', 'tts_first_audio', 'heard_latency'];

export class Transcript {
  /** @param {HTMLElement} box  where the lines go; @param {HTMLElement|null} latencyBody  a <tbody> */
  constructor(box, latencyBody = null) {
    this.box = box;
    this.latencyBody = latencyBody;
    this.callers = new Map();  // turn -> element
    this.agents = new Map();   // turn -> element
  }

  line(cls, who, text = '') {
    const el = document.createElement('div');
    el.className = `line ${cls}`;
    const label = document.createElement('span');
    label.className = 'who';
    label.textContent = who;
    const body = document.createElement('span');
    body.className = 'text';
    body.textContent = text;
    el.append(label, body);
    this.box.append(el);
    this.box.scrollTop = this.box.scrollHeight;
    return el;
  }

  system(text) { this.line('system', '', text); }

  caller(turn) {
    let el = this.callers.get(turn);
    if (!el) { el = this.line('caller partial', 'caller'); this.callers.set(turn, el); }
    return el;
  }

  /** One event: {kind, data}. Returns true when the call ended. */
  apply(ev) {
    const d = ev.data || {};
    switch (ev.kind) {
      case 'speech': this.caller(d.turn).querySelector('.text').textContent ||= '...'; break;
      case 'partial': this.caller(d.turn).querySelector('.text').textContent = d.text; break;
      case 'final': {
        const el = this.caller(d.turn);
        if (!d.text) { el.remove(); this.callers.delete(d.turn); break; }
        el.querySelector('.text').textContent = d.text;
        el.classList.remove('partial');
        break;
      }
      case 'agent': {
        let el = this.agents.get(d.turn);
        if (!el) { el = this.line('agent', 'agent'); this.agents.set(d.turn, el); }
        const t = el.querySelector('.text');
        t.textContent = t.textContent ? `${t.textContent} ${d.text}` : d.text;
        break;
      }
      case 'interrupted': {
        const el = this.agents.get(d.turn);
        if (!el) break;
        el.classList.add('interrupted');
        const heard = document.createElement('span');
        heard.className = 'heard';
        heard.textContent = `interrupted (${d.why}); caller heard: "${d.heard || ''}"`;
        el.append(heard);
        break;
      }
      case 'turn': this.latency(d); break;
      case 'ended': this.system(`call ended: ${d.reason || ''}`); return true;
      default: break;
    }
    return false;
  }

  latency(d) {
    if (!this.latencyBody) return;
    const row = document.createElement('tr');
    const ms = d.latency_ms || {};
    const cells = [String(d.turn) + (d.interrupted ? ' (interrupted)' : ''),
      ...LATENCY_KEYS.map((k) => (ms[k] === undefined ? '-' : Math.round(ms[k]).toString()))];
    for (const c of cells) { const td = document.createElement('td'); td.textContent = c; row.append(td); }
    this.latencyBody.append(row);
  }

  text() { return this.box.innerText; }
}

/** The events socket URL for one call (callSid) or all calls (null), carrying the page's token. */
export function eventsUrl(callSid) {
  const u = new URL('/softphone/events', location.href);
  u.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  if (callSid) u.searchParams.set('callSid', callSid);
  const token = new URLSearchParams(location.search).get('token');
  if (token) u.searchParams.set('token', token);
  return u.toString();
}
