/* ss_cluster: gantry-store's cluster control on etcd (issue 12; the design
 * and the keys are in docs/cluster.md).  With cluster.etcd set:
 *
 * Registration.  The node grants itself a lease of cluster.lease_ttl_s,
 * keeps it alive (every min(TTL/3, 500 ms)) and puts /gantry/N/stores/<id> = its
 * advertised address under it.  A lease lost while running (the node was
 * paused or cut off longer than the TTL) makes it stand down and register
 * again with a new lease.
 *
 * Membership.  The node belongs to one replica set k, rs/<k> below
 * (/gantry/N/rs/<k>/...).  A node listed in some rs/<k>/members keeps that
 * k (across restarts: the lists live in etcd).  Otherwise it joins the
 * lowest k whose members list has fewer than R ids (cluster.replicas; an
 * absent list has none), by a transaction on the key's mod revision; a
 * lost race reads again.  So R nodes form rs/0, the next R rs/1, and so
 * on.  The transaction that lists the R-th member also creates
 * rs/<k>/isr = "0:<all members>" (every replica is empty, so in sync); a
 * set still forming has no isr key, so its members never campaign.
 *
 * Election.  Members campaign through gt_elect with require_isr and
 * positions: while nobody leads, a follower stops fetching and each member
 * of the isr key puts rs/<k>/pos/<id> (ss_repl_elect_key, under its
 * lease); only a listed node whose position is the highest of enough
 * members' (gt_elect.h, "Positions") can win, the winner's
 * rs/<k>/leader sits under its lease and rs/<k>/epoch grows by one (at
 * most one leader per epoch of a set).  The winner then writes, in one
 * transaction comparing the epoch and leader keys (so a fenced node
 * cannot), the in-sync set of its epoch ("E:" + itself and the old set's
 * members that are still registered and put a position equal to its own)
 * and appends "E@<commitlog end>" to rs/<k>/history; then it calls
 * ss_repl_lead().
 *
 * Roles.  A watch on rs/<k>/ wakes the control; it re-reads the
 * replica set's keys and reconciles: a leader key held by another node
 * means follow it (its address from /stores/<id>), a leader that sees the
 * key gone or held by another, or a newer epoch, stands down.  The lease
 * lost, a transaction failing on its epoch compare, or replication
 * reporting a newer epoch (fenced) all stand down first, then re-read.
 *
 * In-sync set changes.  Replication reports a follower caught up or
 * lagging (ss_repl_events_t.peer_changed); the leader writes the new set
 * by transaction (compare epoch, leader and the set's mod revision), then
 * tells replication (ss_repl_set_isr).
 *
 * Nothing polls: etcd errors are retried after a third of the lease TTL. */
#include "ss_cluster.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gt_elect.h"
#include "gt_etcd.h"
#include "gt_log.h"

#define MAX_PEER_EVS 32
#define MAX_IDS 16
#define ID_MAX 128

struct ss_cluster {
    gt_etcd_t *e;
    ss_repl_t *repl;
    char id[ID_MAX];
    char addr[256];
    char sets_pfx[384];    /* /gantry/N/rs/ */
    char rs[400];          /* /gantry/N/rs/<k>, once the set is known */
    char rs_pfx[416];      /* .../rs/<k>/ */
    char stores_pfx[384];  /* /gantry/N/stores/ */
    char store_key[512];
    char members_key[440], isr_key[440], leader_key[440], epoch_key[440],
         history_key[440], pos_pfx[448];
    char pos_key[600];     /* rs/<k>/pos/<id>: this node's position */
    int64_t ttl;
    int replicas;
    int min_insync;
    int64_t retry_ms;
    pthread_t thread;
    bool running;

    pthread_mutex_t mu;    /* events, published state */
    pthread_cond_t cv;
    bool stopping;
    bool lost;             /* the lease went */
    bool dirty;            /* the replica set's keys changed: reconcile */
    bool fenced;           /* newer epoch seen by replication */
    int64_t fenced_epoch;
    int64_t won;           /* epoch gt_elect won, not yet handled */
    ss_repl_peer_t peer_ev[MAX_PEER_EVS];
    size_t n_peer_ev;
    bool watch_ended;
    /* published for /metrics */
    ss_role_t role;
    int64_t epoch;         /* of the role (0: standby) */
    int isr_n;
    bool member;
    int set;               /* k of rs/<k>; -1 until known */
    _Atomic int *set_slot; /* also published there (GetInfo); may be NULL */
    int64_t elections_won;
    int64_t step_downs;
    gt_elect_tally_t tally; /* every contender's reads (atomics) */

    /* control thread only */
    /* peers whose event etcd failed: reported again when the retry is due */
    char peer_retry[MAX_PEER_EVS][ID_MAX];
    int64_t peer_retry_epoch[MAX_PEER_EVS];
    size_t n_peer_retry;
    int64_t lease;
    gt_etcd_keepalive_t *ka;
    gt_elect_t *el;
    gt_etcd_watch_t *watch;
    char following[ID_MAX];
    int64_t retry_at;      /* monotonic ms; 0: none */
    char pos_pub[SS_REPL_KEY_MAX + 32]; /* the position last put ... */
    int64_t pos_lease;     /* ... under this lease */
};

/* ---- blocking calls (control thread) --------------------------------- */

typedef struct kvc {
    char key[512];
    char *val;
    int64_t mod, ver, lease;
} kvc_t;

typedef struct call {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    gt_err_t err;
    bool ok;
    int64_t rev, id;
    kvc_t *kvs;
    size_t n;
} call_t;

static void call_init(call_t *w)
{
    memset(w, 0, sizeof(*w));
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
}

static void kvs_free(kvc_t *kvs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(kvs[i].val);
    free(kvs);
}

static void call_fini(call_t *w)
{
    kvs_free(w->kvs, w->n);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
}

static void call_done(call_t *w, gt_err_t err)
{
    pthread_mutex_lock(&w->mu);
    w->err = err;
    w->done = true;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* The call was started (err GT_OK): wait for its callback (calls have
 * deadlines). */
static gt_err_t call_wait(call_t *w, gt_err_t err)
{
    if (err != GT_OK)
        return err;
    pthread_mutex_lock(&w->mu);
    while (!w->done)
        pthread_cond_wait(&w->cv, &w->mu);
    err = w->err;
    pthread_mutex_unlock(&w->mu);
    return err;
}

static void on_grant(void *arg, gt_err_t err, int64_t id, int64_t ttl)
{
    (void)ttl;
    call_t *w = arg;
    w->id = id;
    call_done(w, err);
}

static void on_write(void *arg, gt_err_t err, int64_t rev, int64_t n)
{
    (void)n;
    call_t *w = arg;
    w->rev = rev;
    call_done(w, err);
}

static void on_txn(void *arg, gt_err_t err, bool ok, int64_t rev)
{
    call_t *w = arg;
    w->ok = ok;
    w->rev = rev;
    call_done(w, err);
}

static void on_get(void *arg, gt_err_t err, int64_t rev,
                   const gt_etcd_kv_t *kvs, size_t n)
{
    call_t *w = arg;
    w->rev = rev;
    if (err == GT_OK && n > 0) {
        w->kvs = calloc(n, sizeof(*w->kvs));
        if (!w->kvs)
            err = GT_ENOMEM;
        for (size_t i = 0; w->kvs && i < n; i++) {
            kvc_t *k = &w->kvs[i];
            size_t kl = kvs[i].key_len < sizeof(k->key) - 1
                            ? kvs[i].key_len : sizeof(k->key) - 1;
            memcpy(k->key, kvs[i].key, kl);
            k->key[kl] = 0;
            k->val = malloc(kvs[i].value_len + 1);
            if (!k->val) {
                err = GT_ENOMEM;
                break;
            }
            memcpy(k->val, kvs[i].value, kvs[i].value_len);
            k->val[kvs[i].value_len] = 0;
            k->mod = kvs[i].mod_revision;
            k->ver = kvs[i].version;
            k->lease = kvs[i].lease;
            w->n = i + 1;
        }
    }
    call_done(w, err);
}

static gt_err_t get_kvs(ss_cluster_t *c, const char *key, bool prefix,
                        call_t *w)
{
    call_init(w);
    return call_wait(w, gt_etcd_get(c->e, key, prefix, on_get, w));
}

static const kvc_t *find(const call_t *w, const char *key)
{
    for (size_t i = 0; i < w->n; i++)
        if (strcmp(w->kvs[i].key, key) == 0)
            return &w->kvs[i];
    return NULL;
}

/* ---- id lists ----------------------------------------------------------- */

typedef struct ids {
    char v[MAX_IDS][ID_MAX];
    size_t n;
} ids_t;

/* "a,b,c" (or the part after "E:" for an isr value) into ids. */
static void ids_parse(const char *s, ids_t *out)
{
    out->n = 0;
    while (s && *s && out->n < MAX_IDS) {
        const char *comma = strchr(s, ',');
        size_t l = comma ? (size_t)(comma - s) : strlen(s);
        if (l > 0 && l < ID_MAX) {
            memcpy(out->v[out->n], s, l);
            out->v[out->n][l] = 0;
            out->n++;
        }
        s = comma ? comma + 1 : NULL;
    }
}

static bool ids_has(const ids_t *ids, const char *id)
{
    for (size_t i = 0; i < ids->n; i++)
        if (strcmp(ids->v[i], id) == 0)
            return true;
    return false;
}

static void ids_join(const ids_t *ids, char *buf, size_t n)
{
    size_t o = 0;
    buf[0] = 0;
    for (size_t i = 0; i < ids->n && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%s", i ? "," : "", ids->v[i]);
}

static void ids_ptrs(const ids_t *ids, const char **p)
{
    for (size_t i = 0; i < ids->n; i++)
        p[i] = ids->v[i];
}

/* "E:a,b" -> epoch E and the ids. */
static int64_t isr_parse(const char *v, ids_t *out)
{
    out->n = 0;
    if (!v)
        return -1;
    const char *colon = strchr(v, ':');
    if (!colon)
        return -1;
    ids_parse(colon + 1, out);
    return strtoll(v, NULL, 10);
}

/* ---- events (any thread) ------------------------------------------------ */

static void wake(ss_cluster_t *c, bool *flag)
{
    pthread_mutex_lock(&c->mu);
    *flag = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void on_lease_lost(void *arg)
{
    ss_cluster_t *c = arg;
    wake(c, &c->lost);
}

static void on_won(void *arg, int64_t epoch)
{
    ss_cluster_t *c = arg;
    pthread_mutex_lock(&c->mu);
    c->won = epoch;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void on_rs_events(void *arg, const gt_etcd_event_t *evs, size_t n)
{
    (void)evs;
    (void)n;
    ss_cluster_t *c = arg;
    wake(c, &c->dirty);
}

static void on_rs_end(void *arg, gt_err_t err)
{
    (void)err; /* compacted: read again and watch again */
    ss_cluster_t *c = arg;
    pthread_mutex_lock(&c->mu);
    c->watch_ended = true;
    c->dirty = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void on_peer_changed(void *arg, const ss_repl_peer_t *peer)
{
    ss_cluster_t *c = arg;
    pthread_mutex_lock(&c->mu);
    size_t i = 0;
    while (i < c->n_peer_ev &&
           strcmp(c->peer_ev[i].node_id, peer->node_id) != 0)
        i++;
    if (i < MAX_PEER_EVS) { /* the newest state of each peer */
        c->peer_ev[i] = *peer;
        if (i == c->n_peer_ev)
            c->n_peer_ev++;
    }
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void on_newer_epoch(void *arg, int64_t epoch)
{
    ss_cluster_t *c = arg;
    pthread_mutex_lock(&c->mu);
    c->fenced = true;
    if (epoch > c->fenced_epoch)
        c->fenced_epoch = epoch;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

void ss_cluster_events(ss_cluster_t *c, ss_repl_events_t *ev)
{
    ev->peer_changed = on_peer_changed;
    ev->newer_epoch = on_newer_epoch;
    ev->arg = c;
}

/* ---- role changes (control thread) -------------------------------------- */

static void publish(ss_cluster_t *c, ss_role_t role, int64_t epoch, int isr_n)
{
    pthread_mutex_lock(&c->mu);
    c->role = role;
    c->epoch = epoch;
    c->isr_n = isr_n;
    pthread_mutex_unlock(&c->mu);
}

static ss_role_t role_now(ss_cluster_t *c, int64_t *epoch)
{
    pthread_mutex_lock(&c->mu);
    ss_role_t r = c->role;
    if (epoch)
        *epoch = c->epoch;
    pthread_mutex_unlock(&c->mu);
    return r;
}

static void elect_stop(ss_cluster_t *c)
{
    gt_elect_stop(c->el);
    c->el = NULL;
    pthread_mutex_lock(&c->mu);
    c->won = 0; /* a win of the stopped contender is void */
    pthread_mutex_unlock(&c->mu);
}

/* Stops serving and fetching; a new contender campaigns (on the next
 * reconcile). */
static void stand_down(ss_cluster_t *c, const char *why)
{
    ss_role_t r = role_now(c, NULL);
    if (r != SS_ROLE_STANDBY || c->following[0]) {
        GT_LOG(WARN, "cluster", "%s: standing down (was %s)", why,
               r == SS_ROLE_LEADER ? "leader" : "follower");
        ss_repl_stand_down(c->repl);
        pthread_mutex_lock(&c->mu);
        c->step_downs++;
        pthread_mutex_unlock(&c->mu);
    }
    c->following[0] = 0;
    publish(c, SS_ROLE_STANDBY, 0, 0);
    elect_stop(c);
    pthread_mutex_lock(&c->mu);
    c->dirty = true;
    pthread_mutex_unlock(&c->mu);
}

static void retry_later(ss_cluster_t *c)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t now = ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
    if (c->retry_at == 0)
        c->retry_at = now + c->retry_ms;
}

/* Gives up the lease (every key of ours goes at once, the leader key
 * included): used when leadership is won but cannot be taken up. */
static void resign(ss_cluster_t *c, const char *why)
{
    GT_LOG(WARN, "cluster", "%s: giving up leadership (lease revoked)", why);
    stand_down(c, why);
    if (c->lease != 0) {
        call_t w;
        call_init(&w);
        call_wait(&w, gt_etcd_lease_revoke(c->e, c->lease, on_write, &w));
        call_fini(&w);
    }
    pthread_mutex_lock(&c->mu);
    c->lost = true;
    pthread_mutex_unlock(&c->mu);
}

/* ---- registration ------------------------------------------------------- */

static gt_err_t register_once(ss_cluster_t *c)
{
    call_t w;
    call_init(&w);
    gt_err_t err = call_wait(&w, gt_etcd_lease_grant(c->e, c->ttl, on_grant,
                                                     &w));
    int64_t lease = w.id;
    call_fini(&w);
    if (err != GT_OK)
        return err;
    gt_etcd_keepalive_t *ka = NULL;
    if ((err = gt_etcd_keepalive_start(c->e, lease, c->ttl, on_lease_lost, c,
                                       &ka)) != GT_OK)
        return err;
    call_init(&w);
    err = call_wait(&w, gt_etcd_put(c->e, c->store_key, c->addr,
                                    strlen(c->addr), lease, on_write, &w));
    call_fini(&w);
    c->lease = lease;
    c->ka = ka;
    pthread_mutex_lock(&c->mu);
    c->lost = false;
    pthread_mutex_unlock(&c->mu);
    if (err == GT_OK)
        GT_LOG(INFO, "cluster", "registered %s = %s (lease ttl %llds)",
               c->store_key, c->addr, (long long)c->ttl);
    return err;
}

static void unregister(ss_cluster_t *c)
{
    gt_etcd_keepalive_stop(c->ka);
    c->ka = NULL;
    c->lease = 0;
}

/* ---- taking up leadership --------------------------------------------- */

/* Won epoch E: write the epoch's in-sync set and history entry (only if
 * still the leader of E), then lead. */
static void take_lead(ss_cluster_t *c, int64_t epoch)
{
    call_t rs, st;
    char ev[24];
    gt_err_t err = get_kvs(c, c->rs_pfx, true, &rs);
    if (err == GT_OK)
        err = get_kvs(c, c->stores_pfx, true, &st);
    else
        call_init(&st);
    if (err != GT_OK) {
        call_fini(&rs);
        call_fini(&st);
        resign(c, "cannot read the replica set after winning");
        return;
    }
    ids_t old, isr;
    const kvc_t *k = find(&rs, c->isr_key);
    isr_parse(k ? k->val : NULL, &old);
    isr.n = 0;
    /* Members still registered whose position for this election is the
     * winner's own (they hold all it holds: every acknowledged write); the
     * others catch up and join (docs/cluster.md, "Positions"). */
    for (size_t i = 0; i < old.n; i++) {
        char key[600], pk[600];
        snprintf(key, sizeof(key), "%s%s", c->stores_pfx, old.v[i]);
        snprintf(pk, sizeof(pk), "%s%s", c->pos_pfx, old.v[i]);
        const kvc_t *pos = find(&rs, pk);
        if (strcmp(old.v[i], c->id) == 0 ||
            (find(&st, key) && pos && c->pos_pub[0] &&
             strcmp(pos->val, c->pos_pub) == 0))
            memcpy(isr.v[isr.n++], old.v[i], ID_MAX);
    }
    if (!ids_has(&isr, c->id) && isr.n < MAX_IDS)
        snprintf(isr.v[isr.n++], ID_MAX, "%s", c->id);
    int64_t last_epoch = 0;
    uint64_t cl_end = 0;
    ss_repl_position(c->repl, &last_epoch, &cl_end);
    const kvc_t *h = find(&rs, c->history_key);
    size_t hl = (h ? strlen(h->val) : 0) + 48;
    char *hist = malloc(hl);
    char isr_val[MAX_IDS * ID_MAX + 32], list[MAX_IDS * ID_MAX];
    ids_join(&isr, list, sizeof(list));
    snprintf(isr_val, sizeof(isr_val), "%lld:%s", (long long)epoch, list);
    snprintf(ev, sizeof(ev), "%lld", (long long)epoch);
    if (hist)
        snprintf(hist, hl, "%s%s%lld@%" PRIu64, h && h->val[0] ? h->val : "",
                 h && h->val[0] ? "," : "", (long long)epoch, cl_end);
    call_fini(&rs);
    call_fini(&st);
    if (!hist) {
        resign(c, "out of memory");
        return;
    }
    gt_etcd_cmp_t cmp[2] = {
        { .key = c->epoch_key, .target = GT_ETCD_CMP_VALUE, .op = GT_ETCD_EQ,
          .value = ev, .value_len = strlen(ev) },
        { .key = c->leader_key, .target = GT_ETCD_CMP_VALUE, .op = GT_ETCD_EQ,
          .value = c->id, .value_len = strlen(c->id) },
    };
    gt_etcd_op_t ops[2] = {
        { .kind = GT_ETCD_OP_PUT, .key = c->isr_key, .value = isr_val,
          .value_len = strlen(isr_val) },
        { .kind = GT_ETCD_OP_PUT, .key = c->history_key, .value = hist,
          .value_len = strlen(hist) },
    };
    call_t w;
    call_init(&w);
    err = call_wait(&w, gt_etcd_txn(c->e, cmp, 2, ops, 2, NULL, 0, on_txn,
                                    &w));
    bool ok = w.ok;
    call_fini(&w);
    free(hist);
    if (err != GT_OK) {
        resign(c, "cannot write the epoch's in-sync set");
        return;
    }
    if (!ok) {
        stand_down(c, "fenced before taking up leadership");
        return;
    }
    const char *p[MAX_IDS];
    ids_ptrs(&isr, p);
    uint64_t start = 0;
    c->following[0] = 0;
    if ((err = ss_repl_lead(c->repl, epoch, p, isr.n, &start)) != GT_OK) {
        resign(c, "replication cannot lead");
        return;
    }
    publish(c, SS_ROLE_LEADER, epoch, (int)isr.n);
    pthread_mutex_lock(&c->mu);
    c->elections_won++;
    pthread_mutex_unlock(&c->mu);
    GT_LOG(INFO, "cluster", "leader of %s, epoch %lld, in sync: %s", c->rs,
           (long long)epoch, list);
}

/* ---- in-sync set changes ------------------------------------------------ */

/* An event for `peer` could not be acted on (etcd failed, or a write's
 * outcome is unknown): ask replication to report it again once the retry
 * is due (ctl_main), not at once, so that an unreachable etcd is not asked
 * at every fetch. */
static void peer_retry_later(ss_cluster_t *c, int64_t epoch,
                             const ss_repl_peer_t *peer, const char *why)
{
    size_t i = 0;
    while (i < c->n_peer_retry && strcmp(c->peer_retry[i], peer->node_id) != 0)
        i++;
    GT_LOG(WARN, "cluster", "in-sync change for %s (%s) not made: %s; asked "
           "again in %lld ms", peer->node_id,
           peer->caught_up ? "caught up" : "lagging",
           why ? why : "etcd did not answer", (long long)c->retry_ms);
    if (i < MAX_PEER_EVS) {
        snprintf(c->peer_retry[i], ID_MAX, "%s", peer->node_id);
        c->peer_retry_epoch[i] = epoch;
        if (i == c->n_peer_retry)
            c->n_peer_retry++;
    }
    retry_later(c);
}

static void isr_change(ss_cluster_t *c, const ss_repl_peer_t *peer)
{
    int64_t epoch = 0;
    if (role_now(c, &epoch) != SS_ROLE_LEADER ||
        strcmp(peer->node_id, c->id) == 0)
        return;
    for (int attempt = 0; attempt < 3; attempt++) {
        call_t rs;
        gt_err_t err = get_kvs(c, c->rs_pfx, true, &rs);
        if (err != GT_OK) {
            call_fini(&rs);
            peer_retry_later(c, epoch, peer, NULL);
            return;
        }
        const kvc_t *ik = find(&rs, c->isr_key);
        const kvc_t *mk = find(&rs, c->members_key);
        ids_t isr, members;
        int64_t isr_epoch = isr_parse(ik ? ik->val : NULL, &isr);
        ids_parse(mk ? mk->val : NULL, &members);
        int64_t isr_mod = ik ? ik->mod : 0;
        call_fini(&rs);
        bool in = ids_has(&isr, peer->node_id);
        ids_t next = { .n = 0 };
        if (peer->caught_up && !in && ids_has(&members, peer->node_id)) {
            next = isr;
            if (next.n < MAX_IDS) {
                size_t l = strnlen(peer->node_id, ID_MAX - 1);
                memcpy(next.v[next.n], peer->node_id, l);
                next.v[next.n++][l] = 0;
            }
        } else if (!peer->caught_up && in) {
            if (!ss_repl_isr_leave(c->repl, epoch, peer->node_id)) {
                peer_retry_later(c, epoch, peer, "the other members do not "
                                 "hold every acknowledged write yet");
                return;
            }
            for (size_t i = 0; i < isr.n; i++)
                if (strcmp(isr.v[i], peer->node_id) != 0)
                    memcpy(next.v[next.n++], isr.v[i], ID_MAX);
        } else {
            /* Nothing to change in etcd; one it does not list must not
             * hold answers (ss_repl.h, joining). */
            if (!in) {
                ss_repl_isr_unjoin(c->repl, epoch, peer->node_id,
                                   !peer->caught_up);
            } else if (peer->caught_up && isr_epoch == epoch) {
                /* listed by a write of ours whose answer was lost */
                const char *p[MAX_IDS];
                ids_ptrs(&isr, p);
                ss_repl_set_isr(c->repl, epoch, p, isr.n);
            }
            return;
        }
        char ev[24], list[MAX_IDS * ID_MAX], val[MAX_IDS * ID_MAX + 32];
        snprintf(ev, sizeof(ev), "%lld", (long long)epoch);
        ids_join(&next, list, sizeof(list));
        snprintf(val, sizeof(val), "%lld:%s", (long long)epoch, list);
        gt_etcd_cmp_t cmp[3] = {
            { .key = c->epoch_key, .target = GT_ETCD_CMP_VALUE,
              .op = GT_ETCD_EQ, .value = ev, .value_len = strlen(ev) },
            { .key = c->leader_key, .target = GT_ETCD_CMP_VALUE,
              .op = GT_ETCD_EQ, .value = c->id, .value_len = strlen(c->id) },
            { .key = c->isr_key, .target = GT_ETCD_CMP_MOD, .op = GT_ETCD_EQ,
              .num = isr_mod },
        };
        gt_etcd_op_t op = { .kind = GT_ETCD_OP_PUT, .key = c->isr_key,
                            .value = val, .value_len = strlen(val) };
        call_t w;
        call_init(&w);
        err = call_wait(&w, gt_etcd_txn(c->e, cmp, 3, &op, 1, NULL, 0, on_txn,
                                        &w));
        bool ok = w.ok;
        call_fini(&w);
        if (err != GT_OK) {
            /* unknown outcome: a joining peer stays joining */
            peer_retry_later(c, epoch, peer, NULL);
            return;
        }
        if (ok) {
            const char *p[MAX_IDS];
            ids_ptrs(&next, p);
            ss_repl_set_isr(c->repl, epoch, p, next.n);
            publish(c, SS_ROLE_LEADER, epoch, (int)next.n);
            GT_LOG(INFO, "cluster", "in-sync set of epoch %lld: %s (%s %s)",
                   (long long)epoch, list, peer->node_id,
                   peer->caught_up ? "caught up" : "lagging");
            return;
        }
        /* The compare failed: fenced (epoch or leader), or read again. */
    }
    if (peer->caught_up) /* not listed: stop waiting for it, it rejoins */
        ss_repl_isr_unjoin(c->repl, epoch, peer->node_id, false);
    pthread_mutex_lock(&c->mu);
    c->dirty = true;
    pthread_mutex_unlock(&c->mu);
}

/* ---- reconcile with the replica set's keys ------------------------------ */

/* The keys of rs/<k> (control thread; before the watch and the election
 * start). */
static void set_keys(ss_cluster_t *c, int k)
{
    snprintf(c->rs, sizeof(c->rs), "%s%d", c->sets_pfx, k);
    snprintf(c->rs_pfx, sizeof(c->rs_pfx), "%s/", c->rs);
    snprintf(c->members_key, sizeof(c->members_key), "%s/members", c->rs);
    snprintf(c->isr_key, sizeof(c->isr_key), "%s/isr", c->rs);
    snprintf(c->leader_key, sizeof(c->leader_key), "%s/leader", c->rs);
    snprintf(c->epoch_key, sizeof(c->epoch_key), "%s/epoch", c->rs);
    snprintf(c->history_key, sizeof(c->history_key), "%s/history", c->rs);
    snprintf(c->pos_pfx, sizeof(c->pos_pfx), "%s/pos/", c->rs);
    snprintf(c->pos_key, sizeof(c->pos_key), "%s%s", c->pos_pfx, c->id);
    c->pos_pub[0] = 0;
    pthread_mutex_lock(&c->mu);
    c->set = k;
    if (c->set_slot)
        atomic_store(c->set_slot, k);
    pthread_mutex_unlock(&c->mu);
}

/* Adds this node to rs/<k>/members (mk: the key as read, NULL if absent)
 * while it has room; the R-th member creates the in-sync set.  1: joined,
 * 0: the list changed meanwhile (read again), -1: etcd error. */
static int join(ss_cluster_t *c, int k, const kvc_t *mk, const ids_t *members,
                bool isr_exists)
{
    char mkey[440], ikey[440];
    snprintf(mkey, sizeof(mkey), "%s%d/members", c->sets_pfx, k);
    snprintf(ikey, sizeof(ikey), "%s%d/isr", c->sets_pfx, k);
    ids_t next = *members;
    snprintf(next.v[next.n++], ID_MAX, "%s", c->id);
    char list[MAX_IDS * ID_MAX], isr[MAX_IDS * ID_MAX + 8];
    ids_join(&next, list, sizeof(list));
    snprintf(isr, sizeof(isr), "0:%s", list);
    gt_etcd_cmp_t cmp[2] = {
        { .key = mkey, .target = mk ? GT_ETCD_CMP_MOD : GT_ETCD_CMP_VERSION,
          .op = GT_ETCD_EQ, .num = mk ? mk->mod : 0 },
        { .key = ikey, .target = GT_ETCD_CMP_VERSION, .op = GT_ETCD_EQ,
          .num = 0 },
    };
    gt_etcd_op_t ops[2] = {
        { .kind = GT_ETCD_OP_PUT, .key = mkey, .value = list,
          .value_len = strlen(list) },
        { .kind = GT_ETCD_OP_PUT, .key = ikey, .value = isr,
          .value_len = strlen(isr) },
    };
    bool full = (int)next.n >= c->replicas && !isr_exists;
    call_t w;
    call_init(&w);
    gt_err_t err = call_wait(&w, gt_etcd_txn(c->e, cmp, full ? 2 : 1, ops,
                                             full ? 2 : 1, NULL, 0, on_txn,
                                             &w));
    bool ok = w.ok;
    call_fini(&w);
    if (err != GT_OK)
        return -1;
    if (ok)
        GT_LOG(INFO, "cluster", "joined %s%d: members %s%s", c->sets_pfx, k,
               list, full ? " (complete: all in sync)" : "");
    return ok ? 1 : 0;
}

/* "<sets_pfx><k>/members" -> k; -1 for any other key. */
static int members_set(const ss_cluster_t *c, const char *key)
{
    size_t pl = strlen(c->sets_pfx);
    if (strncmp(key, c->sets_pfx, pl) != 0)
        return -1;
    const char *p = key + pl;
    char *end;
    if (*p < '0' || *p > '9')
        return -1;
    long k = strtol(p, &end, 10);
    if (k > 1000000 || strcmp(end, "/members") != 0)
        return -1;
    return (int)k;
}

/* Finds this node's replica set: the one whose members list has it, else
 * the lowest one with room, joined by transaction.  Leaves c->set at -1
 * (and a retry scheduled) if etcd fails. */
static void choose_set(ss_cluster_t *c)
{
    for (int attempt = 0; attempt < 32; attempt++) {
        call_t all;
        if (get_kvs(c, c->sets_pfx, true, &all) != GT_OK) {
            call_fini(&all);
            retry_later(c);
            return;
        }
        int mine = -1, room = -1, top = -1;
        for (size_t i = 0; i < all.n; i++) {
            int k = members_set(c, all.kvs[i].key);
            if (k < 0)
                continue;
            ids_t ids;
            ids_parse(all.kvs[i].val, &ids);
            if (k > top)
                top = k;
            if (ids_has(&ids, c->id) && (mine < 0 || k < mine))
                mine = k;
            if ((int)ids.n < c->replicas && (room < 0 || k < room))
                room = k;
        }
        if (mine >= 0) {
            call_fini(&all);
            set_keys(c, mine);
            GT_LOG(INFO, "cluster", "member of %s", c->rs);
            return;
        }
        /* The lowest k without a list (a gap, or past the last) has room
         * too. */
        for (int k = 0; k <= top + 1; k++) {
            if (room >= 0 && k >= room)
                break;
            char key[440];
            snprintf(key, sizeof(key), "%s%d/members", c->sets_pfx, k);
            if (!find(&all, key)) {
                room = k;
                break;
            }
        }
        char mkey[440], ikey[440];
        snprintf(mkey, sizeof(mkey), "%s%d/members", c->sets_pfx, room);
        snprintf(ikey, sizeof(ikey), "%s%d/isr", c->sets_pfx, room);
        const kvc_t *mk = find(&all, mkey);
        ids_t members;
        ids_parse(mk ? mk->val : NULL, &members);
        int r = members.n < MAX_IDS
                    ? join(c, room, mk, &members, find(&all, ikey) != NULL)
                    : 0;
        call_fini(&all);
        if (r < 0) {
            retry_later(c);
            return;
        }
        if (r > 0) {
            set_keys(c, room);
            return;
        }
        /* Another node changed the list first: read again. */
    }
    GT_LOG(WARN, "cluster", "could not join a replica set (member lists kept "
           "changing); retrying");
    retry_later(c);
}

static void follow(ss_cluster_t *c, const char *leader, int64_t epoch)
{
    char key[600];
    snprintf(key, sizeof(key), "%s%s", c->stores_pfx, leader);
    call_t w;
    gt_err_t err = get_kvs(c, key, false, &w);
    if (err != GT_OK || w.n == 0) {
        /* Not registered (yet, or gone): the watch or the retry brings
         * the next state. */
        call_fini(&w);
        retry_later(c);
        return;
    }
    char addr[256];
    snprintf(addr, sizeof(addr), "%s", w.kvs[0].val);
    call_fini(&w);
    if (ss_repl_follow(c->repl, epoch, leader, addr) != GT_OK) {
        retry_later(c);
        return;
    }
    snprintf(c->following, sizeof(c->following), "%s", leader);
    publish(c, SS_ROLE_FOLLOWER, epoch, 0);
    GT_LOG(INFO, "cluster", "following %s at %s, epoch %lld", leader, addr,
           (long long)epoch);
}

/* This node's position for the election that follows epoch `epoch`,
 * under its lease (gone with the node), unless already there. */
static void put_position(ss_cluster_t *c, int64_t epoch)
{
    char key[SS_REPL_KEY_MAX], val[SS_REPL_KEY_MAX + 32];
    if (c->lease == 0)
        return;
    if (!ss_repl_elect_key(c->repl, key, sizeof(key))) {
        GT_LOG(WARN, "cluster", "cannot read this node's position (its data "
               "directory failed): not standing for election");
        retry_later(c);
        return;
    }
    snprintf(val, sizeof(val), "%lld %s", (long long)epoch, key);
    if (c->pos_lease == c->lease && strcmp(val, c->pos_pub) == 0)
        return;
    call_t w;
    call_init(&w);
    gt_err_t err = call_wait(&w, gt_etcd_put(c->e, c->pos_key, val,
                                             strlen(val), c->lease, on_write,
                                             &w));
    call_fini(&w);
    if (err != GT_OK) {
        retry_later(c);
        return;
    }
    snprintf(c->pos_pub, sizeof(c->pos_pub), "%s", val);
    c->pos_lease = c->lease;
    GT_LOG(INFO, "cluster", "position for the election after epoch %lld: %s",
           (long long)epoch, key);
}

static void reconcile(ss_cluster_t *c)
{
    if (c->set < 0) {
        choose_set(c);
        if (c->set < 0)
            return;
    }
    call_t rs;
    gt_err_t err = get_kvs(c, c->rs_pfx, true, &rs);
    if (err != GT_OK) {
        call_fini(&rs);
        retry_later(c);
        return;
    }
    pthread_mutex_lock(&c->mu);
    bool restart = c->watch_ended;
    c->watch_ended = false;
    pthread_mutex_unlock(&c->mu);
    if (restart) {
        gt_etcd_watch_cancel(c->watch);
        c->watch = NULL;
    }
    if (!c->watch) {
        static const gt_etcd_watch_cbs_t cbs = { on_rs_events, on_rs_end };
        if (gt_etcd_watch(c->e, c->rs_pfx, true, rs.rev + 1, &cbs, c,
                          &c->watch) != GT_OK) {
            c->watch = NULL;
            call_fini(&rs);
            retry_later(c);
            return;
        }
    }
    const kvc_t *mk = find(&rs, c->members_key);
    const kvc_t *ik = find(&rs, c->isr_key);
    const kvc_t *lk = find(&rs, c->leader_key);
    const kvc_t *ek = find(&rs, c->epoch_key);
    ids_t members, isr;
    ids_parse(mk ? mk->val : NULL, &members);
    isr_parse(ik ? ik->val : NULL, &isr);
    int64_t epoch = ek ? strtoll(ek->val, NULL, 10) : 0;
    bool member = ids_has(&members, c->id);
    pthread_mutex_lock(&c->mu);
    c->member = member;
    pthread_mutex_unlock(&c->mu);

    if (!member) {
        /* Listed when the set was chosen: the list went from etcd (wiped
         * or restored).  Join again while it has room. */
        if ((int)members.n < c->replicas && members.n < MAX_IDS &&
            join(c, c->set, mk, &members, ik != NULL) < 0)
            retry_later(c);
        call_fini(&rs);
        return; /* not a member: stand by */
    }
    int64_t my_epoch = 0;
    ss_role_t role = role_now(c, &my_epoch);
    char leader[ID_MAX] = "";
    int64_t leader_lease = 0;
    if (lk) {
        snprintf(leader, sizeof(leader), "%s", lk->val);
        leader_lease = lk->lease;
    }
    call_fini(&rs);

    if (role == SS_ROLE_LEADER) {
        if (strcmp(leader, c->id) != 0 || epoch != my_epoch) {
            stand_down(c, leader[0] ? "another node leads"
                                    : "the leader key is gone");
            role = SS_ROLE_STANDBY;
        } else {
            return;
        }
    }
    if (!leader[0]) {
        /* Nobody leads: a follower stops fetching (its position must not
         * move: an old leader cannot acknowledge anything now, see
         * Fencing), and a member of the in-sync set puts its position for
         * the election (gt_elect.h, "Positions"). */
        if (role == SS_ROLE_FOLLOWER) {
            ss_repl_stand_down(c->repl);
            c->following[0] = 0;
            publish(c, SS_ROLE_STANDBY, 0, 0);
            role = SS_ROLE_STANDBY;
        }
        if (role == SS_ROLE_STANDBY && ids_has(&isr, c->id))
            put_position(c, epoch);
    }
    if (leader[0] && strcmp(leader, c->id) == 0) {
        if (leader_lease != c->lease) {
            /* From this node's previous life (restarted within the TTL):
             * give that lease up so that a campaign can run now. */
            GT_LOG(INFO, "cluster", "the leader key is from an earlier "
                   "lease of this node: revoking it");
            call_t w;
            call_init(&w);
            call_wait(&w, gt_etcd_lease_revoke(c->e, leader_lease, on_write,
                                               &w));
            call_fini(&w);
        }
        else if (!c->el) {
            /* Stood down (lease in doubt, fenced) while still holding the
             * key: give it up so that the set elects again. */
            resign(c, "holding the leader key without leading");
            return;
        }
        /* else: won, take_lead runs next */
    } else if (leader[0]) {
        if (role != SS_ROLE_FOLLOWER || strcmp(c->following, leader) != 0 ||
            my_epoch != epoch)
            follow(c, leader, epoch);
    }
    if (!c->el && c->lease != 0) {
        gt_elect_opts_t o = { .prefix = c->rs, .node_id = c->id,
                              .lease = c->lease, .require_isr = true,
                              .min_insync = c->min_insync,
                              .on_leader = on_won, .arg = c,
                              .tally = &c->tally };
        if (gt_elect_start_opts(c->e, &o, &c->el) != GT_OK) {
            c->el = NULL;
            retry_later(c);
        }
    }
}

/* ---- the control thread ----------------------------------------------- */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static void *ctl_main(void *arg)
{
    ss_cluster_t *c = arg;
    pthread_mutex_lock(&c->mu);
    c->dirty = true;
    pthread_mutex_unlock(&c->mu);
    for (;;) {
        bool expired = false;
        pthread_mutex_lock(&c->mu);
        for (;;) {
            /* A leader cut off from etcd: past the time its lease surely
             * lives it must assume another node leads.  Checked first:
             * other work (events, retries, each waiting on etcd) must not
             * keep it from standing down. */
            int64_t now = mono_ms();
            int64_t fence_at = c->role == SS_ROLE_LEADER && c->ka
                                   ? gt_etcd_keepalive_valid_until(c->ka) : 0;
            if (c->role == SS_ROLE_LEADER && now >= fence_at) {
                expired = true;
                break;
            }
            if (c->stopping || c->lost || c->fenced || c->won ||
                c->n_peer_ev || (c->dirty && c->retry_at == 0))
                break;
            if (c->retry_at && now >= c->retry_at) {
                c->retry_at = 0;
                c->dirty = true;
                break;
            }
            int64_t wake_at = c->retry_at;
            if (fence_at && (!wake_at || fence_at < wake_at))
                wake_at = fence_at;
            if (wake_at) {
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                int64_t left = wake_at - now;
                ts.tv_sec += left / 1000;
                ts.tv_nsec += (left % 1000) * 1000000;
                if (ts.tv_nsec >= 1000000000) {
                    ts.tv_sec++;
                    ts.tv_nsec -= 1000000000;
                }
                pthread_cond_timedwait(&c->cv, &c->mu, &ts);
            } else {
                pthread_cond_wait(&c->cv, &c->mu);
            }
        }
        bool stop = c->stopping, lost = c->lost, fenced = c->fenced;
        int64_t won = c->won, fenced_epoch = c->fenced_epoch;
        bool dirty = c->dirty && c->retry_at == 0;
        ss_repl_peer_t peers[MAX_PEER_EVS];
        size_t n_peers = c->n_peer_ev;
        memcpy(peers, c->peer_ev, n_peers * sizeof(peers[0]));
        c->n_peer_ev = 0;
        c->fenced = false;
        c->won = 0;
        if (dirty)
            c->dirty = false;
        pthread_mutex_unlock(&c->mu);
        if (stop)
            break;
        if (expired && !lost)
            stand_down(c, "no lease renewal answered within the lease TTL");
        if (lost && c->lease != 0) {
            stand_down(c, "etcd lease lost");
            unregister(c);
            won = 0;
        }
        if (c->lease == 0) {
            gt_err_t err = register_once(c);
            if (err != GT_OK) {
                GT_LOG(WARN, "cluster", "cannot register %s in etcd: %s; "
                       "retrying", c->store_key, gt_err_str(err));
                unregister(c);
                retry_later(c);
                pthread_mutex_lock(&c->mu);
                c->dirty = true;
                pthread_mutex_unlock(&c->mu);
                continue;
            }
            dirty = true;
        }
        int64_t my_epoch = 0;
        ss_role_t role = role_now(c, &my_epoch);
        if (fenced && fenced_epoch > my_epoch && role != SS_ROLE_STANDBY) {
            stand_down(c, "a newer epoch was seen");
            won = 0;
        }
        if (won)
            take_lead(c, won);
        for (size_t i = 0; i < n_peers; i++)
            isr_change(c, &peers[i]);
        if (dirty && c->n_peer_retry > 0) { /* the retry is due */
            for (size_t i = 0; i < c->n_peer_retry; i++)
                ss_repl_peer_retry(c->repl, c->peer_retry_epoch[i],
                                   c->peer_retry[i]);
            c->n_peer_retry = 0;
        }
        if (dirty || fenced)
            reconcile(c);
    }
    return NULL;
}

/* ---- life cycle ----------------------------------------------------------- */

gt_err_t ss_cluster_new(const cfg_t *cfg, ss_cluster_t **out)
{
    *out = NULL;
    if (cfg->cluster.etcd.n == 0)
        return GT_OK;
    ss_cluster_t *c = calloc(1, sizeof(*c));
    if (!c)
        return GT_ENOMEM;
    const char *adv = cfg->cluster.advertise && cfg->cluster.advertise[0]
                          ? cfg->cluster.advertise : cfg->store_server.listen;
    const char *id = cfg->cluster.node_id && cfg->cluster.node_id[0]
                         ? cfg->cluster.node_id : adv;
    snprintf(c->id, sizeof(c->id), "%s", id);
    snprintf(c->addr, sizeof(c->addr), "%s", adv);
    const char *n = cfg->cluster.name;
    snprintf(c->store_key, sizeof(c->store_key), "/gantry/%s/stores/%s", n,
             c->id);
    snprintf(c->stores_pfx, sizeof(c->stores_pfx), "/gantry/%s/stores/", n);
    snprintf(c->sets_pfx, sizeof(c->sets_pfx), "/gantry/%s/rs/", n);
    c->set = -1; /* rs/<k>'s keys once chosen (choose_set) */
    c->ttl = cfg->cluster.lease_ttl_s;
    c->replicas = cfg->cluster.replicas;
    c->min_insync = cfg->cluster.min_insync > 0 ? cfg->cluster.min_insync : 1;
    c->retry_ms = c->ttl * 1000 / 3 < 200 ? 200 : c->ttl * 1000 / 3;
    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* timed waits */
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    gt_etcd_opts_t o = {
        .endpoints = (const char *const *)cfg->cluster.etcd.v,
        .n_endpoints = cfg->cluster.etcd.n,
        /* a call must not outlast the lease it serves */
        .call_timeout_ms = c->ttl * 1000 / 2 > 1000 ? c->ttl * 1000 / 2 : 1000,
    };
    gt_err_t err = gt_etcd_new(&o, &c->e);
    if (err != GT_OK) {
        pthread_mutex_destroy(&c->mu);
        pthread_cond_destroy(&c->cv);
        free(c);
        return err;
    }
    *out = c;
    return GT_OK;
}

void ss_cluster_publish_set(ss_cluster_t *c, _Atomic int *slot)
{
    pthread_mutex_lock(&c->mu);
    c->set_slot = slot;
    atomic_store(slot, c->set);
    pthread_mutex_unlock(&c->mu);
}

gt_err_t ss_cluster_run(ss_cluster_t *c, ss_repl_t *repl)
{
    c->repl = repl;
    if (pthread_create(&c->thread, NULL, ctl_main, c) != 0)
        return GT_ENOMEM;
    c->running = true;
    return GT_OK;
}

void ss_cluster_metrics(ss_cluster_t *c, FILE *out)
{
    pthread_mutex_lock(&c->mu);
    int role = c->role == SS_ROLE_LEADER ? 1
               : c->role == SS_ROLE_FOLLOWER ? 2 : 0;
    int64_t epoch = c->epoch, won = c->elections_won, downs = c->step_downs;
    int isr_n = c->isr_n;
    bool member = c->member;
    int set = c->set;
    pthread_mutex_unlock(&c->mu);
    fprintf(out,
            "# HELP gantry_store_role This node's role in its replica set: "
            "0 standby, 1 leader, 2 follower.\n"
            "# TYPE gantry_store_role gauge\n"
            "gantry_store_role %d\n"
            "# HELP gantry_store_epoch Epoch of the role (0 in standby).\n"
            "# TYPE gantry_store_epoch gauge\n"
            "gantry_store_epoch %lld\n"
            "# HELP gantry_store_isr_members In-sync set size (leader only).\n"
            "# TYPE gantry_store_isr_members gauge\n"
            "gantry_store_isr_members %d\n"
            "# HELP gantry_store_replica_member 1 if this node is in the "
            "replica set's member list.\n"
            "# TYPE gantry_store_replica_member gauge\n"
            "gantry_store_replica_member %d\n"
            "# HELP gantry_store_replica_set The replica set k this node "
            "belongs to (/gantry/<name>/rs/<k>/); -1 until it is known.\n"
            "# TYPE gantry_store_replica_set gauge\n"
            "gantry_store_replica_set %d\n"
            "# HELP gantry_store_elections_won_total Epochs this node took up "
            "leadership of.\n"
            "# TYPE gantry_store_elections_won_total counter\n"
            "gantry_store_elections_won_total %lld\n"
            "# HELP gantry_store_step_downs_total Times this node stopped "
            "leading or following (lease lost, fenced, leader changed).\n"
            "# TYPE gantry_store_step_downs_total counter\n"
            "gantry_store_step_downs_total %lld\n"
            "# HELP gantry_store_election_reads_total Reads of the replica "
            "set's keys at which this node did not campaign: a leader was "
            "there (or it lost the race), it waits for more members' "
            "positions or for one above its own (min_insync), it is not "
            "in the in-sync set.\n"
            "# TYPE gantry_store_election_reads_total counter\n"
            "gantry_store_election_reads_total{outcome=\"leader_present\"} "
            "%lld\n"
            "gantry_store_election_reads_total{outcome=\"waiting_for_"
            "positions\"} %lld\n"
            "gantry_store_election_reads_total{outcome=\"not_in_sync\"} "
            "%lld\n",
            role, (long long)epoch, isr_n, member ? 1 : 0, set,
            (long long)won,
            (long long)downs, (long long)atomic_load(&c->tally.lost),
            (long long)atomic_load(&c->tally.deferred),
            (long long)atomic_load(&c->tally.ineligible));
}

void ss_cluster_stop(ss_cluster_t *c)
{
    if (!c)
        return;
    if (c->running) {
        pthread_mutex_lock(&c->mu);
        c->stopping = true;
        pthread_cond_broadcast(&c->cv);
        pthread_mutex_unlock(&c->mu);
        pthread_join(c->thread, NULL);
        if (role_now(c, NULL) != SS_ROLE_STANDBY)
            ss_repl_stand_down(c->repl);
    }
    gt_elect_stop(c->el);
    gt_etcd_watch_cancel(c->watch);
    gt_etcd_keepalive_stop(c->ka);
    if (c->lease != 0) { /* unregister (and resign) at once */
        call_t w;
        call_init(&w);
        call_wait(&w, gt_etcd_lease_revoke(c->e, c->lease, on_write, &w));
        call_fini(&w);
    }
    gt_etcd_free(c->e);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);
}
