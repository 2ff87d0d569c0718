// dom.js — the small DOM helpers the views share: an element with a class and text,
// an inline SVG icon, and a row of answer buttons that are disabled together while one answer is in
// flight (so a double tap never sends two answers). Must not: know about sessions
// or sockets.

/** `<tag class=cls>text</tag>` (class and text optional). */
export function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

/** An inline SVG icon of one path (drawn with DOM calls: the page's CSP allows no image URLs). */
export function svgIcon(d) {
  const NS = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('width', '20');
  svg.setAttribute('height', '20');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('class', 'icon');
  const path = document.createElementNS(NS, 'path');
  path.setAttribute('d', d);
  svg.append(path);
  return svg;
}

/**
 * A `div.actions` row and `add(label, testid, cls, fn)`, which appends a button:
 * a click disables every button of the row until `fn`'s promise settles.
 */
export function actionRow() {
  const row = el('div', 'actions');
  const add = (label, testid, cls, fn) => {
    const b = el('button', cls, label);
    b.type = 'button';
    if (testid) b.setAttribute('data-testid', testid);
    b.addEventListener('click', () => {
      for (const x of row.querySelectorAll('button')) x.disabled = true;
      Promise.resolve(fn()).finally(() => {
        for (const x of row.querySelectorAll('button')) x.disabled = false;
      });
    });
    row.append(b);
    return b;
  };
  return { row, add };
}
