/*
 * HotStuff for Deno: the core's safety rules as a model for the spin model checker.
 * See docs/MODEL.md for the abstraction, the bounds and what they leave out. Each rule below names
 * its step in SPECIFICATION.md ("Spec X.Y step N"); SPECIFICATION.md 1.2 maps steps to names here.
 *
 * Four validators; validator 1 (BYZ) is Byzantine, 0, 2 and 3 are honest replicas. The leader of view v
 * is validator v mod 4 (the core's smooth weighted round robin for four equal powers, Spec 3.3).
 *
 * Abstraction:
 * - A Node is a symbolic record (view, parent, justify, height): nodes[0] is genesis.
 * - Messages are sets, not queues: a proposal, once made, can be received by any replica at any
 *   later time, or never (arbitrary delay, reordering, loss). The same for catch-up answers.
 * - A QC for Node n exists when the power of its distinct honest voters plus the Byzantine
 *   validator's (it signs anything) is a quorum; a TC of view v likewise from the honest
 *   replicas that timed out in v. Anyone may relay an existing certificate (the Byzantine
 *   validator sees every vote attached to a NEW-VIEW and every proposal), so a replica may
 *   absorb any existing QC or TC at any time: a NEW-VIEW carrying it.
 * - Every transition is one d_step: one input handled by one replica's core.
 *
 * Compile-time options (spin -D...): MAXV (views, default 6), BYZP (Byzantine proposals per
 * view it leads, default 2), P0..P3 (voting powers), and one planted bug:
 * PLANT_NO_LOCK_CHECK, PLANT_NON_CONSECUTIVE_COMMIT, PLANT_DOUBLE_COUNT, PLANT_TWO_THIRDS.
 * Search restrictions (every restricted run is a run of the full model): DEAF=r, NO_FETCH.
 * AGREEMENT_ONLY checks the safety property alone (not the locking invariants).
 */

#ifndef MAXV
#define MAXV 6
#endif
#ifndef BYZP
#define BYZP 2
#endif
#ifndef P0
#define P0 1
#endif
#ifndef P1
#define P1 1
#endif
#ifndef P2
#define P2 1
#endif
#ifndef P3
#define P3 1
#endif

#define NR 4
/* DEAF=r (a search restriction, docs/MODEL.md): honest replica r receives no proposal, no QC and
 * no fetched Node (all of them are delayed past the bounds); it still times out, takes TCs and
 * proposes when it leads. */
#ifndef DEAF
#define DEAF 255
#endif
#define BYZ 1
/* Room for every Node: genesis, one per honest view, BYZP per Byzantine view (1, 5, 9). */
#if MAXV >= 9
#define NMAX (1 + MAXV + 3 * (BYZP - 1))
#elif MAXV >= 5
#define NMAX (1 + MAXV + 2 * (BYZP - 1))
#else
#define NMAX (1 + MAXV + (BYZP - 1))
#endif
#define TOTAL (P0 + P1 + P2 + P3)
#define LEADER(v) ((v) % NR)
#define BIT(ix) (1 << (ix))
#define HAS(m, ix) ((((m) >> (ix)) & 1) == 1)

/* Power of the signers in a bit mask (bit i = validator i; only honest bits are ever set). */
#define HPOW(m) ((HAS(m, 0) -> P0 : 0) + (HAS(m, 1) -> P1 : 0) + (HAS(m, 2) -> P2 : 0) + (HAS(m, 3) -> P3 : 0))
#define PBYZ P1

/* Spec 3.1: a quorum is more than 2/3 of the total power, over distinct valid signers. The
 * Byzantine validator signs every certificate, so it always counts. */
#if defined(PLANT_DOUBLE_COUNT)
/* Bug: power counted per signature, not per distinct signer (Spec 3.1 step 2 skipped): the
 * Byzantine validator repeats its own signature until any certificate is a quorum. */
#define QUORUM(m) (1 == 1)
#elif defined(PLANT_TWO_THIRDS)
/* Bug: a quorum of exactly two thirds is enough, 3P >= 2T (Spec 3.1 step 3 says 3P > 2T). It
 * differs from the rule only when 2T/3 is a reachable power, and two such quorums intersect in
 * the Byzantine validator alone only when its power is exactly T/3 (then Q1 + Q2 = T + PBYZ =
 * 4T/3): powers 1,2,1,2 (T = 6, Byzantine 2) show it; with four equal powers it is harmless. */
#define QUORUM(m) (3 * (HPOW(m) + PBYZ) >= 2 * TOTAL)
#else
#define QUORUM(m) (3 * (HPOW(m) + PBYZ) > 2 * TOTAL)
#endif

/* Genesis carries the only QC of view 0 (Spec 2). */
#define CERT(n) ((n) == 0 || QUORUM(votes[n]))
#define TC(v) QUORUM(nvs[v])

/* The Nodes made so far (fixed once made). */
byte nn = 1;
byte nview[NMAX];
byte npar[NMAX];
byte njust[NMAX];
byte nht[NMAX];
short anc[NMAX];          /* ancestors of a Node, itself included */
byte votes[NMAX];         /* honest validators that voted for the Node */
byte nvs[11];            /* honest validators that sent a NEW-VIEW for the view */
byte nprop[11];          /* proposals made in the view */
short cmt;                /* every Node committed by an honest replica */

/* An honest replica's core (Spec 6.1: the safety state, plus the NodeTree). */
typedef Replica {
  byte view;    /* currentView */
  byte voted;   /* lastVotedView */
  byte lock;    /* lockedQC, by the Node it certifies (a QC's view is its Node's) */
  byte hqc;     /* highQC */
  byte htc;     /* highTC's view, 0 for none */
  byte root;    /* committed head */
  short tree    /* Nodes in the NodeTree: the root and its known descendants */
};
Replica rep[NR];

/* Temporaries: not part of the state. */
hidden byte pview, pqc, tgt, cb0, cb1, cb2, ix, kx, voted_now, committed_now;

/* The locking invariants, each a separate property, checked where the state they read changes
 * (a vote or a new Node can certify a Node; a commit grows the committed set; an update can move
 * a lock), which finds a violation at the very transition that makes it:
 * one-qc-per-view: no two certified Nodes share a view (quorum intersection and one vote per
 *   view; the lock argument rests on it; Spec 3.1, 5.1 step 1);
 * certified-extends-committed: a certified Node of a view at or above a committed Node's view
 *   extends it (what the locks protect: no QC can form against a committed Node; Spec 5.1-5.3);
 * lock-extends-committed: an honest replica's lock of a view at or above a committed Node's
 *   view extends it (Spec 5.2). */
#ifdef AGREEMENT_ONLY
#define checkCertified(n) skip
#define checkLock(r) skip
#define checkCommitted() skip
#else
inline checkCertified(n) {
  if
  :: n != 0 && CERT(n) ->
    kx = 1;
    do
    :: kx < nn ->
      if
      :: kx != n && CERT(kx) && nview[kx] == nview[n] ->
        printf("@violation one-qc-per-view: N%d and N%d are both certified in view %d\n", kx, n, nview[n]);
        assert(false)
      :: HAS(cmt, kx) && nview[n] >= nview[kx] && !HAS(anc[n], kx) ->
        printf("@violation certified-extends-committed: N%d (view %d) is certified, N%d (view %d) committed\n", n, nview[n], kx, nview[kx]);
        assert(false)
      :: else
      fi;
      kx++
    :: else -> break
    od
  :: else
  fi
}

inline checkLock(r) {
  kx = 1;
  do
  :: kx < nn ->
    if
    :: HAS(cmt, kx) && nview[rep[r].lock] >= nview[kx] && !HAS(anc[rep[r].lock], kx) ->
      printf("@violation lock-extends-committed: r%d is locked on N%d (view %d), N%d (view %d) committed\n", r, rep[r].lock, nview[rep[r].lock], kx, nview[kx]);
      assert(false)
    :: else
    fi;
    kx++
  :: else -> break
  od
}

/* After a commit: every certified Node and every honest lock against the committed set. */
inline checkCommitted() {
  ix = 1;
  do
  :: ix < nn -> checkCertified(ix); ix++
  :: else -> break
  od;
  checkLock(0);
  checkLock(2);
  checkLock(3)
}
#endif

/* Spec 8.4 step 3: absorb a QC (of Node q) and a TC of view tv (0: none); enter the view they
 * justify if it is higher (Spec 8.4 step 1: views advance only on a QC or TC of the previous). */
inline absorb(r, q, tv) {
  if
  :: nview[q] > nview[rep[r].hqc] -> rep[r].hqc = q
  :: else
  fi;
  if
  :: tv > rep[r].htc -> rep[r].htc = tv
  :: else
  fi;
  tgt = nview[q] + 1;
  if
  :: tv + 1 > tgt -> tgt = tv + 1
  :: else
  fi;
  if
  :: tgt > rep[r].view ->
    rep[r].view = tgt;
    /* A replica in view v may time out in it at any time (Spec 8.3 step 1), and a timeout has
     * no other effect on its state: its NEW-VIEW counts from the moment it enters the view. */
    if
    :: tgt <= MAXV -> nvs[tgt] = nvs[tgt] | BIT(r)
    :: else
    fi
  :: else
  fi
}

/* Spec 5.4 step 1: a commit must not conflict with any committed Node (the replica's own head
 * included): the safety property. */
inline commitNode(r, b) {
  ix = 0;
  do
  :: ix < nn ->
    if
    :: HAS(cmt, ix) && !HAS(anc[b], ix) && !HAS(anc[ix], b) ->
      printf("@violation agreement: N%d and N%d are both committed and conflict\n", ix, b);
      assert(false)
    :: else
    fi;
    ix++
  :: else -> break
  od;
  /* Spec 5.4 step 2: commit b and its ancestors; the tree keeps b's descendants only. */
  cmt = cmt | anc[b];
  rep[r].root = b;
  ix = 0;
  do
  :: ix < nn ->
    if
    :: HAS(rep[r].tree, ix) && !HAS(anc[ix], b) -> rep[r].tree = rep[r].tree & ~BIT(ix)
    :: else
    fi;
    ix++
  :: else -> break
  od;
  committed_now = b;
  checkCommitted()
}

/* Spec 5.3 steps 2-3: c is p's child in the view right after p's. */
#ifdef PLANT_NON_CONSECUTIVE_COMMIT
/* Bug: any direct parent, whatever the views. */
#define DIRECT(c, p) (npar[c] == p)
#else
#define DIRECT(c, p) (npar[c] == p && nview[c] == nview[p] + 1)
#endif

/* Spec 5.3 step 4: above the committed head. */
#define ABOVE_HEAD(r, b) (nht[b] > nht[rep[r].root])

/* Spec 5.1 step 2: n extends the lock, or its QC is newer than the lock. */
#ifdef PLANT_NO_LOCK_CHECK
/* Bug: no lock check. */
#define SAFE_NODE(r, n) (1 == 1)
#else
#define SAFE_NODE(r, n) (HAS(anc[n], rep[r].lock) || nview[njust[n]] > nview[rep[r].lock])
#endif

/* Spec 4.3 step 4 / paper Algorithm 4 update(b*): highest QC, lock (Spec 5.2), commit (5.3). */
inline update(r, n) {
  cb2 = njust[n];
  if
  :: nview[cb2] > nview[rep[r].hqc] -> rep[r].hqc = cb2
  :: else
  fi;
  if
  :: !HAS(rep[r].tree, cb2) || (cb2 == rep[r].root && cb2 == 0) -> skip
  :: else ->
    cb1 = njust[cb2];
    /* Spec 5.2: lock on b''.justify if it is newer. */
    if
    :: nview[cb1] > nview[rep[r].lock] -> rep[r].lock = cb1; checkLock(r)
    :: else
    fi;
    cb0 = njust[cb1];
    /* Spec 5.3 steps 1-4: b'', b', b in the tree, direct parents, consecutive views, b above
     * the committed head. */
    if
    :: HAS(rep[r].tree, cb1) && HAS(rep[r].tree, cb0) && DIRECT(cb2, cb1) && DIRECT(cb1, cb0) && ABOVE_HEAD(r, cb0) ->
      commitNode(r, cb0)
#ifdef WITNESS_GAP
    /* A witness: a 3-chain of direct parents with a view gap, not committed. */
    :: HAS(rep[r].tree, cb1) && HAS(rep[r].tree, cb0) && npar[cb2] == cb1 && npar[cb1] == cb0 && ABOVE_HEAD(r, cb0) ->
      printf("@violation witness-gap: r%d does not commit N%d (views %d, %d, %d)\n", r, cb0, nview[cb0], nview[cb1], nview[cb2]);
      assert(false)
#endif
    :: else
    fi
  fi
}

/* Spec 5.1: vote for a proposal of the current view if the voting rule allows it. */
inline tryVote(r, n) {
  if
  :: nview[n] == rep[r].view && nview[n] > rep[r].voted && SAFE_NODE(r, n) ->
    rep[r].voted = nview[n];
    votes[n] = votes[n] | BIT(r);
    voted_now = 1;
    checkCertified(n)
#ifdef WITNESS_LOCK
  /* A witness, not a property: a trace where the lock refuses a vote (conformance tests). */
  :: nview[n] == rep[r].view && nview[n] > rep[r].voted ->
    printf("@violation witness-lock: r%d refuses N%d for its lock N%d\n", r, n, rep[r].lock);
    assert(false)
#endif
  :: else
  fi
}

/* One line per transition, machine-readable: the conformance test replays these. */
inline report(r, n, tv) {
  printf("r=%d n=%d tc=%d | view=%d voted=%d lock=%d hqc=%d htc=%d root=%d vote=%d commit=%d\n",
    r, n, tv, rep[r].view, rep[r].voted, rep[r].lock, rep[r].hqc, rep[r].htc, rep[r].root,
    voted_now, committed_now);
  voted_now = 0;
  committed_now = 255
}

inline makeNode(v, p, j, who) {
  assert(nn < NMAX);
  nview[nn] = v;
  npar[nn] = p;
  njust[nn] = j;
  nht[nn] = nht[p] + 1;
  anc[nn] = anc[p] | BIT(nn);
  nprop[v]++;
  printf("@node n=%d view=%d parent=%d justify=%d by=%d tc=%d\n", nn, v, p, j, who,
    (nview[j] + 1 == v -> 0 : v - 1));
  nn++;
  checkCertified(nn - 1)
}

/* Spec 8.5: the honest leader of its current view proposes once, on its highest QC's Node,
 * which it holds, with the TC of the previous view when the QC is older. */
#define PROPOSE(r) \
  :: d_step { \
    (LEADER(rep[r].view) == r && rep[r].view <= MAXV && nprop[rep[r].view] == 0 \
      && HAS(rep[r].tree, rep[r].hqc) && nview[rep[r].hqc] < rep[r].view \
      && (nview[rep[r].hqc] + 1 == rep[r].view || rep[r].htc + 1 == rep[r].view)) -> \
    pview = rep[r].view; \
    pqc = rep[r].hqc; \
    makeNode(pview, pqc, pqc, r) \
  }

/* Spec 4.1: receive the proposal of Node n (steps 1-4 hold by construction; step 2: not
 * stale; step 5: absorb its QC and TC; step 6: known, or step 7: above the committed head and
 * step 8: parent in the tree; 4.3: insert, update, vote). */
#define CAN_RECV(r, n) (n < nn && nview[n] + 1 >= rep[r].view && !HAS(rep[r].tree, n) \
  && HAS(rep[r].tree, npar[n]) && nht[n] > nht[rep[r].root])
inline recv(r, n) {
  absorb(r, njust[n], (nview[njust[n]] + 1 == nview[n] -> 0 : nview[n] - 1));
  rep[r].tree = rep[r].tree | BIT(n);
  update(r, n);
  tryVote(r, n);
  printf("@recv ");
  report(r, n, 0)
}
#define RECV(r, n) \
  :: d_step { (r != DEAF && CAN_RECV(r, n)) -> recv(r, n) }

/* Spec 4.4: a fetched Node (any Node made, as a Byzantine peer may serve it) whose parent is in
 * the tree: inserted and updated, never voted for, no view entered. */
#define FETCH(r, n) \
  :: d_step { \
    (r != DEAF && n < nn && !HAS(rep[r].tree, n) && HAS(rep[r].tree, npar[n]) && nht[n] > nht[rep[r].root]) -> \
    rep[r].tree = rep[r].tree | BIT(n); \
    update(r, n); \
    printf("@fetch "); report(r, n, 0) \
  }

/* A replica that leads its current view and has not proposed in it yet. A QC or TC that enters
 * no view only raises highQC or highTC, which matter for nothing but the replica's own proposal
 * (Spec 8.5; the lock and commit rules read the Nodes it inserts): the model lets a replica take
 * such a certificate only while it is about to propose. The certificate stays available, so this
 * loses no proposal, only interleavings. */
#define PROPOSING(r) (LEADER(rep[r].view) == r && rep[r].view <= MAXV && nprop[rep[r].view] == 0)

/* Spec 9.2 step 1 / 8.4 step 3: a NEW-VIEW relaying an existing QC. */
#define ABSORB_QC(r, q) \
  :: d_step { \
    (r != DEAF && q < nn && CERT(q) && (nview[q] + 1 > rep[r].view || (PROPOSING(r) && nview[q] > nview[rep[r].hqc]))) -> \
    absorb(r, q, 0); \
    printf("@qc "); report(r, q, 0) \
  }

/* Spec 9.2 step 4 / 8.4 step 3: an existing TC of view v. */
#define ABSORB_TC(r, v) \
  :: d_step { \
    (v <= MAXV && TC(v) && (v + 1 > rep[r].view || (PROPOSING(r) && v > rep[r].htc))) -> \
    absorb(r, rep[r].hqc, v); \
    printf("@tc "); report(r, 0, v) \
  }

/* The Byzantine leader of view v proposes up to BYZP Nodes on any parent p with any certified
 * justify j on p's branch that makes a valid proposal (Spec 4.1 steps 1-3, 4.2): different
 * Nodes (the same parent and justify twice is an equivocation with two commands), made while some
 * honest replica could still take them (view at most v + 1). */
#define BYZ_PROPOSE(v, p, j) \
  :: d_step { \
    (p < nn && j < nn && v <= MAXV && nprop[v] < BYZP && nview[p] < v && HAS(anc[p], j) \
      && CERT(j) && (nview[j] + 1 == v || TC(v - 1)) \
      && (rep[0].view <= v + 1 || rep[2].view <= v + 1 || rep[3].view <= v + 1)) -> \
    makeNode(v, p, j, BYZ) \
  }

/* Transitions for the Node indices and views that can exist within the bounds only (less code
 * to compile): FN_k expands for Node k < NMAX, FV_k for view k <= MAXV. */
#if NMAX > 1
#define FN1(X, a) X(a, 1)
#define FM1(X, a, b) X(a, b, 1)
#else
#define FN1(X, a)
#define FM1(X, a, b)
#endif
#if NMAX > 2
#define FN2(X, a) X(a, 2)
#define FM2(X, a, b) X(a, b, 2)
#else
#define FN2(X, a)
#define FM2(X, a, b)
#endif
#if NMAX > 3
#define FN3(X, a) X(a, 3)
#define FM3(X, a, b) X(a, b, 3)
#else
#define FN3(X, a)
#define FM3(X, a, b)
#endif
#if NMAX > 4
#define FN4(X, a) X(a, 4)
#define FM4(X, a, b) X(a, b, 4)
#else
#define FN4(X, a)
#define FM4(X, a, b)
#endif
#if NMAX > 5
#define FN5(X, a) X(a, 5)
#define FM5(X, a, b) X(a, b, 5)
#else
#define FN5(X, a)
#define FM5(X, a, b)
#endif
#if NMAX > 6
#define FN6(X, a) X(a, 6)
#define FM6(X, a, b) X(a, b, 6)
#else
#define FN6(X, a)
#define FM6(X, a, b)
#endif
#if NMAX > 7
#define FN7(X, a) X(a, 7)
#define FM7(X, a, b) X(a, b, 7)
#else
#define FN7(X, a)
#define FM7(X, a, b)
#endif
#if NMAX > 8
#define FN8(X, a) X(a, 8)
#define FM8(X, a, b) X(a, b, 8)
#else
#define FN8(X, a)
#define FM8(X, a, b)
#endif
#if NMAX > 9
#define FN9(X, a) X(a, 9)
#define FM9(X, a, b) X(a, b, 9)
#else
#define FN9(X, a)
#define FM9(X, a, b)
#endif
#if NMAX > 10
#define FN10(X, a) X(a, 10)
#define FM10(X, a, b) X(a, b, 10)
#else
#define FN10(X, a)
#define FM10(X, a, b)
#endif
#if NMAX > 11
#define FN11(X, a) X(a, 11)
#define FM11(X, a, b) X(a, b, 11)
#else
#define FN11(X, a)
#define FM11(X, a, b)
#endif
#if NMAX > 12
#define FN12(X, a) X(a, 12)
#define FM12(X, a, b) X(a, b, 12)
#else
#define FN12(X, a)
#define FM12(X, a, b)
#endif
#if NMAX > 13
#define FN13(X, a) X(a, 13)
#define FM13(X, a, b) X(a, b, 13)
#else
#define FN13(X, a)
#define FM13(X, a, b)
#endif
#if NMAX > 14
#define FN14(X, a) X(a, 14)
#define FM14(X, a, b) X(a, b, 14)
#else
#define FN14(X, a)
#define FM14(X, a, b)
#endif
#if MAXV >= 2
#define FV2(X, a) X(a, 2)
#else
#define FV2(X, a)
#endif
#if MAXV >= 3
#define FV3(X, a) X(a, 3)
#else
#define FV3(X, a)
#endif
#if MAXV >= 4
#define FV4(X, a) X(a, 4)
#else
#define FV4(X, a)
#endif
#if MAXV >= 5
#define FV5(X, a) X(a, 5)
#else
#define FV5(X, a)
#endif
#if MAXV >= 6
#define FV6(X, a) X(a, 6)
#else
#define FV6(X, a)
#endif
#if MAXV >= 7
#define FV7(X, a) X(a, 7)
#else
#define FV7(X, a)
#endif
#if MAXV >= 8
#define FV8(X, a) X(a, 8)
#else
#define FV8(X, a)
#endif
#if MAXV >= 9
#define FV9(X, a) X(a, 9)
#else
#define FV9(X, a)
#endif
#if MAXV >= 10
#define FV10(X, a) X(a, 10)
#else
#define FV10(X, a)
#endif
#define FOR_N(X, r) X(r, 0) FN1(X, r) FN2(X, r) FN3(X, r) FN4(X, r) FN5(X, r) FN6(X, r) FN7(X, r) FN8(X, r) FN9(X, r) FN10(X, r) FN11(X, r) FN12(X, r) FN13(X, r) FN14(X, r)
#define FOR_M(X, a, b) X(a, b, 0) FM1(X, a, b) FM2(X, a, b) FM3(X, a, b) FM4(X, a, b) FM5(X, a, b) FM6(X, a, b) FM7(X, a, b) FM8(X, a, b) FM9(X, a, b) FM10(X, a, b) FM11(X, a, b) FM12(X, a, b) FM13(X, a, b) FM14(X, a, b)
#define FOR_V(X, r) X(r, 1) FV2(X, r) FV3(X, r) FV4(X, r) FV5(X, r) FV6(X, r) FV7(X, r) FV8(X, r) FV9(X, r) FV10(X, r)
#define FOR_R(X) X(0) X(2) X(3)
#define FOR_RN(X) FOR_N(X, 0) FOR_N(X, 2) FOR_N(X, 3)
#define BYZ_PJ(v, j, p) BYZ_PROPOSE(v, p, j)
#define BYZ_P(v, j) FOR_M(BYZ_PJ, v, j)
#define BYZ_VIEW(v) FOR_N(BYZ_P, v)


init {
  d_step {
    anc[0] = BIT(0);
    ix = 0;
    do
    :: ix < NR ->
      if
      :: ix != BYZ ->
        rep[ix].view = 1;   /* Spec 8.2: start in view 1 */
        nvs[1] = nvs[1] | BIT(ix);
        rep[ix].tree = BIT(0)
      :: else
      fi;
      ix++
    :: else -> break
    od;
    committed_now = 255;
    printf("@start views=%d byzp=%d powers=%d,%d,%d,%d\n", MAXV, BYZP, P0, P1, P2, P3)
  };
end:
  /* Groups of fewer than 256 options each (spin's limit per if/do). The order is the search's:
   * a depth-first search tries progress first (proposals, deliveries, QCs), then catch-up, then
   * timeouts, so it reaches deep protocol states early; an exhaustive search visits every state
   * whatever the order. */
  do
  :: if
     FOR_R(PROPOSE)
     FOR_RN(RECV)
     fi
  :: if
     BYZ_VIEW(1)
     fi
#if MAXV >= 5
  :: if
     BYZ_VIEW(5)
     fi
#endif
#if MAXV >= 9
  :: if
     BYZ_VIEW(9)
     fi
#endif
  :: if
     FOR_RN(ABSORB_QC)
     fi
#ifndef NO_FETCH
  :: if
     FOR_RN(FETCH)
     fi
#endif
  :: if
     FOR_V(ABSORB_TC, 0) FOR_V(ABSORB_TC, 2) FOR_V(ABSORB_TC, 3)
     fi
  od
}
