/**
 * Canonical CBOR encoding (cborg) of everything that is signed, hashed or sent, and a strict
 * decoder that checks every field. See SPECIFICATION.md section 2.
 *
 * Every value is a CBOR array (a tuple), which keeps frames small and the decoder simple:
 *
 * | value | encoding |
 * |---|---|
 * | QC | `[chainId, view, nodeHash, [[signer, signature], ...]]` |
 * | TC | `[chainId, view, [[signer, signature], ...]]` |
 * | Node | `[view, height, parent, justify QC, command, proposer, stateRoot, configHash]` |
 * | PROPOSE | `[1, node, tc or null, signature]` |
 * | VOTE | `[2, view, nodeHash, signer, signature]` |
 * | NEW-VIEW | `[3, view, highQC, highTC or null, [nodeHash, vote signature] or null, signer, signature]` |
 *
 * The decoder never throws: it returns a {@link DecodeResult}.
 *
 * @module
 */
import { decode as cborDecode, encode as cborEncode } from "cborg";
import { sha256Bytes } from "./crypto.ts";
import { DecodeError } from "./errors.ts";
import { bytesEqual } from "./types.ts";
import type {
  ConsensusMessage,
  Hash,
  Node,
  QuorumCertificate,
  SignatureDomainTag,
  SignerSignature,
  TimeoutCertificate,
} from "./types.ts";

/**
 * Size and count bounds the decoder enforces.
 *
 * @example
 * ```ts
 * import { type CodecLimits, DEFAULT_CODEC_LIMITS, decodeNode } from "./codec.ts";
 * const strict: CodecLimits = { ...DEFAULT_CODEC_LIMITS, commandBytesMax: 64 * 1024 };
 * console.log(decodeNode(new Uint8Array([0xa0]), strict).ok); // false: not a Node
 * ```
 */
export interface CodecLimits {
  /** Largest accepted command in a Node, in bytes. Default 4 MiB. */
  readonly commandBytesMax: number;
  /** Most signatures accepted in one certificate. Default 1024. */
  readonly signaturesMax: number;
  /** Longest chain id, in UTF-8 bytes. Default 64. */
  readonly chainIdBytesMax: number;
}

/**
 * The default {@link CodecLimits}.
 *
 * @example
 * ```ts
 * import { DEFAULT_CODEC_LIMITS } from "./codec.ts";
 * console.log(DEFAULT_CODEC_LIMITS.signaturesMax); // 1024
 * ```
 */
export const DEFAULT_CODEC_LIMITS: CodecLimits = {
  commandBytesMax: 4 * 1024 * 1024,
  signaturesMax: 1024,
  chainIdBytesMax: 64,
};

/**
 * Either a decoded value or the reason it was refused.
 *
 * @example
 * ```ts
 * import { type DecodeResult, decodeNode, encodeNode, genesisNode } from "./codec.ts";
 * import type { Node } from "./types.ts";
 * const r: DecodeResult<Node> = decodeNode(encodeNode(genesisNode("c")));
 * console.log(r.ok ? r.value.height : r.error.reason); // 0
 * ```
 */
export type DecodeResult<T> = { ok: true; value: T } | { ok: false; error: DecodeError };

const TAG_PROPOSE = 1;
const TAG_VOTE = 2;
const TAG_NEW_VIEW = 3;
const EMPTY = new Uint8Array(0);

// ---------------------------------------------------------------------------------------------
// Encoding

function sigsToCbor(sigs: readonly SignerSignature[]): unknown[] {
  return sigs.map((s) => [s.signer, s.signature]);
}

function qcToCbor(qc: QuorumCertificate): unknown[] {
  return [qc.chainId, qc.view, qc.nodeHash, sigsToCbor(qc.signatures)];
}

function tcToCbor(tc: TimeoutCertificate | null): unknown[] | null {
  return tc === null ? null : [tc.chainId, tc.view, sigsToCbor(tc.signatures)];
}

function nodeToCbor(node: Node): unknown[] {
  return [
    node.view,
    node.height,
    node.parent,
    qcToCbor(node.justify),
    node.command,
    node.proposer,
    node.stateRoot,
    node.configHash,
  ];
}

/**
 * Canonical encoding of a Node (the bytes its hash covers).
 *
 * @example
 * ```ts
 * import { encodeNode, genesisNode } from "./codec.ts";
 * const bytes = encodeNode(genesisNode("my-chain"));
 * ```
 */
export function encodeNode(node: Node): Uint8Array {
  return cborEncode(nodeToCbor(node));
}

/**
 * Canonical encoding of a QC.
 *
 * @example
 * ```ts
 * import { encodeQC, genesisQC } from "./codec.ts";
 * encodeQC(genesisQC("my-chain"));
 * ```
 */
export function encodeQC(qc: QuorumCertificate): Uint8Array {
  return cborEncode(qcToCbor(qc));
}

/**
 * Canonical encoding of a consensus message, as sent in a frame.
 *
 * @example
 * ```ts
 * import { decodeMessage, encodeMessage } from "./codec.ts";
 * const vote = {
 *   type: "vote",
 *   view: 3,
 *   nodeHash: new Uint8Array(32),
 *   signer: new Uint8Array(32).fill(1),
 *   signature: new Uint8Array(64),
 * } as const;
 * const decoded = decodeMessage(encodeMessage(vote));
 * console.log(decoded.ok && decoded.value.type); // "vote"
 * ```
 */
export function encodeMessage(msg: ConsensusMessage): Uint8Array {
  switch (msg.type) {
    case "propose":
      return cborEncode([TAG_PROPOSE, nodeToCbor(msg.node), tcToCbor(msg.tc), msg.signature]);
    case "vote":
      return cborEncode([TAG_VOTE, msg.view, msg.nodeHash, msg.signer, msg.signature]);
    case "new-view":
      return cborEncode([
        TAG_NEW_VIEW,
        msg.view,
        qcToCbor(msg.highQC),
        tcToCbor(msg.highTC),
        msg.vote === null ? null : [msg.vote.nodeHash, msg.vote.signature],
        msg.signer,
        msg.signature,
      ]);
  }
}

/**
 * The bytes a signature covers: `[domain tag, chainId, view, hash]` in canonical CBOR. Binding
 * the domain and the chain id means a signature can never be replayed for another purpose or on
 * another chain.
 *
 * @example
 * ```ts
 * import { signedBytes } from "./codec.ts";
 * import { SignatureDomain } from "./types.ts";
 * signedBytes(SignatureDomain.vote, "my-chain", 7, new Uint8Array(32));
 * ```
 */
export function signedBytes(
  domain: SignatureDomainTag,
  chainId: string,
  view: number,
  hash: Uint8Array = EMPTY,
): Uint8Array {
  return cborEncode([domain, chainId, view, hash]);
}

const nodeHashCache = new WeakMap<Node, Hash>();

/**
 * SHA-256 of the Node's canonical encoding. Cached per Node object (Nodes are immutable).
 *
 * @example
 * ```ts
 * import { genesisNode, nodeHash } from "./codec.ts";
 * nodeHash(genesisNode("my-chain")).length; // 32
 * ```
 */
export function nodeHash(node: Node): Hash {
  let h = nodeHashCache.get(node);
  if (h === undefined) {
    h = sha256Bytes(encodeNode(node));
    nodeHashCache.set(node, h);
  }
  return h;
}

/** Hash of "nothing": the genesis Node's parent. */
export const ZERO_HASH: Hash = new Uint8Array(32);

/**
 * The genesis QC of a chain: view 0, certifying the genesis Node, no signatures. It is valid by
 * rule (SPECIFICATION.md 3.2).
 *
 * @example
 * ```ts
 * import { genesisQC } from "./codec.ts";
 * genesisQC("my-chain").view; // 0
 * ```
 */
export function genesisQC(chainId: string): QuorumCertificate {
  return { chainId, view: 0, nodeHash: nodeHash(genesisNode(chainId)), signatures: [] };
}

const genesisCache = new Map<string, Node>();

/**
 * The genesis Node of a chain: view 0, height 0, empty command, known to every replica.
 *
 * @example
 * ```ts
 * import { genesisNode } from "./codec.ts";
 * genesisNode("my-chain").height; // 0
 * ```
 */
export function genesisNode(chainId: string): Node {
  let g = genesisCache.get(chainId);
  if (g === undefined) {
    g = {
      view: 0,
      height: 0,
      parent: ZERO_HASH,
      // The genesis Node's own justify points at nothing; it is never checked.
      justify: { chainId, view: 0, nodeHash: ZERO_HASH, signatures: [] },
      command: EMPTY,
      configHash: ZERO_HASH,
      proposer: new Uint8Array(32),
      stateRoot: EMPTY,
    };
    genesisCache.set(chainId, g);
  }
  return g;
}

// ---------------------------------------------------------------------------------------------
// Decoding

/** Thrown inside the decoder only; converted to a {@link DecodeResult} at the boundary. */
class Reject extends Error {
  constructor(readonly reason: string, message: string) {
    super(message);
  }
}

function reject(reason: string, message: string): never {
  throw new Reject(reason, message);
}

function asArray(v: unknown, what: string, length: number): unknown[] {
  if (!Array.isArray(v)) reject("bad-type", `${what}: expected an array, got ${typeof v}`);
  if (v.length !== length) {
    reject("bad-length", `${what}: expected ${length} fields, got ${v.length}`);
  }
  return v;
}

function asUint(v: unknown, what: string): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
    reject("bad-integer", `${what}: expected a non-negative safe integer, got ${String(v)}`);
  }
  return v;
}

function asBytes(v: unknown, what: string, length: number | null, max = Infinity): Uint8Array {
  if (!(v instanceof Uint8Array)) reject("bad-type", `${what}: expected bytes, got ${typeof v}`);
  if (length !== null && v.length !== length) {
    reject("bad-length", `${what}: expected ${length} bytes, got ${v.length}`);
  }
  if (v.length > max) reject("too-large", `${what}: ${v.length} bytes exceeds limit ${max}`);
  return v;
}

function asChainId(v: unknown, limits: CodecLimits): string {
  if (typeof v !== "string") reject("bad-type", `chain id: expected a string, got ${typeof v}`);
  if (new TextEncoder().encode(v).length > limits.chainIdBytesMax) {
    reject("too-large", `chain id: longer than ${limits.chainIdBytesMax} bytes`);
  }
  return v;
}

function asSignatures(v: unknown, what: string, limits: CodecLimits): SignerSignature[] {
  if (!Array.isArray(v)) reject("bad-type", `${what} signatures: expected an array`);
  if (v.length > limits.signaturesMax) {
    reject("too-many", `${what}: ${v.length} signatures exceeds limit ${limits.signaturesMax}`);
  }
  return v.map((pair, i) => {
    const p = asArray(pair, `${what} signature ${i}`, 2);
    return {
      signer: asBytes(p[0], `${what} signature ${i} signer`, 32),
      signature: asBytes(p[1], `${what} signature ${i}`, 64),
    };
  });
}

function asQC(v: unknown, limits: CodecLimits, what = "qc"): QuorumCertificate {
  const a = asArray(v, what, 4);
  return {
    chainId: asChainId(a[0], limits),
    view: asUint(a[1], `${what} view`),
    nodeHash: asBytes(a[2], `${what} node hash`, 32),
    signatures: asSignatures(a[3], what, limits),
  };
}

function asTC(v: unknown, limits: CodecLimits): TimeoutCertificate | null {
  if (v === null) return null;
  const a = asArray(v, "tc", 3);
  return {
    chainId: asChainId(a[0], limits),
    view: asUint(a[1], "tc view"),
    signatures: asSignatures(a[2], "tc", limits),
  };
}

function asAttachedVote(v: unknown): { nodeHash: Uint8Array; signature: Uint8Array } | null {
  if (v === null) return null;
  const a = asArray(v, "new-view vote", 2);
  return {
    nodeHash: asBytes(a[0], "new-view vote node hash", 32),
    signature: asBytes(a[1], "new-view vote signature", 64),
  };
}

/** A Node's state root: empty (a chain without state roots) or 32 bytes (SPECIFICATION.md 2). */
function asStateRoot(v: unknown): Uint8Array {
  const root = asBytes(v, "node state root", null, 32);
  if (root.length !== 0 && root.length !== 32) {
    reject("bad-length", `node state root: expected 0 or 32 bytes, got ${root.length}`);
  }
  return root;
}

function asNode(v: unknown, limits: CodecLimits): Node {
  const a = asArray(v, "node", 8);
  const node: Node = {
    view: asUint(a[0], "node view"),
    height: asUint(a[1], "node height"),
    parent: asBytes(a[2], "node parent", 32),
    justify: asQC(a[3], limits, "node justify"),
    command: asBytes(a[4], "node command", null, limits.commandBytesMax),
    configHash: asBytes(a[7], "node config hash", 32),
    proposer: asBytes(a[5], "node proposer", 32),
    stateRoot: asStateRoot(a[6]),
  };
  if (node.height === 0) reject("bad-height", "node: only genesis has height 0");
  return node;
}

function asMessage(v: unknown, limits: CodecLimits): ConsensusMessage {
  if (!Array.isArray(v) || v.length === 0) reject("bad-type", "message: expected a tagged array");
  switch (v[0]) {
    case TAG_PROPOSE: {
      const a = asArray(v, "propose", 4);
      return {
        type: "propose",
        node: asNode(a[1], limits),
        tc: asTC(a[2], limits),
        signature: asBytes(a[3], "propose signature", 64),
      };
    }
    case TAG_VOTE: {
      const a = asArray(v, "vote", 5);
      return {
        type: "vote",
        view: asUint(a[1], "vote view"),
        nodeHash: asBytes(a[2], "vote node hash", 32),
        signer: asBytes(a[3], "vote signer", 32),
        signature: asBytes(a[4], "vote signature", 64),
      };
    }
    case TAG_NEW_VIEW: {
      const a = asArray(v, "new-view", 7);
      return {
        type: "new-view",
        view: asUint(a[1], "new-view view"),
        highQC: asQC(a[2], limits, "new-view high qc"),
        highTC: asTC(a[3], limits),
        vote: asAttachedVote(a[4]),
        signer: asBytes(a[5], "new-view signer", 32),
        signature: asBytes(a[6], "new-view signature", 64),
      };
    }
    default:
      reject("unknown-type", `message: unknown type tag ${String(v[0])}`);
  }
}

const CBOR_OPTIONS = {
  strict: true,
  allowIndefinite: false,
  allowUndefined: false,
  allowInfinity: false,
  allowNaN: false,
  allowBigInt: false,
  rejectDuplicateMapKeys: true,
  useMaps: true,
  tags: [],
} as const;

function guarded<T>(
  bytes: Uint8Array,
  limits: CodecLimits,
  body: (v: unknown, l: CodecLimits) => T,
): DecodeResult<T> {
  const max = limits.commandBytesMax + 1024 * 1024;
  if (bytes.length > max) {
    return {
      ok: false,
      error: new DecodeError("too-large", `input of ${bytes.length} bytes exceeds ${max}`),
    };
  }
  try {
    // deno-lint-ignore no-explicit-any
    const raw = cborDecode(bytes, CBOR_OPTIONS as any);
    const value = body(raw, limits);
    // cborg's strict mode checks the encoding of integers and lengths only: a whole-number float
    // (1.0, -0.0) passes as an integer and invalid UTF-8 decodes to U+FFFD. Canonical means one
    // encoding per value, so the input must be exactly the encoding of what it decoded to.
    if (!bytesEqual(cborEncode(raw), bytes)) {
      reject("non-canonical", "input is not the canonical encoding of its value");
    }
    return { ok: true, value };
  } catch (e) {
    if (e instanceof Reject) return { ok: false, error: new DecodeError(e.reason, e.message) };
    const message = e instanceof Error ? e.message : String(e);
    return { ok: false, error: new DecodeError("bad-cbor", message) };
  }
}

/**
 * Strictly decodes a consensus message. Never throws.
 *
 * @example
 * ```ts
 * import { decodeMessage } from "./codec.ts";
 * const r = decodeMessage(new Uint8Array([0x80]));
 * if (!r.ok) console.log(r.error.reason); // "bad-type"
 * ```
 */
export function decodeMessage(
  bytes: Uint8Array,
  limits: CodecLimits = DEFAULT_CODEC_LIMITS,
): DecodeResult<ConsensusMessage> {
  return guarded(bytes, limits, asMessage);
}

/**
 * Strictly decodes a Node. Never throws.
 *
 * @example
 * ```ts
 * import { decodeNode, encodeNode, genesisNode } from "./codec.ts";
 * decodeNode(encodeNode(genesisNode("c"))).ok; // false: height 0 is genesis only
 * ```
 */
export function decodeNode(
  bytes: Uint8Array,
  limits: CodecLimits = DEFAULT_CODEC_LIMITS,
): DecodeResult<Node> {
  return guarded(bytes, limits, asNode);
}

/**
 * Strictly decodes a QC. Never throws.
 *
 * @example
 * ```ts
 * import { decodeQC, encodeQC, genesisQC } from "./codec.ts";
 * decodeQC(encodeQC(genesisQC("c"))).ok; // true
 * ```
 */
export function decodeQC(
  bytes: Uint8Array,
  limits: CodecLimits = DEFAULT_CODEC_LIMITS,
): DecodeResult<QuorumCertificate> {
  return guarded(bytes, limits, (v, l) => asQC(v, l));
}

/**
 * Generic canonical CBOR encode of plain data (for storage records and the HTTP API).
 *
 * @example
 * ```ts
 * import { encodeValue } from "./codec.ts";
 * encodeValue([1, "x"]);
 * ```
 */
export function encodeValue(value: unknown): Uint8Array {
  return cborEncode(value);
}

/**
 * The item count that an encoded CBOR array announces in its head, or null when `bytes` does not
 * start with a definite-length array head. Lets a decoder refuse an oversized array before
 * decoding it (decoding allocates every item; indefinite lengths are refused by
 * {@link decodeValue} anyway).
 *
 * @example
 * ```ts
 * import { cborArrayLength, encodeValue } from "./codec.ts";
 * cborArrayLength(encodeValue([1, 2, 3])); // 3
 * cborArrayLength(encodeValue("x")); // null
 * ```
 */
export function cborArrayLength(bytes: Uint8Array): number | null {
  const first = bytes[0];
  if (first === undefined || first >> 5 !== 4) return null;
  const info = first & 0x1f;
  if (info < 24) return info;
  const size = info === 24 ? 1 : info === 25 ? 2 : info === 26 ? 4 : info === 27 ? 8 : 0;
  if (size === 0 || bytes.length < 1 + size) return null;
  let n = 0;
  for (let i = 1; i <= size; i++) n = n * 256 + bytes[i]!;
  return n;
}

/**
 * Generic strict CBOR decode. Throws {@link DecodeError} on malformed input.
 *
 * @example
 * ```ts
 * import { decodeValue, encodeValue } from "./codec.ts";
 * decodeValue(encodeValue([1])); // [1]
 * ```
 */
export function decodeValue(bytes: Uint8Array): unknown {
  try {
    // deno-lint-ignore no-explicit-any
    return cborDecode(bytes, CBOR_OPTIONS as any);
  } catch (e) {
    throw new DecodeError("bad-cbor", e instanceof Error ? e.message : String(e));
  }
}
