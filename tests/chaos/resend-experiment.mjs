// Why the oracle does not count every second delivery read after a
// completion as the engine's: Chromium itself sends a request again, on a
// new connection, when a reused keep-alive connection closes before any
// answer — a POST included, with the same body and headers (the proxy's
// lost-answer, drop and dark fates close connections that way). The page's
// fetch() resolves once; the server sees the request twice.
//
//   node tests/chaos/resend-experiment.mjs
//   → {"fetches":["first: 200","second: 200"],"serverSaw":["first","second","second"]}
import { createServer } from "node:http";
import { chromium } from "playwright-core";

const seen = [];
let closedOne = false;
const server = createServer((req, res) => {
  let body = "";
  req.on("data", (chunk) => { body += chunk; });
  req.on("end", () => {
    const reused = req.socket.used === true;
    req.socket.used = true;
    if (req.method === "POST") seen.push(body);
    // Close the reused connection carrying "second", once, without answering.
    if (body === "second" && reused && !closedOne) {
      closedOne = true;
      req.socket.destroy();
      return;
    }
    res.writeHead(200, { "content-type": "text/plain" }).end("ok");
  });
});
await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
const url = `http://127.0.0.1:${server.address().port}/`;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", args: ["--headless=new", "--no-sandbox"],
});
try {
  const page = await browser.newPage();
  await page.goto(url);
  const fetches = await page.evaluate(async (target) => {
    const out = [];
    for (const body of ["first", "second"]) {
      try {
        out.push(`${body}: ${(await fetch(target, { method: "POST", body })).status}`);
      } catch (error) {
        out.push(`${body}: ${error.message}`);
      }
    }
    return out;
  }, url);
  console.log(JSON.stringify({ fetches, serverSaw: seen }));
} finally {
  await browser.close();
  server.close();
}
