// A local Web Push service for the browser tests (headless Chromium has no push
// service): fake subscriptions with real P-256 keys and auth secrets made here
// (node:crypto ECDH prime256v1), a loopback HTTP endpoint per subscription that
// accepts the server's pushes, checks the VAPID `Authorization` header (RFC 8292:
// ES256 signature with the key it carries, `aud` = this origin, `exp` within 24 h,
// `sub` present) and decrypts the `aes128gcm` body (RFC 8188 + RFC 8291) with the
// subscription's private key. Records `{topic, urgency, ttl, vapid, payload}`.

import http from 'node:http';
import crypto from 'node:crypto';

export const b64url = (buf) => Buffer.from(buf).toString('base64url');
export const fromB64url = (s) => Buffer.from(String(s), 'base64url');

/** The ECDH secret as a P-256 point: (private key, uncompressed public point) → 32 bytes. */
function ecdh(privateKey, publicPoint) {
  const e = crypto.createECDH('prime256v1');
  e.setPrivateKey(privateKey);
  return e.computeSecret(publicPoint);
}

/**
 * RFC 8291 §3.4 + RFC 8188 §2: decrypt an `aes128gcm` Web Push body.
 * @param {Buffer} body the request body
 * @param {{privateKey: Buffer, publicKey: Buffer, auth: Buffer}} ua the subscription's keys
 * @returns {Buffer} the plaintext
 */
export function decryptAes128gcm(body, ua) {
  if (body.length < 21) throw new Error('body shorter than the aes128gcm header');
  const salt = body.subarray(0, 16);
  const rs = body.readUInt32BE(16);
  const idlen = body[20];
  const asPublic = body.subarray(21, 21 + idlen);
  if (idlen !== 65 || asPublic[0] !== 4) throw new Error(`keyid is not an uncompressed P-256 point (${idlen} bytes)`);
  if (rs < 18) throw new Error(`record size ${rs} too small`);
  const ecdhSecret = ecdh(ua.privateKey, asPublic);
  const keyInfo = Buffer.concat([Buffer.from('WebPush: info\0'), ua.publicKey, asPublic]);
  const ikm = Buffer.from(crypto.hkdfSync('sha256', ecdhSecret, ua.auth, keyInfo, 32));
  const cek = Buffer.from(crypto.hkdfSync('sha256', ikm, salt, Buffer.from('Content-Encoding: aes128gcm\0'), 16));
  const nonce = Buffer.from(crypto.hkdfSync('sha256', ikm, salt, Buffer.from('Content-Encoding: nonce\0'), 12));
  const records = body.subarray(21 + idlen);
  const out = [];
  for (let i = 0, off = 0; off < records.length; i += 1, off += rs) {
    const rec = records.subarray(off, Math.min(off + rs, records.length));
    if (rec.length <= 16) throw new Error('record without ciphertext');
    const iv = Buffer.from(nonce);
    // The record's sequence number XORed into the nonce's low bits (a few records: 32 bits do).
    iv.writeUInt32BE((iv.readUInt32BE(8) ^ i) >>> 0, 8);
    const d = crypto.createDecipheriv('aes-128-gcm', cek, iv);
    d.setAuthTag(rec.subarray(rec.length - 16));
    const plain = Buffer.concat([d.update(rec.subarray(0, rec.length - 16)), d.final()]);
    // Strip the padding: trailing zeros, then the delimiter (2 = last record, 1 = more follow).
    let end = plain.length - 1;
    while (end >= 0 && plain[end] === 0) end -= 1;
    const last = off + rs >= records.length;
    if (end < 0 || plain[end] !== (last ? 2 : 1)) throw new Error(`record ${i}: bad padding delimiter`);
    out.push(plain.subarray(0, end));
  }
  return Buffer.concat(out);
}

/**
 * RFC 8292: `Authorization: vapid t=<JWT>, k=<key>`. Checks the ES256 signature with
 * `k`, `aud` and `exp`; returns `{key, claims}` or throws.
 */
export function checkVapid(header, origin, now = Date.now()) {
  const m = /^vapid\s+(.*)$/i.exec(header || '');
  if (!m) throw new Error(`no vapid Authorization (${header})`);
  const params = Object.fromEntries(m[1].split(',').map((p) => {
    const i = p.indexOf('=');
    return [p.slice(0, i).trim(), p.slice(i + 1).trim()];
  }));
  const [h, c, s] = String(params.t || '').split('.');
  if (!h || !c || !s) throw new Error('malformed JWT');
  const header_ = JSON.parse(fromB64url(h));
  if (header_.alg !== 'ES256') throw new Error(`JWT alg ${header_.alg}`);
  const point = fromB64url(params.k);
  if (point.length !== 65 || point[0] !== 4) throw new Error('k is not an uncompressed P-256 point');
  const key = crypto.createPublicKey({ key: { kty: 'EC', crv: 'P-256', x: b64url(point.subarray(1, 33)), y: b64url(point.subarray(33)) }, format: 'jwk' });
  const ok = crypto.verify('sha256', Buffer.from(`${h}.${c}`), { key, dsaEncoding: 'ieee-p1363' }, fromB64url(s));
  if (!ok) throw new Error('bad JWT signature');
  const claims = JSON.parse(fromB64url(c));
  if (claims.aud !== origin) throw new Error(`aud ${claims.aud} is not ${origin}`);
  const nowS = Math.floor(now / 1000);
  if (!(claims.exp > nowS && claims.exp <= nowS + 24 * 3600 + 60)) throw new Error(`exp ${claims.exp} not within 24 h`);
  if (!claims.sub) throw new Error('no sub claim');
  return { key: params.k, claims };
}

/** A fake device's subscription keys: a real P-256 key pair and a 16-byte auth secret. */
export function subscriptionKeys() {
  const e = crypto.createECDH('prime256v1');
  e.generateKeys();
  return { privateKey: e.getPrivateKey(), publicKey: e.getPublicKey(), auth: crypto.randomBytes(16) };
}

export class MockPush {
  static async start() {
    const m = new MockPush();
    await new Promise((resolve) => m.server.listen(0, '127.0.0.1', resolve));
    m.origin = `http://127.0.0.1:${m.server.address().port}`;
    return m;
  }

  constructor() {
    this.subs = new Map(); // id → keys
    this.received = []; // {id, topic, urgency, ttl, vapid, payload} or {id, error}
    this.waiters = [];
    this.status = 201;
    this.server = http.createServer((req, res) => this.handle(req, res));
  }

  /** A subscription for the page: `{endpoint, keys: {p256dh, auth}}` plus its private part. */
  subscription() {
    const id = crypto.randomBytes(8).toString('hex');
    const keys = subscriptionKeys();
    this.subs.set(id, keys);
    return { id, endpoint: `${this.origin}/push/${id}`, keys: { p256dh: b64url(keys.publicKey), auth: b64url(keys.auth) } };
  }

  handle(req, res) {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size <= 8192) chunks.push(c);
    });
    req.on('end', () => {
      const id = (/^\/push\/([0-9a-f]+)$/.exec(req.url) || [])[1];
      const keys = id && this.subs.get(id);
      if (req.method !== 'POST' || !keys) {
        res.writeHead(404).end();
        return;
      }
      let entry;
      try {
        if (size > 4096 + 86) throw new Error(`body of ${size} bytes is over the 4,096-byte record`);
        if ((req.headers['content-encoding'] || '') !== 'aes128gcm') throw new Error(`content-encoding ${req.headers['content-encoding']}`);
        const vapid = checkVapid(req.headers.authorization, this.origin);
        const payload = JSON.parse(decryptAes128gcm(Buffer.concat(chunks), keys).toString('utf8'));
        entry = { id, topic: req.headers.topic, urgency: req.headers.urgency, ttl: req.headers.ttl, vapid, payload };
      } catch (e) {
        entry = { id, error: String(e.message || e) };
      }
      this.received.push(entry);
      for (const w of [...this.waiters]) {
        if (w.pred(entry)) {
          this.waiters.splice(this.waiters.indexOf(w), 1);
          clearTimeout(w.timer);
          w.resolve(entry);
        }
      }
      res.writeHead(entry.error ? 400 : this.status).end();
    });
  }

  /** Wait for a push matching `pred` (also one already received from index `from`). */
  wait(pred, { timeout = 20000, from = 0 } = {}) {
    const have = this.received.slice(from).find(pred);
    if (have) return Promise.resolve(have);
    return new Promise((resolve, reject) => {
      const w = { pred, resolve };
      w.timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        reject(new Error(`the mock push service got no matching push; got ${JSON.stringify(this.received)}`));
      }, timeout);
      this.waiters.push(w);
    });
  }

  stop() {
    return new Promise((resolve) => {
      this.server.closeAllConnections?.();
      this.server.close(() => resolve());
    });
  }
}
