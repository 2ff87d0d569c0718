// session.js — the applied-seq log of each session and the model derived from it.
// This is the only state the views read. An event is applied exactly once and only
// in order: a seq at or below `head` is a duplicate (ignored), a seq above `head + 1`
// is a gap (refused; the connection re-attaches with `since = head`). Everything a
// view shows is a function of the applied events (plus the `pending` list of an
// attach), so a replay after a reconnect can never show a line twice.
// Must not: touch the socket or the DOM.

import { contentText, requestFields } from './protocol.js';

/** One rendered thing in the stream, in the order it first appeared. */
function item(kind, id, fields) {
  return { kind, id, rev: 0, ...fields };
}

/** The model of one session: ordered items plus session-level facts. */
class Model {
  constructor() {
    this.items = [];
    this.byId = new Map();
    this.state = '';
    this.detail = '';
    this.promptKeys = new Set();
    this.lastResult = null;
    // Per API message: the stream indexes of its text blocks, in order, and how many
    // text blocks its `assistant` lines have carried so far. An `assistant` line has
    // no index, and other blocks (thinking, tool_use) may or may not get lines of
    // their own, so the k-th text line is matched with the k-th streamed text block.
    this.textBlocks = new Map();
    this.assistantTexts = new Map();
    // Tool input JSON streamed in pieces, by "<message>:<index>".
    this.toolByBlock = new Map();
    this.changed = new Set();
    // Turns: every prompt starts one; items before the first prompt are turn 0.
    this.turns = 0;
    // The agent's working directory (from its `system` init line): paths under it are shown relative.
    this.cwd = '';
    // An interrupt was seen since the last result: that result is labelled "Interrupted".
    this.interrupted = false;
    // Set by `relay.closed`: the session is gone once the server detaches us.
    this.closed = null;
    // docs/protocol.md §10: the plan text of each ExitPlanMode request (`relay.plan`), and
    // the settings the last `relay.settings` reported (`settingsRev` counts them).
    this.plans = new Map();
    this.settings = null;
    this.settingsRev = 0;
  }

  get(id) {
    return this.byId.get(id);
  }

  add(it) {
    const have = this.byId.get(it.id);
    if (have) return have;
    if (it.kind === 'prompt') this.turns += 1;
    it.turn = this.turns;
    this.items.push(it);
    this.byId.set(it.id, it);
    this.touch(it);
    return it;
  }

  touch(it) {
    it.rev += 1;
    this.changed.add(it.id);
  }

  /**
   * Apply one event object (the `event` of an `event` frame); `ts` is the frame's
   * time (ms since the epoch) when the server gave one, else null.
   */
  apply(seq, ev, ts = null) {
    if (!ev || typeof ev !== 'object') return;
    switch (ev.type) {
      case 'relay.prompt': {
        const text = contentText(ev.content);
        const id = `prompt:${ev.prompt_id}`;
        const images = Array.isArray(ev.content) ? ev.content.filter((b) => b && b.type === 'image').length : 0;
        const scheduledAt = typeof ev.scheduled_at === 'string' ? ev.scheduled_at : '';
        const it = this.add(item('prompt', id, { promptId: ev.prompt_id, text, images, steer: ev.steer === true, autoContinue: ev.auto_continue === true, scheduledAt, device: ev.device || '', fingerprint: ev.fingerprint || '', key: ev.key || '', phase: 'accepted', queued: ev.queued === true || scheduledAt !== '' || (this.state !== 'idle' && this.state !== ''), seq, ts }));
        if (ev.key) this.promptKeys.add(ev.key);
        this.touch(it);
        break;
      }
      case 'relay.turn': {
        const it = this.get(`prompt:${ev.prompt_id}`);
        if (it) {
          it.phase = ev.phase;
          it.phaseDetail = ev.detail || '';
          this.touch(it);
        }
        break;
      }
      case 'relay.state':
        this.state = ev.state || '';
        this.detail = ev.detail || '';
        this.changed.add('$state');
        break;
      case 'relay.resolved': {
        const it = this.get(`perm:${ev.request_id}`);
        if (it) {
          const behavior = ev.response && ev.response.behavior;
          it.resolved = behavior === 'deny' ? 'deny' : 'allow';
          it.by = ev.client_id === 'relay' ? 'relay' : ev.device || ev.fingerprint || ev.client_id || '';
          it.message = (ev.response && ev.response.message) || '';
          it.response = ev.response && typeof ev.response === 'object' ? ev.response : null;
          this.touch(it);
          const tool = it.toolUseId ? this.get(`tool:${it.toolUseId}`) : null;
          if (tool) this.touch(tool);
        }
        break;
      }
      case 'relay.plan':
        if (typeof ev.request_id === 'string' && typeof ev.plan === 'string') {
          this.plans.set(ev.request_id, ev.plan);
          const it = this.get(`perm:${ev.request_id}`);
          if (it) this.touch(it);
        }
        break;
      case 'relay.settings':
        if (ev.settings && typeof ev.settings === 'object') {
          this.settings = { ...ev.settings, ...(typeof ev.model_in_effect === 'string' ? { model_in_effect: ev.model_in_effect } : {}) };
          this.settingsRev += 1;
          this.changed.add('$settings');
        }
        break;
      case 'relay.cancelled':
        this.cancel(ev.request_id, 'relay', ev.reason || '');
        break;
      case 'control_cancel_request':
        this.cancel(ev.request_id, 'agent', '');
        this.interrupted = true;
        break;
      case 'control_request':
        this.controlRequest(ev, seq);
        break;
      case 'relay.agent_exit':
        this.add(item('notice', `seq:${seq}`, { text: `Agent ${ev.cause === 'stopped' ? 'stopped' : ev.cause === 'hung' ? 'hung and was killed' : 'exited'}${ev.code != null ? ` (code ${ev.code})` : ''}${ev.signal ? ` (${ev.signal})` : ''}${ev.restarting ? ', restarting' : ''}.` }));
        break;
      case 'relay.closed':
        // The session's last event (docs/protocol.md §4): the page leaves it after `detached`.
        this.closed = { by: ev.device || ev.by || '' };
        this.add(item('notice', `seq:${seq}`, { text: `Session closed${ev.device ? ` by ${ev.device}` : ''}.` }));
        break;
      case 'relay.changes': {
        // What a turn changed (docs/protocol.md §11): a card in the stream; its diff is
        // `files.diff` with base `turn:<prompt_id>`.
        const files = Array.isArray(ev.files) ? ev.files.filter((f) => f && typeof f.path === 'string') : [];
        this.add(item('changes', `changes:${ev.prompt_id}:${seq}`, { promptId: typeof ev.prompt_id === 'string' ? ev.prompt_id : '', files, truncated: ev.truncated === true, seq }));
        break;
      }
      case 'relay.dropped':
        this.add(item('notice', `seq:${seq}`, { text: `An agent line of ${ev.bytes} bytes was too large and was dropped.` }));
        break;
      case 'stream_event':
        this.streamEvent(ev);
        break;
      case 'assistant':
        this.assistant(ev);
        break;
      case 'user':
        this.userLine(ev);
        break;
      case 'system':
        if (ev.subtype === 'init' && typeof ev.cwd === 'string') this.cwd = ev.cwd;
        break;
      case 'result':
        this.lastResult = ev;
        // The turn is over: text blocks still open (no complete line came) are final as they are.
        for (const it of this.items) {
          if (it.kind === 'text' && !it.final) {
            it.final = true;
            this.touch(it);
          }
        }
        this.add(item('result', `seq:${seq}`, {
          ts,
          interrupted: this.interrupted,
          isError: !!ev.is_error,
          subtype: ev.subtype || '',
          cost: typeof ev.total_cost_usd === 'number' ? ev.total_cost_usd : null,
          duration: typeof ev.duration_ms === 'number' ? ev.duration_ms : null,
          turns: ev.num_turns,
          text: typeof ev.result === 'string' ? ev.result : '',
        }));
        this.interrupted = false;
        break;
      default:
        break;
    }
  }

  cancel(requestId, by, reason) {
    const it = this.get(`perm:${requestId}`);
    if (it && !it.resolved) {
      it.resolved = 'cancelled';
      it.by = by;
      it.message = reason;
      this.touch(it);
    }
  }

  controlRequest(ev, seq) {
    const req = ev.request || {};
    const id = `perm:${ev.request_id}`;
    if (this.byId.has(id)) return;
    this.add(item('permission', id, { ...requestFields(ev), resolved: '', by: '', message: '', seq }));
    // The tool card defers to the permission card for the input (no second diff).
    const tool = req.tool_use_id ? this.get(`tool:${req.tool_use_id}`) : null;
    if (tool) this.touch(tool);
  }

  /** The permission item opened for a tool call, if any. */
  permissionFor(toolId) {
    return this.items.find((x) => x.kind === 'permission' && x.toolUseId === toolId) || null;
  }

  textItem(mid, index) {
    if (typeof index === 'number') {
      const list = this.textBlocks.get(mid) || [];
      if (!list.includes(index)) {
        list.push(index);
        this.textBlocks.set(mid, list);
      }
    }
    // `resets` counts replacements of the text (not appends): views redraw then.
    return this.add(item('text', `text:${mid}:${index}`, { text: '', final: false, resets: 0 }));
  }

  toolItem(toolId, name, blockKey) {
    const it = this.add(item('tool', `tool:${toolId}`, { toolId, name: name || '', input: null, inputJson: '', output: null, isError: false }));
    if (blockKey) this.toolByBlock.set(blockKey, it);
    return it;
  }

  streamEvent(ev) {
    const e = ev.event || {};
    const mid = ev.api_message_id || (e.message && e.message.id) || '';
    if (e.type === 'content_block_start' && e.content_block) {
      const b = e.content_block;
      if (b.type === 'text') {
        const it = this.textItem(mid, e.index);
        if (typeof b.text === 'string' && b.text) {
          it.text += b.text;
          this.touch(it);
        }
      } else if (b.type === 'tool_use' && b.id) {
        this.toolItem(b.id, b.name, `${mid}:${e.index}`);
      }
    } else if (e.type === 'content_block_delta' && e.delta) {
      if (e.delta.type === 'text_delta' && typeof e.delta.text === 'string') {
        const it = this.textItem(mid, e.index);
        // The complete block has arrived: later deltas of it change nothing.
        if (it.final) return;
        it.text += e.delta.text;
        this.touch(it);
      } else if (e.delta.type === 'input_json_delta' && typeof e.delta.partial_json === 'string') {
        const it = this.toolByBlock.get(`${mid}:${e.index}`);
        if (it && it.input === null) {
          it.inputJson += e.delta.partial_json;
          this.touch(it);
        }
      }
    }
  }

  assistant(ev) {
    const m = ev.message || {};
    const mid = m.id || '';
    const content = Array.isArray(m.content) ? m.content : [];
    for (const b of content) {
      if (!b || typeof b !== 'object') continue;
      if (b.type === 'text' && typeof b.text === 'string') {
        const k = this.assistantTexts.get(mid) || 0;
        this.assistantTexts.set(mid, k + 1);
        const streamed = (this.textBlocks.get(mid) || [])[k];
        // The complete block: authoritative over the streamed deltas.
        const it = streamed !== undefined ? this.textItem(mid, streamed) : this.textItem(mid, `a${k}`);
        if (it.text !== b.text) {
          if (!b.text.startsWith(it.text)) it.resets += 1;
          it.text = b.text;
          this.touch(it);
        }
        if (!it.final) {
          it.final = true;
          this.touch(it);
        }
      } else if (b.type === 'tool_use' && b.id) {
        const it = this.toolItem(b.id, b.name, '');
        it.name = b.name || it.name;
        it.input = b.input && typeof b.input === 'object' ? b.input : {};
        this.touch(it);
      }
    }
  }

  userLine(ev) {
    const m = ev.message || {};
    if (!Array.isArray(m.content)) return;
    for (const b of m.content) {
      if (b && b.type === 'tool_result' && b.tool_use_id) {
        // A result whose call is not in the log (a tail attach began after it) shows
        // nothing: an unnamed "tool · done" card would say nothing either.
        const it = this.get(`tool:${b.tool_use_id}`);
        if (!it) continue;
        it.output = toolResultText(b.content);
        it.isError = !!b.is_error;
        this.touch(it);
      } else if (b && b.type === 'text' && typeof b.text === 'string' && b.text.startsWith('[Request interrupted')) {
        this.interrupted = true;
        this.add(item('notice', `interrupt:${ev.uuid || this.items.length}`, { text: 'Interrupted', interrupt: true }));
      }
    }
  }

  /** A pending control request listed by `attached` whose event is not in the log. */
  pending(req) {
    if (req && req.type === 'control_request' && req.request_id) this.controlRequest(req, 0);
  }
}

function toolResultText(content) {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content.map((c) => (c && typeof c.text === 'string' ? c.text : '')).join('\n');
  }
  return content == null ? '' : JSON.stringify(content);
}

/** A frame's `ts` (ms since the epoch, an optional field) or null when absent or absurd. */
function frameTime(ts) {
  return Number.isSafeInteger(ts) && ts > 0 ? ts : null;
}

/** One session's event log: seqs `base+1 ..= head`, each applied once, in order. */
export class SessionLog {
  constructor(name) {
    this.name = name;
    this.uid = ''; // the session (docs/protocol.md §4 `uid`) these events belong to, once known
    this.base = 0;
    this.head = 0;
    this.events = [];
    this.times = []; // each event's frame `ts` (or null), beside `events`
    this.pendingList = [];
    this.model = new Model();
    this.rebuilt = 0; // bumped when the model is rebuilt from scratch (views redraw)
    this.serverHead = 0;
    this.truncatedStart = false; // events before `base` are no longer retained
  }

  /**
   * Apply one event. Returns 'applied', 'duplicate' (seq ≤ head: ignored) or
   * 'gap' (seq > head + 1: refused, the caller must re-attach from `head`).
   */
  apply(seq, ev, ts) {
    if (!Number.isSafeInteger(seq) || seq <= this.head) return 'duplicate';
    if (seq !== this.head + 1) return 'gap';
    const time = frameTime(ts);
    this.events.push(ev);
    this.times.push(time);
    this.head = seq;
    if (seq > this.serverHead) this.serverHead = seq;
    this.model.apply(seq, ev, time);
    return 'applied';
  }

  /** Start over from `base` (a tail attach, or the server no longer has what we had). */
  reset(base) {
    this.base = base;
    this.head = base;
    this.events = [];
    this.times = [];
    this.rebuild();
  }

  /** Older events from `history`: they must end exactly at `base`. Returns how many were added. */
  prepend(frames) {
    const evs = frames.filter((f) => f && Number.isSafeInteger(f.seq) && f.seq <= this.base).sort((a, b) => a.seq - b.seq);
    if (evs.length === 0) return 0;
    // Only a contiguous run ending at base can join the log.
    let start = evs.length - 1;
    if (evs[start].seq !== this.base) return 0;
    while (start > 0 && evs[start - 1].seq === evs[start].seq - 1) start -= 1;
    const run = evs.slice(start);
    this.events = run.map((f) => f.event).concat(this.events);
    this.times = run.map((f) => frameTime(f.ts)).concat(this.times);
    this.base = run[0].seq - 1;
    this.rebuild();
    return run.length;
  }

  setPending(list) {
    this.pendingList = Array.isArray(list) ? list : [];
    for (const req of this.pendingList) this.model.pending(req);
  }

  rebuild() {
    const m = new Model();
    let seq = this.base;
    this.events.forEach((ev, i) => {
      seq += 1;
      m.apply(seq, ev, this.times[i] ?? null);
    });
    for (const req of this.pendingList) m.pending(req);
    m.state = m.state || this.model.state;
    m.cwd = m.cwd || this.model.cwd;
    this.model = m;
    this.rebuilt += 1;
  }

  hasPromptKey(key) {
    return this.model.promptKeys.has(key);
  }
}

/** Every session's log, by name. */
export class Store {
  constructor() {
    this.logs = new Map();
  }

  log(name) {
    let l = this.logs.get(name);
    if (!l) {
      l = new SessionLog(name);
      this.logs.set(name, l);
    }
    return l;
  }

  /** Forget a session's events (it was closed, or its name now names another session). */
  drop(name) {
    this.logs.delete(name);
  }

  /**
   * The log of `name` for the session with `uid`: a log built from another session
   * that had the same name is dropped first, so its events never mix with these.
   */
  logFor(name, uid) {
    const have = this.logs.get(name);
    if (have && uid && have.uid && have.uid !== uid) this.logs.delete(name);
    const l = this.log(name);
    if (uid && !l.uid) l.uid = uid;
    return l;
  }
}
