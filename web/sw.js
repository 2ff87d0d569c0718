// sw.js — the service worker: keeps the page's shell and this build's assets so the
// page opens (and shows its connection state) without a network. Build __VERSION__.
// Never touches /v1/ (the WebSocket and API are not cached) or other origins.

const VERSION = '__VERSION__';
const CACHE = `ccrelay-${VERSION}`;
const SHELL = [
  '/',
  '/manifest.webmanifest',
  '/icons/icon.svg',
  '/icons/icon-192.png',
  `/v/${VERSION}/app.css`,
  `/v/${VERSION}/js/app.js`,
  `/v/${VERSION}/js/connection.js`,
  `/v/${VERSION}/js/keys.js`,
  `/v/${VERSION}/js/protocol.js`,
  `/v/${VERSION}/js/session.js`,
  `/v/${VERSION}/js/sshsig.js`,
  `/v/${VERSION}/js/views/devices.js`,
  `/v/${VERSION}/js/views/diff.js`,
  `/v/${VERSION}/js/views/markdown.js`,
  `/v/${VERSION}/js/views/stream.js`,
];

self.addEventListener('install', (e) => {
  e.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (e) => {
  e.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith('ccrelay-') && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener('fetch', (e) => {
  const url = new URL(e.request.url);
  if (e.request.method !== 'GET' || url.origin !== self.location.origin || url.pathname.startsWith('/v1/')) return;
  if (e.request.mode === 'navigate') {
    // Network first: the shell is no-cache, so a new build shows at once when online.
    e.respondWith(fetch(e.request).catch(() => caches.match('/')));
    return;
  }
  if (url.pathname.startsWith(`/v/${VERSION}/`) || url.pathname.startsWith('/icons/')) {
    e.respondWith(caches.match(e.request).then((hit) => hit || fetch(e.request)));
  }
});
