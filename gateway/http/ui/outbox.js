// The outbox: messages typed here and not acked yet, kept in the browser's IndexedDB, so that
// neither a dead connection nor a closed tab loses one. The composer owns what they mean
// (sending, marking, retrying); this module only keeps them.
//
// One record per message, keyed by its client id (the frame's `id`, which makes the gateway
// store a message once however often it is sent): {id, user, port, content, created_at,
// failed}. `user` is whom the message was typed as (token mode may switch users in one
// browser profile): a page sends only its signed-in user's records. `failed` is null, or the
// gateway's reason for refusing it.
//
// Without IndexedDB (some private windows refuse it), the outbox lives in the tab's memory
// only, and the page says so once: nothing else changes.

const DB_NAME = "chat-gateway";
const STORE = "outbox";
const VERSION = 1;
const LAST_USER = "chat-gateway-last-user"; // the user the last `welcome` named

let opening = null;
let warned = false;
let onUnavailable = () => {};

/** `warn(text)` tells the person once if the outbox cannot be kept across tabs and reloads. */
export function whenUnavailable(warn) {
  onUnavailable = warn;
}

function database() {
  if (!opening) {
    opening = new Promise((resolve, reject) => {
      if (!window.indexedDB) {
        reject(new Error("this browser has no IndexedDB"));
        return;
      }
      const request = indexedDB.open(DB_NAME, VERSION);
      request.onupgradeneeded = () => {
        const store = request.result.createObjectStore(STORE, { keyPath: "id" });
        store.createIndex("user", "user");
      };
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
  }
  return opening;
}

/** Run `work(store)` in one transaction; resolves with the value of the request it returns,
 * once the transaction has committed. */
async function transaction(mode, work) {
  const db = await database();
  return new Promise((resolve, reject) => {
    const tx = db.transaction(STORE, mode);
    const request = work(tx.objectStore(STORE));
    tx.oncomplete = () => resolve(request.result);
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  });
}

function unavailable(error) {
  if (!warned) {
    warned = true;
    onUnavailable(
      `Unsent messages are kept in this tab only (the browser's storage refused: ${error.message || error}).`,
    );
  }
}

/** Keep (or update) a record; resolves once it is on disk, or at once without IndexedDB. */
export async function keep(record) {
  try {
    await transaction("readwrite", (store) => store.put(record));
  } catch (error) {
    unavailable(error);
  }
}

/** Drop the record of a message (acked, or discarded). */
export async function forget(id) {
  try {
    await transaction("readwrite", (store) => store.delete(id));
  } catch (error) {
    unavailable(error);
  }
}

/** Records in the order they were typed. */
export function oldestFirst(a, b) {
  return a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1 : 0;
}

/** The records typed as `user` (null: before any `welcome`), oldest first. */
export async function kept(user) {
  try {
    const records = await transaction("readonly", (store) =>
      user === null ? store.getAll() : store.index("user").getAll(user),
    );
    return records
      .filter((record) => user !== null || record.user === null)
      .sort(oldestFirst);
  } catch (error) {
    unavailable(error);
    return [];
  }
}

/** The user the last `welcome` named, remembered so that a page opened offline can show
 * that user's unsent messages; null if none yet. */
export function lastUser() {
  try {
    return localStorage.getItem(LAST_USER);
  } catch {
    return null;
  }
}

export function rememberUser(user) {
  try {
    localStorage.setItem(LAST_USER, user);
  } catch {
    // no storage: a page opened offline shows the outbox once a connection says who it is
  }
}
