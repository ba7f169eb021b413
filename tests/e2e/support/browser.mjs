// Launches Debian's Chromium through playwright-core (never a downloaded browser).
import { before, after } from "node:test";
import { chromium } from "playwright-core";

export const CHROMIUM_ARGS = [
  "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--no-first-run", "--disable-quic",
];

export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: CHROMIUM_ARGS,
    headless: true,
  });
}

/** Waits until `predicate` (evaluated in the page) is truthy, or fails after `timeout` ms. */
export async function waitInPage(page, predicate, arg, timeout = 20000) {
  await page.waitForFunction(predicate, arg, { timeout, polling: 50 });
}

/**
 * Starts the e2e test server and Chromium before a file's tests and stops
 * them after; returns an object whose `server` and `browser` are set once
 * they are up.
 */
export function useServerAndBrowser(startServer) {
  const env = { server: null, browser: null };
  before(async () => {
    env.server = await startServer();
    env.browser = await launchBrowser();
  });
  after(async () => {
    await env.browser?.close();
    await env.server?.close();
  });
  return env;
}
