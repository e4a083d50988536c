/**
 * Typed events a replica emits after the fact (`noun:verb`). They are for observers (logs,
 * metrics, tests); the core never uses them as control flow.
 *
 * @module
 */
import type { Hash, ProposeMessage, PublicKey, VoteMessage } from "./types.ts";

/** Two conflicting signed messages by one validator in one view. */
export type EquivocationEvidence =
  | { readonly kind: "double-vote"; readonly first: VoteMessage; readonly second: VoteMessage }
  | {
    readonly kind: "double-proposal";
    readonly first: ProposeMessage;
    readonly second: ProposeMessage;
  };

/** Every event a replica emits. */
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
    /** Verified evidence was stored (SPECIFICATION.md 15.2): `offender` equivocated in `view`. */
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
