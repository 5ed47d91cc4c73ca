/* Unit tests for the client registry's held handles (px_client.c): hold,
 * look up (current handle), renew in place and release, with enough
 * handles that the index grows several times, across two clients, in the
 * order a consumer acks (oldest first) and out of it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "px_svc_int.h"

#define N 1500

static px_svc_t svc;

static void handle_of(int client, int i, char out[ST_HANDLE_MAX])
{
    snprintf(out, ST_HANDLE_MAX, "h-%d-%06d", client, i);
}

static size_t held_count(const char *client_id)
{
    px_client_t *c;
    size_t n = 0;

    pthread_mutex_lock(&svc.clients_mu);
    c = px_client_get_locked(&svc, client_id, false);
    for (px_held_t *h = c != NULL ? c->held : NULL; h != NULL; h = h->next)
        n++;
    CU_ASSERT_EQUAL(c != NULL ? c->n_held : 0, n);
    pthread_mutex_unlock(&svc.clients_mu);
    return n;
}

/* Frees the registry with whatever its clients still hold. */
static void free_registry(void)
{
    while (svc.clients != NULL) {
        px_client_t *c = svc.clients;
        svc.clients = c->next;
        px_held_free_all(c);
        free(c);
    }
    pthread_mutex_destroy(&svc.clients_mu);
}

static void test_hold_release(void)
{
    char h[ST_HANDLE_MAX], cur[ST_HANDLE_MAX];
    const char *ids[2] = {"client-a", "client-b"};

    pthread_mutex_init(&svc.clients_mu, NULL);
    for (int i = 0; i < N; i++)
        for (int k = 0; k < 2; k++) {
            handle_of(k, i, h);
            px_client_hold(&svc, ids[k], "G", "T", h, false, 30000);
        }
    CU_ASSERT_EQUAL(held_count(ids[0]), N);
    CU_ASSERT_EQUAL(held_count(ids[1]), N);

    /* a renewal changes the current handle in place */
    handle_of(0, 7, h);
    pthread_mutex_lock(&svc.clients_mu);
    px_held_t *e = px_held_find_locked(px_client_get_locked(&svc, ids[0], false), h);
    CU_ASSERT_PTR_NOT_NULL_FATAL(e);
    snprintf(e->cur, sizeof(e->cur), "renewed-7");
    pthread_mutex_unlock(&svc.clients_mu);
    px_client_current(&svc, ids[0], h, cur);
    CU_ASSERT_STRING_EQUAL(cur, "renewed-7");
    /* another client's handle, or an unknown one, is itself */
    px_client_current(&svc, ids[1], h, cur);
    CU_ASSERT_STRING_EQUAL(cur, h);
    px_client_current(&svc, ids[0], "nope", cur);
    CU_ASSERT_STRING_EQUAL(cur, "nope");

    /* client a acks oldest first, client b every third, newest first */
    for (int i = 0; i < N; i++) {
        handle_of(0, i, h);
        px_client_release(&svc, ids[0], h);
    }
    for (int i = N - 1; i >= 0; i -= 3) {
        handle_of(1, i, h);
        px_client_release(&svc, ids[1], h);
        px_client_release(&svc, ids[1], h); /* twice: no effect */
    }
    CU_ASSERT_EQUAL(held_count(ids[0]), 0);
    CU_ASSERT_EQUAL(held_count(ids[1]), N - N / 3);
    for (int i = 0; i < N; i++) {
        handle_of(1, i, h);
        pthread_mutex_lock(&svc.clients_mu);
        e = px_held_find_locked(px_client_get_locked(&svc, ids[1], false), h);
        CU_ASSERT_EQUAL(e != NULL, (N - 1 - i) % 3 != 0);
        if (e != NULL)
            CU_ASSERT_STRING_EQUAL(e->handle, h);
        pthread_mutex_unlock(&svc.clients_mu);
    }
    free_registry(); /* with everything still held */
}

/* The batch forms: a receive's messages held under one lock, an ack's
 * current handles looked up and its acked ones released (NULL: skipped)
 * under one lock each; the same results as one at a time. */
static void test_batches(void)
{
    enum { B = 32 };
    st_popped_t msgs[B];
    const char *hs[B];
    char cur[B][ST_HANDLE_MAX];

    pthread_mutex_init(&svc.clients_mu, NULL);
    for (int i = 0; i < B; i++) {
        handle_of(0, i, msgs[i].handle);
        hs[i] = msgs[i].handle;
    }
    px_client_hold_n(&svc, "client-a", "G", "T", msgs, B, false, 30000);
    CU_ASSERT_EQUAL(held_count("client-a"), B);
    pthread_mutex_lock(&svc.clients_mu);
    px_held_t *e = px_held_find_locked(px_client_get_locked(&svc, "client-a", false),
                                       msgs[5].handle);
    CU_ASSERT_PTR_NOT_NULL_FATAL(e);
    CU_ASSERT_STRING_EQUAL(e->group, "G");
    CU_ASSERT_STRING_EQUAL(e->topic, "T");
    snprintf(e->cur, sizeof(e->cur), "renewed-5");
    pthread_mutex_unlock(&svc.clients_mu);
    hs[7] = NULL;
    px_client_current_n(&svc, "client-a", hs, B, cur);
    for (int i = 0; i < B; i++)
        CU_ASSERT_STRING_EQUAL(cur[i], i == 5 ? "renewed-5"
                                       : i == 7 ? "" : msgs[i].handle);
    /* another client: every handle is itself */
    px_client_current_n(&svc, "client-b", hs, B, cur);
    CU_ASSERT_STRING_EQUAL(cur[5], msgs[5].handle);
    /* release all but every fourth (NULL) and the skipped 7th */
    for (int i = 0; i < B; i += 4)
        hs[i] = NULL;
    px_client_release_n(&svc, "client-a", hs, B);
    CU_ASSERT_EQUAL(held_count("client-a"), B / 4 + 1);
    px_client_release_n(&svc, "client-a", hs, B); /* again: no effect */
    CU_ASSERT_EQUAL(held_count("client-a"), B / 4 + 1);
    free_registry();
}

int main(void)
{
    CU_pSuite s;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("px_client", NULL, NULL);
    CU_add_test(s, "held handles: hold, current, renew, release", test_hold_release);
    CU_add_test(s, "held handles in batches", test_batches);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    return failed == 0 ? 0 : 1;
}
