// Launches Debian's Chromium through playwright-core (never a downloaded browser).
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
