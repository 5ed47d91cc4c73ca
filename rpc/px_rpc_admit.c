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
 * once it is in. */
#include <stdlib.h>
#include <string.h>

#include "px_rpc_int.h"

void px_admit_init(px_admit_t *a, int64_t max, int64_t conn_max)
{
    memset(a, 0, sizeof(*a));
    pthread_mutex_init(&a->mu, NULL);
    a->max = max;
    a->conn_max = conn_max;
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
    if (a->bytes > a->peak)
        a->peak = a->bytes;
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

bool px_admit_enter(px_admit_t *a, const char *peer, int64_t bytes,
                    bool force, px_conn_t **conn)
{
    size_t b = px_admit_hash(peer);
    int64_t max = a->max;
    px_conn_t *c;
    bool ok = false;

    if (max > 0 && bytes <= PX_ADMIT_SMALL_BYTES)
        max += a->max / PX_ADMIT_SMALL_SHARE;
    *conn = NULL;
    pthread_mutex_lock(&a->mu);
    c = px_admit_find_locked(a, peer);
    if (!force && (px_admit_over(a->bytes, bytes, max) ||
                   (c != NULL && px_admit_over(c->bytes, bytes, a->conn_max)))) {
        a->rejected++;
        goto out;
    }
    if (c == NULL && a->n_idle >= PX_ADMIT_MAX_IDLE)
        px_admit_sweep_locked(a);
    if (c == NULL) {
        size_t n = strlen(peer) + 1;
        if ((c = calloc(1, sizeof(*c) + n)) == NULL)
            goto out;
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
    ok = true;
out:
    pthread_mutex_unlock(&a->mu);
    return ok;
}

bool px_admit_adjust(px_admit_t *a, px_conn_t *conn, int64_t from, int64_t to,
                     bool force)
{
    int64_t d = to - from;
    int64_t max = a->max;
    bool ok = true;

    if (max > 0 && to <= PX_ADMIT_SMALL_BYTES)
        max += a->max / PX_ADMIT_SMALL_SHARE;
    pthread_mutex_lock(&a->mu);
    if (d > 0 && !force && (px_admit_over(a->bytes - from, to, max) ||
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
    if (c != NULL && c->size_avg[m] == 0)
        c->size_avg[m] = -1;
    pthread_mutex_unlock(&a->mu);
}

void px_admit_note_size(px_admit_t *a, px_conn_t *conn, size_t m, int64_t len)
{
    if (m >= PX_ADMIT_METHODS)
        return;
    if (len < 1)
        len = 1;
    pthread_mutex_lock(&a->mu);
    if (conn->size_avg[m] <= 0)
        conn->size_avg[m] = len;
    else
        conn->size_avg[m] += (len - conn->size_avg[m]) / 4;
    pthread_mutex_unlock(&a->mu);
}

void px_admit_stats(px_admit_t *a, px_rpc_stats_t *out)
{
    pthread_mutex_lock(&a->mu);
    out->inflight_bytes = a->bytes;
    out->inflight_peak_bytes = a->peak;
    out->rejected_overload = a->rejected;
    out->calls = a->calls;
    pthread_mutex_unlock(&a->mu);
}
