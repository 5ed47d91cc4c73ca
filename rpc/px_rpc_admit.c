/* Admission control bookkeeping: request bytes in flight, for the server
 * and per connection (see px_rpc_int.h).
 *
 * The rule: a call is admitted when its bytes fit under both bounds, or
 * when nothing else is in flight on the bound it would pass (so one
 * request larger than a bound is still served when the server or its
 * connection is otherwise idle, instead of never).  Small calls (a
 * reservation of at most PX_ADMIT_SMALL_BYTES) may go past the server
 * bound by a sixteenth of it: a client of small requests is not refused
 * for the sake of large ones that fill the bound, while the memory the
 * bound protects grows by that sixteenth at most.  The runtime charges a
 * reservation at arrival, before the message is read (sized from what
 * the connection sent before, see px_admit_conn_size), and the real size
 * once it is in.
 *
 * A request whose size is not known yet (a connection's first of a
 * method, or its probe after a refusal) may turn out as large as the
 * largest message the core accepts, and the core reads it whole once its
 * receive is posted: admitted on small guesses, eight connections'
 * first 32 MiB batches were all read at once (bench-overload C, peak RSS
 * up to 276 MiB at a 128 MiB bound).  So such a read is admitted only
 * when its worst case fits under the server bound (held there until its
 * message is in), or on its guess while no other such read is (one at a
 * time): at most one read of unknown size is ever uncovered.  (The gRPC
 * server passes no worst case: grpc 1.51 reads a message past its
 * receive limit whole too, so its reads of unknown size are one at a
 * time.)  A connection whose admitted request ended unread is held off
 * for a while (px_admit_note_unread, px_admit_held_off). */
#include <stdlib.h>
#include <string.h>

#include "px_rpc_int.h"

void px_admit_init(px_admit_t *a, int64_t max, int64_t conn_max)
{
    memset(a, 0, sizeof(*a));
    pthread_mutex_init(&a->mu, NULL);
    a->max = max;
    a->conn_max = conn_max;
    a->unread_hold_ms = PX_ADMIT_UNREAD_HOLD_MS;
    a->unread_hold_max_ms = PX_ADMIT_UNREAD_HOLD_MAX_MS;
}

void px_admit_destroy(px_admit_t *a)
{
    for (size_t i = 0; i < PX_ADMIT_BUCKETS; i++) {
        while (a->buckets[i] != NULL) {
            px_conn_t *c = a->buckets[i];
            a->buckets[i] = c->next;
            free(c);
        }
    }
    pthread_mutex_destroy(&a->mu);
}

static size_t px_admit_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return (size_t)(h % PX_ADMIT_BUCKETS);
}

/* Would adding `add` to `used` pass `max` while something is in flight? */
static bool px_admit_over(int64_t used, int64_t add, int64_t max)
{
    return max > 0 && used > 0 && used + add > max;
}

static void px_admit_charge_locked(px_admit_t *a, px_conn_t *c, int64_t d)
{
    a->bytes += d;
    c->bytes += d;
    if (a->bytes + a->held > a->peak)
        a->peak = a->bytes + a->held;
    if (a->bytes > a->burst_peak)
        a->burst_peak = a->bytes;
}

/* Frees the entries of connections without calls. */
static void px_admit_sweep_locked(px_admit_t *a)
{
    for (size_t i = 0; i < PX_ADMIT_BUCKETS; i++) {
        px_conn_t **pp = &a->buckets[i];
        while (*pp != NULL) {
            px_conn_t *c = *pp;
            if (c->calls == 0) {
                *pp = c->next;
                free(c);
                a->n_conns--;
                a->n_idle--;
            } else {
                pp = &c->next;
            }
        }
    }
}

static px_conn_t *px_admit_find_locked(px_admit_t *a, const char *peer)
{
    px_conn_t *c = a->buckets[px_admit_hash(peer)];

    while (c != NULL && strcmp(c->peer, peer) != 0)
        c = c->next;
    return c;
}

/* The server bound for a charge of `bytes` (small ones get headroom). */
static int64_t px_admit_max(const px_admit_t *a, int64_t bytes)
{
    if (a->max > 0 && bytes <= PX_ADMIT_SMALL_BYTES)
        return a->max + a->max / PX_ADMIT_SMALL_SHARE;
    return a->max;
}

/* Charges an admitted call of `peer` (entry `c`, NULL if none yet). */
static bool px_admit_add_locked(px_admit_t *a, const char *peer, px_conn_t *c,
                                int64_t bytes, px_conn_t **conn)
{
    size_t b = px_admit_hash(peer);

    if (c == NULL && a->n_idle >= PX_ADMIT_MAX_IDLE)
        px_admit_sweep_locked(a);
    if (c == NULL) {
        size_t n = strlen(peer) + 1;
        if ((c = calloc(1, sizeof(*c) + n)) == NULL)
            return false;
        memcpy(c->peer, peer, n);
        c->next = a->buckets[b];
        a->buckets[b] = c;
        a->n_conns++;
    } else if (c->calls == 0) {
        a->n_idle--;
    }
    c->calls++;
    a->calls++;
    px_admit_charge_locked(a, c, bytes);
    *conn = c;
    return true;
}

bool px_admit_enter(px_admit_t *a, const char *peer, int64_t bytes,
                    bool force, px_conn_t **conn)
{
    int64_t max = px_admit_max(a, bytes);
    px_conn_t *c;
    bool ok = false;

    *conn = NULL;
    pthread_mutex_lock(&a->mu);
    c = px_admit_find_locked(a, peer);
    if (!force && (px_admit_over(a->bytes + a->held, bytes, max) ||
                   (c != NULL && px_admit_over(c->bytes, bytes, a->conn_max)))) {
        a->rejected++;
        goto out;
    }
    ok = px_admit_add_locked(a, peer, c, bytes, conn);
out:
    pthread_mutex_unlock(&a->mu);
    return ok;
}

px_admit_verdict_t px_admit_enter_unknown(px_admit_t *a, const char *peer,
                                          int64_t guess, int64_t worst,
                                          px_conn_t **conn, int64_t *held,
                                          bool *guessed)
{
    int64_t used;
    px_conn_t *c;
    px_admit_verdict_t v = PX_ADMIT_REFUSED;

    *held = 0;
    *guessed = false;
    if (a->max <= 0)
        return px_admit_enter(a, peer, guess, false, conn) ? PX_ADMIT_OK
                                                           : PX_ADMIT_REFUSED;
    if (worst < guess)
        worst = guess;
    *conn = NULL;
    pthread_mutex_lock(&a->mu);
    used = a->bytes + a->held;
    c = px_admit_find_locked(a, peer);
    if (c != NULL && px_admit_over(c->bytes, guess, a->conn_max))
        goto refused;
    if (used + worst <= a->max) {
        if (!px_admit_add_locked(a, peer, c, guess, conn))
            goto out;
        *held = worst - guess;
        a->held += *held;
        if (a->bytes + a->held > a->peak)
            a->peak = a->bytes + a->held;
        v = PX_ADMIT_OK;
        goto out;
    }
    if (!px_admit_over(used, guess, px_admit_max(a, guess))) {
        if (a->guessed >= PX_ADMIT_GUESSED_MAX) {
            /* The guess fits, only the slot is taken: worth waiting for
             * (not a refusal). */
            v = PX_ADMIT_WAIT;
            goto out;
        }
        if (!px_admit_add_locked(a, peer, c, guess, conn))
            goto out;
        a->guessed++;
        *guessed = true;
        v = PX_ADMIT_OK;
        goto out;
    }
refused:
    a->rejected++;
out:
    pthread_mutex_unlock(&a->mu);
    return v;
}

px_admit_verdict_t px_admit_enter_behind(px_admit_t *a, const char *peer,
                                         int64_t guess, int64_t worst)
{
    px_conn_t *c;
    int64_t used;
    px_admit_verdict_t v = PX_ADMIT_WAIT;

    if (worst < guess)
        worst = guess;
    pthread_mutex_lock(&a->mu);
    used = a->bytes + a->held;
    c = px_admit_find_locked(a, peer);
    if ((c != NULL && px_admit_over(c->bytes, guess, a->conn_max)) ||
        (used + worst > a->max &&
         px_admit_over(used, guess, px_admit_max(a, guess)))) {
        a->rejected++;
        v = PX_ADMIT_REFUSED;
    }
    pthread_mutex_unlock(&a->mu);
    return v;
}

void px_admit_count_refusal(px_admit_t *a)
{
    pthread_mutex_lock(&a->mu);
    a->rejected++;
    pthread_mutex_unlock(&a->mu);
}

void px_admit_unknown_done(px_admit_t *a, int64_t held, bool guessed)
{
    if (held == 0 && !guessed)
        return;
    pthread_mutex_lock(&a->mu);
    a->held -= held;
    if (guessed)
        a->guessed--;
    pthread_mutex_unlock(&a->mu);
}

bool px_admit_adjust(px_admit_t *a, px_conn_t *conn, int64_t from, int64_t to,
                     bool force)
{
    int64_t d = to - from;
    int64_t max = px_admit_max(a, to);
    bool ok = true;

    pthread_mutex_lock(&a->mu);
    if (d > 0 && !force && (px_admit_over(a->bytes + a->held - from, to, max) ||
                  px_admit_over(conn->bytes - from, to, a->conn_max))) {
        a->rejected++;
        ok = false;
    } else {
        px_admit_charge_locked(a, conn, d);
    }
    pthread_mutex_unlock(&a->mu);
    return ok;
}

bool px_admit_leave(px_admit_t *a, px_conn_t *conn, int64_t bytes)
{
    bool trim = false;

    pthread_mutex_lock(&a->mu);
    px_admit_charge_locked(a, conn, -bytes);
    if (--conn->calls == 0)
        a->n_idle++;
    /* A burst drained: hand its memory back (glibc keeps freed heap and
     * arena memory otherwise). */
    if (a->burst_peak >= PX_ADMIT_TRIM_BYTES &&
        a->bytes <= a->burst_peak / 8) {
        a->burst_peak = a->bytes;
        trim = true;
    }
    pthread_mutex_unlock(&a->mu);
    return trim;
}

int64_t px_admit_conn_size(px_admit_t *a, const char *peer, size_t m)
{
    int64_t n = 0;
    px_conn_t *c;

    if (m >= PX_ADMIT_METHODS)
        return 0;
    pthread_mutex_lock(&a->mu);
    if ((c = px_admit_find_locked(a, peer)) != NULL) {
        n = c->size_avg[m];
        if (n == -1)
            c->size_avg[m] = -2; /* one probe at a time */
        else if (n < 0)
            n = 0;
    }
    pthread_mutex_unlock(&a->mu);
    return n;
}

void px_admit_note_refused(px_admit_t *a, const char *peer, size_t m)
{
    px_conn_t *c;

    if (m >= PX_ADMIT_METHODS)
        return;
    pthread_mutex_lock(&a->mu);
    if ((c = px_admit_find_locked(a, peer)) == NULL) {
        size_t n = strlen(peer) + 1, b = px_admit_hash(peer);
        if (a->n_idle >= PX_ADMIT_MAX_IDLE)
            px_admit_sweep_locked(a);
        if ((c = calloc(1, sizeof(*c) + n)) != NULL) {
            memcpy(c->peer, peer, n);
            c->next = a->buckets[b];
            a->buckets[b] = c;
            a->n_conns++;
            a->n_idle++;
        }
    }
    if (c != NULL && (c->size_avg[m] == 0 || c->size_avg[m] == -2))
        c->size_avg[m] = -1; /* (a refused probe probes again) */
    pthread_mutex_unlock(&a->mu);
}

void px_admit_note_unread(px_admit_t *a, px_conn_t *conn, size_t m,
                          bool unknown, int64_t now_ms)
{
    int64_t hold;

    if (m >= PX_ADMIT_METHODS || conn == NULL)
        return;
    pthread_mutex_lock(&a->mu);
    if (!unknown) {
        conn->size_avg[m] = -1;
        pthread_mutex_unlock(&a->mu);
        return;
    }
    if (conn->unread_strikes[m] < 16)
        conn->unread_strikes[m]++;
    hold = a->unread_hold_ms << (conn->unread_strikes[m] - 1);
    if (hold > a->unread_hold_max_ms || hold <= 0)
        hold = a->unread_hold_max_ms;
    conn->unread_until_ms[m] = now_ms + hold;
    conn->size_avg[m] = -1; /* the next one after the hold probes */
    pthread_mutex_unlock(&a->mu);
}

bool px_admit_held_off(px_admit_t *a, const char *peer, size_t m,
                       int64_t now_ms)
{
    px_conn_t *c;
    bool held = false;

    if (m >= PX_ADMIT_METHODS)
        return false;
    pthread_mutex_lock(&a->mu);
    c = px_admit_find_locked(a, peer);
    if (c != NULL && c->unread_until_ms[m] > now_ms) {
        held = true;
        a->rejected++;
    }
    pthread_mutex_unlock(&a->mu);
    return held;
}

void px_admit_note_size(px_admit_t *a, px_conn_t *conn, size_t m, int64_t len)
{
    if (m >= PX_ADMIT_METHODS)
        return;
    if (len < 1)
        len = 1;
    pthread_mutex_lock(&a->mu);
    conn->unread_strikes[m] = 0;
    if (conn->size_avg[m] <= 0)
        conn->size_avg[m] = len;
    else
        conn->size_avg[m] += (len - conn->size_avg[m]) / 4;
    pthread_mutex_unlock(&a->mu);
}

void px_admit_stats(px_admit_t *a, px_rpc_stats_t *out)
{
    pthread_mutex_lock(&a->mu);
    out->inflight_bytes = a->bytes + a->held;
    out->inflight_peak_bytes = a->peak;
    out->rejected_overload = a->rejected;
    out->calls = a->calls;
    pthread_mutex_unlock(&a->mu);
}
