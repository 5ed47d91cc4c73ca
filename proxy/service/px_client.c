/* The client registry: connected clients keyed by x-mq-client-id, the
 * Telemetry stream each one holds open, and the receipt handles it was
 * given, so that a client that terminates or disappears gives its messages
 * back at once instead of after their invisible time.  Everything here is
 * under px_svc_t.clients_mu. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gt_log.h"
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

void px_client_hold(px_svc_t *svc, const char *client_id, const char *group,
                    const char *topic, const char *handle, bool auto_renew,
                    int64_t invisible_ms)
{
    px_client_t *c;
    px_held_t *h;

    if (client_id == NULL || (h = calloc(1, sizeof(*h))) == NULL)
        return;
    snprintf(h->group, sizeof(h->group), "%s", group);
    snprintf(h->topic, sizeof(h->topic), "%s", topic);
    snprintf(h->handle, sizeof(h->handle), "%s", handle);
    snprintf(h->cur, sizeof(h->cur), "%s", handle);
    h->auto_renew = auto_renew;
    h->renew_at_ms = px_now_ms() + invisible_ms - PX_RENEW_AHEAD_MS;
    pthread_mutex_lock(&svc->clients_mu);
    c = px_client_get_locked(svc, client_id, true);
    if (c != NULL) {
        h->next = c->held;
        c->held = h;
        c->n_held++;
        h = NULL;
    }
    pthread_mutex_unlock(&svc->clients_mu);
    free(h);
}

/* Finds a held entry by the client's handle.  Called with clients_mu. */
px_held_t **px_held_find_locked(px_client_t *c, const char *handle)
{
    for (px_held_t **pp = &c->held; *pp != NULL; pp = &(*pp)->next)
        if (strcmp((*pp)->handle, handle) == 0)
            return pp;
    return NULL;
}

void px_client_release(px_svc_t *svc, const char *client_id,
                       const char *handle)
{
    px_client_t *c;
    px_held_t *found = NULL, **pp;

    if (client_id == NULL || handle == NULL)
        return;
    pthread_mutex_lock(&svc->clients_mu);
    c = px_client_get_locked(svc, client_id, false);
    if (c != NULL && (pp = px_held_find_locked(c, handle)) != NULL) {
        found = *pp;
        *pp = found->next;
        c->n_held--;
    }
    pthread_mutex_unlock(&svc->clients_mu);
    free(found);
}

void px_client_current(px_svc_t *svc, const char *client_id,
                       const char *handle, char *out)
{
    px_client_t *c;
    px_held_t **pp;

    snprintf(out, ST_HANDLE_MAX, "%s", handle != NULL ? handle : "");
    if (client_id == NULL || handle == NULL)
        return;
    pthread_mutex_lock(&svc->clients_mu);
    c = px_client_get_locked(svc, client_id, false);
    if (c != NULL && (pp = px_held_find_locked(c, handle)) != NULL)
        snprintf(out, ST_HANDLE_MAX, "%s", (*pp)->cur);
    pthread_mutex_unlock(&svc->clients_mu);
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
    held = c->held;
    while (held != NULL) {
        px_held_t *next = held->next;
        st_change_invisible(svc->store, held->group, held->topic, held->cur,
                            1, px_release_done, NULL);
        free(held);
        held = next;
        n++;
    }
    if (c->telemetry != NULL)
        px_call_unref(c->telemetry);
    px_client_topics_free(c);
    free(c->settings_reply);
    if (n > 0)
        GT_LOG(DEBUG, "svc", "client %s gone: released %zu messages", client_id, n);
    free(c);
}
