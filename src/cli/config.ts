/**
 * The cluster file (`cluster.json`) and secret key files that `deno task init` writes and
 * `deno task replica` reads, with strict validation: every problem is a {@link ConfigError} whose
 * message names the file, the field and the offending value.
 *
 * ## `cluster.json`
 *
 * ```json
 * {
 *   "chainId": "kv-3f9c0a1b",
 *   "validators": [
 *     {
 *       "name": "replica-0",
 *       "publicKey": "64 hex digits",
 *       "power": 1,
 *       "consensus": "127.0.0.1:9000",
 *       "http": "127.0.0.1:9001"
 *     }
 *   ],
 *   "links": "encrypted"
 * }
 * ```
 *
 * `links` is optional: `"encrypted"` (the default when absent) or `"plaintext"`. Every replica of
 * a cluster must use the same (a replica refuses a peer of the other kind, `link-mode-mismatch`).
 * `leaderReputation` is optional: `true` (the default when absent: SPECIFICATION.md 3.5) or `false`
 * (the plain weighted schedule, 3.3); every replica reads it from the same file.
 *
 * Validator-set changes (SPECIFICATION.md 3.4): an entry with `"joins": true` is a member of the
 * cluster (it connects, follows the chain and catches up) outside the genesis validator set; it
 * votes once a change adds it. The optional top-level `"operator"` (64 hex digits) is the public
 * key whose signature the key-value example requires on a validator-set change command
 * (`examples/kv_store/operator.ts`); without it, such commands are refused.
 *
 * Rules: no other fields; `chainId` 1 to 64 UTF-8 bytes; 1 to {@link VALIDATORS_MAX}
 * validators; names 1 to 64 characters of `[A-Za-z0-9._-]`, distinct; public keys exactly 64 hex
 * digits, distinct; power a positive integer (total at most `TOTAL_POWER_MAX`); addresses
 * `host:port` with a port 1 to 65535 (`[v6]:port` for IPv6), each used once.
 *
 * ## Key files
 *
 * One per replica, mode 0600: the 32-byte Ed25519 secret key as 64 hex digits and a newline.
 *
 * @module
 */
import { publicKeyOf } from "../crypto.ts";
import { ConfigError } from "../errors.ts";
import { fromHex, toHex } from "../types.ts";
import { ValidatorSet } from "../validators.ts";

/**
 * Most validators in a cluster file.
 *
 * @example
 * ```ts
 * import { VALIDATORS_MAX } from "./config.ts";
 * console.log(VALIDATORS_MAX); // 256 validators at most in a cluster file
 * ```
 */
export const VALIDATORS_MAX = 256;

/**
 * A `host:port` address.
 *
 * @example
 * ```ts
 * import { formatHostPort, type HostPort } from "./config.ts";
 * const at: HostPort = { hostname: "10.0.0.2", port: 9000 };
 * console.log(formatHostPort(at)); // "10.0.0.2:9000"
 * ```
 */
export interface HostPort {
  /** Host name or IP address (without brackets). */
  readonly hostname: string;
  /** TCP port, 1 to 65535 (0 only where a listen address allows it). */
  readonly port: number;
}

/**
 * One validator of the cluster file.
 *
 * @example
 * ```ts
 * import type { ClusterValidator } from "./config.ts";
 * const v: ClusterValidator = {
 *   name: "replica-0",
 *   publicKey: new Uint8Array(32),
 *   power: 1,
 *   consensus: { hostname: "10.0.0.1", port: 9000 },
 *   http: { hostname: "10.0.0.1", port: 9001 },
 * };
 * ```
 */
export interface ClusterValidator {
  /** A short name for logs, e.g. `replica-0`. */
  readonly name: string;
  /** Ed25519 public key. */
  readonly publicKey: Uint8Array;
  /** Voting power. */
  readonly power: number;
  /** Where its Consensus TCP API listens. */
  readonly consensus: HostPort;
  /** Where its HTTP API listens. */
  readonly http: HostPort;
  /** Not in the genesis validator set: it may join through a validator-set change. */
  readonly joins?: boolean;
}

/**
 * The cluster file.
 *
 * @example
 * ```ts
 * import { type ClusterConfig, formatClusterConfig } from "./config.ts";
 * const config: ClusterConfig = { chainId: "my-chain", validators: [], links: "encrypted" };
 * console.log(typeof formatClusterConfig); // "function": writes cluster.json text
 * ```
 */
export interface ClusterConfig {
  /** Chain id. */
  readonly chainId: string;
  /** The validators, in file order. */
  readonly validators: readonly ClusterValidator[];
  /** Consensus links: encrypted (`link_cipher.ts`; the default when absent) or plaintext. */
  readonly links?: "encrypted" | "plaintext";
  /** The key that authorises validator-set changes (the key-value example's operator path). */
  readonly operator?: Uint8Array;
  /** Leader reputation (SPECIFICATION.md 3.5); absent means on. */
  readonly leaderReputation?: boolean;
}

const NAME = /^[A-Za-z0-9._-]{1,64}$/;
const HEX64 = /^[0-9a-fA-F]{64}$/;
const HOST = /^[A-Za-z0-9.-]{1,253}$/;
const IPV6 = /^[0-9A-Fa-f:.]{2,45}$/;
const PORT = /^[0-9]{1,5}$/;

/**
 * Parses `host:port` (or `[v6]:port`).
 *
 * @param text the address
 * @param what what it is, for the error message
 * @param options `allowZero`: accept port 0 (listen addresses: the OS chooses)
 * @throws {ConfigError} `bad-address`
 * @example
 * ```ts
 * import { parseHostPort } from "./config.ts";
 * parseHostPort("127.0.0.1:9000", "--listen-http"); // { hostname: "127.0.0.1", port: 9000 }
 * ```
 */
export function parseHostPort(
  text: string,
  what: string,
  options: { allowZero?: boolean } = {},
): HostPort {
  const bad = (why: string): ConfigError =>
    new ConfigError("bad-address", `${what}: ${why}: ${JSON.stringify(text)}`);
  if (typeof text !== "string") throw bad("must be a string host:port");
  const colon = text.lastIndexOf(":");
  if (colon < 0) throw bad("must be host:port");
  let hostname = text.slice(0, colon);
  const portText = text.slice(colon + 1);
  if (hostname.startsWith("[") && hostname.endsWith("]")) {
    hostname = hostname.slice(1, -1);
    if (!IPV6.test(hostname)) throw bad("bad IPv6 address");
  } else if (!HOST.test(hostname)) {
    throw bad("bad host");
  }
  const min = options.allowZero === true ? 0 : 1;
  const port = PORT.test(portText) ? Number(portText) : NaN;
  if (!Number.isInteger(port) || port < min || port > 65535) {
    throw bad(`port must be an integer ${min}..65535`);
  }
  return { hostname, port };
}

/**
 * Formats an address as `host:port` (brackets around IPv6).
 *
 * @example
 * ```ts
 * import { formatHostPort } from "./config.ts";
 * formatHostPort({ hostname: "::1", port: 1 }); // "[::1]:1"
 * ```
 */
export function formatHostPort(a: HostPort): string {
  return a.hostname.includes(":") ? `[${a.hostname}]:${a.port}` : `${a.hostname}:${a.port}`;
}

/**
 * Parses and validates the text of a cluster file.
 *
 * @param text the file's contents
 * @param source the file name, for error messages
 * @throws {ConfigError} naming the first problem
 * @example
 * ```ts
 * import { parseClusterConfig } from "./config.ts";
 * try {
 *   parseClusterConfig("{}", "cluster.json");
 * } catch (e) {
 *   console.log((e as Error).message); // cluster.json: chainId: ...
 * }
 * ```
 */
export function parseClusterConfig(text: string, source: string): ClusterConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ConfigError("bad-json", `${source}: not valid JSON: ${(e as Error).message}`);
  }
  const fail = (reason: string, message: string): never => {
    throw new ConfigError(reason, `${source}: ${message}`);
  };
  const top = record(raw, "the top level", fail);
  onlyFields(top, ["chainId", "validators"], "the top level", fail, [
    "links",
    "operator",
    "leaderReputation",
  ]);
  const operator = top.operator;
  if (operator !== undefined && (typeof operator !== "string" || !HEX64.test(operator))) {
    fail("bad-operator", `operator must be 64 hex digits: ${JSON.stringify(operator)}`);
  }
  const reputation = top.leaderReputation;
  if (reputation !== undefined && typeof reputation !== "boolean") {
    fail("bad-leader-reputation", `leaderReputation must be true or false`);
  }
  const links = top.links;
  if (links !== undefined && links !== "encrypted" && links !== "plaintext") {
    fail("bad-links", `links must be "encrypted" or "plaintext": ${JSON.stringify(links)}`);
  }
  const chainId = top.chainId;
  if (typeof chainId !== "string" || chainId.length === 0) {
    fail("bad-chain-id", `chainId must be a non-empty string: ${JSON.stringify(chainId)}`);
  }
  if (new TextEncoder().encode(chainId as string).length > 64) {
    fail("bad-chain-id", "chainId must be at most 64 bytes");
  }
  const list = top.validators;
  if (!Array.isArray(list) || list.length === 0 || list.length > VALIDATORS_MAX) {
    fail("bad-validators", `validators must be an array of 1..${VALIDATORS_MAX} entries`);
  }
  const validators = (list as unknown[]).map((v, i) => parseValidator(v, i, fail));
  checkDistinct(validators, fail);
  try {
    validatorSetOf({ chainId: chainId as string, validators });
    genesisSetOf({ chainId: chainId as string, validators });
  } catch (e) {
    fail((e as ConfigError).reason ?? "bad-validators", (e as Error).message);
  }
  return {
    chainId: chainId as string,
    validators,
    ...(links === undefined ? {} : { links: links as "encrypted" | "plaintext" }),
    ...(operator === undefined ? {} : { operator: fromHex(operator as string)! }),
    ...(reputation === undefined ? {} : { leaderReputation: reputation as boolean }),
  };
}

type Fail = (reason: string, message: string) => never;

function record(v: unknown, what: string, fail: Fail): Record<string, unknown> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    fail("bad-type", `${what} must be an object`);
  }
  return v as Record<string, unknown>;
}

function onlyFields(
  o: Record<string, unknown>,
  allowed: string[],
  what: string,
  fail: Fail,
  optional: readonly string[] = [],
): void {
  for (const k of Object.keys(o)) {
    if (!allowed.includes(k) && !optional.includes(k)) {
      fail("unknown-field", `${what}: unknown field ${JSON.stringify(k)}`);
    }
  }
  for (const k of allowed) if (!(k in o)) fail("missing-field", `${what}: missing field ${k}`);
}

function parseValidator(v: unknown, i: number, fail: Fail): ClusterValidator {
  const what = `validators[${i}]`;
  const o = record(v, what, fail);
  onlyFields(o, ["name", "publicKey", "power", "consensus", "http"], what, fail, ["joins"]);
  if (o.joins !== undefined && typeof o.joins !== "boolean") {
    fail("bad-joins", `${what}.joins must be true or false: ${JSON.stringify(o.joins)}`);
  }
  if (typeof o.name !== "string" || !NAME.test(o.name)) {
    fail(
      "bad-name",
      `${what}.name must be 1..64 characters of A-Z a-z 0-9 . _ -: ${JSON.stringify(o.name)}`,
    );
  }
  if (typeof o.publicKey !== "string" || !HEX64.test(o.publicKey)) {
    fail("bad-key", `${what}.publicKey must be 64 hex digits: ${JSON.stringify(o.publicKey)}`);
  }
  if (typeof o.power !== "number" || !Number.isSafeInteger(o.power) || o.power <= 0) {
    fail("bad-power", `${what}.power must be a positive integer: ${JSON.stringify(o.power)}`);
  }
  const address = (field: "consensus" | "http"): HostPort => {
    try {
      return parseHostPort(o[field] as string, `${what}.${field}`);
    } catch (e) {
      return fail("bad-address", (e as Error).message);
    }
  };
  return {
    name: o.name as string,
    publicKey: fromHex(o.publicKey as string)!,
    power: o.power as number,
    consensus: address("consensus"),
    http: address("http"),
    ...(o.joins === true ? { joins: true } : {}),
  };
}

function checkDistinct(validators: readonly ClusterValidator[], fail: Fail): void {
  const names = new Set<string>();
  const keys = new Set<string>();
  const addresses = new Set<string>();
  for (const [i, v] of validators.entries()) {
    if (names.has(v.name)) fail("duplicate-name", `validators[${i}]: duplicate name ${v.name}`);
    names.add(v.name);
    const key = toHex(v.publicKey);
    if (keys.has(key)) fail("duplicate-key", `validators[${i}]: duplicate publicKey ${key}`);
    keys.add(key);
    for (const a of [v.consensus, v.http]) {
      const text = formatHostPort(a);
      if (addresses.has(text)) {
        fail("duplicate-address", `validators[${i}]: address ${text} is used twice`);
      }
      addresses.add(text);
    }
  }
}

/**
 * The cluster file's JSON text (what {@link parseClusterConfig} reads back).
 *
 * @example
 * ```ts
 * import { formatClusterConfig } from "./config.ts";
 * formatClusterConfig({ chainId: "c", validators: [] });
 * ```
 */
export function formatClusterConfig(config: ClusterConfig): string {
  const validators = config.validators.map((v) => ({
    name: v.name,
    publicKey: toHex(v.publicKey),
    power: v.power,
    consensus: formatHostPort(v.consensus),
    http: formatHostPort(v.http),
    ...(v.joins === true ? { joins: true } : {}),
  }));
  const links = config.links === undefined ? {} : { links: config.links };
  const operator = config.operator === undefined ? {} : { operator: toHex(config.operator) };
  const reputation = config.leaderReputation === undefined
    ? {}
    : { leaderReputation: config.leaderReputation };
  return JSON.stringify(
    { chainId: config.chainId, validators, ...links, ...operator, ...reputation },
    null,
    2,
  ) + "\n";
}

/**
 * The genesis validator set of a cluster: its entries without `"joins": true`.
 *
 * @throws {ConfigError} when every entry joins later, or from {@link ValidatorSet}
 * @example
 * ```ts
 * import { type ClusterConfig, genesisSetOf } from "./config.ts";
 * function genesisPower(config: ClusterConfig): number {
 *   return genesisSetOf(config).totalPower;
 * }
 * ```
 */
export function genesisSetOf(config: ClusterConfig): ValidatorSet {
  const genesis = config.validators.filter((v) => v.joins !== true);
  if (genesis.length === 0) {
    throw new ConfigError("no-genesis-validators", "every validator joins later");
  }
  return new ValidatorSet(genesis.map((v) => ({ publicKey: v.publicKey, power: v.power })));
}

/**
 * Every member of a cluster (the genesis validators and those that join later), as a set: who
 * may connect and sign catch-up requests.
 *
 * @throws {ConfigError} from {@link ValidatorSet} (e.g. total power overflow)
 * @example
 * ```ts
 * import { readClusterConfig, validatorSetOf } from "./config.ts";
 * import { initCluster } from "./init.ts";
 * const dir = await Deno.makeTempDir();
 * await initCluster({ replicas: 4, dir });
 * console.log(validatorSetOf(await readClusterConfig(`${dir}/cluster.json`)).totalPower); // 4
 * ```
 */
export function validatorSetOf(config: ClusterConfig): ValidatorSet {
  return new ValidatorSet(
    config.validators.map((v) => ({ publicKey: v.publicKey, power: v.power })),
  );
}

/**
 * Reads and validates a cluster file.
 *
 * @throws {ConfigError} `unreadable` or a parse problem
 * @example
 * ```ts
 * import { readClusterConfig } from "./config.ts";
 * import { initCluster } from "./init.ts";
 * const dir = await Deno.makeTempDir();
 * await initCluster({ replicas: 4, dir });
 * const config = await readClusterConfig(`${dir}/cluster.json`);
 * console.log(config.validators.length); // 4
 * ```
 */
export async function readClusterConfig(path: string): Promise<ClusterConfig> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new ConfigError("unreadable", `${path}: cannot read: ${(e as Error).message}`);
  }
  return parseClusterConfig(text, path);
}

/**
 * Parses a key file's text: 64 hex digits (surrounding white space ignored).
 *
 * @throws {ConfigError} `bad-key-file`
 * @example
 * ```ts
 * import { parseSecretKey } from "./config.ts";
 * parseSecretKey("00".repeat(32) + "\n", "k.key").length; // 32
 * ```
 */
export function parseSecretKey(text: string, source: string): Uint8Array {
  const hex = text.trim();
  if (!HEX64.test(hex)) {
    throw new ConfigError("bad-key-file", `${source}: must hold a secret key as 64 hex digits`);
  }
  return fromHex(hex)!;
}

/**
 * Reads a key file and finds its validator in the cluster.
 *
 * @throws {ConfigError} `unreadable`, `bad-key-file`, `unknown-key` (no validator has its key)
 * @example
 * ```ts
 * import { readClusterConfig, readSecretKey } from "./config.ts";
 * import { initCluster } from "./init.ts";
 * const dir = await Deno.makeTempDir();
 * await initCluster({ replicas: 4, dir });
 * const config = await readClusterConfig(`${dir}/cluster.json`);
 * const { index } = await readSecretKey(`${dir}/replica-0.key`, config);
 * console.log(index); // 0
 * ```
 */
export async function readSecretKey(
  path: string,
  config: ClusterConfig,
): Promise<{ secretKey: Uint8Array; index: number }> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new ConfigError("unreadable", `${path}: cannot read: ${(e as Error).message}`);
  }
  const secretKey = parseSecretKey(text, path);
  const publicKey = toHex(publicKeyOf(secretKey));
  const index = config.validators.findIndex((v) => toHex(v.publicKey) === publicKey);
  if (index < 0) {
    throw new ConfigError(
      "unknown-key",
      `${path}: its public key ${publicKey} is not a validator of the cluster file`,
    );
  }
  return { secretKey, index };
}
