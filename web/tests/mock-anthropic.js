// A mock Anthropic Messages API for running the REAL Claude Code CLI offline in the
// browser tests (ANTHROPIC_BASE_URL=http://127.0.0.1:<port>): the part of
// tests/it/common/mock_anthropic.rs these tests need, in Node. `POST /v1/messages` (any
// query, e.g. `?beta=true`) gets a streamed SSE answer — message_start, ping,
// content_block_start / _delta… / _stop per block, message_delta with the stop_reason,
// message_stop — picked from the LAST user message of the request (<system-reminder>
// text blocks are ignored):
// - a `tool_result` → "Tool finished. Output was: <content>" ("Tool was denied: …"
//   when `is_error`);
// - `run-bash` → "I will run a command." + a Bash tool_use of BASH_COMMAND (appends a
//   line to ran.txt in the CLI's working directory, so a test can count the runs);
// - `plan-mode-exit` → "Here is my plan." + a Write of PLAN_TEXT to the plan file the
//   CLI named ("create your plan at <path>", in plan mode) + an ExitPlanMode tool_use;
// - `ask-question` → an AskUserQuestion tool_use with ASK_INPUT's two questions (one
//   single-select, one multi-select);
// - `usage-limit-soon` → HTTP 429 as Anthropic answers when an account's usage limit is
//   reached, the limit resetting `limitResetSecs` from now (`retry-after` an hour,
//   so the CLI gives up at once); a gateway client of the CLI reports it as a
//   `rate_limit_event` with that reset (see `gatewayEnv` in harness.js);
// - anything else → HELLO + " You said: <prompt>", in several text deltas.
// Anything other than POST /v1/messages gets a JSON 404 like the real API's errors.

import http from 'node:http';
import { randomUUID } from 'node:crypto';

/** When `usage-limit-soon`'s limit resets, in seconds from the request (`start`'s default). */
export const USAGE_LIMIT_SOON_SECS = 5;
export const HELLO = 'Hello from the mock Anthropic API!';
export const BASH_COMMAND = 'echo ran >> ran.txt';
export const PLAN_TEXT = '# Plan\n\n1. Read the code.\n2. Fix the bug.\n3. Run the tests.';
export const QUESTION_COLOR = 'Which color should the button be?';
export const QUESTION_TOPPINGS = 'Which toppings do you want?';
/** The input of `ask-question`'s AskUserQuestion call (the tool's own schema). */
export const ASK_INPUT = {
  questions: [
    { question: QUESTION_COLOR, header: 'Color', multiSelect: false, options: [{ label: 'Red', description: 'A warm red' }, { label: 'Blue', description: 'A calm blue' }] },
    { question: QUESTION_TOPPINGS, header: 'Toppings', multiSelect: true, options: [{ label: 'Cheese', description: 'Grated cheese' }, { label: 'Olives', description: 'Black olives' }, { label: 'Basil', description: 'Fresh basil' }] },
  ],
};

export class MockAnthropic {
  /** `limitResetSecs`: when `usage-limit-soon`'s limit resets, in seconds from the request. */
  static async start({ limitResetSecs = USAGE_LIMIT_SOON_SECS } = {}) {
    const m = new MockAnthropic();
    m.limitResetSecs = limitResetSecs;
    await new Promise((resolve, reject) => {
      m.server.once('error', reject);
      m.server.listen(0, '127.0.0.1', resolve);
    });
    m.baseUrl = `http://127.0.0.1:${m.server.address().port}`;
    return m;
  }

  constructor() {
    /** Every request body received, in order. */
    this.requests = [];
    this.server = http.createServer((req, res) => this.handle(req, res));
  }

  handle(req, res) {
    const url = new URL(req.url, 'http://mock');
    if (req.method !== 'POST' || url.pathname !== '/v1/messages') {
      req.resume();
      return errorResponse(res, 404, 'not_found_error', 'mock: only POST /v1/messages');
    }
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      let body;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch (e) {
        return errorResponse(res, 400, 'invalid_request_error', `mock: body is not JSON: ${e.message}`);
      }
      this.requests.push(body);
      if (newestPrompt(body).toLowerCase().includes('usage-limit-soon')) return usageLimit(res, this.limitResetSecs, 3600);
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'request-id': `req_mock${shortId()}` });
      for (const frame of sseFrames(typeof body.model === 'string' ? body.model : 'claude-mock', plan(body))) res.write(frame);
      res.end();
    });
  }

  async stop() {
    this.server.closeAllConnections();
    await new Promise((r) => this.server.close(() => r()));
  }
}

function errorResponse(res, status, kind, message) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ type: 'error', error: { type: kind, message } }));
}

/**
 * HTTP 429 with the unified rate-limit headers of a reached usage limit (as
 * tests/it/common/mock_anthropic.rs `usage_limit_response`): resets in `resetSecs`.
 */
function usageLimit(res, resetSecs, retryAfterSecs) {
  const reset = String(Math.floor(Date.now() / 1000) + resetSecs);
  res.writeHead(429, {
    'content-type': 'application/json',
    'request-id': `req_mock${shortId()}`,
    'retry-after': String(retryAfterSecs),
    'anthropic-ratelimit-unified-status': 'rejected',
    'anthropic-ratelimit-unified-reset': reset,
    'anthropic-ratelimit-unified-5h-status': 'rejected',
    'anthropic-ratelimit-unified-5h-reset': reset,
    'anthropic-ratelimit-unified-5h-utilization': '1.0',
    'anthropic-ratelimit-unified-representative-claim': 'five_hour',
    'anthropic-ratelimit-unified-fallback-percentage': '0.5',
  });
  res.end(JSON.stringify({ type: 'error', error: { type: 'rate_limit_error', message: "This request would exceed your account's rate limit. Please try again later." } }));
}

const shortId = () => randomUUID().replaceAll('-', '').slice(0, 20);

/** The SSE frames of an answer made of `blocks` ({text: [chunks]} or {tool: name, input}). */
function sseFrames(model, blocks) {
  const frames = [];
  const send = (name, data) => frames.push(`event: ${name}\ndata: ${JSON.stringify(data)}\n\n`);
  send('message_start', {
    type: 'message_start',
    message: {
      id: `msg_mock${shortId()}`, type: 'message', role: 'assistant', model, content: [], stop_reason: null, stop_sequence: null,
      usage: { input_tokens: 100, output_tokens: 1, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 },
    },
  });
  send('ping', { type: 'ping' });
  let stopReason = 'end_turn';
  let outputTokens = 1;
  blocks.forEach((block, index) => {
    if (block.text) {
      send('content_block_start', { type: 'content_block_start', index, content_block: { type: 'text', text: '' } });
      for (const text of block.text) {
        send('content_block_delta', { type: 'content_block_delta', index, delta: { type: 'text_delta', text } });
        outputTokens += 1;
      }
    } else {
      stopReason = 'tool_use';
      send('content_block_start', {
        type: 'content_block_start', index,
        content_block: { type: 'tool_use', id: `toolu_mock${shortId()}`, name: block.tool, input: {} },
      });
      for (const partial_json of splitIn(JSON.stringify(block.input), 3)) {
        send('content_block_delta', { type: 'content_block_delta', index, delta: { type: 'input_json_delta', partial_json } });
      }
      outputTokens += 5;
    }
    send('content_block_stop', { type: 'content_block_stop', index });
  });
  send('message_delta', { type: 'message_delta', delta: { stop_reason: stopReason, stop_sequence: null }, usage: { output_tokens: outputTokens } });
  send('message_stop', { type: 'message_stop' });
  return frames;
}

/**
 * The newest of the user's own text blocks in the last user message ("" when none): a
 * prompt sent after one the API refused shares its user message (as in mock_anthropic.rs).
 */
function newestPrompt(request) {
  const users = (Array.isArray(request.messages) ? request.messages : []).filter((m) => m && m.role === 'user');
  if (users.length === 0) return '';
  const texts = contentBlocks(users[users.length - 1].content).map((b) => promptText([b])).filter(Boolean);
  return texts.length ? texts[texts.length - 1] : '';
}

/** Picks the answer's blocks from the last user message. */
function plan(request) {
  const users = (Array.isArray(request.messages) ? request.messages : []).filter((m) => m && m.role === 'user');
  if (users.length === 0) return [textBlock(HELLO)];
  const blocks = contentBlocks(users[users.length - 1].content);
  const tr = blocks.find((b) => b.type === 'tool_result');
  if (tr) {
    const content = textOf(tr.content);
    return [textBlock(tr.is_error === true ? `Tool was denied: ${content}` : `Tool finished. Output was: ${content}`)];
  }
  const prompt = promptText(blocks);
  if (prompt.toLowerCase().includes('plan-mode-exit')) {
    const out = [{ text: ['Here is my plan.'] }];
    const file = planFilePath(request);
    if (file) out.push({ tool: 'Write', input: { file_path: file, content: PLAN_TEXT } });
    out.push({ tool: 'ExitPlanMode', input: { plan: PLAN_TEXT } });
    return out;
  }
  if (prompt.toLowerCase().includes('ask-question')) return [{ tool: 'AskUserQuestion', input: ASK_INPUT }];
  if (prompt.toLowerCase().includes('run-bash')) {
    return [
      { text: splitIn('I will run a command.', 2) },
      { tool: 'Bash', input: { command: BASH_COMMAND, description: 'Append a line to ran.txt' } },
    ];
  }
  return [textBlock(`${HELLO} You said: ${prompt}`)];
}

/** The plan file plan mode asks the model to write ("create your plan at <path>"), or null. */
function planFilePath(request) {
  const text = JSON.stringify(request.messages ?? []);
  const m = /create your plan at (\/[^\s"\\]+?\.md)/.exec(text);
  return m ? m[1] : null;
}

/** A text block in deltas of about six characters. */
const textBlock = (text) => ({ text: splitIn(text, Math.max(1, Math.ceil([...text].length / 6))) });

function contentBlocks(content) {
  if (typeof content === 'string') return [{ type: 'text', text: content }];
  return Array.isArray(content) ? content.filter((b) => b && typeof b === 'object') : [];
}

/** The user's own words: text blocks that are not system reminders or interrupt markers. */
function promptText(blocks) {
  return blocks
    .filter((b) => b.type === 'text' && typeof b.text === 'string')
    .map((b) => b.text.trim())
    .filter((t) => t !== '' && !t.startsWith('<system-reminder>') && !t.startsWith('[Request interrupted'))
    .join('\n');
}

function textOf(content) {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  return content.filter((b) => b && typeof b.text === 'string').map((b) => b.text).join('\n');
}

/** Splits `text` into about `n` pieces on code point boundaries. */
function splitIn(text, n) {
  const chars = [...text];
  if (chars.length === 0) return [''];
  const size = Math.ceil(chars.length / Math.max(1, n));
  const out = [];
  for (let i = 0; i < chars.length; i += size) out.push(chars.slice(i, i + size).join(''));
  return out;
}
