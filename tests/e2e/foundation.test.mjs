// The built package loads in a real Chromium page, and the demo that
// `npm start` serves (the reference server with www/ and pkg/) is an
// offline-first notes app: it works with the network off, syncs when it
// returns, and shows each note's sync state.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { startTestServer } from "./support/server.mjs";
import { startTidesyncServer } from "./support/tidesync-server.mjs";
import { launchBrowser, waitInPage } from "./support/browser.mjs";

const cargoVersion = /\[workspace\.package\][^[]*?version\s*=\s*"([^"]+)"/s.exec(readFileSync("Cargo.toml", "utf8"))[1];
let pages, server, browser;

before(async () => {
  pages = await startTestServer();
  server = await startTidesyncServer({ strategy: "merge" });
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.close();
  await pages?.close();
});

test("the package's version() is callable from a page", async () => {
  const page = await browser.newPage();
  await page.goto(`${pages.url}/pages/harness.html`);
  await page.waitForFunction(() => window.harnessReady === true);
  assert.equal(await page.evaluate(() => window.tidesync.version()), cargoVersion);
  await page.close();
});

test("the server serves pkg/ with the wasm content type", async () => {
  const response = await fetch(`${server.url}/pkg/tidesync_bg.wasm`);
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("content-type"), "application/wasm");
});

test("the demo works offline, syncs when the network returns, and shows each note's state", async () => {
  const token = server.token("demo-e2e");
  const contextA = await browser.newContext({ viewport: { width: 900, height: 700 } });
  const contextB = await browser.newContext();
  const errors = [];
  const page = await contextA.newPage();
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(`${server.url}/?token=${token}`);
  await page.waitForFunction((v) => document.getElementById("version").textContent === v, cargoVersion);

  await contextA.setOffline(true);
  for (const title of ["Buy oat milk", "Write the replication docs", "Call the plumber"]) {
    await page.fill("#title", title);
    await page.click("button[type=submit]");
  }
  await waitInPage(page, () => document.querySelectorAll("#notes .pill.pending").length === 3);
  await page.locator("#notes li input[type=checkbox]").first().check();

  await contextA.setOffline(false);
  await page.click("#sync");
  await waitInPage(page, () => document.querySelectorAll("#notes .pill.synced").length === 3);
  assert.deepEqual(errors, []);
  mkdirSync("docs/img", { recursive: true });
  await page.screenshot({ path: "docs/img/demo.png" });

  const other = await contextB.newPage();
  await other.goto(`${server.url}/?token=${token}`);
  await waitInPage(other, () => document.querySelectorAll("#notes .pill.synced").length === 3);
  const titles = await other.$$eval("#notes .title", (els) => els.map((e) => e.textContent).sort());
  assert.deepEqual(titles, ["Buy oat milk", "Call the plumber", "Write the replication docs"]);
  assert.equal(await other.locator("#notes li.done").count(), 1, "the offline check mark reached the other device");
  await contextA.close();
  await contextB.close();
});
