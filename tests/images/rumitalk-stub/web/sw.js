// The web app's service worker: it precaches the app's files at install
// and answers them from the cache. Navigations go to the network first
// (so the proxy in front judges each one) and fall back to the cached
// index.html only when the network fails. /api and /oauth are never
// touched, as in RumiTalk's (navigateFallbackDenylist).
const CACHE = 'rumitalk-precache-v1';
const PRECACHE = [
  '/index.html',
  '/assets/index.js',
  '/assets/index.css',
  '/manifest.webmanifest',
  '/assets/favicon-16x16.png',
  '/assets/favicon-32x32.png',
  '/assets/icon-192x192.png',
  '/assets/apple-touch-icon-180x180.png',
  '/assets/maskable-icon.png',
];

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(PRECACHE)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  event.waitUntil(self.clients.claim());
});

self.addEventListener('fetch', (event) => {
  const url = new URL(event.request.url);
  if (url.origin !== self.location.origin || /^\/(api|oauth)(\/|$)/.test(url.pathname)) {
    return;
  }
  if (event.request.mode === 'navigate') {
    event.respondWith(fetch(event.request).catch(() => caches.match('/index.html')));
    return;
  }
  event.respondWith(caches.match(event.request).then((hit) => hit || fetch(event.request)));
});
