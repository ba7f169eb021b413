// The built package loads in a real Chromium page served on 127.0.0.1, and
// the demo shows the SDK's version.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { startTestServer } from "./support/server.mjs";
import { launchBrowser } from "./support/browser.mjs";

const cargoVersion = /\[workspace\.package\][^[]*?version\s*=\s*"([^"]+)"/s.exec(readFileSync("Cargo.toml", "utf8"))[1];
let server, browser;

before(async () => {
  server = await startTestServer();
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.close();
});

test("the package's version() is callable from a page", async () => {
  const page = await browser.newPage();
  await page.goto(`${server.url}/pages/harness.html`);
  await page.waitForFunction(() => window.harnessReady === true);
  assert.equal(await page.evaluate(() => window.tidesync.version()), cargoVersion);
  await page.close();
});

test("the demo page loads the wasm module and shows the version", async () => {
  const page = await browser.newPage({ viewport: { width: 900, height: 760 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(`${server.url}/`);
  await page.waitForFunction((v) => document.getElementById("version").textContent === v, cargoVersion);
  assert.deepEqual(errors, []);
  mkdirSync("docs/img", { recursive: true });
  await page.screenshot({ path: "docs/img/demo.png" });
  await page.close();
});
