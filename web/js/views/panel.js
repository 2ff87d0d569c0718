// panel.js — the side panel (devices, pairing, notifications). On a phone it is a
// full-height sheet from the left with a close button, closed by Escape and by a tap
// on the backdrop in the strip it leaves, where the toggle stays reachable; from
// 768 px on it is a column beside the stream, open unless the reader closed it.
// Must not: know what the panel holds.

export class Panel {
  constructor({ panel, toggle, close, backdrop }) {
    this.panel = panel;
    this.toggleBtn = toggle;
    this.backdrop = backdrop;
    this.wide = window.matchMedia('(min-width: 768px)');
    this.closedByReader = localStorage.getItem('ccrelay.panel') === 'closed';
    toggle.addEventListener('click', () => (this.isOpen() ? this.close(true) : this.open(true)));
    close.addEventListener('click', () => this.close(true));
    backdrop.addEventListener('click', () => this.close(true));
    document.addEventListener('keydown', (e) => {
      if (e.key === 'Escape' && this.isOpen() && !this.wide.matches) this.close(true);
    });
    const layout = () => {
      if (this.wide.matches && !this.closedByReader) this.set(true);
      else if (!this.wide.matches) this.set(false);
    };
    if (this.wide.addEventListener) this.wide.addEventListener('change', layout);
    layout();
  }

  isOpen() {
    return this.panel.dataset.open === 'true';
  }

  open(byReader = false) {
    if (byReader && this.wide.matches) this.remember(false);
    this.set(true);
    if (!this.wide.matches) this.panel.querySelector('[data-testid="panel-close"]')?.focus();
  }

  close(byReader = false) {
    if (byReader && this.wide.matches) this.remember(true);
    const had = this.isOpen();
    this.set(false);
    if (had && byReader && !this.wide.matches) this.toggleBtn.focus();
  }

  remember(closed) {
    this.closedByReader = closed;
    localStorage.setItem('ccrelay.panel', closed ? 'closed' : 'open');
  }

  set(open) {
    this.panel.dataset.open = String(open);
    this.toggleBtn.setAttribute('aria-expanded', String(open));
    document.body.classList.toggle('panel-open', open);
    this.backdrop.hidden = !open || this.wide.matches;
  }
}
