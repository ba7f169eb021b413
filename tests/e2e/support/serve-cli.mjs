// Runs the e2e test server standalone (for the browser test layer), printing
// its URL on the first line of stdout, until it is killed.
import { startTestServer } from "./server.mjs";
const server = await startTestServer();
console.log(server.url);
process.on("SIGTERM", async () => { await server.close(); process.exit(0); });
