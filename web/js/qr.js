// qr.js — a QR code of a text as an inline SVG (built with createElementNS: no
// markup, no data: URL, which the page's CSP would refuse), from the vendored
// encoder (vendor/qrcode.js). Used for pairing invites.

import qrcode from './vendor/qrcode.js';

const SVG = 'http://www.w3.org/2000/svg';
const QUIET = 4; // modules of white border the standard asks for

/** The dark modules of `text` (UTF-8, byte mode, error correction M): rows of booleans. */
export function qrMatrix(text) {
  const qr = qrcode(0, 'M');
  qr.addData(String.fromCharCode(...new TextEncoder().encode(text)), 'Byte');
  qr.make();
  const n = qr.getModuleCount();
  const rows = [];
  for (let y = 0; y < n; y++) {
    const row = [];
    for (let x = 0; x < n; x++) row.push(qr.isDark(y, x));
    rows.push(row);
  }
  return rows;
}

/** An SVG path (one `h1v1h-1z` square per dark module, offset by the quiet zone). */
export function qrPath(rows) {
  let d = '';
  rows.forEach((row, y) => {
    row.forEach((dark, x) => {
      if (dark) d += `M${x + QUIET} ${y + QUIET}h1v1h-1z`;
    });
  });
  return d;
}

/** An <svg> QR code of `text`, labelled for screen readers. */
export function qrSvg(text, label) {
  const rows = qrMatrix(text);
  const size = rows.length + 2 * QUIET;
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', `0 0 ${size} ${size}`);
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', label);
  svg.setAttribute('shape-rendering', 'crispEdges');
  svg.classList.add('qr');
  const bg = document.createElementNS(SVG, 'rect');
  bg.setAttribute('width', String(size));
  bg.setAttribute('height', String(size));
  bg.setAttribute('fill', '#fff');
  const path = document.createElementNS(SVG, 'path');
  path.setAttribute('d', qrPath(rows));
  path.setAttribute('fill', '#000');
  svg.append(bg, path);
  return svg;
}
