/**
 * The key-value example's operator path for validator-set changes (SPECIFICATION.md 3.4).
 *
 * A change is the command `["validators", [[publicKey, power], ...], nonce, signature]`: new
 * powers by 32-byte key (power 0 removes), a nonce of at most 32 bytes (so that the same change
 * can be made twice), and the operator's Ed25519 signature over the canonical CBOR
 * `["hotstuff-kv/validators/v1", chainId, [[publicKey, power], ...], nonce]`. The operator key is
 * the cluster file's `"operator"`; a replica whose cluster names none refuses every change. The
 * command travels like any other (`POST /commands`); the Node that executes it returns the
 * updates to the protocol, which hands the set over once that Node commits. While a change is
 * being handed over, another one is refused (`validator change in progress`): submit it again
 * afterwards.
 *
 * @module
 */
import {
  type ApplyResult,
  type CommandMachine,
  decodeValue,
  encodeValue,
  type Signer,
  type ValidatorUpdate,
  type Verifier,
} from "../../mod.ts";

/** The domain of the operator's signature. */
export const KV_VALIDATORS_DOMAIN = "hotstuff-kv/validators/v1";

/** Most updates in one change command. */
export const KV_VALIDATOR_UPDATES_MAX = 64;

/** A decoded change command. */
export interface ValidatorsCommand {
  /** New powers by key. */
  readonly updates: readonly ValidatorUpdate[];
  /** The nonce. */
  readonly nonce: Uint8Array;
  /** The operator's signature. */
  readonly signature: Uint8Array;
}

/** The bytes the operator signs. */
function signedBytes(
  chainId: string,
  updates: readonly ValidatorUpdate[],
  nonce: Uint8Array,
): Uint8Array {
  const list = updates.map((u) => [u.publicKey, u.power]);
  return encodeValue([KV_VALIDATORS_DOMAIN, chainId, list, nonce]);
}

/**
 * A signed change command.
 *
 * @param operator the operator's signer (its key must be the cluster's `"operator"`)
 * @param change chain id, updates and an optional nonce (default 16 random bytes)
 * @example
 * ```ts
 * import { ed25519Signer, generateSecretKey } from "../../mod.ts";
 * import { validatorsCommand } from "./validators.ts";
 * const operator = ed25519Signer(generateSecretKey());
 * await validatorsCommand(operator, {
 *   chainId: "kv-1",
 *   updates: [{ publicKey: new Uint8Array(32).fill(5), power: 1 }],
 * });
 * ```
 */
export async function validatorsCommand(
  operator: Signer,
  change: {
    readonly chainId: string;
    readonly updates: readonly ValidatorUpdate[];
    readonly nonce?: Uint8Array;
  },
): Promise<Uint8Array> {
  const nonce = change.nonce ?? crypto.getRandomValues(new Uint8Array(16));
  const signature = await operator.sign(signedBytes(change.chainId, change.updates, nonce));
  const list = change.updates.map((u) => [u.publicKey, u.power]);
  return encodeValue(["validators", list, nonce, signature]);
}

/**
 * Decodes a change command: null when `bytes` is not one (another command), or why it is
 * malformed. Never throws.
 *
 * @example
 * ```ts
 * import { decodeValidatorsCommand } from "./validators.ts";
 * decodeValidatorsCommand(new Uint8Array([0x80])); // null: not a change command
 * ```
 */
export function decodeValidatorsCommand(
  bytes: Uint8Array,
): { ok: true; command: ValidatorsCommand } | { ok: false; reason: string } | null {
  // A change command's array head is followed by the text "validators" (cheap pre-check).
  if (bytes[0] !== 0x84 || bytes[1] !== 0x6a || bytes[2] !== 0x76) return null;
  let v: unknown;
  try {
    v = decodeValue(bytes);
  } catch {
    return null;
  }
  if (!Array.isArray(v) || v.length !== 4 || v[0] !== "validators") return null;
  const [, list, nonce, signature] = v as unknown[];
  if (!Array.isArray(list) || list.length === 0 || list.length > KV_VALIDATOR_UPDATES_MAX) {
    return { ok: false, reason: `validators needs 1..${KV_VALIDATOR_UPDATES_MAX} updates` };
  }
  const updates: ValidatorUpdate[] = [];
  for (const u of list) {
    if (
      !Array.isArray(u) || u.length !== 2 || !(u[0] instanceof Uint8Array) ||
      u[0].length !== 32 || !Number.isSafeInteger(u[1]) || (u[1] as number) < 0
    ) {
      return { ok: false, reason: "each update must be [32-byte key, power >= 0]" };
    }
    updates.push({ publicKey: u[0], power: u[1] as number });
  }
  if (!(nonce instanceof Uint8Array) || nonce.length > 32) {
    return { ok: false, reason: "nonce must be at most 32 bytes" };
  }
  if (!(signature instanceof Uint8Array) || signature.length !== 64) {
    return { ok: false, reason: "signature must be 64 bytes" };
  }
  return { ok: true, command: { updates, nonce, signature } };
}

/**
 * `machine` that also executes change commands signed by `operator` (SPECIFICATION.md 3.4):
 * each becomes the Node's validator updates. Without an operator, change commands are refused.
 *
 * @example
 * ```ts
 * import { ed25519Verifier } from "../../mod.ts";
 * import { kvMachine } from "./app.ts";
 * import { withValidatorChanges } from "./validators.ts";
 * const machine = withValidatorChanges(kvMachine, {
 *   chainId: "kv-1",
 *   operator: new Uint8Array(32),
 *   verifier: ed25519Verifier(),
 * });
 * ```
 */
export function withValidatorChanges(
  machine: CommandMachine,
  options: {
    readonly chainId: string;
    readonly operator: Uint8Array | undefined;
    readonly verifier: Verifier;
  },
): CommandMachine {
  return {
    check(command: Uint8Array): string | null {
      const change = decodeValidatorsCommand(command);
      if (change === null) return machine.check?.(command) ?? null;
      if (!change.ok) return change.reason;
      return options.operator === undefined ? "the cluster names no operator" : null;
    },
    async apply(request): Promise<ApplyResult> {
      const change = decodeValidatorsCommand(request.command);
      if (change === null) return machine.apply(request);
      if (!change.ok) return change;
      if (options.operator === undefined) {
        return { ok: false, reason: "the cluster names no operator" };
      }
      const c = change.command;
      const bytes = signedBytes(options.chainId, c.updates, c.nonce);
      if (!(await options.verifier.verify(options.operator, bytes, c.signature))) {
        return { ok: false, reason: "bad operator signature" };
      }
      return { ok: true, updates: [], validatorUpdates: c.updates };
    },
  };
}
