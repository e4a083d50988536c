/**
 * Typed events a replica emits after the fact (`noun:verb`). They are for observers (logs,
 * metrics, tests); the core never uses them as control flow.
 *
 * @module
 */
import type { Hash, ProposeMessage, PublicKey, VoteMessage } from "./types.ts";

/**
 * Two conflicting signed messages by one validator in one view.
 *
 * @example
 * ```ts
 * import type { EquivocationEvidence } from "./events.ts";
 * function offender(e: EquivocationEvidence): Uint8Array {
 *   return e.kind === "double-vote" ? e.first.signer : e.first.node.proposer;
 * }
 * ```
 */
export type EquivocationEvidence =
  | { readonly kind: "double-vote"; readonly first: VoteMessage; readonly second: VoteMessage }
  | {
    readonly kind: "double-proposal";
    readonly first: ProposeMessage;
    readonly second: ProposeMessage;
  };

/**
 * Every event a replica emits.
 *
 * @example
 * ```ts
 * import type { ConsensusEvent } from "./events.ts";
 * function onEvent(e: ConsensusEvent): void {
 *   if (e.type === "node:commit") console.log(`committed height ${e.height}`);
 *   if (e.type === "view:timeout") console.log(`view ${e.view} timed out`);
 * }
 * ```
 */
export type ConsensusEvent =
  | {
    readonly type: "view:enter";
    readonly view: number;
    readonly leader: PublicKey;
    readonly reason: "start" | "qc" | "tc";
  }
  | { readonly type: "view:timeout"; readonly view: number }
  | {
    readonly type: "node:insert";
    readonly hash: Hash;
    readonly height: number;
    readonly view: number;
  }
  | {
    readonly type: "node:commit";
    readonly hash: Hash;
    readonly height: number;
    readonly view: number;
  }
  | { readonly type: "vote:send"; readonly view: number; readonly nodeHash: Hash }
  | { readonly type: "qc:form"; readonly view: number; readonly nodeHash: Hash }
  | { readonly type: "tc:form"; readonly view: number }
  | { readonly type: "lock:update"; readonly view: number; readonly nodeHash: Hash }
  | { readonly type: "equivocation:detect"; readonly evidence: EquivocationEvidence }
  | {
    /** Verified evidence was stored (SPECIFICATION.md 16.2): `offender` equivocated in `view`. */
    readonly type: "evidence:record";
    readonly kind: EquivocationEvidence["kind"];
    readonly offender: PublicKey;
    readonly view: number;
  }
  | {
    readonly type: "message:reject";
    readonly from: PublicKey | null;
    readonly message: string;
    readonly reason: string;
    readonly detail: string;
  }
  | {
    readonly type: "catchup:request";
    readonly from: PublicKey | null;
    readonly fromHeight: number;
  }
  | { readonly type: "catchup:receive"; readonly from: PublicKey; readonly nodes: number };
