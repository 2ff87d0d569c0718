// composer.js — the prompt box as people expect it on each device. With a hardware
// keyboard (`(hover: hover) and (pointer: fine)`) Enter sends and Shift+Enter starts
// a new line; on a touch screen the keyboard's key starts a new line and Send sends.
// Ctrl/Cmd+Enter sends everywhere; nothing is sent while an input method composes.
// The box grows with its text up to a maximum (a fallback where CSS `field-sizing`
// is missing, as in Safari), stays above the on-screen keyboard (visualViewport),
// and the page keeps room below the stream for the dock's real height. The draft is
// saved as it is typed (drafts.js). Must not: know about sockets or the model.

const MAX_HEIGHT_VH = 0.4;
const DRAFT_SAVE_MS = 250;

export class Composer {
  /**
   * @param {object} o
   * @param {HTMLFormElement} o.form
   * @param {HTMLTextAreaElement} o.input
   * @param {HTMLElement} o.dock  the fixed container at the bottom (its height is reserved)
   * @param {() => void} o.send  send what the box holds
   * @param {(text: string) => void} o.saveDraft
   */
  constructor({ form, input, dock, send, saveDraft }) {
    this.form = form;
    this.input = input;
    this.dock = dock;
    this.send = send;
    this.saveDraft = saveDraft;
    this.hardware = window.matchMedia('(hover: hover) and (pointer: fine)');
    this.draftTimer = null;
    this.autoGrow = !(window.CSS && CSS.supports && CSS.supports('field-sizing', 'content'));

    input.addEventListener('keydown', (e) => this.keydown(e));
    input.addEventListener('input', () => {
      this.grow();
      clearTimeout(this.draftTimer);
      this.draftTimer = setTimeout(() => this.saveDraft(this.input.value), DRAFT_SAVE_MS);
    });
    const hints = () => this.hints();
    if (this.hardware.addEventListener) this.hardware.addEventListener('change', hints);
    this.hints();
    this.followKeyboard();
    if (window.ResizeObserver) {
      new ResizeObserver(() => this.reserve()).observe(dock);
    }
    this.reserve();
  }

  /** Placeholder and the keyboard's Enter label say what Enter does here. */
  hints() {
    if (this.hardware.matches) {
      this.input.placeholder = 'Ask Claude… (Enter to send)';
      this.input.setAttribute('enterkeyhint', 'send');
    } else {
      this.input.placeholder = 'Ask Claude…';
      this.input.setAttribute('enterkeyhint', 'enter');
    }
  }

  keydown(e) {
    if (e.key !== 'Enter' || e.isComposing || e.keyCode === 229) return;
    if (e.ctrlKey || e.metaKey || (this.hardware.matches && !e.shiftKey && !e.altKey)) {
      e.preventDefault();
      this.send();
    }
  }

  /** Flush the draft now (after a send, so a reload does not bring the sent text back). */
  flushDraft() {
    clearTimeout(this.draftTimer);
    this.saveDraft(this.input.value);
  }

  grow() {
    if (!this.autoGrow) return;
    const max = Math.round(window.innerHeight * MAX_HEIGHT_VH);
    this.input.style.height = 'auto';
    this.input.style.height = `${Math.min(this.input.scrollHeight + 2, max)}px`;
  }

  /** Keep the dock above the on-screen keyboard: the part of the layout viewport it hides. */
  followKeyboard() {
    const vv = window.visualViewport;
    if (!vv) return;
    const place = () => {
      const hidden = Math.max(0, Math.round(window.innerHeight - vv.height - vv.offsetTop));
      document.documentElement.style.setProperty('--kb', `${hidden}px`);
    };
    vv.addEventListener('resize', place);
    vv.addEventListener('scroll', place);
    place();
  }

  /** Room under the stream for the dock as tall as it really is. */
  reserve() {
    const h = this.dock.getBoundingClientRect().height;
    document.documentElement.style.setProperty('--dock-h', `${Math.ceil(h)}px`);
  }
}
