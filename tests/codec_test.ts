import assert from "node:assert/strict";
import { encode as cborEncode } from "cborg";
import {
  cborArrayLength,
  type CodecLimits,
  decodeMessage,
  decodeNode,
  decodeQC,
  type DecodeResult,
  DEFAULT_CODEC_LIMITS,
  encodeMessage,
  encodeNode,
  encodeQC,
  encodeValue,
  genesisNode,
  genesisQC,
  nodeHash,
  signedBytes,
} from "../src/codec.ts";
import { DecodeError } from "../src/errors.ts";
import {
  type ConsensusMessage,
  type NewViewMessage,
  type Node,
  type ProposeMessage,
  type QuorumCertificate,
  SignatureDomain,
  type TimeoutCertificate,
  type VoteMessage,
} from "../src/types.ts";

// ---------------------------------------------------------------------------------------------
// Fixtures: distinct fill bytes make every field recognisable in a hex dump.

const CHAIN = "test-chain";
const bytes = (length: number, fill: number): Uint8Array => new Uint8Array(length).fill(fill);
const sig = (fill: number) => ({ signer: bytes(32, fill), signature: bytes(64, fill + 0x40) });

const qc: QuorumCertificate = {
  chainId: CHAIN,
  view: 6,
  nodeHash: bytes(32, 0xa1),
  signatures: [sig(1), sig(2), sig(3)],
};
const tc: TimeoutCertificate = { chainId: CHAIN, view: 8, signatures: [sig(1), sig(2), sig(4)] };
const node: Node = {
  view: 9,
  height: 4,
  parent: bytes(32, 0xa1),
  justify: qc,
  command: new TextEncoder().encode("transfer 10"),
  configHash: bytes(32, 0xc1),
  proposer: bytes(32, 2),
  stateRoot: bytes(32, 3),
};
const proposeNoTC: ProposeMessage = {
  type: "propose",
  node: { ...node, view: 7 },
  tc: null,
  signature: bytes(64, 0xb1),
};
const proposeTC: ProposeMessage = { type: "propose", node, tc, signature: bytes(64, 0xb2) };
const vote: VoteMessage = {
  type: "vote",
  view: 9,
  nodeHash: bytes(32, 0xa2),
  signer: bytes(32, 3),
  signature: bytes(64, 0xb3),
};
const newViewNoTC: NewViewMessage = {
  type: "new-view",
  view: 10,
  highQC: qc,
  highTC: null,
  vote: null,
  signer: bytes(32, 4),
  signature: bytes(64, 0xb4),
};
const newViewTC: NewViewMessage = { ...newViewNoTC, highTC: tc, signature: bytes(64, 0xb5) };
const attachedVote = { nodeHash: bytes(32, 0xa3), signature: bytes(64, 0xb6) };
const newViewVote: NewViewMessage = { ...newViewNoTC, vote: attachedVote };
const newViewTCVote: NewViewMessage = { ...newViewTC, vote: attachedVote };

const MESSAGES: Record<string, ConsensusMessage> = {
  "propose without tc": proposeNoTC,
  "propose with tc": proposeTC,
  "vote": vote,
  "new-view without highTC": newViewNoTC,
  "new-view with highTC": newViewTC,
  "new-view with a vote, without highTC": newViewVote,
  "new-view with highTC and a vote": newViewTCVote,
};

// Raw CBOR tuples (see the table in src/codec.ts), to build malformed frames field by field.
type Raw = unknown[];
const rawSigs = (s: readonly { signer: Uint8Array; signature: Uint8Array }[]): Raw =>
  s.map((x) => [x.signer, x.signature]);
const rawQC = (q: QuorumCertificate): Raw => [q.chainId, q.view, q.nodeHash, rawSigs(q.signatures)];
const rawTC = (t: TimeoutCertificate): Raw => [t.chainId, t.view, rawSigs(t.signatures)];
const rawNode = (
  n: Node,
): Raw => [
  n.view,
  n.height,
  n.parent,
  rawQC(n.justify),
  n.command,
  n.proposer,
  n.stateRoot,
  n.configHash,
];
const rawPropose = (): Raw => [1, rawNode(node), rawTC(tc), bytes(64, 0xb2)];
const rawVote = (): Raw => [2, vote.view, vote.nodeHash, vote.signer, vote.signature];
const rawNewView = (): Raw => [
  3,
  10,
  rawQC(qc),
  rawTC(tc),
  [attachedVote.nodeHash, attachedVote.signature],
  bytes(32, 4),
  bytes(64, 0xb5),
];

/** A deep copy of `raw` with the value at `path` replaced (or removed, for `REMOVE`). */
const REMOVE = Symbol("remove");
function withField(raw: Raw, path: readonly number[], value: unknown): Raw {
  const copy = structuredClone(raw) as Raw;
  let parent = copy;
  for (const i of path.slice(0, -1)) parent = parent[i] as Raw;
  const last = path[path.length - 1]!;
  if (value === REMOVE) parent.splice(last, 1);
  else parent[last] = value;
  return copy;
}

function at(raw: Raw, path: readonly number[]): unknown {
  let v: unknown = raw;
  for (const i of path) v = (v as Raw)[i];
  return v;
}

type Decoder<T> = (bytes: Uint8Array, limits?: CodecLimits) => DecodeResult<T>;

/** Decodes without throwing and returns the rejection reason (fails if the input is accepted). */
function reasonOf<T>(decode: Decoder<T>, input: Uint8Array, limits?: CodecLimits): string {
  let result: DecodeResult<T> | undefined;
  assert.doesNotThrow(() => {
    result = decode(input, limits);
  });
  assert.ok(result !== undefined);
  assert.ok(!result.ok, "expected a rejection, got a value");
  assert.ok(result.error instanceof DecodeError);
  assert.equal(result.error.name, "DecodeError");
  assert.equal(typeof result.error.message, "string");
  return result.error.reason;
}

const hex = (b: Uint8Array): string =>
  Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

// ---------------------------------------------------------------------------------------------
// Round trips

for (const [name, msg] of Object.entries(MESSAGES)) {
  Deno.test(`codec: ${name} round-trips through encodeMessage/decodeMessage`, () => {
    const frame = encodeMessage(msg);
    const r = decodeMessage(frame);
    assert.ok(r.ok, r.ok ? "" : r.error.message);
    assert.deepStrictEqual(r.value, msg);
    assert.equal(hex(encodeMessage(r.value)), hex(frame), "re-encoding gives the same bytes");
  });
}

Deno.test("codec: Node round-trips through encodeNode/decodeNode", () => {
  const r = decodeNode(encodeNode(node));
  assert.ok(r.ok, r.ok ? "" : r.error.message);
  assert.deepStrictEqual(r.value, node);
  assert.equal(hex(encodeNode(r.value)), hex(encodeNode(node)));
});

Deno.test("codec: Node with empty command and largest safe view round-trips", () => {
  const n: Node = { ...node, view: Number.MAX_SAFE_INTEGER, command: new Uint8Array(0) };
  const r = decodeNode(encodeNode(n));
  assert.ok(r.ok);
  assert.deepStrictEqual(r.value, n);
});

Deno.test("codec: QC with signatures and genesis QC round-trip through encodeQC/decodeQC", () => {
  for (const q of [qc, genesisQC(CHAIN), { ...qc, chainId: "" }]) {
    const r = decodeQC(encodeQC(q));
    assert.ok(r.ok, r.ok ? "" : r.error.message);
    assert.deepStrictEqual(r.value, q);
    assert.equal(hex(encodeQC(r.value)), hex(encodeQC(q)));
  }
});

Deno.test("codec: encoding is canonical: equal values give equal bytes", () => {
  const copy = structuredClone(proposeTC);
  assert.notStrictEqual(copy, proposeTC);
  assert.equal(hex(encodeMessage(copy)), hex(encodeMessage(proposeTC)));
});

// ---------------------------------------------------------------------------------------------
// nodeHash and signedBytes

Deno.test("codec: nodeHash is 32 bytes and stable for equal Nodes", () => {
  const h = nodeHash(node);
  assert.equal(h.length, 32);
  assert.deepStrictEqual(nodeHash(node), h);
  assert.deepStrictEqual(nodeHash(structuredClone(node)), h, "not tied to object identity");
  assert.deepStrictEqual(nodeHash(genesisNode(CHAIN)), genesisQC(CHAIN).nodeHash);
});

Deno.test("codec: nodeHash changes when any field of the Node changes", () => {
  const variants: Record<string, Node> = {
    view: { ...node, view: node.view + 1 },
    height: { ...node, height: node.height + 1 },
    parent: { ...node, parent: bytes(32, 0xee) },
    "justify.chainId": { ...node, justify: { ...qc, chainId: "other-chain" } },
    "justify.view": { ...node, justify: { ...qc, view: qc.view + 1 } },
    "justify.nodeHash": { ...node, justify: { ...qc, nodeHash: bytes(32, 0xee) } },
    "justify.signatures (one fewer)": {
      ...node,
      justify: { ...qc, signatures: qc.signatures.slice(1) },
    },
    "justify.signatures (one signature byte)": {
      ...node,
      justify: { ...qc, signatures: [sig(1), sig(2), { ...sig(3), signature: bytes(64, 0) }] },
    },
    command: { ...node, command: new TextEncoder().encode("transfer 11") },
    "command (empty)": { ...node, command: new Uint8Array(0) },
    proposer: { ...node, proposer: bytes(32, 9) },
    "config hash": { ...node, configHash: bytes(32, 0xc2) },
  };
  const base = hex(nodeHash(node));
  const seen = new Set([base]);
  for (const [field, variant] of Object.entries(variants)) {
    const h = hex(nodeHash(variant));
    assert.notEqual(h, base, `changing ${field} must change the hash`);
    seen.add(h);
  }
  assert.equal(seen.size, Object.keys(variants).length + 1, "all variants hash differently");
});

Deno.test("codec: signedBytes differs by domain, chain, view and hash", () => {
  const h = bytes(32, 0xa1);
  const base = hex(signedBytes(SignatureDomain.vote, CHAIN, 5, h));
  const others = [
    signedBytes(SignatureDomain.propose, CHAIN, 5, h),
    signedBytes(SignatureDomain.newView, CHAIN, 5, h),
    signedBytes(SignatureDomain.handshake, CHAIN, 5, h),
    signedBytes(SignatureDomain.vote, "other-chain", 5, h),
    signedBytes(SignatureDomain.vote, CHAIN, 6, h),
    signedBytes(SignatureDomain.vote, CHAIN, 5, bytes(32, 0xa2)),
    signedBytes(SignatureDomain.vote, CHAIN, 5),
  ].map(hex);
  assert.equal(hex(signedBytes(SignatureDomain.vote, CHAIN, 5, h.slice())), base, "stable");
  assert.equal(new Set([base, ...others]).size, others.length + 1);
  assert.equal(
    hex(signedBytes(SignatureDomain.newView, CHAIN, 5)),
    hex(signedBytes(SignatureDomain.newView, CHAIN, 5, new Uint8Array(0))),
    "the default hash is empty",
  );
});

// ---------------------------------------------------------------------------------------------
// Rejections

Deno.test("codec: non-CBOR garbage is rejected as bad-cbor", () => {
  const garbage = [
    new Uint8Array(0),
    new Uint8Array([0xff]),
    new Uint8Array([0x1c]), // reserved additional info
    new Uint8Array([0xfc]),
    new TextEncoder().encode("hello, world"),
    bytes(100, 0xff),
  ];
  for (const g of garbage) {
    for (const decode of [decodeMessage, decodeNode, decodeQC] as Decoder<unknown>[]) {
      assert.equal(reasonOf(decode, g), "bad-cbor", hex(g));
    }
  }
});

Deno.test("codec: every strict prefix of a valid frame is rejected as bad-cbor", () => {
  const frames: [Decoder<unknown>, Uint8Array][] = [
    ...Object.values(MESSAGES).map((m): [Decoder<unknown>, Uint8Array] => [
      decodeMessage,
      encodeMessage(m),
    ]),
    [decodeNode, encodeNode(node)],
    [decodeQC, encodeQC(qc)],
  ];
  for (const [decode, frame] of frames) {
    for (let n = 0; n < frame.length; n++) {
      assert.equal(
        reasonOf(decode, frame.subarray(0, n)),
        "bad-cbor",
        `prefix ${n}/${frame.length}`,
      );
    }
  }
});

Deno.test("codec: trailing bytes after a valid frame are rejected as bad-cbor", () => {
  for (const extra of [[0x00], [0x80], [0xff], [0x02, 0x02]]) {
    const withExtra = (b: Uint8Array) => new Uint8Array([...b, ...extra]);
    assert.equal(reasonOf(decodeMessage, withExtra(encodeMessage(vote))), "bad-cbor");
    assert.equal(reasonOf(decodeNode, withExtra(encodeNode(node))), "bad-cbor");
    assert.equal(reasonOf(decodeQC, withExtra(encodeQC(qc))), "bad-cbor");
  }
});

/** Paths (into the raw tuples) of arrays whose length is fixed, for every message type. */
const qcPaths = (p: number[]) => [p, [...p, 3, 0]];
const tcPaths = (p: number[]) => [p, [...p, 2, 0]];
const nodePaths = (p: number[]) => [p, ...qcPaths([...p, 3])];
const FIXED_ARRAYS: [string, () => Raw, number[][]][] = [
  ["propose", rawPropose, [[], ...nodePaths([1]), ...tcPaths([2])]],
  ["vote", rawVote, [[]]],
  ["new-view", rawNewView, [[], ...qcPaths([2]), ...tcPaths([3]), [4]]],
];

Deno.test("codec: arrays one field short or one field long are rejected as bad-length", () => {
  for (const [type, make, paths] of FIXED_ARRAYS) {
    for (const path of paths) {
      const raw = make();
      const array = at(raw, path) as Raw;
      const short = path.length === 0 ? raw.slice(0, -1) : withField(raw, [...path, 0], REMOVE);
      const long = path.length === 0 ? [...raw, 0] : withField(raw, path, [...array, 0]);
      for (const bad of [short, long]) {
        const reason = reasonOf(decodeMessage, cborEncode(bad));
        assert.equal(reason, "bad-length", `${type} at [${path}]`);
      }
    }
  }
  const n = rawNode(node);
  assert.equal(reasonOf(decodeNode, cborEncode(n.slice(0, 6))), "bad-length");
  assert.equal(reasonOf(decodeNode, cborEncode([...n, 0])), "bad-length");
  const q = rawQC(qc);
  assert.equal(reasonOf(decodeQC, cborEncode(q.slice(0, 3))), "bad-length");
  assert.equal(reasonOf(decodeQC, cborEncode([...q, 0])), "bad-length");
  assert.equal(reasonOf(decodeQC, cborEncode([])), "bad-length");
});

Deno.test("codec: an empty array or a non-array is not a message (bad-type)", () => {
  for (const v of [[], 1, "propose", bytes(4, 1), null, true]) {
    assert.equal(reasonOf(decodeMessage, cborEncode(v)), "bad-type", JSON.stringify(v));
  }
});

type Kind = "uint" | "bytes" | "string" | "array" | "nullable-array";
/** Every field of every message, with the kind of value it must hold. */
function fieldsOfQC(p: number[]): [number[], Kind][] {
  return [
    [p, "array"],
    [[...p, 0], "string"],
    [[...p, 1], "uint"],
    [[...p, 2], "bytes"],
    [
      [...p, 3],
      "array",
    ],
    [[...p, 3, 0], "array"],
    [[...p, 3, 0, 0], "bytes"],
    [[...p, 3, 0, 1], "bytes"],
  ];
}
function fieldsOfTC(p: number[]): [number[], Kind][] {
  return [
    [p, "nullable-array"],
    [[...p, 0], "string"],
    [[...p, 1], "uint"],
    [[...p, 2], "array"],
    [
      [...p, 2, 0],
      "array",
    ],
    [[...p, 2, 0, 0], "bytes"],
    [[...p, 2, 0, 1], "bytes"],
  ];
}
function fieldsOfNode(p: number[]): [number[], Kind][] {
  return [
    [p, "array"],
    [[...p, 0], "uint"],
    [[...p, 1], "uint"],
    [[...p, 2], "bytes"],
    ...fieldsOfQC([...p, 3]),
    [[...p, 4], "bytes"],
    [[...p, 5], "bytes"],
    [[...p, 6], "bytes"],
  ];
}
const FIELDS: [string, () => Raw, [number[], Kind][]][] = [
  ["propose", rawPropose, [...fieldsOfNode([1]), ...fieldsOfTC([2]), [[3], "bytes"]]],
  ["vote", rawVote, [[[1], "uint"], [[2], "bytes"], [[3], "bytes"], [[4], "bytes"]]],
  ["new-view", rawNewView, [
    [[1], "uint"],
    ...fieldsOfQC([2]),
    ...fieldsOfTC([3]),
    [[4], "nullable-array"],
    [[4, 0], "bytes"],
    [[4, 1], "bytes"],
    [[5], "bytes"],
    [[6], "bytes"],
  ]],
];

/** Values of the wrong type for each kind, with the reason the decoder must give. */
const WRONG: Record<Kind, [unknown, string][]> = {
  uint: [["7", "bad-integer"], [bytes(1, 7), "bad-integer"], [[7], "bad-integer"], [
    null,
    "bad-integer",
  ], [true, "bad-integer"]],
  bytes: [[7, "bad-type"], ["abc", "bad-type"], [[], "bad-type"], [null, "bad-type"], [
    false,
    "bad-type",
  ]],
  string: [[7, "bad-type"], [bytes(3, 0x61), "bad-type"], [[], "bad-type"], [null, "bad-type"]],
  array: [[7, "bad-type"], ["x", "bad-type"], [bytes(4, 0), "bad-type"], [null, "bad-type"]],
  "nullable-array": [[7, "bad-type"], ["x", "bad-type"], [bytes(4, 0), "bad-type"], [
    false,
    "bad-type",
  ]],
};

Deno.test("codec: a value of the wrong type in any field is rejected with bad-type/bad-integer", () => {
  let cases = 0;
  for (const [type, make, fields] of FIELDS) {
    for (const [path, kind] of fields) {
      for (const [value, reason] of WRONG[kind]) {
        const frame = cborEncode(withField(make(), path, value));
        assert.equal(
          reasonOf(decodeMessage, frame),
          reason,
          `${type} [${path}] = ${String(value)}`,
        );
        cases++;
      }
    }
  }
  assert.ok(cases > 150, `${cases} cases`);
});

Deno.test("codec: wrong types in the fields of a bare Node and a bare QC are rejected", () => {
  for (const [path, kind] of fieldsOfNode([])) {
    for (const [value, reason] of WRONG[kind]) {
      const frame = cborEncode(path.length === 0 ? value : withField(rawNode(node), path, value));
      assert.equal(reasonOf(decodeNode, frame), reason, `node [${path}]`);
    }
  }
  for (const [path, kind] of fieldsOfQC([])) {
    for (const [value, reason] of WRONG[kind]) {
      const frame = cborEncode(path.length === 0 ? value : withField(rawQC(qc), path, value));
      assert.equal(reasonOf(decodeQC, frame), reason, `qc [${path}]`);
    }
  }
});

/** Paths of every fixed-size byte field, with its size. */
const SIZED: [string, () => Raw, number[], number][] = [
  ["propose node parent", rawPropose, [1, 2], 32],
  ["propose node justify hash", rawPropose, [1, 3, 2], 32],
  ["propose node justify signer", rawPropose, [1, 3, 3, 0, 0], 32],
  ["propose node justify signature", rawPropose, [1, 3, 3, 0, 1], 64],
  ["propose node proposer", rawPropose, [1, 5], 32],
  ["propose node config hash", rawPropose, [1, 7], 32],
  ["propose tc signer", rawPropose, [2, 2, 0, 0], 32],
  ["propose tc signature", rawPropose, [2, 2, 0, 1], 64],
  ["propose signature", rawPropose, [3], 64],
  ["vote node hash", rawVote, [2], 32],
  ["vote signer", rawVote, [3], 32],
  ["vote signature", rawVote, [4], 64],
  ["new-view qc hash", rawNewView, [2, 2], 32],
  ["new-view qc signer", rawNewView, [2, 3, 1, 0], 32],
  ["new-view qc signature", rawNewView, [2, 3, 1, 1], 64],
  ["new-view tc signer", rawNewView, [3, 2, 2, 0], 32],
  ["new-view tc signature", rawNewView, [3, 2, 2, 1], 64],
  ["new-view vote node hash", rawNewView, [4, 0], 32],
  ["new-view vote signature", rawNewView, [4, 1], 64],
  ["new-view signer", rawNewView, [5], 32],
  ["new-view signature", rawNewView, [6], 64],
];

Deno.test("codec: 31/33-byte hashes and keys and 63/65-byte signatures are rejected (bad-length)", () => {
  for (const [what, make, path, size] of SIZED) {
    assert.equal((at(make(), path) as Uint8Array).length, size, `${what} fixture`);
    for (const wrong of [size - 1, size + 1, 0]) {
      const frame = cborEncode(withField(make(), path, bytes(wrong, 0x55)));
      assert.equal(reasonOf(decodeMessage, frame), "bad-length", `${what}: ${wrong} bytes`);
    }
  }
  assert.equal(reasonOf(decodeQC, encodeQC({ ...qc, nodeHash: bytes(31, 1) })), "bad-length");
  assert.equal(reasonOf(decodeQC, encodeQC({ ...qc, nodeHash: bytes(33, 1) })), "bad-length");
  assert.equal(reasonOf(decodeNode, encodeNode({ ...node, parent: bytes(33, 1) })), "bad-length");
  assert.equal(reasonOf(decodeNode, encodeNode({ ...node, proposer: bytes(31, 1) })), "bad-length");
  assert.equal(
    reasonOf(decodeNode, encodeNode({ ...node, configHash: bytes(33, 1) })),
    "bad-length",
  );
});

/** Paths of every integer field. */
const INTEGERS: [string, () => Raw, number[]][] = [
  ["propose node view", rawPropose, [1, 0]],
  ["propose node height", rawPropose, [1, 1]],
  ["propose node justify view", rawPropose, [1, 3, 1]],
  ["propose tc view", rawPropose, [2, 1]],
  ["vote view", rawVote, [1]],
  ["new-view view", rawNewView, [1]],
  ["new-view qc view", rawNewView, [2, 1]],
  ["new-view tc view", rawNewView, [3, 1]],
];

Deno.test("codec: negative, fractional and unsafe integers are rejected as bad-integer", () => {
  // cborg writes 2^53 and 1e300 as floats, which decode to unsafe numbers.
  const values = [-1, -(2 ** 40), 0.5, 1.5, 2 ** 53, 2 ** 53 + 2, 1e300];
  for (const [what, make, path] of INTEGERS) {
    for (const value of values) {
      const frame = cborEncode(withField(make(), path, value));
      assert.equal(reasonOf(decodeMessage, frame), "bad-integer", `${what} = ${value}`);
    }
  }
});

Deno.test("codec: 64-bit integers beyond 2^53 and bignums are rejected as bad-cbor", () => {
  const uint64 = (hi: number) => new Uint8Array([0x1b, hi, 0, 0, 0, 0, 0, 0, 1]);
  for (const [what, make, path] of INTEGERS) {
    const values = [2n ** 53n + 1n, 2n ** 63n, 2n ** 64n - 1n, -(2n ** 60n)];
    for (const value of values) {
      const frame = cborEncode(withField(make(), path, value));
      assert.equal(reasonOf(decodeMessage, frame), "bad-cbor", `${what} = ${value}`);
    }
  }
  // A vote whose view is uint64 0x0100..01 (> 2^53), a tag-2 bignum, and a tag-3 negative bignum.
  const voteWith = (view: number[]) => {
    const tail = cborEncode(rawVote().slice(2)).subarray(1); // the last three fields
    return new Uint8Array([0x85, 0x02, ...view, ...tail]);
  };
  assert.ok(decodeMessage(voteWith([0x09])).ok, "fixture: view 9 decodes");
  assert.equal(reasonOf(decodeMessage, voteWith([...uint64(0x01)])), "bad-cbor");
  assert.equal(
    reasonOf(decodeMessage, voteWith([0xc2, 0x49, 1, 0, 0, 0, 0, 0, 0, 0, 0])),
    "bad-cbor",
  );
  assert.equal(reasonOf(decodeMessage, voteWith([0xc3, 0x41, 1])), "bad-cbor");
});

Deno.test("codec: integers not in their shortest form are rejected as bad-cbor", () => {
  const voteWith = (view: number[]) => {
    const tail = cborEncode(rawVote().slice(2)).subarray(1);
    return new Uint8Array([0x85, 0x02, ...view, ...tail]);
  };
  for (
    const view of [[0x18, 0x09], [0x19, 0, 9], [0x1a, 0, 0, 0, 9], [0x1b, 0, 0, 0, 0, 0, 0, 0, 9]]
  ) {
    assert.equal(reasonOf(decodeMessage, voteWith(view)), "bad-cbor", hex(new Uint8Array(view)));
  }
});

Deno.test("codec: whole-number floats and -0 in integer fields are rejected as non-canonical", () => {
  const voteWith = (view: number[]) => {
    const tail = cborEncode(rawVote().slice(2)).subarray(1);
    return new Uint8Array([0x85, 0x02, ...view, ...tail]);
  };
  const floats = [
    [0xf9, 0x48, 0x80], // float16 9.0
    [0xfa, 0x41, 0x10, 0, 0], // float32 9.0
    [0xfb, 0x40, 0x22, 0, 0, 0, 0, 0, 0], // float64 9.0
    [0xf9, 0x80, 0x00], // float16 -0
  ];
  for (const view of floats) {
    assert.equal(
      reasonOf(decodeMessage, voteWith(view)),
      "non-canonical",
      hex(new Uint8Array(view)),
    );
  }
  // The chain id in a QC as invalid UTF-8 (a lone 0xff byte).
  const q = encodeQC({ ...qc, chainId: "x" });
  const i = q.indexOf(0x78); // "x"
  const bad = q.slice();
  bad[i] = 0xff;
  assert.equal(reasonOf(decodeQC, bad), "non-canonical");
});

Deno.test("codec: unknown message type tags are rejected as unknown-type", () => {
  for (const tag of [0, 4, 5, 255, 1000, "propose", "1", null, -1, 1.5]) {
    const frame = cborEncode(withField(rawVote(), [0], tag));
    assert.equal(reasonOf(decodeMessage, frame), "unknown-type", String(tag));
  }
  assert.equal(reasonOf(decodeMessage, cborEncode([4])), "unknown-type");
});

Deno.test("codec: certificates with more signatures than signaturesMax are rejected as too-many", () => {
  const many = (n: number) => Array.from({ length: n }, (_, i) => sig(i & 0xff));
  const max = DEFAULT_CODEC_LIMITS.signaturesMax;
  assert.ok(decodeQC(encodeQC({ ...qc, signatures: many(max) })).ok, "exactly the limit is fine");
  assert.equal(reasonOf(decodeQC, encodeQC({ ...qc, signatures: many(max + 1) })), "too-many");
  const small: CodecLimits = { ...DEFAULT_CODEC_LIMITS, signaturesMax: 2 };
  assert.equal(reasonOf(decodeQC, encodeQC(qc), small), "too-many");
  assert.equal(reasonOf(decodeNode, encodeNode(node), small), "too-many");
  assert.equal(reasonOf(decodeMessage, encodeMessage(newViewTC), small), "too-many");
  const tc3: ProposeMessage = {
    ...proposeTC,
    node: { ...node, justify: { ...qc, signatures: [sig(1)] } },
  };
  assert.equal(reasonOf(decodeMessage, encodeMessage(tc3), small), "too-many", "in the TC");
});

Deno.test("codec: a command over commandBytesMax is rejected as too-large", () => {
  const max = DEFAULT_CODEC_LIMITS.commandBytesMax;
  const atMax = { ...node, command: new Uint8Array(max) };
  assert.ok(decodeNode(encodeNode(atMax)).ok, "exactly the limit is fine");
  const over = { ...node, command: new Uint8Array(max + 1) };
  assert.equal(reasonOf(decodeNode, encodeNode(over)), "too-large");
  assert.equal(
    reasonOf(decodeMessage, encodeMessage({ ...proposeTC, node: over })),
    "too-large",
  );
  const small: CodecLimits = { ...DEFAULT_CODEC_LIMITS, commandBytesMax: 10 };
  assert.equal(node.command.length, 11);
  assert.equal(reasonOf(decodeNode, encodeNode(node), small), "too-large");
});

Deno.test("codec: input larger than commandBytesMax + 1 MiB is rejected before parsing", () => {
  const small: CodecLimits = { ...DEFAULT_CODEC_LIMITS, commandBytesMax: 0 };
  const input = new Uint8Array(1024 * 1024 + 1).fill(0xff);
  for (const decode of [decodeMessage, decodeNode, decodeQC] as Decoder<unknown>[]) {
    const r = decode(input, small);
    assert.ok(!r.ok);
    assert.equal(r.error.reason, "too-large");
    assert.match(r.error.message, /exceeds/);
  }
});

Deno.test("codec: a chain id over chainIdBytesMax UTF-8 bytes is rejected as too-large", () => {
  const max = DEFAULT_CODEC_LIMITS.chainIdBytesMax;
  assert.ok(
    decodeQC(encodeQC({ ...qc, chainId: "c".repeat(max) })).ok,
    "exactly the limit is fine",
  );
  assert.equal(reasonOf(decodeQC, encodeQC({ ...qc, chainId: "c".repeat(max + 1) })), "too-large");
  // 33 characters, 66 bytes: the limit counts bytes, not characters.
  assert.equal(reasonOf(decodeQC, encodeQC({ ...qc, chainId: "é".repeat(33) })), "too-large");
  const longTC = { ...newViewTC, highTC: { ...tc, chainId: "c".repeat(max + 1) } };
  assert.equal(reasonOf(decodeMessage, encodeMessage(longTC)), "too-large");
});

Deno.test("codec: CBOR maps in place of tuples or fields are rejected as bad-type", () => {
  const asMap = (a: Raw) => new Map(a.map((v, i) => [i, v]));
  assert.equal(reasonOf(decodeMessage, cborEncode(asMap(rawVote()))), "bad-type");
  assert.equal(reasonOf(decodeNode, cborEncode(asMap(rawNode(node)))), "bad-type");
  assert.equal(reasonOf(decodeQC, cborEncode(asMap(rawQC(qc)))), "bad-type");
  assert.equal(reasonOf(decodeQC, cborEncode({ chainId: CHAIN })), "bad-type");
  const inField = withField(rawNewView(), [2], asMap(rawQC(qc)));
  assert.equal(reasonOf(decodeMessage, cborEncode(inField)), "bad-type");
  const inSig = withField(rawVote(), [4], new Map([[1, 2]]));
  assert.equal(reasonOf(decodeMessage, cborEncode(inSig)), "bad-type");
  // A map with a duplicate key is malformed CBOR for this decoder.
  assert.equal(reasonOf(decodeMessage, new Uint8Array([0xa2, 0x01, 0x01, 0x01, 0x02])), "bad-cbor");
});

Deno.test("codec: CBOR tags, indefinite lengths, undefined, NaN and Infinity are rejected as bad-cbor", () => {
  const frame = encodeMessage(vote);
  const cases: Record<string, Uint8Array> = {
    "tag 0 around the message": new Uint8Array([0xc0, ...frame]),
    "self-describe tag": new Uint8Array([0xd9, 0xd9, 0xf7, ...frame]),
    "tag 24 (embedded CBOR)": new Uint8Array([0xd8, 0x18, 0x58, frame.length, ...frame]),
    "indefinite-length message": new Uint8Array([0x9f, ...frame.subarray(1), 0xff]),
    "undefined as the view": cborEncode(withField(rawVote(), [1], undefined)),
    "NaN as the view": cborEncode(withField(rawVote(), [1], NaN)),
    "Infinity as the view": cborEncode(withField(rawVote(), [1], Infinity)),
    "-Infinity as the view": cborEncode(withField(rawVote(), [1], -Infinity)),
    "a lone break byte": new Uint8Array([0xff]),
  };
  // Indefinite-length byte string (0x5f chunks 0xff) for the vote signature.
  const head = cborEncode(rawVote().slice(0, 4)).subarray(1);
  cases["indefinite-length byte string"] = new Uint8Array([
    0x85,
    ...head,
    0x5f,
    0x58,
    32,
    ...bytes(32, 1),
    0x58,
    32,
    ...bytes(32, 2),
    0xff,
  ]);
  cases["indefinite-length text chain id"] = new Uint8Array([
    0x84,
    0x7f,
    0x61,
    0x63,
    0xff,
    ...encodeQC(qc).subarray(1 + 1 + CHAIN.length),
  ]);
  for (const [name, input] of Object.entries(cases)) {
    for (const decode of [decodeMessage, decodeNode, decodeQC] as Decoder<unknown>[]) {
      assert.equal(reasonOf(decode, input), "bad-cbor", name);
    }
  }
  assert.equal(reasonOf(decodeQC, cborEncode(withField(rawQC(qc), [1], undefined))), "bad-cbor");
});

Deno.test("codec: a Node with height 0 is rejected as bad-height (only genesis has height 0)", () => {
  assert.equal(reasonOf(decodeNode, encodeNode(genesisNode(CHAIN))), "bad-height");
  assert.equal(reasonOf(decodeNode, encodeNode({ ...node, height: 0 })), "bad-height");
  const propose = encodeMessage({ ...proposeTC, node: { ...node, height: 0 } });
  assert.equal(reasonOf(decodeMessage, propose), "bad-height");
  assert.ok(decodeNode(encodeNode({ ...node, height: 1 })).ok);
});

Deno.test("codec: decoders reject (never throw on) deeply nested arrays", () => {
  const deep = new Uint8Array(100_000).fill(0x81);
  for (const decode of [decodeMessage, decodeNode, decodeQC] as Decoder<unknown>[]) {
    assert.equal(reasonOf(decode, deep), "bad-cbor");
  }
});

Deno.test("cborArrayLength reads an array's announced count from its head alone", () => {
  for (const n of [0, 1, 23, 24, 255, 256, 65_535, 65_536]) {
    assert.equal(cborArrayLength(encodeValue(new Array(n).fill(0))), n);
  }
  // Heads whose items are not there: the count is still read, nothing is decoded.
  assert.equal(cborArrayLength(new Uint8Array([0x9a, 0x00, 0x10, 0x00, 0x00])), 1_048_576);
  assert.equal(cborArrayLength(new Uint8Array([0x9b, 0, 0, 0, 1, 0, 0, 0, 0])), 2 ** 32);
  for (const notArray of [encodeValue("x"), encodeValue(7), new Uint8Array(0)]) {
    assert.equal(cborArrayLength(notArray), null);
  }
  assert.equal(cborArrayLength(new Uint8Array([0x9f])), null, "indefinite length");
  assert.equal(cborArrayLength(new Uint8Array([0x9a, 0x00])), null, "truncated head");
});

Deno.test("codec: a Node's state root is empty or 32 bytes, and its hash covers the root", () => {
  for (const length of [0, 32]) {
    const n = { ...node, stateRoot: bytes(length, 7) };
    const r = decodeNode(encodeNode(n));
    assert.ok(r.ok, `length ${length}`);
    assert.deepEqual(r.value.stateRoot, n.stateRoot);
  }
  for (const length of [1, 31]) {
    const frame = encodeNode({ ...node, stateRoot: bytes(length, 7) });
    assert.equal(reasonOf(decodeNode, frame), "bad-length", `length ${length}`);
  }
  assert.equal(reasonOf(decodeNode, encodeNode({ ...node, stateRoot: bytes(33, 7) })), "too-large");
  const other = { ...node, stateRoot: bytes(32, 4) };
  assert.notDeepEqual(nodeHash(other), nodeHash(node));
  assert.deepEqual(genesisNode("c").stateRoot, new Uint8Array(0));
});
