/**
 * `deno task init`: creates a cluster: `DIR/cluster.json`, one secret key file per replica
 * (`DIR/replica-i.key`, mode 0600) and the operator's key (`DIR/operator.key`, mode 0600).
 *
 * ```
 * deno task init --replicas N --dir DIR [--base-port P] [--powers 1,1,2,...] [--joining J]
 *                [--host 127.0.0.1 | --hosts H0,H1,...] [--chain-id ID] [--plaintext] [--force]
 * ```
 *
 * Validator-set changes (SPECIFICATION.md 3.4): `--joining J` adds J more replicas
 * (`replica-N` ...) marked `"joins": true`: members that follow the chain but are not validators
 * until a change adds them. The cluster file names the operator's public key (`"operator"`); a
 * change signed by it is proposed with
 * `deno task validators --config DIR/cluster.json --operator-key DIR/operator.key --set
 * replica-4=1,replica-0=0` (add replica-4 with power 1, remove replica-0; see
 * `examples/kv_store/operator.ts`). Keep `operator.key` away from the replicas' machines.
 *
 * Replica `i` gets the consensus address `host:(P + 2i)` and the HTTP address `host:(P + 2i + 1)`
 * (base port 9000 by default). With `--hosts` (one host per replica, for replicas on separate
 * machines) replica `i` gets `Hi:P` and `Hi:(P + 1)` instead.
 *
 * The cluster's consensus links are encrypted (`"links": "encrypted"`: an X25519 key exchange
 * signed by the validator keys, then AES-256-GCM; nothing else to generate). `--plaintext`
 * writes `"links": "plaintext"` instead, for local tests only. Existing files are not overwritten unless `--force`. Bad flags
 * print one line and exit 2.
 *
 * @module
 */
import { generateSecretKey, publicKeyOf } from "../crypto.ts";
import { ConfigError } from "../errors.ts";
import { toHex } from "../types.ts";
import {
  type ClusterConfig,
  type ClusterValidator,
  formatClusterConfig,
  type HostPort,
  parseClusterConfig,
  VALIDATORS_MAX,
} from "./config.ts";
import { intFlag, parseFlags, requireFlag, runMain } from "./flags.ts";

/**
 * Options of {@link initCluster}.
 *
 * @example
 * ```ts
 * import { initCluster, type InitOptions } from "./init.ts";
 * const options: InitOptions = { replicas: 4, dir: await Deno.makeTempDir(), basePort: 9000 };
 * const result = await initCluster(options);
 * ```
 */
export interface InitOptions {
  /** Number of replicas, 1 to 256. */
  readonly replicas: number;
  /** Directory to write into (created if missing). */
  readonly dir: string;
  /** Host of every address. Default `127.0.0.1`. */
  readonly host?: string;
  /**
   * One host per replica (replicas on separate machines): replica i listens on `hosts[i]`, at
   * `basePort` (consensus) and `basePort + 1` (HTTP). Excludes `host`.
   */
  readonly hosts?: readonly string[];
  /** First port: replica i uses base + 2i (consensus) and base + 2i + 1 (HTTP). Default 9000. */
  readonly basePort?: number;
  /** Explicit ports per replica (instead of `basePort`). */
  readonly ports?: ReadonlyArray<{ readonly consensus: number; readonly http: number }>;
  /** Voting powers, one per replica. Default all 1. */
  readonly powers?: readonly number[];
  /** Chain id. Default `kv-` and 8 random hex digits. */
  readonly chainId?: string;
  /** Overwrite existing files. */
  readonly force?: boolean;
  /** Plaintext consensus links (local tests only). Default: encrypted. */
  readonly plaintext?: boolean;
  /** Replicas that are members but join the validator set later (after the `replicas`). */
  readonly joining?: number;
}

/**
 * What {@link initCluster} wrote.
 *
 * @example
 * ```ts
 * import { initCluster, type InitResult } from "./init.ts";
 * const result: InitResult = await initCluster({ replicas: 4, dir: await Deno.makeTempDir() });
 * console.log(result.keyPaths.length); // 4
 * ```
 */
export interface InitResult {
  /** The cluster file. */
  readonly configPath: string;
  /** Key file of each replica, in validator order. */
  readonly keyPaths: string[];
  /** The operator's key file (authorises validator-set changes). */
  readonly operatorKeyPath: string;
  /** The cluster written. */
  readonly config: ClusterConfig;
}

/**
 * Writes a cluster file and its key files.
 *
 * @throws {ConfigError} on bad options or when a file exists (without `force`)
 * @example
 * ```ts
 * import { initCluster } from "./init.ts";
 * const dir = await Deno.makeTempDir();
 * const { configPath } = await initCluster({ replicas: 4, dir });
 * console.log(configPath);
 * ```
 */
export async function initCluster(options: InitOptions): Promise<InitResult> {
  const genesis = options.replicas;
  const joining = options.joining ?? 0;
  const n = genesis + joining;
  if (!Number.isSafeInteger(genesis) || genesis < 1 || n > VALIDATORS_MAX) {
    throw new ConfigError("bad-flag", `--replicas must be an integer 1..${VALIDATORS_MAX}: ${n}`);
  }
  if (!Number.isSafeInteger(joining) || joining < 0) {
    throw new ConfigError("bad-flag", `--joining must be a non-negative integer: ${joining}`);
  }
  const genesisPowers = options.powers ?? Array<number>(genesis).fill(1);
  if (genesisPowers.length !== genesis) {
    throw new ConfigError(
      "bad-flag",
      `--powers has ${genesisPowers.length} values for ${genesis} replicas`,
    );
  }
  const powers = [...genesisPowers, ...Array<number>(joining).fill(1)];
  const hosts = hostsOf(options, n);
  const ports = options.ports ??
    (options.hosts === undefined
      ? portsFrom(options.basePort ?? 9000, n)
      : Array.from({ length: n }, () => portsFrom(options.basePort ?? 9000, 1)[0]!));
  const chainId = options.chainId ?? `kv-${toHex(crypto.getRandomValues(new Uint8Array(4)))}`;
  const secrets = Array.from({ length: n }, () => generateSecretKey());
  const validators: ClusterValidator[] = secrets.map((secret, i) => ({
    name: `replica-${i}`,
    publicKey: publicKeyOf(secret),
    power: powers[i]!,
    consensus: { hostname: hosts[i]!, port: ports[i]!.consensus } satisfies HostPort,
    http: { hostname: hosts[i]!, port: ports[i]!.http } satisfies HostPort,
    ...(i >= genesis ? { joins: true } : {}),
  }));
  const links = options.plaintext === true ? "plaintext" : "encrypted";
  const operatorSecret = generateSecretKey();
  const config: ClusterConfig = {
    chainId,
    validators,
    links,
    operator: publicKeyOf(operatorSecret),
  };
  const text = formatClusterConfig(config);
  // Whatever we write must read back: the same strict checks as `deno task replica`.
  parseClusterConfig(text, "the generated cluster file");
  await Deno.mkdir(options.dir, { recursive: true });
  const configPath = `${options.dir}/cluster.json`;
  const keyPaths = validators.map((v) => `${options.dir}/${v.name}.key`);
  const operatorKeyPath = `${options.dir}/operator.key`;
  if (options.force !== true) {
    for (const path of [configPath, ...keyPaths, operatorKeyPath]) await refuseExisting(path);
  }
  const keys = [
    ...keyPaths.map((p, i) => [p, secrets[i]!] as const),
    [
      operatorKeyPath,
      operatorSecret,
    ] as const,
  ];
  for (const [path, secret] of keys) {
    await Deno.writeTextFile(path, `${toHex(secret)}\n`, { mode: 0o600 });
    await Deno.chmod(path, 0o600);
  }
  await Deno.writeTextFile(configPath, text);
  return { configPath, keyPaths, operatorKeyPath, config };
}

function hostsOf(options: InitOptions, n: number): string[] {
  if (options.hosts === undefined) return Array<string>(n).fill(options.host ?? "127.0.0.1");
  if (options.host !== undefined) {
    throw new ConfigError("bad-flag", "give either --host or --hosts, not both");
  }
  if (options.hosts.length !== n) {
    throw new ConfigError(
      "bad-flag",
      `--hosts has ${options.hosts.length} hosts for ${n} replicas`,
    );
  }
  return [...options.hosts];
}

function portsFrom(base: number, n: number): Array<{ consensus: number; http: number }> {
  if (!Number.isSafeInteger(base) || base < 1 || base + 2 * n - 1 > 65535) {
    throw new ConfigError(
      "bad-flag",
      `--base-port ${base} leaves no room for ${2 * n} ports up to 65535`,
    );
  }
  return Array.from({ length: n }, (_, i) => ({ consensus: base + 2 * i, http: base + 2 * i + 1 }));
}

async function refuseExisting(path: string): Promise<void> {
  try {
    await Deno.lstat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return;
    throw e;
  }
  throw new ConfigError("exists", `${path} already exists (use --force to overwrite)`);
}

function parsePowers(text: string): number[] {
  return text.split(",").map((p) => {
    const n = /^[0-9]{1,15}$/.test(p.trim()) ? Number(p.trim()) : NaN;
    if (!Number.isSafeInteger(n) || n <= 0) {
      throw new ConfigError("bad-flag", `--powers must be positive integers: ${JSON.stringify(p)}`);
    }
    return n;
  });
}

const FLAGS = {
  replicas: { type: "string" },
  dir: { type: "string" },
  "base-port": { type: "string" },
  powers: { type: "string" },
  host: { type: "string" },
  hosts: { type: "string" },
  "chain-id": { type: "string" },
  joining: { type: "string" },
  force: { type: "boolean" },
  plaintext: { type: "boolean" },
} as const;

/**
 * The `init` command: parses flags, writes the cluster, prints what it wrote. Returns the exit
 * code.
 *
 * @throws {ConfigError} on bad flags
 * @example
 * ```ts
 * import { initMain } from "./init.ts";
 * const dir = await Deno.makeTempDir();
 * const code = await initMain(["--replicas", "4", "--dir", dir]);
 * console.log(code); // 0
 * ```
 */
export async function initMain(args: readonly string[]): Promise<number> {
  const f = parseFlags(args, FLAGS);
  const dir = requireFlag(f, "dir");
  const replicas = intFlag(f, "replicas", 1, VALIDATORS_MAX, NaN);
  if (Number.isNaN(replicas)) throw new ConfigError("bad-flag", "missing required flag --replicas");
  const basePort = intFlag(f, "base-port", 1, 65535, 9000);
  const powers = typeof f.powers === "string" ? parsePowers(f.powers) : undefined;
  const host = typeof f.host === "string" ? f.host : undefined;
  const hosts = typeof f.hosts === "string" ? f.hosts.split(",").map((h) => h.trim()) : undefined;
  const chainId = typeof f["chain-id"] === "string" ? f["chain-id"] : undefined;
  const joining = intFlag(f, "joining", 0, VALIDATORS_MAX, 0);
  const r = await initCluster({
    joining,
    replicas,
    dir,
    basePort,
    powers,
    host,
    hosts,
    chainId,
    force: f.force === true,
    plaintext: f.plaintext === true,
  });
  console.log(
    `wrote ${r.configPath} (chain ${r.config.chainId}, ${replicas} replicas, ` +
      `${r.config.links} consensus links)`,
  );
  for (const [i, v] of r.config.validators.entries()) {
    console.log(
      `  ${v.name}: power ${v.power}, consensus ${v.consensus.hostname}:${v.consensus.port}, ` +
        `http ${v.http.hostname}:${v.http.port}, key ${r.keyPaths[i]} (mode 0600)` +
        (v.joins === true ? ", joins later" : ""),
    );
  }
  console.log(
    `  operator key ${r.operatorKeyPath} (mode 0600): signs validator-set changes, e.g.\n` +
      `    deno task validators --config ${r.configPath} --operator-key ${r.operatorKeyPath} ` +
      `--set replica-1=2\n` +
      `  (NAME=POWER, comma-separated; power 0 removes; a "joins" member is added by giving it ` +
      `a power once its replica runs)`,
  );
  return 0;
}

if (import.meta.main) await runMain(() => initMain(Deno.args), "init");
