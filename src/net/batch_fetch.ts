/**
 * Fetching a missing batch of client commands from the peers' `GET /batches/{digest}` (NodeTree
 * HTTP API, SPECIFICATION.md 13.2 step 2): the proposer of the Node that names it first (it should
 * hold it), then every other peer in turn, each within `peerTimeoutMs`, so a peer that withholds
 * its answer costs only that; an answer is read up to `bytesMax` and kept only if its SHA-256 is
 * the digest.
 *
 * @module
 */
import { sha256Bytes } from "../crypto.ts";
import type { PublicKey } from "../types.ts";
import { bytesEqual, toHex } from "../types.ts";
import { readBodyLimited } from "./http.ts";

/** A peer's key and HTTP API. */
export interface BatchPeer {
  /** Its validator key. */
  readonly publicKey: PublicKey;
  /** Base URL of its HTTP API. */
  readonly url: string;
}

/** Options of {@link fetchBatchFromPeers}. */
export interface BatchFetchOptions {
  /** Stops every request (the caller's deadline). */
  readonly signal: AbortSignal;
  /** The proposer of the Node that names the batch, asked first; null: peers in order. */
  readonly from: PublicKey | null;
  /** Longest wait for one peer, ms. */
  readonly peerTimeoutMs: number;
  /** Largest answer read, bytes. */
  readonly bytesMax: number;
  /** Headers for a request (e.g. this validator's signature, for priority). */
  readonly headers?: (url: URL) => Promise<Record<string, string>>;
  /** Told about every peer that failed, and why. */
  readonly onFailure?: (peer: string, reason: string) => void;
}

/**
 * The batch with this digest from the first peer that has it, or null.
 *
 * @example
 * ```ts
 * import { fetchBatchFromPeers } from "./batch_fetch.ts";
 * const bytes = await fetchBatchFromPeers([], new Uint8Array(32), {
 *   signal: AbortSignal.timeout(1000),
 *   from: null,
 *   peerTimeoutMs: 500,
 *   bytesMax: 64_000,
 * });
 * console.log(bytes); // null: no peers
 * ```
 */
export async function fetchBatchFromPeers(
  peers: readonly BatchPeer[],
  digest: Uint8Array,
  o: BatchFetchOptions,
): Promise<Uint8Array | null> {
  const hex = toHex(digest);
  const first = o.from === null ? -1 : peers.findIndex((p) => bytesEqual(p.publicKey, o.from!));
  const order = first < 0 ? peers : [peers[first]!, ...peers.filter((_, i) => i !== first)];
  for (const { url } of order) {
    if (o.signal.aborted) return null;
    try {
      const target = new URL(`${url}/batches/${hex}`);
      const response = await fetch(target, {
        signal: AbortSignal.any([o.signal, AbortSignal.timeout(o.peerTimeoutMs)]),
        headers: (await o.headers?.(target)) ?? {},
      });
      if (!response.ok) {
        await response.body?.cancel();
        o.onFailure?.(url, `status-${response.status}`);
        continue;
      }
      const body = await readBodyLimited(response, o.bytesMax);
      if (bytesEqual(sha256Bytes(body), digest)) return body;
      o.onFailure?.(url, "wrong-digest");
    } catch (e) {
      if (o.signal.aborted) return null;
      o.onFailure?.(url, e instanceof Error ? e.name : String(e));
    }
  }
  return null;
}
