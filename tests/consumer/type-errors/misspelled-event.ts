// Must NOT type-check: tests/e2e/consumer.test.mjs asserts that tsc fails
// here, on the misspelled event name (the Rust side would reject it too, at
// run time, with a TidesyncError "invalid-event").
import { SyncClient } from "tidesync";

export async function misspelled(): Promise<void> {
  const client = await SyncClient.open({ name: "typo" });
  client.on("sync:complet", () => {});
}
