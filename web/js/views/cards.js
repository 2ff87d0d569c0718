// cards.js — the two agent requests that are not a yes/no about a tool (docs/protocol.md
// §10, §10.1): an ExitPlanMode request as a plan card (the plan as Markdown; Approve,
// Approve and switch to acceptEdits, or Keep planning with a message) and an
// AskUserQuestion request as a question card (one button per option, several for a
// multi-select question, "Other" free text, Submit sending the answer shape the CLI
// expects). Both sit inside the request's permission card, so its attributes
// (`data-request-id`, `data-resolved`, `data-by`) work as for any request.
// Must not: know about sockets (answers go through the callbacks).

import { renderMarkdown } from './markdown.js';
import { actionRow, el } from './dom.js';
import { planText, questionResponse, questionsOf } from '../controls.js';

/** The mode "Approve and switch" asks for. */
const EDITS_MODE = 'acceptEdits';

/**
 * The plan card of an ExitPlanMode request `it` (a model permission item).
 * @param {object} it
 * @param {object} ctx  {respond(it, response), setMode(mode), canAnswer(), plan: relay.plan text or ''}
 */
export function planCard(it, ctx) {
  const box = el('section', 'plan-card');
  box.setAttribute('data-testid', 'plan-card');
  box.dataset.requestId = it.requestId;
  box.append(el('p', 'card-head', it.resolved ? 'Plan' : 'Claude has a plan. Start on it?'));
  const text = planText(ctx.plan, it.input);
  const body = el('div', 'plan-body md');
  if (text) body.append(renderMarkdown(text));
  else body.append(el('p', 'muted', 'The plan has not arrived yet.'));
  if (it.resolved) {
    // Answered: the plan stays readable, folded.
    const d = el('details', 'plan-done');
    d.append(el('summary', '', 'Show the plan'), body);
    box.append(d);
    return box;
  }
  box.append(body);
  if (!ctx.canAnswer()) {
    box.append(el('p', 'muted small', 'Waiting for an owner to answer (this device is view only).'));
    return box;
  }
  const { row, add } = actionRow();
  add('Approve', 'permission-allow', 'primary', () => ctx.respond(it, { behavior: 'allow' }));
  // The request may offer the switch itself; else approve, then set the mode (docs/protocol.md §10).
  const offered = it.suggestions.filter((s) => s && s.type === 'setMode' && s.mode === EDITS_MODE);
  add('Approve, accept edits', 'plan-approve-edits', '', async () => {
    if (offered.length) {
      await ctx.respond(it, { behavior: 'allow', updatedPermissions: offered });
      return;
    }
    if (await ctx.respond(it, { behavior: 'allow' })) await ctx.setMode(EDITS_MODE);
  });
  box.append(row);
  const why = el('form', 'deny-why');
  const inputId = `plan-why-${it.requestId}`;
  const label = el('label', 'sr-only', 'What to change in the plan');
  label.htmlFor = inputId;
  const input = el('input');
  input.id = inputId;
  input.type = 'text';
  input.placeholder = 'What should change…';
  input.maxLength = 4000;
  input.setAttribute('data-testid', 'plan-feedback');
  const keep = el('button', '', 'Keep planning');
  keep.type = 'submit';
  keep.setAttribute('data-testid', 'permission-deny');
  why.append(label, input, keep);
  why.addEventListener('submit', (e) => {
    e.preventDefault();
    keep.disabled = true;
    const message = input.value.trim();
    Promise.resolve(ctx.respond(it, message ? { behavior: 'deny', message } : { behavior: 'deny', message: 'Keep planning.' })).finally(() => {
      keep.disabled = false;
    });
  });
  box.append(why);
  return box;
}

/**
 * The question card of an AskUserQuestion request `it`. The choices live in `state`
 * (kept by the caller per request, so a redraw keeps what was picked).
 * @param {object} it
 * @param {object} ctx  {respond(it, response), canAnswer(), state: {chosen: Map, other: Map}}
 */
export function questionCard(it, ctx) {
  const box = el('section', 'question-card');
  box.setAttribute('data-testid', 'question-card');
  box.dataset.requestId = it.requestId;
  const questions = questionsOf(it.input);
  const answered = it.response && it.response.updatedInput && typeof it.response.updatedInput.answers === 'object' ? it.response.updatedInput.answers : null;
  const live = !it.resolved && ctx.canAnswer();
  const { chosen, other } = ctx.state;
  const submit = el('button', 'primary', 'Submit');
  submit.type = 'button';
  submit.setAttribute('data-testid', 'question-submit');
  const ready = () => {
    submit.disabled = questionResponse(it.input, chosen, other) === null;
  };
  for (const q of questions) {
    const group = el('fieldset', 'question');
    const legend = el('legend', 'question-text');
    if (q.header) legend.append(el('span', 'tag', q.header), ' ');
    legend.append(q.question);
    group.append(legend);
    if (q.multiSelect) group.append(el('p', 'muted small', 'Choose any.'));
    const buttons = [];
    const mark = () => {
      const picked = chosen.get(q.question) || [];
      for (const b of buttons) b.setAttribute('aria-pressed', String(picked.includes(b.dataset.label)));
    };
    for (const o of q.options) {
      const b = el('button', 'option');
      b.type = 'button';
      b.setAttribute('data-testid', 'question-option');
      b.dataset.question = q.question;
      b.dataset.label = o.label;
      b.append(el('span', 'option-label', o.label));
      if (o.description) b.append(el('span', 'option-desc', o.description));
      b.disabled = !live;
      b.addEventListener('click', () => {
        const have = chosen.get(q.question) || [];
        if (q.multiSelect) chosen.set(q.question, have.includes(o.label) ? have.filter((l) => l !== o.label) : [...have, o.label]);
        else chosen.set(q.question, [o.label]);
        if (!q.multiSelect) other.delete(q.question);
        mark();
        if (!q.multiSelect && otherInput) otherInput.value = '';
        ready();
      });
      buttons.push(b);
      group.append(b);
    }
    let otherInput = null;
    if (live) {
      otherInput = el('input', 'other');
      otherInput.type = 'text';
      otherInput.placeholder = 'Other…';
      otherInput.maxLength = 2000;
      otherInput.setAttribute('aria-label', `Another answer to: ${q.question}`);
      otherInput.setAttribute('data-testid', 'question-other');
      otherInput.value = other.get(q.question) || '';
      otherInput.addEventListener('input', () => {
        other.set(q.question, otherInput.value);
        // A typed answer replaces the picked one of a single-choice question.
        if (!q.multiSelect && otherInput.value.trim()) {
          chosen.delete(q.question);
          mark();
        }
        ready();
      });
      group.append(otherInput);
    }
    mark();
    if (answered && typeof answered[q.question] === 'string') group.append(el('p', 'resolution', `Answer: ${answered[q.question]}`));
    box.append(group);
  }
  if (!it.resolved && !ctx.canAnswer()) {
    box.append(el('p', 'muted small', 'Waiting for an owner to answer (this device is view only).'));
  } else if (live) {
    const { row, add } = actionRow();
    submit.addEventListener('click', () => {
      const response = questionResponse(it.input, chosen, other);
      if (!response) return;
      submit.disabled = true;
      Promise.resolve(ctx.respond(it, response)).finally(ready);
    });
    row.append(submit);
    add('Skip', 'permission-deny', '', () => ctx.respond(it, { behavior: 'deny', message: 'The user skipped the questions.' }));
    box.append(row);
    ready();
  }
  return box;
}
