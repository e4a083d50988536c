/*
 * HotStuff for Deno: the core's safety rules as a model for the spin model checker.
 * See docs/MODEL.md for the abstraction, the bounds and what they leave out; SPECIFICATION.md
 * names the step each rule below stands for ("Spec X.Y step N").
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
/* Bug: "at least two thirds" in integer arithmetic, P >= 2T/3 (for T = 4: 2 of 4). */
#define QUORUM(m) (HPOW(m) + PBYZ >= (2 * TOTAL) / 3)
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
byte byzfirst[11];        /* the Byzantine validator's first Node of the view */
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
  committed_now = b
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
    :: nview[cb1] > nview[rep[r].lock] -> rep[r].lock = cb1
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
    voted_now = 1
#ifdef WITNESS_LOCK
  /* A witness, not a property: a trace where the lock refuses a vote (conformance tests). */
  :: nview[n] == rep[r].view && nview[n] > rep[r].voted ->
    printf("@violation witness-lock: r%d refuses N%d for its lock N%d\n", r, n, rep[r].lock);
    assert(false)
#endif
  :: else
  fi
}

/* The locking invariants (each a separate property), checked after every transition:
 * one-qc-per-view: no two certified Nodes share a view (quorum intersection and one vote per
 *   view; the lock argument rests on it);
 * certified-extends-committed: a certified Node of a view at or above a committed Node's view
 *   extends it (what the locks protect: no QC can form against a committed Node);
 * lock-extends-committed: an honest replica's lock of a view at or above a committed Node's
 *   view extends it. */
inline checkInvariants() {
#ifndef AGREEMENT_ONLY
  ix = 1;
  do
  :: ix < nn ->
    if
    :: CERT(ix) ->
      kx = ix + 1;
      do
      :: kx < nn ->
        if
        :: CERT(kx) && nview[kx] == nview[ix] ->
          printf("@violation one-qc-per-view: N%d and N%d are both certified in view %d\n", ix, kx, nview[ix]);
          assert(false)
        :: else
        fi;
        kx++
      :: else -> break
      od;
      kx = 1;
      do
      :: kx < nn ->
        if
        :: HAS(cmt, kx) && nview[ix] >= nview[kx] && !HAS(anc[ix], kx) ->
          printf("@violation certified-extends-committed: N%d (view %d) is certified, N%d (view %d) committed\n", ix, nview[ix], kx, nview[kx]);
          assert(false)
        :: else
        fi;
        kx++
      :: else -> break
      od
    :: else
    fi;
    ix++
  :: else -> break
  od;
  ix = 0;   /* the Byzantine validator's lock stays at genesis: never flagged */
  do
  :: ix < NR ->
    kx = 1;
    do
    :: kx < nn ->
      if
      :: HAS(cmt, kx) && nview[rep[ix].lock] >= nview[kx] && !HAS(anc[rep[ix].lock], kx) ->
        printf("@violation lock-extends-committed: r%d is locked on N%d (view %d), N%d (view %d) committed\n", ix, rep[ix].lock, nview[rep[ix].lock], kx, nview[kx]);
        assert(false)
      :: else
      fi;
      kx++
    :: else -> break
    od;
    ix++
  :: else -> break
  od;
#endif
  skip
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
  nn++
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
    makeNode(pview, pqc, pqc, r); \
    checkInvariants() \
  }

/* Spec 4.1: receive the proposal of Node n (steps 1-4 hold by construction; step 2: not
 * stale; step 5: absorb its QC and TC; step 6: known, or step 7: above the committed head and
 * step 8: parent in the tree; 4.3: insert, update, vote). */
#define RECV(r, n) \
  :: d_step { \
    (n < nn && nview[n] + 1 >= rep[r].view && !HAS(rep[r].tree, n) \
      && HAS(rep[r].tree, npar[n]) && nht[n] > nht[rep[r].root]) -> \
    absorb(r, njust[n], (nview[njust[n]] + 1 == nview[n] -> 0 : nview[n] - 1)); \
    rep[r].tree = rep[r].tree | BIT(n); \
    update(r, n); \
    tryVote(r, n); \
    printf("@recv "); report(r, n, 0); \
    checkInvariants() \
  }

/* Spec 4.4: a fetched Node (any Node made, as a Byzantine peer may serve it) whose parent is in
 * the tree: inserted and updated, never voted for, no view entered. */
#define FETCH(r, n) \
  :: d_step { \
    (n < nn && !HAS(rep[r].tree, n) && HAS(rep[r].tree, npar[n]) && nht[n] > nht[rep[r].root]) -> \
    rep[r].tree = rep[r].tree | BIT(n); \
    update(r, n); \
    printf("@fetch "); report(r, n, 0); \
    checkInvariants() \
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
    (q < nn && CERT(q) && (nview[q] + 1 > rep[r].view || (PROPOSING(r) && nview[q] > nview[rep[r].hqc]))) -> \
    absorb(r, q, 0); \
    printf("@qc "); report(r, q, 0); \
    checkInvariants() \
  }

/* Spec 9.2 step 4 / 8.4 step 3: an existing TC of view v. */
#define ABSORB_TC(r, v) \
  :: d_step { \
    (v <= MAXV && TC(v) && (v + 1 > rep[r].view || (PROPOSING(r) && v > rep[r].htc))) -> \
    absorb(r, rep[r].hqc, v); \
    printf("@tc "); report(r, 0, v); \
    checkInvariants() \
  }

/* Spec 8.3 step 1: time out in the current view: NEW-VIEW to all (one per view suffices here:
 * what a re-send carries, any replica may absorb anyway). */
#define TIMEOUT(r) \
  :: d_step { \
    (rep[r].view <= MAXV && !HAS(nvs[rep[r].view], r)) -> \
    nvs[rep[r].view] = nvs[rep[r].view] | BIT(r); \
    printf("@timeout "); report(r, 0, rep[r].view); \
    checkInvariants() \
  }

/* The Byzantine leader of view v proposes up to BYZP Nodes on any parent p with any certified
 * justify j on p's branch that makes a valid proposal (Spec 4.1 steps 1-3, 4.2): different
 * Nodes, made while some honest replica could still take them (view at most v + 1). */
#define BYZ_PROPOSE(v, p, j) \
  :: d_step { \
    (p < nn && j < nn && v <= MAXV && nprop[v] < BYZP && nview[p] < v && HAS(anc[p], j) \
      && CERT(j) && (nview[j] + 1 == v || TC(v - 1)) \
      && (nprop[v] == 0 || npar[byzfirst[v]] != p || njust[byzfirst[v]] != j) \
      && (rep[0].view <= v + 1 || rep[2].view <= v + 1 || rep[3].view <= v + 1)) -> \
    if \
    :: nprop[v] == 0 -> byzfirst[v] = nn \
    :: else \
    fi; \
    makeNode(v, p, j, BYZ); \
    checkInvariants() \
  }

#define FOR_N(X, r) X(r, 0) X(r, 1) X(r, 2) X(r, 3) X(r, 4) X(r, 5) X(r, 6) X(r, 7) X(r, 8) \
  X(r, 9) X(r, 10) X(r, 11) X(r, 12) X(r, 13) X(r, 14)
#define FOR_R(X) X(0) X(2) X(3)
#define FOR_RN(X) FOR_N(X, 0) FOR_N(X, 2) FOR_N(X, 3)
#define FOR_V(X, r) X(r, 1) X(r, 2) X(r, 3) X(r, 4) X(r, 5) X(r, 6) X(r, 7) X(r, 8) X(r, 9) \
  X(r, 10)
#define BYZ_P(v, j) BYZ_PROPOSE(v, 0, j) BYZ_PROPOSE(v, 1, j) BYZ_PROPOSE(v, 2, j) \
  BYZ_PROPOSE(v, 3, j) BYZ_PROPOSE(v, 4, j) BYZ_PROPOSE(v, 5, j) BYZ_PROPOSE(v, 6, j) \
  BYZ_PROPOSE(v, 7, j) BYZ_PROPOSE(v, 8, j) BYZ_PROPOSE(v, 9, j) BYZ_PROPOSE(v, 10, j) \
  BYZ_PROPOSE(v, 11, j) BYZ_PROPOSE(v, 12, j) BYZ_PROPOSE(v, 13, j) BYZ_PROPOSE(v, 14, j)
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
  /* Groups of fewer than 256 options each (spin's limit per if/do). */
  do
  :: if
     FOR_R(PROPOSE)
     FOR_RN(RECV)
     FOR_RN(FETCH)
     fi
  :: if
     FOR_RN(ABSORB_QC)
     FOR_V(ABSORB_TC, 0) FOR_V(ABSORB_TC, 2) FOR_V(ABSORB_TC, 3)
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
  od
}
