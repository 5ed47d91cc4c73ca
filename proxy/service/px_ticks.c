/* The service's once-a-second work (the renewer thread): extends the
 * invisible time of deliveries push consumers hold (auto-renew), repeats
 * settings replies, and runs the orphaned-transaction check.  Store answers
 * arrive on the store's executor and only touch the registry under
 * clients_mu. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gt_log.h"
#include "px_svc_int.h"

/* One renewal in flight. */
typedef struct px_renew {
    px_svc_t *svc;
    char client_id[128];
    char handle[ST_HANDLE_MAX];
} px_renew_t;

static void px_renewed(void *arg, gt_err_t err, const char *nh)
{
    px_renew_t *r = arg;
    px_svc_t *svc = r->svc;
    px_client_t *c;
    px_held_t *h;

    pthread_mutex_lock(&svc->clients_mu);
    c = px_client_get_locked(svc, r->client_id, false);
    if (c != NULL && (h = px_held_find_locked(c, r->handle)) != NULL) {
        h->renewing = false;
        if (err == GT_OK && nh != NULL) {
            snprintf(h->cur, sizeof(h->cur), "%s", nh);
            h->renew_at_ms = px_now_ms() + PX_AUTO_RENEW_MS - PX_RENEW_AHEAD_MS;
        } else if (err == GT_EINVAL) {
            /* Acked, expired or superseded meanwhile: nothing to keep. */
            px_held_remove_locked(c, h);
            free(h);
        }
    }
    pthread_mutex_unlock(&svc->clients_mu);
    free(r);
}

/* Collects due renewals under the lock, then asks the store outside it. */
static void px_renew_due(px_svc_t *svc)
{
    px_renew_t *due[256];
    char groups[256][ST_NAME_MAX + 1], topics[256][ST_NAME_MAX + 1];
    char curs[256][ST_HANDLE_MAX];
    size_t n = 0;
    int64_t now = px_now_ms();

    pthread_mutex_lock(&svc->clients_mu);
    for (px_client_t *c = svc->clients; c != NULL && n < 256; c = c->next) {
        for (px_held_t *h = c->held; h != NULL && n < 256; h = h->next) {
            if (!h->auto_renew || h->renewing || h->renew_at_ms > now)
                continue;
            if ((due[n] = calloc(1, sizeof(*due[n]))) == NULL)
                break;
            due[n]->svc = svc;
            snprintf(due[n]->client_id, sizeof(due[n]->client_id), "%s", c->id);
            snprintf(due[n]->handle, sizeof(due[n]->handle), "%s", h->handle);
            snprintf(groups[n], sizeof(groups[n]), "%s", h->group);
            snprintf(topics[n], sizeof(topics[n]), "%s", h->topic);
            snprintf(curs[n], sizeof(curs[n]), "%s", h->cur);
            h->renewing = true;
            n++;
        }
    }
    pthread_mutex_unlock(&svc->clients_mu);
    for (size_t i = 0; i < n; i++)
        st_change_invisible(svc->store, groups[i], topics[i], curs[i],
                            PX_AUTO_RENEW_MS, px_renewed, due[i]);
}

/* Repeats due settings replies (renewer thread). */
static void px_settings_resend_due(px_svc_t *svc)
{
    int64_t now = px_now_ms();

    pthread_mutex_lock(&svc->clients_mu);
    for (px_client_t *c = svc->clients; c != NULL; c = c->next) {
        if (c->settings_resends <= 0 || c->telemetry == NULL ||
            now < c->settings_resend_at_ms)
            continue;
        px_call_send(c->telemetry, c->settings_reply, c->settings_len);
        c->settings_resends--;
        c->settings_resend_at_ms =
            now + PX_SETTINGS_RESEND_MS * (1LL << (PX_SETTINGS_RESENDS - c->settings_resends));
    }
    pthread_mutex_unlock(&svc->clients_mu);
}

static void *px_renewer_main(void *arg)
{
    px_svc_t *svc = arg;
    struct timespec ts;

    pthread_setname_np(pthread_self(), "px-renewer");
    for (;;) {
        pthread_mutex_lock(&svc->clients_mu);
        if (!svc->stopping) {
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += PX_RENEW_TICK_MS * 1000000L;
            ts.tv_sec += ts.tv_nsec / 1000000000L;
            ts.tv_nsec %= 1000000000L;
            pthread_cond_timedwait(&svc->renew_cv, &svc->clients_mu, &ts);
        }
        bool stop = svc->stopping;
        pthread_mutex_unlock(&svc->clients_mu);
        if (stop)
            break;
        px_renew_due(svc);
        px_settings_resend_due(svc);
        px_tx_check_tick(svc);
    }
    return NULL;
}

gt_err_t px_clients_start(px_svc_t *svc)
{
    if (pthread_create(&svc->renewer, NULL, px_renewer_main, svc) != 0)
        return GT_ENOMEM;
    svc->renewer_started = true;
    return GT_OK;
}

void px_clients_stop(px_svc_t *svc)
{
    px_call_t *calls[64];
    size_t n;

    pthread_mutex_lock(&svc->clients_mu);
    svc->stopping = true;
    pthread_cond_broadcast(&svc->renew_cv);
    pthread_mutex_unlock(&svc->clients_mu);
    if (svc->renewer_started)
        pthread_join(svc->renewer, NULL);
    svc->renewer_started = false;
    /* Drop the registry's stream references while the gRPC runtime still
     * runs (normally already gone: streams end at shutdown). */
    do {
        n = 0;
        pthread_mutex_lock(&svc->clients_mu);
        for (px_client_t *c = svc->clients; c != NULL && n < 64; c = c->next) {
            if (c->telemetry != NULL) {
                calls[n++] = c->telemetry;
                c->telemetry = NULL;
            }
        }
        pthread_mutex_unlock(&svc->clients_mu);
        for (size_t i = 0; i < n; i++)
            px_call_unref(calls[i]);
    } while (n == 64);
}
