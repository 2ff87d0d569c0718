// devices.js — the keys this server accepts (the `keys.list` extension), for
// owners: one entry per key with its device name or comment, role, source file
// and pairing date; Rename (inline form) and Revoke (inline confirmation) for
// the paired keys the server can edit; "this browser" on the page's own key.
// Knows nothing about sockets: the page passes `list`, `rename` and `revoke`
// functions that return promises of the server's replies.

const SOURCE_TEXT = {
  authorized_keys: 'authorized_keys file',
  viewer_keys: 'viewer keys file',
  paired_keys: 'paired',
  paired_viewers: 'paired',
};

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function button(label, testid, cls) {
  const b = el('button', cls, label);
  b.type = 'button';
  if (testid) b.setAttribute('data-testid', testid);
  return b;
}

/** The name shown for a key: its device name, else its comment, else its type. */
export function keyName(k) {
  return k.device || k.comment || k.key_type || 'key';
}

export class DevicesView {
  /**
   * @param {HTMLElement} root the list element
   * @param {HTMLElement} note where status and errors are written
   * @param {{list: () => Promise<object>, rename: (fp: string, name: string) => Promise<object>,
   *          revoke: (fp: string) => Promise<object>, self: () => string}} api
   */
  constructor(root, note, api) {
    this.root = root;
    this.note = note;
    this.api = api;
    this.busy = false;
  }

  /** Ask the server for the list and render it. */
  async refresh() {
    try {
      const reply = await this.api.list();
      this.render(Array.isArray(reply.keys) ? reply.keys : []);
      this.note.textContent = '';
    } catch (e) {
      this.note.textContent = e.code === 'forbidden'
        ? 'Only owners can see the keys this server accepts.'
        : e.code === 'unknown_type'
          ? 'This server cannot list its keys; use `ccrelay keys list` on the server.'
          : `Could not load the keys: ${e.message}`;
      this.root.replaceChildren();
    }
  }

  /** Viewers may not list keys: say so instead of asking. */
  viewerOnly() {
    this.root.replaceChildren();
    this.note.textContent = 'Only owners can see the keys this server accepts.';
  }

  render(keys) {
    const self = this.api.self();
    this.root.replaceChildren(...keys.map((k) => this.entry(k, k.fingerprint === self)));
  }

  entry(k, mine) {
    const li = el('li', 'device-key');
    li.setAttribute('data-testid', 'device-entry');
    li.dataset.fingerprint = k.fingerprint;
    li.dataset.role = k.role;
    li.dataset.source = k.source;
    if (mine) li.dataset.self = 'true';
    const head = el('div', 'device-head');
    const name = el('strong', 'device-title', keyName(k));
    name.setAttribute('data-testid', 'device-label');
    head.append(name, ' ', el('span', 'pill', k.role));
    if (mine) head.append(' ', el('span', 'pill self', 'this browser'));
    const meta = el('div', 'muted small');
    const parts = [k.paired ? `paired ${k.paired}` : SOURCE_TEXT[k.source] || k.source];
    if (k.device && k.comment && !k.paired) parts.push(k.comment);
    meta.textContent = parts.join(' · ');
    const fp = el('code', 'muted small fp', k.fingerprint);
    li.append(head, meta, fp);
    if (k.editable) li.append(this.actions(k, li, mine));
    return li;
  }

  actions(k, li, mine) {
    const row = el('div', 'actions');
    const rename = button('Rename', 'device-rename', '');
    const revoke = button('Revoke', 'device-revoke', 'danger');
    rename.addEventListener('click', () => this.renameForm(k, li, row));
    revoke.addEventListener('click', () => this.revokeConfirm(k, li, row, mine));
    row.append(rename, revoke);
    return row;
  }

  renameForm(k, li, row) {
    row.hidden = true;
    const form = el('form', 'rename-form');
    const label = el('label', 'small', 'New name ');
    const input = el('input');
    input.setAttribute('data-testid', 'device-rename-input');
    input.maxLength = 64;
    input.required = true;
    input.value = k.device || k.comment || '';
    label.append(input);
    const save = button('Save', 'device-rename-save', 'primary');
    save.type = 'submit';
    const cancel = button('Cancel', 'device-rename-cancel', '');
    const close = () => {
      form.remove();
      row.hidden = false;
    };
    cancel.addEventListener('click', close);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const name = input.value.trim();
      if (!name) return;
      save.disabled = true;
      try {
        await this.api.rename(k.fingerprint, name);
        await this.refresh();
      } catch (e) {
        this.note.textContent = `Rename failed: ${e.message}`;
        save.disabled = false;
      }
    });
    form.append(label, el('div', 'actions'));
    form.lastChild.append(save, cancel);
    li.append(form);
    input.focus();
  }

  revokeConfirm(k, li, row, mine) {
    row.hidden = true;
    const box = el('div', 'revoke-confirm');
    box.setAttribute('role', 'alertdialog');
    const text = el(
      'p',
      'small',
      mine
        ? `Revoke “${keyName(k)}”? This is this browser: it will be signed out and must be paired again.`
        : `Revoke “${keyName(k)}”? Its connections close now and it must be paired again.`,
    );
    const yes = button('Yes, revoke', 'device-revoke-confirm', 'danger');
    const no = button('Cancel', 'device-revoke-cancel', '');
    const actions = el('div', 'actions');
    actions.append(yes, no);
    box.append(text, actions);
    no.addEventListener('click', () => {
      box.remove();
      row.hidden = false;
    });
    yes.addEventListener('click', async () => {
      yes.disabled = true;
      no.disabled = true;
      try {
        await this.api.revoke(k.fingerprint);
        await this.refresh();
      } catch (e) {
        this.note.textContent = `Revoke failed: ${e.message}`;
        box.remove();
        row.hidden = false;
      }
    });
    li.append(box);
    yes.focus();
  }
}
