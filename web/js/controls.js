// controls.js — the pure parts of the session controls (docs/protocol.md §10): which
// catalog commands the slash menu offers for what is typed, the answer an
// AskUserQuestion card sends, how big a downscaled image is and which encoding it is
// sent in, and what a prompt may still hold under the server's `limits`. Pure: no
// socket, no DOM, no canvas (views/attach.js does the drawing).

/** The long edge an attached image is downscaled to (the API's own recommended maximum). */
export const MAX_IMAGE_EDGE = 1568;

/** Sizes the page assumes when `auth.ok` carries no `limits` (the server's defaults). */
export const DEFAULT_LIMITS = { max_frame_bytes: 4 * 1024 * 1024, max_prompt_bytes: 1024 * 1024, max_upload_bytes: 2 * 1024 * 1024 };

/** The permission modes offered before the catalog has arrived (the CLI's own, without the unattended ones). */
export const FALLBACK_MODES = ['default', 'acceptEdits', 'plan'];

/** `auth.ok`'s `limits`, each missing or absurd value replaced by the default. */
export function limitsFrom(authOk) {
  const l = authOk && typeof authOk.limits === 'object' && authOk.limits ? authOk.limits : {};
  const out = {};
  for (const [k, v] of Object.entries(DEFAULT_LIMITS)) out[k] = Number.isSafeInteger(l[k]) && l[k] > 0 ? l[k] : v;
  return out;
}

/**
 * The catalog commands to offer for the prompt box's text: only while it is `/` and a
 * command name being typed (no space or newline yet). Names starting with what was
 * typed come first, then names containing it; each group keeps the catalog's order.
 */
export function slashMatches(commands, text, max = 50) {
  if (typeof text !== 'string' || !text.startsWith('/') || /\s/.test(text)) return [];
  const typed = text.slice(1).toLowerCase();
  const valid = (Array.isArray(commands) ? commands : []).filter((c) => c && typeof c.name === 'string' && c.name && !c.name.startsWith('__'));
  const starts = valid.filter((c) => c.name.toLowerCase().startsWith(typed));
  const contains = typed ? valid.filter((c) => !c.name.toLowerCase().startsWith(typed) && c.name.toLowerCase().includes(typed)) : [];
  return [...starts, ...contains].slice(0, max);
}

/** The questions of an AskUserQuestion input that the page can show (docs/protocol.md §10.1). */
export function questionsOf(input) {
  const qs = input && Array.isArray(input.questions) ? input.questions : [];
  return qs
    .filter((q) => q && typeof q.question === 'string' && q.question)
    .map((q) => ({
      question: q.question,
      header: typeof q.header === 'string' ? q.header : '',
      multiSelect: q.multiSelect === true,
      options: (Array.isArray(q.options) ? q.options : [])
        .filter((o) => o && typeof o.label === 'string' && o.label)
        .map((o) => ({ label: o.label, description: typeof o.description === 'string' ? o.description : '' })),
    }));
}

/**
 * The `respond` answer to an AskUserQuestion request: `allow` with `updatedInput` =
 * the request's input plus `answers` {"<question text>": "<label>"} (multi-select:
 * the labels joined with ", "; "Other" text counts as one more label). `chosen` maps
 * a question's text to the labels picked, `other` to free text. Null while a
 * question has no answer.
 */
export function questionResponse(input, chosen, other = new Map()) {
  const answers = {};
  for (const q of questionsOf(input)) {
    const picked = (chosen.get(q.question) || []).filter((l) => q.options.some((o) => o.label === l));
    const free = (other.get(q.question) || '').trim();
    const labels = q.multiSelect ? [...picked, ...(free ? [free] : [])] : free ? [free] : picked.slice(0, 1);
    if (labels.length === 0) return null;
    answers[q.question] = labels.join(', ');
  }
  if (Object.keys(answers).length === 0) return null;
  return { behavior: 'allow', updatedInput: { ...input, answers } };
}

/** The plan of an ExitPlanMode request: `relay.plan`'s text, else the request's own `plan`. */
export function planText(relayPlan, input) {
  if (typeof relayPlan === 'string' && relayPlan) return relayPlan;
  return input && typeof input.plan === 'string' ? input.plan : '';
}

/** The size an image of `width`×`height` is drawn at: its long edge at most `max`, the aspect kept. */
export function fitSize(width, height, max = MAX_IMAGE_EDGE) {
  const w = Math.max(1, Math.round(width));
  const h = Math.max(1, Math.round(height));
  const long = Math.max(w, h);
  if (long <= max) return { width: w, height: h, scaled: false };
  const k = max / long;
  return { width: Math.max(1, Math.min(max, Math.round(w * k))), height: Math.max(1, Math.min(max, Math.round(h * k))), scaled: true };
}

/**
 * Which encoding to send: among the candidates that were made (`{type, bytes}`; a
 * browser without a WebP encoder hands back PNG for it, which the caller leaves out),
 * JPEG for an opaque picture and PNG for one with transparency, unless WebP is smaller.
 */
export function pickEncoding(candidates, transparent) {
  const ok = candidates.filter((c) => c && c.bytes > 0);
  const base = ok.find((c) => c.type === (transparent ? 'image/png' : 'image/jpeg'));
  const webp = ok.find((c) => c.type === 'image/webp');
  if (base && webp) return webp.bytes < base.bytes ? webp : base;
  return base || webp || null;
}

/** Characters of base64 for `bytes` bytes. */
export function base64Length(bytes) {
  return 4 * Math.ceil(bytes / 3);
}

/**
 * Bytes (of JSON) the images of a prompt may still take: `max_prompt_bytes` less the
 * text and the blocks' own JSON, with a margin; never more than fits in one frame.
 */
export function imageBudget(limits, text, images) {
  const cap = Math.min(limits.max_prompt_bytes, limits.max_frame_bytes - 4096);
  const textBytes = new TextEncoder().encode(JSON.stringify(text || '')).length;
  const used = images.reduce((n, im) => n + im.data.length + 120, 0);
  return cap - textBytes - used - 1024;
}

/** The prompt's content: plain text, or a text block and image blocks (docs/protocol.md §10). */
export function promptContent(text, images) {
  if (!images.length) return text;
  const blocks = images.map((im) => ({ type: 'image', source: { type: 'base64', media_type: im.type, data: im.data } }));
  return text ? [{ type: 'text', text }, ...blocks] : blocks;
}

/** `41k / 200k` style token counts. */
export function tokens(n) {
  if (!Number.isFinite(n)) return '?';
  if (n >= 1e6) return `${(n / 1e6).toFixed(n % 1e6 === 0 ? 0 : 1)}M`;
  if (n >= 1000) return `${Math.round(n / 1000)}k`;
  return String(n);
}

/**
 * When a reached usage limit lifts (ms since the epoch), from a `session.usage` reply:
 * `rate_limit` with status `rejected` and a reset time (docs/protocol.md §10); else null.
 */
export function limitedUntil(usage) {
  const r = usage && typeof usage === 'object' ? usage.rate_limit : null;
  if (!r || typeof r !== 'object' || r.status !== 'rejected' || typeof r.resets_at !== 'string') return null;
  const ms = Date.parse(r.resets_at);
  return Number.isFinite(ms) ? ms : null;
}

/** A file name for `file.upload`: its base name, nothing the server would have to refuse. */
export function uploadName(name) {
  const base = String(name || '').split(/[\\/]/).pop().replace(/[\p{Cc}\p{Cf}]/gu, '').trim();
  return base.slice(0, 120) || 'upload';
}

/** The prompt box text with an `@path` mention added (on its own word). */
export function withMention(text, path) {
  const mention = `@${path}`;
  if (!text) return `${mention} `;
  return /\s$/.test(text) ? `${text}${mention} ` : `${text} ${mention} `;
}
