// A forwarding HTTP proxy on 127.0.0.1 in front of the reference server
// that can hold answers: the request reaches the server (which applies it)
// and its answer is delivered only later — a late answer, the situation in
// which replication must neither lose nor reorder edits.
import http from "node:http";

export async function startLateProxy(targetUrl) {
  const target = new URL(targetUrl);
  let hold = null; // { suffix, ms, count }
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const upstream = http.request(
        { host: target.hostname, port: target.port, path: req.url, method: req.method, headers: { ...req.headers, host: target.host } },
        (answer) => {
          const body = [];
          answer.on("data", (c) => body.push(c));
          answer.on("end", () => {
            const late = hold && req.method === "POST" && req.url.endsWith(hold.suffix) && hold.count > 0;
            if (late) hold.count -= 1;
            const deliver = () => {
              res.writeHead(answer.statusCode, answer.headers);
              res.end(Buffer.concat(body));
            };
            if (late) setTimeout(deliver, hold.ms); else deliver();
          });
        },
      );
      upstream.on("error", () => { res.destroy(); });
      upstream.end(Buffer.concat(chunks));
    });
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    /** The next `count` POSTs to a path ending with `suffix` are answered `ms` late. */
    delayAnswers(suffix, ms, count = 1) { hold = { suffix, ms, count }; },
    close: () => new Promise((ok) => { server.closeAllConnections?.(); server.close(ok); }),
  };
}
