// sshsig.js — OpenSSH SSHSIG signatures (PROTOCOL.SSHSIG) for Ed25519 keys held by
// WebCrypto. Pure: no DOM, no storage, no network; given a CryptoKeyPair it builds
// the same armored text that `ssh-keygen -Y sign -n NAMESPACE` prints, plus the
// OpenSSH public key line, the SHA256 fingerprint and the pairing code (docs/protocol.md §3.9).
// Works in browsers and in Node (globalThis.crypto.subtle).

const MAGIC = new TextEncoder().encode('SSHSIG');
const KEY_TYPE = 'ssh-ed25519';
const HASH_ALG = 'sha512';

const enc = new TextEncoder();

function u32(n) {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n >>> 0, false);
  return b;
}

function concat(...parts) {
  const len = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(len);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** SSH wire `string`: uint32 length + bytes. */
export function sshString(bytes) {
  const b = typeof bytes === 'string' ? enc.encode(bytes) : bytes;
  return concat(u32(b.length), b);
}

export function toBase64(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

export function fromBase64(text) {
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/** The public key blob of an Ed25519 key: string("ssh-ed25519") string(32 bytes). */
export function publicKeyBlob(raw32) {
  if (raw32.length !== 32) throw new Error('an Ed25519 public key is 32 bytes');
  return concat(sshString(KEY_TYPE), sshString(raw32));
}

/** `ssh-ed25519 AAAA... comment` */
export function publicKeyLine(raw32, comment) {
  const line = `${KEY_TYPE} ${toBase64(publicKeyBlob(raw32))}`;
  return comment ? `${line} ${comment}` : line;
}

/** `SHA256:` + unpadded base64 of SHA-256 over the key blob, as ssh-keygen -l prints it. */
export async function fingerprint(raw32) {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', publicKeyBlob(raw32)));
  return `SHA256:${toBase64(digest).replace(/=+$/, '')}`;
}

/** The bytes the Ed25519 key signs (PROTOCOL.SSHSIG "signed data"). */
export async function signedData(namespace, message) {
  const msg = typeof message === 'string' ? enc.encode(message) : message;
  const hash = new Uint8Array(await crypto.subtle.digest('SHA-512', msg));
  return concat(MAGIC, sshString(namespace), sshString(''), sshString(HASH_ALG), sshString(hash));
}

/** The binary SSHSIG blob around a raw 64-byte Ed25519 signature. */
export function signatureBlob(raw32, namespace, sig64) {
  const sig = concat(sshString(KEY_TYPE), sshString(sig64));
  return concat(
    MAGIC,
    u32(1),
    sshString(publicKeyBlob(raw32)),
    sshString(namespace),
    sshString(''),
    sshString(HASH_ALG),
    sshString(sig),
  );
}

/** ASCII armor as ssh-keygen writes it (base64 wrapped at 70 columns, no trailing newline). */
export function armor(blob) {
  const b64 = toBase64(blob);
  const lines = [];
  for (let i = 0; i < b64.length; i += 70) lines.push(b64.slice(i, i + 70));
  return `-----BEGIN SSH SIGNATURE-----\n${lines.join('\n')}\n-----END SSH SIGNATURE-----`;
}

/**
 * Sign `message` (string or bytes) with an Ed25519 CryptoKey pair.
 * `raw32` is the raw public key (from `crypto.subtle.exportKey('raw', publicKey)`).
 */
export async function sign(privateKey, raw32, namespace, message) {
  const data = await signedData(namespace, message);
  const sig = new Uint8Array(await crypto.subtle.sign({ name: 'Ed25519' }, privateKey, data));
  return armor(signatureBlob(raw32, namespace, sig));
}

/**
 * The six-digit pairing code (docs/protocol.md §3.9): the first 4 bytes of
 * SHA-256(`ccrelay-pair-v1:<nonce>:<fingerprint>`), big-endian, mod 1,000,000, zero-padded.
 */
export async function pairCode(nonce, fp) {
  const d = new Uint8Array(await crypto.subtle.digest('SHA-256', enc.encode(`ccrelay-pair-v1:${nonce}:${fp}`)));
  const n = new DataView(d.buffer).getUint32(0, false);
  return String(n % 1000000).padStart(6, '0');
}
