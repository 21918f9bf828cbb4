// The softphone page: microphone -> phone-capture worklet -> Twilio `media` frames; server
// `media`/`mark`/`clear` -> phone-playout worklet -> loudspeaker, with marks echoed only once
// their audio has played. The call's transcript and latencies come from /softphone/events.
import { Transcript, eventsUrl } from './transcript.js';
import { TwilioStreamClient, makeSid } from './twilio-stream.js';

const $ = (id) => document.getElementById(id);
const TOKEN = new URLSearchParams(location.search).get('token') || '';
const transcript = new Transcript($('transcript'), $('latency').querySelector('tbody'));

/** Everything the page knows, exposed for people poking in the console and for the browser test. */
const phone = {
  state: 'idle', callSid: '', streamSid: '', endReason: '', problems: [], events: [],
  stats: { framesSent: 0, playedMs: 0, bufferedMs: 0, underruns: 0, marksPlayed: 0, marksCleared: 0, clears: 0 },
  transcript: () => transcript.text(),
};
window.softphone = phone;

let call = null;  // the live call's resources, owned here and released by teardown()

function setState(state, text) {
  phone.state = state;
  $('status').className = `status ${state}`;
  $('status').textContent = text;
  $('call').disabled = state === 'connecting' || state === 'live';
  $('hangup').disabled = !(state === 'connecting' || state === 'live');
}

function showStats() {
  const s = phone.stats;
  const rows = [['frames sent', s.framesSent], ['audio played', `${(s.playedMs / 1000).toFixed(1)} s`],
    ['jitter buffer', `${Math.round(s.bufferedMs)} ms`], ['underruns', s.underruns],
    ['marks played / cleared', `${s.marksPlayed} / ${s.marksCleared}`], ['clears', s.clears]];
  $('stats').replaceChildren(...rows.flatMap(([k, v]) => {
    const dt = document.createElement('dt'); dt.textContent = k;
    const dd = document.createElement('dd'); dd.textContent = String(v);
    return [dt, dd];
  }));
}

function wsUrl(path) {
  const u = new URL(path, location.href);
  u.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  if (TOKEN) u.searchParams.set('token', TOKEN);  // browsers may carry a query; Twilio cannot
  return u.toString();
}

async function buildAudio() {
  if (!navigator.mediaDevices?.getUserMedia) {
    throw new Error('this page needs microphone access: open it over https or as http://127.0.0.1');
  }
  const mic = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
  });
  const ctx = new AudioContext({ latencyHint: 'interactive' });
  await ctx.audioWorklet.addModule('/static/phone-worklet.js');
  const capture = new AudioWorkletNode(ctx, 'phone-capture', {
    numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1], channelCount: 1, channelCountMode: 'explicit',
  });
  const mute = ctx.createGain();  // keeps the capture node pulled by the graph, silently
  mute.gain.value = 0;
  ctx.createMediaStreamSource(mic).connect(capture).connect(mute).connect(ctx.destination);
  const playout = new AudioWorkletNode(ctx, 'phone-playout', {
    numberOfInputs: 0, numberOfOutputs: 1, outputChannelCount: [1],
    processorOptions: { prebufferMs: 60, maxWaitMs: 120 },
  });
  const band = ctx.createBiquadFilter();  // smooths the 8 kHz -> browser-rate interpolation
  band.type = 'lowpass';
  band.frequency.value = 3800;
  playout.connect(band).connect(ctx.destination);
  await ctx.resume();
  return { mic, ctx, capture, playout };
}

async function placeCall() {
  transcript.box.replaceChildren();
  transcript.callers.clear();
  transcript.agents.clear();
  Object.assign(phone, { endReason: '', problems: [], events: [] });
  Object.assign(phone.stats, { framesSent: 0, playedMs: 0, bufferedMs: 0, underruns: 0, marksPlayed: 0, marksCleared: 0, clears: 0 });
  setState('connecting', 'Connecting...');
  let audio;
  try {
    audio = await buildAudio();
  } catch (err) {
    setState('error', `No microphone: ${err.message}`);
    return;
  }
  const ids = { accountSid: makeSid('AC'), callSid: makeSid('CA'), streamSid: makeSid('MZ') };
  phone.callSid = ids.callSid;
  phone.streamSid = ids.streamSid;
  $('sid').textContent = ids.callSid;
  call = { ...audio, ids, echoTimers: [], startedAt: 0, timer: null, events: null, stream: null };
  call.events = openEvents(ids.callSid);
  call.stream = new TwilioStreamClient(wsUrl('/twilio/media'), {
    // The same <Parameter>s our webhook's TwiML hands a phone call (app.FORWARDED_FIELDS).
    ...ids, customParameters: { CallSid: ids.callSid, From: 'browser softphone', To: location.host, Direction: 'inbound' },
  }, {
    onStart: () => {
      call.capture.port.postMessage({ type: 'start' });
      call.startedAt = performance.now();
      call.timer = setInterval(tick, 250);
      setState('live', 'In call');
    },
    onMedia: (bytes) => call.playout.port.postMessage({ type: 'audio', bytes }, [bytes.buffer]),
    onMark: (name) => call.playout.port.postMessage({ type: 'mark', name }),
    onClear: () => { phone.stats.clears++; call.playout.port.postMessage({ type: 'clear' }); },
    onClose: (code, reason, byUs) => endCall(byUs ? 'you hung up' : `the agent hung up${reason ? ` (${reason})` : ''}`),
    onProblem: (text) => { phone.problems.push(text); console.warn('softphone:', text); },
  });
  call.capture.port.onmessage = (e) => {
    if (e.data.type === 'frame') {
      call.stream.sendMedia(e.data.bytes);
      phone.stats.framesSent++;
    } else if (e.data.type === 'level') {
      $('meter-bar').style.width = `${Math.min(100, Math.round(Math.sqrt(e.data.rms) * 200))}%`;
    }
  };
  call.playout.port.onmessage = (e) => onPlayout(e.data);
}

function onPlayout(msg) {
  if (!call) return;
  if (msg.type === 'played') {
    // The worklet has rendered the audio before these marks; it reaches the ear after the
    // output latency, so the echo waits that long (Twilio echoes when playback completes).
    const delay = 1000 * ((call.ctx.outputLatency || 0) + (call.ctx.baseLatency || 0));
    for (const name of msg.names) {
      const timer = setTimeout(() => { call?.echoTimers.shift(); echo(name, 'played'); }, delay);
      call.echoTimers.push({ timer, name });
    }
  } else if (msg.type === 'cleared') {
    // `clear`: the marks still waiting go back at once, in order (already-played ones first).
    for (const { timer, name } of call.echoTimers.splice(0)) { clearTimeout(timer); echo(name, 'played'); }
    for (const name of msg.names) echo(name, 'cleared');
  } else if (msg.type === 'stats') {
    phone.stats.playedMs = (msg.playedSamples / 8000) * 1000;
    phone.stats.bufferedMs = (msg.bufferedSamples / 8000) * 1000;
    phone.stats.underruns = msg.underruns;
    showStats();
  }
}

function echo(name, how) {
  if (!call) return;
  call.stream.echoMark(name);
  if (how === 'played') phone.stats.marksPlayed++; else phone.stats.marksCleared++;
}

function tick() {
  if (!call) return;
  const s = Math.floor((performance.now() - call.startedAt) / 1000);
  $('timer').textContent = `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

function openEvents(callSid) {
  const ws = new WebSocket(eventsUrl(callSid));
  ws.onmessage = (e) => {
    const ev = JSON.parse(e.data);
    phone.events.push(ev);
    if (ev.kind !== 'snapshot' && transcript.apply(ev)) ws.close(1000);
  };
  ws.onerror = () => phone.problems.push('events WebSocket error');
  return ws;
}

function hangUp() {
  if (!call) return;
  call.stream.stop();  // its close handler ends the call
}

function endCall(why) {
  if (!call) return;
  const c = call;
  call = null;
  for (const { timer } of c.echoTimers) clearTimeout(timer);
  clearInterval(c.timer);
  c.capture.port.postMessage({ type: 'stop' });
  c.mic.getTracks().forEach((t) => t.stop());
  c.ctx.close();
  // The events socket stays until the server reports "ended" (with the reason), or 5 s.
  setTimeout(() => c.events.close(1000), 5000);
  phone.endReason = why;
  $('meter-bar').style.width = '0';
  setState('ended', `Call ended: ${why}`);
}

function pressDigit(digit) {
  if (call?.stream.open) {
    call.stream.sendDtmf(digit);
    transcript.system(`keypad: ${digit}`);
  }
}

$('call').addEventListener('click', placeCall);
$('hangup').addEventListener('click', hangUp);
$('keypad').addEventListener('click', (e) => { const d = e.target?.dataset?.digit; if (d) pressDigit(d); });
document.addEventListener('keydown', (e) => { if (/^[0-9*#]$/.test(e.key) && call) pressDigit(e.key); });
if (TOKEN) $('calls-link').href = `/calls?token=${encodeURIComponent(TOKEN)}`;
showStats();
