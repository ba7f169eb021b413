import { useCallback, useRef, useSyncExternalStore } from "react";
import type { RecordsSnapshot, SubscribeOptions, SyncClient } from "tidesync";

const EVERYTHING: SubscribeOptions = {};

/** The records of `entityType` matching `query`, kept current; undefined until the first result.
 *  Keep `query` stable (a constant, or useMemo): a new object on every render resubscribes. */
export function useRecords(client: SyncClient, entityType: string, query: SubscribeOptions = EVERYTHING): RecordsSnapshot | undefined {
  const latest = useRef<RecordsSnapshot | undefined>(undefined);
  const subscribe = useCallback(
    (notify: () => void) => client.subscribe(entityType, query, (records) => { latest.current = records; notify(); }),
    [client, entityType, query],
  );
  return useSyncExternalStore(subscribe, () => latest.current);
}
