// The QR encoder of pairing invites: the vendored qrcode-generator reproduces its
// upstream test vector (a GIF of a known text, byte for byte), and qr.js reads its
// modules into a matrix with the structure every QR code has (finder patterns,
// timing patterns, the dark module) at the size the text needs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import qrcode from '../js/vendor/qrcode.js';
import { qrMatrix, qrPath } from '../js/qr.js';

// From qrcode-generator's own test suite (test/qrcode-test-impl.js, "should generate correct GIF image data").
const UPSTREAM_TEXT = 'http://www.example.com/ążśźęćńół';
const UPSTREAM_GIF = 'R0lGODdhSgBKAIAAAAAAAP///ywAAAAASgBKAAAC/4yPqcvtD6OctNqLs968+w+G4kiWZgKk6roa7ZEiccACco1TeE6r9997uXYsna0xmw0VLyXsyHBCpKijk9qEPh1UrrXYAy4Xu3FtLEmCr9pucP3NGofyN9peBZ7DE3W9Tqd15+fDlxZXiPVlltiGqDb3BpnHRzj4uNgnSHkjZCiZGbXpRVrlyQZINopE9Jc5CdtaeCj7asvIWEvimet4oqkYKDZiCSrMWtobmcW8esfki2exN4XY2cj7aZQtehxIGHwR+41dDg3tdogLCm7N+ZTOOom+irqZGk//DF/vqDiv7cEpTMW4CZxVYSC5gghpOTt46dg4PGxE5aNUkeItje3Drm3zh9DewIytPl7LuBCkHiImpbEjaAvlloTm+DVzJXNftZM89lAz5vLiOZs94YysqZNmtZ8/vQiFeJApmKUPu30qU6mhKola1V0t6g2ZxqcaAK4biraE2axW004LyeNs1loGHfIkGY3uVLV7Ge4rSayvu7WAHQIGGMvn4KqqdLGd2S5xKE2lit2dfIlswJVhU/5VSRmoyEbr9NbdKhqkq156l8GJCFQZ0aRWFcOWGtZ2aN2IN3LlvPv149Kg8UZqi5ElP+JvkyXH+ns4MFnR/+0F/vEw6YDQk//6Dj68+PHky5s/jz69+vULCgAAOw==';

const utf8Bytes = (s) => String.fromCharCode(...new TextEncoder().encode(s));

test('the vendored encoder reproduces its upstream test vector', () => {
  const qr = qrcode(-1, 'M');
  qr.addData(utf8Bytes(UPSTREAM_TEXT));
  qr.make();
  assert.equal(qr.createDataURL(), `data:image/gif;base64,${UPSTREAM_GIF}`);
});

/** A 7×7 finder pattern with its top-left corner at (x, y). */
function assertFinder(m, x, y) {
  for (let dy = 0; dy < 7; dy++) {
    for (let dx = 0; dx < 7; dx++) {
      const ring = Math.max(Math.abs(dx - 3), Math.abs(dy - 3));
      assert.equal(m[y + dy][x + dx], ring !== 2, `finder at ${x},${y}: module ${dx},${dy}`);
    }
  }
}

test('qr.js: an invite URL as a matrix with the structure of a QR code', () => {
  const url = `https://phone.example:7878/#invite=${'A'.repeat(43)}`;
  const m = qrMatrix(url);
  const n = m.length;
  assert.ok(m.every((row) => row.length === n), 'square');
  const version = (n - 17) / 4;
  assert.ok(Number.isInteger(version) && version >= 4 && version <= 6, `version ${version} for ${url.length} bytes at level M`);
  assertFinder(m, 0, 0);
  assertFinder(m, n - 7, 0);
  assertFinder(m, 0, n - 7);
  for (let i = 8; i < n - 8; i++) {
    assert.equal(m[6][i], i % 2 === 0, `horizontal timing ${i}`);
    assert.equal(m[i][6], i % 2 === 0, `vertical timing ${i}`);
  }
  assert.equal(m[n - 8][8], true, 'the dark module');
  // The same matrix as the vendored encoder's own reading of the same bytes.
  const qr = qrcode(0, 'M');
  qr.addData(utf8Bytes(url), 'Byte');
  qr.make();
  assert.equal(qr.getModuleCount(), n);
  for (let y = 0; y < n; y++) for (let x = 0; x < n; x++) assert.equal(m[y][x], qr.isDark(y, x));
  // The SVG path: one square per dark module, shifted by the 4-module quiet zone.
  const dark = m.flat().filter(Boolean).length;
  assert.equal(qrPath(m).split('M').length - 1, dark);
  assert.ok(qrPath(m).startsWith('M4 4h1v1h-1z'), 'the top-left finder corner, inside the quiet zone');
});
