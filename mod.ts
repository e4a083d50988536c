/**
 * HotStuff for Deno: Byzantine-fault-tolerant state machine replication with chained HotStuff
 * (Yin et al., PODC 2019). Every honest replica commits the same chain of Nodes, and a committed
 * Node never changes, while less than 1/3 of the voting power is Byzantine.
 *
 * - {@link Engine}: one replica's protocol engine (the sans-I/O core plus its shell).
 * - {@link Application}: the three hooks your state machine implements.
 * - {@link runSimulation}: the deterministic simulator, to test your Application under faults.
 * - {@link DenoKvStorage} and {@link MemoryStorage}: persistence.
 * - {@link ConsensusTcp}, {@link NodeTreeHttpApi}, {@link HttpNodeSource}: the network.
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
  ProduceRequest,
  ProduceResult,
  StateView,
  ValidateRequest,
  ValidateResult,
} from "./src/app.ts";
export { checkValidateResult, DEFAULT_APP_LIMITS } from "./src/app.ts";
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
} from "./src/engine.ts";
export {
  Core,
  type CoreInput,
  type CoreLimits,
  type CoreOptions,
  type CoreOutput,
  type CoreRestore,
  DEFAULT_CORE_LIMITS,
  type ExecuteRequest,
  type FetchRequest,
  type Outbound,
  type ProduceCommandRequest,
  type UnsignedMessage,
} from "./src/consensus/core.ts";
export { NodeTree } from "./src/consensus/node_tree.ts";
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
export { DenoKvStorage } from "./src/storage/deno_kv.ts";
export {
  type Adversary,
  type AdversaryApi,
  type Behaviour,
  type CrashEvent,
  type FaultPlan,
  type PartitionWindow,
  runSimulation,
  type SimOptions,
  type SimReport,
} from "./src/sim/sim.ts";
export {
  crashStormScenario,
  forgerScenario,
  forkerScenario,
  mixedScenario,
  quietFaults,
  type ScenarioOptions,
} from "./src/sim/scenario.ts";
export { type TwinsOptions, twinsScenario } from "./src/sim/twins.ts";
export { ConsensusTcp } from "./src/net/tcp.ts";
export type { BatchHandler, MessageHandler } from "./src/net/tcp.ts";
export type { ConnectionLimits, ListenAddress, NetLog, PeerStatus } from "./src/net/connections.ts";
export {
  DEFAULT_HTTP_API_LIMITS,
  type HttpApiLimits,
  type HttpApiOptions,
  NodeTreeHttpApi,
  type NodeTreeView,
  type NodeWithCertificate,
} from "./src/net/http.ts";
export { type FetchTarget, HttpNodeSource, type HttpPeerStatus } from "./src/net/catchup.ts";
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
  isLogLevel,
  type LogLevel,
  Replica,
  type ReplicaOptions,
  type ReplicaPeer,
  startReplica,
  type SubmittedCommand,
  systemClock,
} from "./src/replica.ts";
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
} from "./src/mempool.ts";
export { DenoKvBatchStore } from "./src/storage/batches.ts";
