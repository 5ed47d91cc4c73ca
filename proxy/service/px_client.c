/* The client registry: connected clients keyed by x-mq-client-id, the
 * Telemetry stream each one holds open, and the receipt handles it was
 * given, so that a client that terminates or disappears gives its messages
 * back at once instead of after their invisible time.  Everything here is
 * under px_svc_t.clients_mu. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gt_log.h"
#include "gt_tagexpr.h"
#include "px_svc_int.h"

/* Finds or creates a client.  Called with clients_mu held. */
px_client_t *px_client_get_locked(px_svc_t *svc, const char *id,
                                         bool create)
{
    px_client_t *c;

    for (c = svc->clients; c != NULL; c = c->next)
        if (strcmp(c->id, id) == 0)
            return c;
    if (!create || (c = calloc(1, sizeof(*c))) == NULL)
        return NULL;
    snprintf(c->id, sizeof(c->id), "%s", id);
    c->next = svc->clients;
    svc->clients = c;
    return c;
}

/* snprintf(dst, size, "%s", src) without the formatter (per message). */
static void px_copy(char *dst, size_t size, const char *src)
{
    size_t n = strnlen(src, size - 1);

    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* ---- held handles: a list (renewals walk it) and an index by handle --- */

static size_t px_held_slot(const px_client_t *c, const char *handle)
{
    return gt_hash32(handle) & (c->nb - 1);
}

/* Doubles the index (or starts it); on failure the chains just grow. */
static void px_held_grow_locked(px_client_t *c)
{
    size_t nb = c->nb ? 2 * c->nb : 64;
    px_held_t **hb = calloc(nb, sizeof(*hb));

    if (hb == NULL)
        return;
    for (size_t i = 0; i < c->nb; i++) {
        px_held_t *h = c->hb[i];
        while (h != NULL) {
            px_held_t *next = h->hnext;
            size_t k = gt_hash32(h->handle) & (nb - 1);
            h->hnext = hb[k];
            hb[k] = h;
            h = next;
        }
    }
    free(c->hb);
    c->hb = hb;
    c->nb = nb;
}

static void px_held_add_locked(px_client_t *c, px_held_t *h)
{
    size_t k;

    if (c->n_held >= c->nb)
        px_held_grow_locked(c);
    h->prev = NULL;
    h->next = c->held;
    if (c->held != NULL)
        c->held->prev = h;
    c->held = h;
    c->n_held++;
    if (c->nb == 0) { /* no index (out of memory): list only */
        h->hnext = NULL;
        return;
    }
    k = px_held_slot(c, h->handle);
    h->hnext = c->hb[k];
    c->hb[k] = h;
}

px_held_t *px_held_find_locked(px_client_t *c, const char *handle)
{
    if (c->nb == 0) {
        for (px_held_t *h = c->held; h != NULL; h = h->next)
            if (strcmp(h->handle, handle) == 0)
                return h;
        return NULL;
    }
    for (px_held_t *h = c->hb[px_held_slot(c, handle)]; h != NULL; h = h->hnext)
        if (strcmp(h->handle, handle) == 0)
            return h;
    return NULL;
}

void px_held_remove_locked(px_client_t *c, px_held_t *h)
{
    if (h->prev != NULL)
        h->prev->next = h->next;
    else
        c->held = h->next;
    if (h->next != NULL)
        h->next->prev = h->prev;
    if (c->nb > 0) {
        px_held_t **pp = &c->hb[px_held_slot(c, h->handle)];
        while (*pp != NULL && *pp != h)
            pp = &(*pp)->hnext;
        if (*pp != NULL)
            *pp = h->hnext;
    }
    c->n_held--;
}

void px_held_free_all(px_client_t *c)
{
    while (c->held != NULL) {
        px_held_t *h = c->held;
        c->held = h->next;
        free(h);
    }
    c->n_held = 0;
    free(c->hb);
    c->hb = NULL;
    c->nb = 0;
}

void px_client_hold_n(px_svc_t *svc, const char *client_id, const char *group,
                      const char *topic, const st_popped_t *msgs, size_t n,
                      bool auto_renew, int64_t invisible_ms)
{
    px_held_t *first = NULL;
    px_client_t *c;
    int64_t renew_at = px_now_ms() + invisible_ms - PX_RENEW_AHEAD_MS;

    if (client_id == NULL || n == 0)
        return;
    /* Built outside the lock, chained through next until added. */
    for (size_t i = n; i-- > 0;) {
        px_held_t *h = malloc(sizeof(*h));
        if (h == NULL)
            continue; /* not renewed, not given back on a disconnect */
        px_copy(h->group, sizeof(h->group), group);
        px_copy(h->topic, sizeof(h->topic), topic);
        px_copy(h->handle, sizeof(h->handle), msgs[i].handle);
        px_copy(h->cur, sizeof(h->cur), msgs[i].handle);
        h->auto_renew = auto_renew;
        h->renewing = false;
        h->renew_at_ms = renew_at;
        h->next = first;
        first = h;
    }
    pthread_mutex_lock(&svc->clients_mu);
    c = px_client_get_locked(svc, client_id, true);
    while (c != NULL && first != NULL) {
        px_held_t *h = first;
        first = h->next;
        px_held_add_locked(c, h);
    }
    pthread_mutex_unlock(&svc->clients_mu);
    while (first != NULL) { /* no client entry (out of memory) */
        px_held_t *h = first;
        first = h->next;
        free(h);
    }
}

void px_client_hold(px_svc_t *svc, const char *client_id, const char *group,
                    const char *topic, const char *handle, bool auto_renew,
                    int64_t invisible_ms)
{
    st_popped_t m;

    if (handle == NULL)
        return;
    px_copy(m.handle, sizeof(m.handle), handle);
    px_client_hold_n(svc, client_id, group, topic, &m, 1, auto_renew,
                     invisible_ms);
}

void px_client_release_n(px_svc_t *svc, const char *client_id,
                         const char *const *handles, size_t n)
{
    px_client_t *c;
    px_held_t *gone = NULL;

    if (client_id == NULL || n == 0)
        return;
    pthread_mutex_lock(&svc->clients_mu);
    c = px_client_get_locked(svc, client_id, false);
    for (size_t i = 0; c != NULL && i < n; i++) {
        px_held_t *h;
        if (handles[i] != NULL && (h = px_held_find_locked(c, handles[i])) != NULL) {
            px_held_remove_locked(c, h);
            h->next = gone;
            gone = h;
        }
    }
    pthread_mutex_unlock(&svc->clients_mu);
    while (gone != NULL) {
        px_held_t *h = gone;
        gone = h->next;
        free(h);
    }
}

void px_client_release(px_svc_t *svc, const char *client_id,
                       const char *handle)
{
    px_client_release_n(svc, client_id, &handle, 1);
}

void px_client_current_n(px_svc_t *svc, const char *client_id,
                         const char *const *handles, size_t n,
                         char (*out)[ST_HANDLE_MAX])
{
    px_client_t *c = NULL;

    for (size_t i = 0; i < n; i++)
        px_copy(out[i], ST_HANDLE_MAX, handles[i] != NULL ? handles[i] : "");
    if (client_id == NULL || n == 0)
        return;
    pthread_mutex_lock(&svc->clients_mu);
    c = px_client_get_locked(svc, client_id, false);
    for (size_t i = 0; c != NULL && i < n; i++) {
        px_held_t *h;
        if (handles[i] != NULL && (h = px_held_find_locked(c, handles[i])) != NULL)
            px_copy(out[i], ST_HANDLE_MAX, h->cur);
    }
    pthread_mutex_unlock(&svc->clients_mu);
}

void px_client_current(px_svc_t *svc, const char *client_id,
                       const char *handle, char *out)
{
    px_client_current_n(svc, client_id, &handle, 1,
                        (char (*)[ST_HANDLE_MAX])out);
}

void px_client_topics_free(px_client_t *c)
{
    for (size_t i = 0; i < c->n_topics; i++)
        free(c->topics[i]);
    free(c->topics);
    c->topics = NULL;
    c->n_topics = 0;
}

static void px_release_done(void *arg, gt_err_t err, const char *handle)
{
    (void)arg;
    (void)err;
    (void)handle;
}

void px_client_forget(px_svc_t *svc, const char *client_id)
{
    px_client_t *c = NULL;
    px_held_t *held;
    size_t n = 0;

    if (client_id == NULL)
        return;
    pthread_mutex_lock(&svc->clients_mu);
    for (px_client_t **pp = &svc->clients; *pp != NULL; pp = &(*pp)->next) {
        if (strcmp((*pp)->id, client_id) == 0) {
            c = *pp;
            *pp = c->next;
            break;
        }
    }
    pthread_mutex_unlock(&svc->clients_mu);
    if (c == NULL)
        return;
    /* Give the messages back: visible again almost at once.  Handles that
     * were acked or expired meanwhile are simply refused by the store. */
    for (held = c->held; held != NULL; held = held->next, n++)
        st_change_invisible(svc->store, held->group, held->topic, held->cur,
                            1, px_release_done, NULL);
    px_held_free_all(c);
    if (c->telemetry != NULL)
        px_call_unref(c->telemetry);
    px_client_topics_free(c);
    free(c->settings_reply);
    if (n > 0)
        GT_LOG(DEBUG, "svc", "client %s gone: released %zu messages", client_id, n);
    free(c);
}
