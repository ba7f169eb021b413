// A small reverse proxy on 127.0.0.1 in front of several server processes,
// like a load balancer: each request goes to the first upstream that
// accepts the connection, in order of preference; when an upstream dies,
// the responses it was streaming end and the next requests go to the next
// one. Streams (Server-Sent Events) are passed through unbuffered.
import { createServer, request } from "node:http";

export async function startProxy(upstreams) {
  const sockets = new Set();
  const forward = (req, res, body, index) => {
    if (index >= upstreams.length) {
      res.writeHead(502, { "content-type": "application/json" }).end('{"success":false,"error":{"code":"bad-gateway","message":"no upstream"}}');
      return;
    }
    const target = new URL(req.url, upstreams[index]);
    const upstream = request(target, { method: req.method, headers: { ...req.headers, host: target.host } }, (answer) => {
      res.writeHead(answer.statusCode, answer.headers);
      res.flushHeaders();
      answer.pipe(res);
      answer.on("error", () => res.destroy());
      answer.on("close", () => { if (!answer.complete) res.destroy(); });
    });
    let answered = false;
    upstream.on("response", () => { answered = true; });
    upstream.on("error", (error) => {
      if (!answered && !res.headersSent && ["ECONNREFUSED", "ECONNRESET"].includes(error.code)) {
        forward(req, res, body, index + 1);
      } else {
        res.destroy();
      }
    });
    res.on("close", () => upstream.destroy());
    upstream.end(body);
  };
  const server = createServer(async (req, res) => {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    forward(req, res, Buffer.concat(chunks), 0);
  });
  server.on("connection", (socket) => { sockets.add(socket); socket.on("close", () => sockets.delete(socket)); });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    close: () => new Promise((ok) => { for (const s of sockets) s.destroy(); server.close(ok); }),
  };
}
