/**
 * HotStuff for Deno: Byzantine-fault-tolerant state machine replication with chained HotStuff
 * (Yin et al., PODC 2019). Every honest replica commits the same chain of Nodes, and a committed
 * Node never changes, while less than 1/3 of the voting power is Byzantine.
 *
 * - {@link startReplica}: a whole networked replica (Consensus TCP, NodeTree HTTP API with
 *   catch-up, Prometheus `/metrics` and the live NodeTree page at `/`, Deno KV) around your
 *   {@link Application} or a {@link CommandMachine} served by the mempool.
 * - {@link Engine}: one replica's protocol engine (the sans-I/O core plus its shell).
 * - {@link Application}: the three hooks your state machine implements.
 * - {@link runSimulation}: the deterministic simulator, to test your Application under faults.
 * - {@link DenoKvStorage} and {@link MemoryStorage}: persistence.
 * - {@link ConsensusTcp}, {@link NodeTreeHttpApi}, {@link HttpNodeSource}: the network.
 * - {@link verifyCommitProof} and {@link LightClient}: trust a commit from signatures alone.
 *
 * Deno KV is unstable in Deno 2: programs that use {@link DenoKvStorage} (as replicas do by
 * default) run with `--unstable-kv`, or with `"unstable": ["kv"]` in their `deno.json`.
 *
 * See SPECIFICATION.md for the protocol and README.md for a quick start.
 *
 * @example
 * ```ts
 * import { runSimulation } from "./mod.ts";
 * const report = await runSimulation({
 *   seed: 1,
 *   powers: [1, 1, 1, 1],
 *   faults: {
 *     dropRate: 0.05, duplicateRate: 0, delayMinMs: 1, delayMaxMs: 50,
 *     partitions: [], crashes: [], crashOnWriteRate: 0, healAt: 2000,
 *   },
 * });
 * console.log(report.safetyViolations.length === 0);
 * ```
 *
 * @module
 */
export type {
  Application,
  AppLimits,
  CommitNotice,
  EvidenceNotice,
  PendingNode,
  ProduceRequest,
  ProduceResult,
  StateRootRequest,
  StateView,
  ValidateRequest,
  ValidateResult,
} from "./src/app.ts";
export { checkValidateResult, DEFAULT_APP_LIMITS, wrapApplication } from "./src/app.ts";
export type {
  ConsensusMessage,
  Hash,
  NewViewMessage,
  Node,
  ProposeMessage,
  PublicKey,
  QuorumCertificate,
  Signature,
  SignerSignature,
  TimeoutCertificate,
  VoteMessage,
} from "./src/types.ts";
export { bytesEqual, fromHex, SignatureDomain, toHex } from "./src/types.ts";
export {
  type CodecLimits,
  decodeMessage,
  decodeNode,
  decodeQC,
  type DecodeResult,
  decodeValue,
  DEFAULT_CODEC_LIMITS,
  encodeMessage,
  encodeNode,
  encodeQC,
  encodeValue,
  genesisNode,
  genesisQC,
  nodeHash,
} from "./src/codec.ts";
export {
  deriveSecretKey,
  ed25519Signer,
  ed25519Verifier,
  generateSecretKey,
  publicKeyOf,
  type Signer,
  type Verifier,
  type VerifierOptions,
} from "./src/crypto.ts";
export { ConfigError, DecodeError, HotStuffError, ValidationError } from "./src/errors.ts";
export type { ConsensusEvent, EquivocationEvidence } from "./src/events.ts";
export {
  type LeaderSchedule,
  type QuorumCount,
  type Validator,
  ValidatorSet,
} from "./src/validators.ts";
export {
  type Clock,
  Engine,
  type EngineOptions,
  type Network,
  type NodeSource,
} from "./src/runtime/engine.ts";
export {
  Core,
  type CoreInput,
  type CoreLimits,
  type CoreOptions,
  type CoreOutput,
  type CoreRestore,
  DEFAULT_CORE_LIMITS,
  type ExecutedResult,
  type ExecuteRequest,
  type FetchRequest,
  type Outbound,
  type ProduceCommandRequest,
  type UnsignedMessage,
} from "./src/consensus/core.ts";
export { NodeTree } from "./src/consensus/node_tree.ts";
export {
  applyUpdates,
  decodeValidatorConfig,
  encodeValidatorConfig,
  type NodeConfig,
  QuorumRule,
  readValidatorConfig,
  stableConfig,
  VALIDATOR_CONFIG_KEY,
  type ValidatorConfig,
  validatorConfigHash,
  type ValidatorUpdate,
} from "./src/consensus/reconfig.ts";
export {
  type CommittedSummary,
  DEFAULT_REPUTATION_OPTIONS,
  historyNodesMax,
  reputationLeader,
  type ReputationOptions,
  summarize,
} from "./src/consensus/reputation.ts";
export {
  decodeEvidence,
  DEFAULT_EVIDENCE_LIMITS,
  DenoKvEvidenceStore,
  encodeEvidence,
  type EvidenceContext,
  type EvidenceEntry,
  type EvidenceLimits,
  evidenceOffender,
  type EvidenceRefusal,
  type EvidenceStore,
  type EvidenceVerdict,
  evidenceView,
  MemoryEvidenceStore,
  verifyEvidence,
} from "./src/evidence.ts";
export { DEFAULT_PACEMAKER_OPTIONS, type PacemakerOptions } from "./src/consensus/pacemaker.ts";
export {
  type CommittedHead,
  type SafetyState,
  type StateUpdate,
  type Storage,
  type StoredNode,
  wrapStorage,
  type WriteBatch,
} from "./src/storage/storage.ts";
export { MemoryStorage } from "./src/storage/memory.ts";
export {
  type DenoKvLimits,
  type DenoKvOptions,
  DenoKvStorage,
  type FinalCommitStep,
  type SnapshotBucket,
} from "./src/storage/deno_kv.ts";
export {
  type Adversary,
  type AdversaryApi,
  type Behaviour,
  type CrashEvent,
  type FaultPlan,
  type PartitionWindow,
  runSimulation,
  type SimChange,
  type SimOptions,
  type SimReport,
} from "./src/testing/sim.ts";
export {
  crashStormScenario,
  forgerScenario,
  forkerScenario,
  mixedScenario,
  quietFaults,
  type ScenarioOptions,
} from "./src/testing/scenario.ts";
export { type TwinsOptions, twinsScenario } from "./src/testing/twins.ts";
export { ConsensusTcp } from "./src/net/tcp.ts";
export type { BatchHandler, ConsensusTcpOptions, MessageHandler } from "./src/net/tcp.ts";
export type {
  ConnectionLimits,
  ListenAddress,
  NetLog,
  NetworkOptions,
  PeerAddress,
  PeerStatus,
} from "./src/net/connections.ts";
export {
  type ChainWithConfigs,
  DEFAULT_HTTP_API_LIMITS,
  type HttpApiLimits,
  type HttpApiOptions,
  NodeTreeHttpApi,
  type NodeTreeView,
  type NodeWithCertificate,
} from "./src/net/http.ts";
export {
  type FetchTarget,
  HttpNodeSource,
  type HttpNodeSourceOptions,
  type HttpPeer,
  type HttpPeerStatus,
} from "./src/net/catchup.ts";
export {
  Admission,
  type AdmissionAuth,
  type AdmissionLimits,
  type AdmissionOptions,
  type AdmissionStats,
  AUTH_HEADER,
  DEFAULT_ADMISSION_LIMITS,
  type Refusal,
  type RouteClass,
  signRequest,
  type Ticket,
} from "./src/net/admission.ts";
export type { Membership } from "./src/net/handshake.ts";
export {
  errorResponse,
  jsonResponse,
  readBodyLimited,
  readQuery,
  RouteError,
} from "./src/net/http.ts";
export {
  Replica,
  type ReplicaEvent,
  type ReplicaHttpOptions,
  type ReplicaMempoolOptions,
  type ReplicaNetworkOptions,
  type ReplicaOptions,
  type ReplicaPeer,
  type ReplicaRoutes,
  startReplica,
  type SubmittedCommand,
} from "./src/runtime/replica.ts";
export {
  configureJsonLogging,
  isLogLevel,
  type JsonLineRecord,
  jsonLineSink,
  LOG_CATEGORY,
  type LogLevel,
} from "./src/runtime/log.ts";
export { type MetricsSource, ReplicaMetrics } from "./src/runtime/metrics.ts";
export { systemClock } from "./src/runtime/clock.ts";
export { PROGRESS_INTERVAL_MS, ProgressTicker } from "./src/runtime/progress.ts";
export {
  type ApplyRequest,
  type ApplyResult,
  batchDigest,
  type BatchLimits,
  type BatchStore,
  commandId,
  type CommandMachine,
  type CommittedCommand,
  decodeBatch,
  decodeDigests,
  decodeEntryList,
  DEFAULT_BATCH_LIMITS,
  encodeBatch,
  encodeDigests,
  MemoryBatchStore,
  Mempool,
  MempoolError,
  type MempoolOptions,
  type MempoolRestore,
  type PoolCommand,
  type SubmitResult,
} from "./src/runtime/mempool.ts";
export { DenoKvBatchStore } from "./src/storage/batches.ts";
// The command-line building blocks (also the package's `./cli` entry), for replica programs such
// as the key-value example's.
export {
  type ClusterConfig,
  type ClusterValidator,
  EXIT_USAGE,
  type FlagSpec,
  formatClusterConfig,
  formatHostPort,
  type HostPort,
  initCluster,
  initMain,
  type InitOptions,
  type InitResult,
  intFlag,
  LAN_VIEW_TIMEOUT_MAX_MS,
  LAN_VIEW_TIMEOUT_MIN_MS,
  parseClusterConfig,
  parseFlags,
  parseHostPort,
  parseSecretKey,
  readClusterConfig,
  readSecretKey,
  replicaMain,
  type ReplicaProgram,
  requireFlag,
  runMain,
  VALIDATORS_MAX,
  validatorSetOf,
} from "./src/cli/mod.ts";
export {
  buildCommitProof,
  COMMIT_PROOF_NODES_MAX,
  type CommitProof,
  CommitProofDecodeError,
  type CommitProofRejection,
  type CommitTrust,
  type CommitVerdict,
  decodeCommitProof,
  encodeCommitProof,
  type ProvenNode,
  verifyCommitProof,
} from "./src/light/commit_proof.ts";
export {
  LightClient,
  type LightClientOptions,
  type ProvenValue,
  type SourceRefusal,
  type VerifiedHead,
} from "./src/light/client.ts";
export {
  decodeKeyProof,
  encodeKeyProof,
  type KeyProof,
  KeyProofDecodeError,
  type KeyProofVerdict,
  type StateAnchor,
  stateAnchor,
  verifyKeyProof,
} from "./src/light/state_proof.ts";
export {
  checkChunk,
  type CheckedChunk,
  type CheckedEntry,
  EMPTY_STATE_ROOT,
  type StateEntry,
  StateOverlay,
  type StateProof,
  type StateProofVerdict,
  StateTree,
  StateVersion,
  verifyChunk,
  verifyStateProof,
} from "./src/state/tree.ts";
export {
  type AnchoredCheckpoint,
  type ChainAccess,
  type Checkpoint,
  StateService,
  type StateServiceOptions,
} from "./src/state/service.ts";
export { STATE_ROOT_OVERLAYS_MAX, StateRoots, withStateRoots } from "./src/state/roots.ts";
