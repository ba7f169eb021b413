// A PostgreSQL database for end-to-end tests: TIDESYNC_E2E_DATABASE_URL (or
// TIDESYNC_TEST_DATABASE_URL) when set, as scripts/test.sh does, otherwise
// a private server started by scripts/postgres.sh (the same one the server
// tests use; port TIDESYNC_PG_PORT) and stopped afterwards. Returns null when PostgreSQL cannot be had and
// TIDESYNC_TEST_REQUIRE_POSTGRES is not 1 (the caller skips); throws when
// it is required.
import { execFileSync } from "node:child_process";

export function startPostgres() {
  const given = process.env.TIDESYNC_E2E_DATABASE_URL || process.env.TIDESYNC_TEST_DATABASE_URL;
  if (given) return { url: given, stop: () => {} };
  try {
    const exports = execFileSync("bash", ["scripts/postgres.sh", "start"], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    const url = /TIDESYNC_TEST_DATABASE_URL='([^']+)'/.exec(exports)?.[1];
    if (!url) throw new Error(`scripts/postgres.sh printed no URL:\n${exports}`);
    return {
      url,
      stop: () => { try { execFileSync("bash", ["scripts/postgres.sh", "stop"], { stdio: "ignore" }); } catch { /* already stopped */ } },
    };
  } catch (error) {
    if (process.env.TIDESYNC_TEST_REQUIRE_POSTGRES === "1") throw error;
    console.error(`PostgreSQL unavailable, its tests are skipped: ${error.message.split("\n")[0]}`);
    return null;
  }
}
