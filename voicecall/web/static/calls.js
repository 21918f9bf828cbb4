// The live call view: polls /calls.json (live registry + ended calls from the records DB) and
// follows every call's events over /softphone/events for a "latest words" column.
import { eventsUrl } from './transcript.js';

const $ = (id) => document.getElementById(id);
const TOKEN = new URLSearchParams(location.search).get('token') || '';
const latest = new Map();  // call_sid -> last transcript line
const POLL_MS = 2000;
const view = { live: [], ended: [], polls: 0 };
window.callView = view;

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function latencyText(ms) {
  const keys = [['voice_to_voice', 'v2v'], ['turn_end_to_first_media', 'end->audio'], ['stt_final', 'stt'],
    ['llm_first_token', 'llm'], ['tts_first_audio', 'tts']];
  return keys.filter(([k]) => ms && ms[k] !== undefined).map(([k, label]) => `${label} ${Math.round(ms[k])}`).join(' · ') || '-';
}

function renderLive(calls) {
  $('live-count').textContent = `(${calls.length})`;
  const rows = calls.map((c) => {
    const tr = el('tr');
    const state = el('td', `state ${c.state}`, c.state);
    const cells = [el('td', 'sid', c.call_sid || String(c.call_id)), el('td', '', c.from || '-'), state,
      el('td', '', String(c.turns)), el('td', '', String(c.barge_ins)), el('td', '', `${Math.round(c.age_s)} s`),
      el('td', '', latencyText(c.last_latency_ms)), el('td', 'feed', latest.get(c.call_sid) || '')];
    tr.append(...cells);
    return tr;
  });
  if (!rows.length) { const tr = el('tr'); const td = el('td', 'empty', 'no live calls'); td.colSpan = 8; tr.append(td); rows.push(tr); }
  $('live').querySelector('tbody').replaceChildren(...rows);
}

function waterfall(segments) {
  // Bars on one scale from the earliest stamp (caller speech starts before 0) to the last;
  // the right 12% is kept for the value labels.
  const box = el('div', 'waterfall');
  const origin = Math.min(0, ...segments.map((s) => s.start_ms));
  const span = Math.max(1, ...segments.map((s) => s.start_ms + s.ms)) - origin;
  const pct = (ms) => (88 * ms) / span;
  for (const s of segments) {
    const row = el('div', 'seg');
    const track = el('div', 'track');
    const bar = el('div', `bar k-${s.kind}${s.kind === 'ipc' ? ' ipc' : ''}`);
    const left = pct(s.start_ms - origin);
    bar.style.left = `${left}%`;
    bar.style.width = `${pct(s.ms)}%`;
    const val = el('span', 'val', `${s.ms.toFixed(s.ms < 10 ? 1 : 0)} ms`);
    val.style.left = `calc(${left + pct(s.ms)}% + 4px)`;
    track.append(bar, val);
    row.append(el('span', '', s.stage), track);
    box.append(row);
  }
  return box;
}

// One <audio> per recorded call, reused across polls so a playing recording is not restarted.
const players = new Map();

function player(c) {
  let audio = players.get(c.id);
  if (!audio) {
    audio = document.createElement('audio');
    audio.controls = true;
    audio.preload = 'none';
    audio.className = 'recording';
    audio.src = `${c.recording}${TOKEN ? `?token=${encodeURIComponent(TOKEN)}` : ''}`;
    audio.title = 'call recording: left caller, right agent';
    players.set(c.id, audio);
  }
  return audio;
}

function renderEnded(calls, error) {
  $('records-note').textContent = calls.length ? '' : (error || 'no ended calls yet');
  $('ended').replaceChildren(...calls.map((c) => {
    const div = el('div', 'ended-call');
    const when = new Date(c.started_at * 1000).toLocaleTimeString();
    div.append(el('h3', '', `${when} · ${c.call_sid || `call ${c.id}`}${c.instance ? ` · on ${c.instance}` : ''} · ${c.duration_s} s · ${c.end_reason || ''}` +
      ` · barge-ins ${c.barge_ins}${c.fallbacks ? ` · fallbacks ${c.fallbacks}` : ''}` +
      `${c.agent ? ` · agent ${c.agent}` : ''}${c.answered_by ? ` · answered by ${c.answered_by}` : ''}`));
    if (c.recording) div.append(player(c));
    for (const t of c.turns) {
      const turn = el('div', 'turn');
      let text = t.text;
      if (t.interrupted) text += `  [interrupted; heard: "${t.heard || ''}"]`;
      if (t.fallback) text += '  [fallback]';
      for (const tool of t.tools || []) {
        const line = el('div', 'turn tool');
        line.append(el('span', 'role', 'tool'),
          el('span', '', `${tool.name}(${tool.arguments}) -> ${tool.result}${tool.ok ? '' : '  [failed]'}`));
        div.append(line);
      }
      turn.append(el('span', 'role', `${t.turn} ${t.role}`), el('span', '', text));
      div.append(turn);
      if (t.segments && t.segments.length) div.append(waterfall(t.segments));
    }
    return div;
  }));
}

async function poll() {
  try {
    const resp = await fetch(`/calls.json${TOKEN ? `?token=${encodeURIComponent(TOKEN)}` : ''}`);
    if (!resp.ok) throw new Error(`${resp.status} ${await resp.text()}`);
    const data = await resp.json();
    view.live = data.live;
    view.ended = data.ended;
    view.polls++;
    renderLive(data.live);
    renderEnded(data.ended, data.records_error);
  } catch (err) {
    $('records-note').textContent = `cannot load /calls.json: ${err.message}`;
  }
}

function follow() {
  const ws = new WebSocket(eventsUrl(null));
  ws.onmessage = (e) => {
    const ev = JSON.parse(e.data);
    const d = ev.data || {};
    if (['partial', 'final'].includes(ev.kind) && d.text) latest.set(ev.call_sid, `caller: ${d.text}`);
    else if (ev.kind === 'agent') latest.set(ev.call_sid, `agent: ${d.text}`);
    else if (ev.kind === 'interrupted') latest.set(ev.call_sid, `(interrupted: ${d.why})`);
    else if (ev.kind === 'ended') { latest.delete(ev.call_sid); poll(); }
  };
  ws.onclose = () => setTimeout(follow, 3000);  // the server restarted or drained: try again
}

if (TOKEN) $('phone-link').href = `/?token=${encodeURIComponent(TOKEN)}`;
poll();
setInterval(poll, POLL_MS);
follow();
