// attach.js — images and files for the next prompt (docs/protocol.md §10). An image
// (the `attach-image` picker, or pasted into the prompt box) is decoded with
// createImageBitmap, drawn on a canvas with its long edge at most 1568 px, and encoded
// as JPEG (PNG when it has transparency; WebP instead when the browser makes WebP and
// it is smaller), re-encoded smaller while it does not fit what `auth.ok`'s `limits`
// leave for the prompt. Each shows as a removable `attachment-chip` (a canvas
// thumbnail: the page's CSP allows no blob: or data: images) until the prompt is sent
// with them as image content blocks. Any other file is sent with `file.upload` and
// mentioned in the prompt box as `@<path>`. Must not: know about sockets (uploads go
// through the callback).

import { el, svgIcon } from './dom.js';
import { base64Length, fitSize, imageBudget, pickEncoding, uploadName, withMention } from '../controls.js';

const THUMB_PX = 44;
/** Icon outlines (24×24 SVG paths): a picture, a paper clip. */
const ICON_IMAGE = 'M4 5h16v14H4z M4 16l5-5 4 4 3-3 4 4 M15.5 9.5a1.5 1.5 0 1 0 0.01 0';
const ICON_FILE = 'M16 6.5l-7.5 7.5a2 2 0 0 0 3 3L19 9.5a4 4 0 0 0-6-6L5.5 11a6 6 0 0 0 9 8.5L20 14';

/** Encodings tried in turn while an image does not fit: quality, then scale of the long edge. */
const STEPS = [{ q: 0.85, k: 1 }, { q: 0.7, k: 1 }, { q: 0.7, k: 0.75 }, { q: 0.6, k: 0.5 }, { q: 0.5, k: 0.35 }];

function toBlob(canvas, type, quality) {
  return new Promise((resolve) => canvas.toBlob((b) => resolve(b), type, quality));
}

function blobBase64(blob) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(String(r.result).slice(String(r.result).indexOf(',') + 1));
    r.onerror = () => reject(r.error);
    r.readAsDataURL(blob);
  });
}

/** Whether any pixel of the canvas is not fully opaque. */
function hasTransparency(ctx, width, height) {
  const data = ctx.getImageData(0, 0, width, height).data;
  for (let i = 3; i < data.length; i += 4) if (data[i] < 255) return true;
  return false;
}

/**
 * `file` downscaled and encoded: `{type, data (base64), width, height, thumb (canvas)}`,
 * the first encoding whose base64 fits in `budget` characters; null when none does.
 */
export async function encodeImage(file, budget) {
  const bitmap = await createImageBitmap(file);
  try {
    let transparent = null;
    for (const step of STEPS) {
      const { width, height } = fitSize(bitmap.width * step.k, bitmap.height * step.k);
      const canvas = document.createElement('canvas');
      canvas.width = width;
      canvas.height = height;
      const ctx = canvas.getContext('2d');
      ctx.drawImage(bitmap, 0, 0, width, height);
      if (transparent === null) transparent = /png|webp|gif|avif|svg/.test(file.type) && hasTransparency(ctx, width, height);
      const made = [];
      const base = await toBlob(canvas, transparent ? 'image/png' : 'image/jpeg', step.q);
      if (base) made.push({ type: base.type, bytes: base.size, blob: base });
      const webp = await toBlob(canvas, 'image/webp', step.q);
      // A browser without a WebP encoder hands back PNG: not a candidate then.
      if (webp && webp.type === 'image/webp') made.push({ type: 'image/webp', bytes: webp.size, blob: webp });
      const best = pickEncoding(made, transparent);
      if (best && base64Length(best.bytes) <= budget) {
        return { type: best.type, data: await blobBase64(best.blob), width, height, thumb: thumbnail(bitmap) };
      }
      // A lossless PNG that is too big is tried again as lossy WebP only, via the next steps.
    }
    return null;
  } finally {
    bitmap.close();
  }
}

function thumbnail(bitmap) {
  const c = document.createElement('canvas');
  const k = THUMB_PX / Math.max(bitmap.width, bitmap.height);
  c.width = Math.max(1, Math.round(bitmap.width * k));
  c.height = Math.max(1, Math.round(bitmap.height * k));
  c.getContext('2d').drawImage(bitmap, 0, 0, c.width, c.height);
  c.className = 'thumb';
  c.setAttribute('aria-hidden', 'true');
  return c;
}

export class Attachments {
  /**
   * @param {object} o
   * @param {HTMLElement} o.bar  where the pickers go
   * @param {HTMLElement} o.chips  where the chips go
   * @param {HTMLTextAreaElement} o.input  the prompt box (paste target, `@path` mentions)
   * @param {() => object} o.limits  `auth.ok`'s limits (controls.js limitsFrom)
   * @param {(name: string, data: string) => Promise<{path: string}>} o.upload
   * @param {(text: string) => void} o.toast
   * @param {() => void} o.changed  the box's text or the chips changed
   */
  constructor({ bar, chips, input, limits, upload, toast, changed }) {
    this.chips = chips;
    this.input = input;
    this.limits = limits;
    this.upload = upload;
    this.toast = toast;
    this.changed = changed;
    this.images = []; // {id, type, data, width, height, name}
    this.nextId = 1;
    this.working = 0;

    this.imageInput = this.picker(bar, 'attach-image', 'image/*', 'Attach images', ICON_IMAGE);
    this.fileInput = this.picker(bar, 'attach-file', '', 'Attach a file (uploaded to the session’s directory)', ICON_FILE);
    this.imageInput.addEventListener('change', () => {
      const files = [...this.imageInput.files];
      this.imageInput.value = '';
      this.addFiles(files);
    });
    this.fileInput.addEventListener('change', () => {
      const files = [...this.fileInput.files];
      this.fileInput.value = '';
      this.addFiles(files);
    });
    input.addEventListener('paste', (e) => {
      const files = [...(e.clipboardData ? e.clipboardData.files : [])];
      if (files.length === 0) return;
      e.preventDefault();
      this.addFiles(files);
    });
  }

  /** A file input behind a label styled as an icon button. */
  picker(bar, testid, accept, title, icon) {
    const label = el('label', 'icon-btn attach-btn');
    label.title = title;
    const input = el('input', 'sr-only');
    input.type = 'file';
    if (accept) input.accept = accept;
    input.multiple = true;
    input.setAttribute('data-testid', testid);
    input.setAttribute('aria-label', title);
    label.append(svgIcon(icon), input);
    bar.append(label);
    return input;
  }

  /** Images become chips, other files are uploaded; one at a time, in order. */
  async addFiles(files) {
    for (const f of files) {
      if (f.type.startsWith('image/') && f.type !== 'image/svg+xml') await this.addImage(f);
      else await this.addUpload(f);
    }
  }

  async addImage(file) {
    this.working += 1;
    this.render();
    try {
      const budget = imageBudget(this.limits(), this.input.value, this.images);
      if (budget <= 0) {
        this.toast('No room for another image in this prompt: send it first.');
        return;
      }
      const im = await encodeImage(file, budget);
      if (!im) {
        this.toast(`“${file.name || 'The image'}” is too large for this prompt, even made smaller.`);
        return;
      }
      this.images.push({ ...im, id: this.nextId++, name: file.name || 'pasted image' });
    } catch (e) {
      this.toast(`Could not read “${file.name || 'the image'}”: ${e.message || e}`);
    } finally {
      this.working -= 1;
      this.render();
      this.changed();
    }
  }

  async addUpload(file) {
    const max = this.limits().max_upload_bytes;
    if (file.size > max) {
      this.toast(`“${file.name}” is larger than the server accepts (${Math.round(max / 1024)} KiB).`);
      return;
    }
    this.working += 1;
    this.render();
    try {
      const data = await blobBase64(file);
      const reply = await this.upload(uploadName(file.name), data);
      if (!reply || typeof reply.path !== 'string') throw new Error('the server sent no path');
      this.input.value = withMention(this.input.value, reply.path);
      this.input.dispatchEvent(new Event('input'));
    } catch (e) {
      this.toast(`Upload of “${file.name}” failed: ${e.message || e}`);
    } finally {
      this.working -= 1;
      this.render();
      this.changed();
    }
  }

  /** The images to send, and the chips cleared (the prompt took them). */
  take() {
    const images = this.images;
    this.images = [];
    this.render();
    return images;
  }

  get busy() {
    return this.working > 0;
  }

  render() {
    const chips = this.images.map((im) => {
      const chip = el('span', 'chip attachment');
      chip.setAttribute('data-testid', 'attachment-chip');
      chip.dataset.width = String(im.width);
      chip.dataset.height = String(im.height);
      chip.dataset.type = im.type;
      chip.append(im.thumb, el('span', 'chip-name', `${im.width}×${im.height}`));
      const x = el('button', 'chip-remove', '✕');
      x.type = 'button';
      x.title = `Remove ${im.name}`;
      x.setAttribute('aria-label', `Remove ${im.name}`);
      x.setAttribute('data-testid', 'attachment-remove');
      x.addEventListener('click', () => {
        this.images = this.images.filter((y) => y !== im);
        this.render();
        this.changed();
      });
      chip.append(x);
      return chip;
    });
    if (this.working > 0) chips.push(el('span', 'chip muted', 'Preparing…'));
    this.chips.replaceChildren(...chips);
    this.chips.hidden = chips.length === 0;
  }
}
