// Shared by the page and its service worker: both open the same client
// (same IndexedDB database `tidesync:sw-example`), so the worker replays what
// the page queued. Keep this module free of window-only APIs.
export const CLIENT_OPTIONS = { name: "sw-example", logLevel: "info" };
export const SYNC_TAG = "tidesync";
