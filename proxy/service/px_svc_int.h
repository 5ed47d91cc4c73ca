/* Internal header of the RocketMQ service layer (proxy/service).
 *
 * px_svc_t is the service context every handler reaches through
 * px_call_app(): the store, the config, and the registry of connected
 * clients (their Telemetry streams and the receipt handles they hold).
 * Helpers here build the protobuf pieces every RPC family needs and map
 * store errors to RocketMQ codes at the edge. */
#ifndef PX_SVC_INT_H
#define PX_SVC_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "apache/rocketmq/v2/service.pb-c.h"
#include "cfg.h"
#include "px_rpc.h"
#include "px_metrics.h"
#include "px_service.h"
#include "px_trace.h"
#include "st.h"

typedef Apache__Rocketmq__V2__Code px_code_t;

#define PX_CODE(name) APACHE__ROCKETMQ__V2__CODE__##name

/* Limits RocketMQ applies (proxy defaults). */
#define PX_MAX_BODY_BYTES        (4 * 1024 * 1024)
#define PX_MAX_USER_PROPS        128
#define PX_MAX_PROPS_BYTES       (16 * 1024)
#define PX_MIN_INVISIBLE_MS      (10 * 1000LL)
#define PX_MAX_INVISIBLE_MS      (12 * 3600 * 1000LL)
#define PX_DEFAULT_LONG_POLL_MS  (20 * 1000LL)
#define PX_RECEIVE_BATCH         32
/* Entries of one AckMessage: each costs the server a store call and ~100
 * bytes, far more than its own bytes on the wire. */
#define PX_MAX_ACK_ENTRIES       1024
#define PX_STR_(x) #x
#define PX_STR(x) PX_STR_(x)
/* Client id buffers (x-mq-client-id), NUL included. */
#define PX_CLIENT_ID_MAX         128
/* Invisible time of auto-renew (push consumer) deliveries, renewed while
 * the client lives. */
#define PX_AUTO_RENEW_MS         (30 * 1000LL)

/* System properties the store has no field for travel as store properties
 * under the ST_PROP_* keys of st.h. */

typedef Apache__Rocketmq__V2__MessageType px_msg_type_t;

/* A message a client holds (delivered, not yet acked).  `handle` is what
 * the client was given; `cur` is the store's current handle for the same
 * delivery, which differs once the server renewed the invisible time of an
 * auto-renew (push consumer) delivery: the client keeps using `handle` and
 * the registry translates. */
typedef struct px_held {
    struct px_held *next, *prev; /* the client's list, newest first */
    struct px_held *hnext;       /* the client's index by handle */
    char group[ST_NAME_MAX + 1];
    char topic[ST_NAME_MAX + 1];
    char handle[ST_HANDLE_MAX];
    char cur[ST_HANDLE_MAX];
    bool auto_renew;
    bool renewing;        /* a renewal is in flight */
    int64_t renew_at_ms;  /* wall clock; renew when reached */
} px_held_t;

/* One connected client, keyed by x-mq-client-id.  Guarded by
 * px_svc_t.clients_mu. */
typedef struct px_client {
    struct px_client *next;
    char id[128];
    px_call_t *telemetry;        /* referenced while the stream is open */
    int client_type;             /* Apache__Rocketmq__V2__ClientType */
    /* For the admin API: from the Telemetry stream's metadata and
     * settings (empty when not sent). */
    char language[16];           /* x-mq-language */
    char version[32];            /* x-mq-client-version */
    char peer[64];               /* the stream's peer address */
    char group[ST_NAME_MAX + 1]; /* a consumer's group */
    int64_t since_ms;            /* first registered, wall clock */
    px_held_t *held;             /* handles delivered to this client */
    size_t n_held;
    /* `held` indexed by handle (chains of hnext; nb a power of 2 or 0): a
     * consumer holds as many messages as it has in flight, and every ack
     * looks its handle up. */
    px_held_t **hb;
    size_t nb;
    char **topics;               /* a producer's publishing topics */
    size_t n_topics;
    /* The last settings reply, repeated a few times (see px_telemetry.c). */
    uint8_t *settings_reply;
    size_t settings_len;
    int settings_resends;
    int64_t settings_resend_at_ms;
} px_client_t;

/* The copy of the store's topics and groups (px_meta.c): entries under
 * `lock`; `primed` (under prime_mu) once the store's snapshot is in. */
typedef struct px_meta_ent px_meta_ent_t;
typedef struct px_meta_tab {
    px_meta_ent_t **b;
    size_t nb, n;
} px_meta_tab_t;
typedef struct px_meta {
    pthread_rwlock_t lock;
    px_meta_tab_t topics, groups;
    pthread_mutex_t prime_mu;
    pthread_cond_t prime_cv;
    bool primed;
} px_meta_t;

void px_meta_init(px_meta_t *m);
void px_meta_free(px_meta_t *m);
/* The store's metadata watcher (st_meta_cb); arg is the px_svc_t. */
void px_meta_on_events(void *arg, const st_meta_event_t *evs, size_t n,
                       bool snapshot);
/* Blocks until the snapshot is in (start-up only). */
void px_meta_wait_primed(px_meta_t *m);
/* Records a topic the service just created (its own answer from the
 * store), in case the store's notification is still on its way. */
void px_meta_learn_topic(px_svc_t *svc, const st_topic_t *t);

/* A half message the orphaned-transaction check listed without a local
 * producer of its topic (remote store; px_tx.c). */
#define PX_TX_CHECK_BATCH 64
typedef struct px_tx_seen {
    char topic[ST_NAME_MAX + 1];
    char msg_id[ST_MSG_ID_MAX];
    uint32_t checks;
} px_tx_seen_t;

/* The service context: created in main, read by every handler.  `store`
 * and `cfg` are set before the server starts and never change; the client
 * list is under clients_mu. */
struct px_svc {
    st_store_t *store;
    const cfg_t *cfg;
    /* NULL: auth.enabled is off (px_auth_rpc.c).  Swapped by
     * px_svc_set_auth (users changed through the admin API); the ones it
     * replaced stay in auth_old until px_svc_free (a call may hold one). */
    _Atomic(struct px_auth *) auth;
    struct px_auth **auth_old;
    size_t n_auth_old;
    px_meta_t meta;
    /* px_svc_set_append_hook: SendMessage's appends go through it (the
     * AMQP gateway's topic bridges); read-locked around each call. */
    pthread_rwlock_t hook_mu;
    px_append_hook_fn append_hook;
    void *append_hook_arg;
    pthread_mutex_t clients_mu;
    px_client_t *clients;
    /* Links a ReceiveMessage call and its parked pop; whichever of the pop
     * answer or a cancel/shutdown comes first detaches them (px_receive.c). */
    pthread_mutex_t recv_mu;
    /* Renewer thread for auto-renew deliveries; stop flag under clients_mu. */
    pthread_t renewer;
    pthread_cond_t renew_cv;
    bool renewer_started;
    bool stopping;
    int64_t next_tx_check_ms;    /* renewer thread only */
    /* The check's st_tx_pending() is out (one at a time); tx_seen: what
     * the last answer listed without a local producer (its callback). */
    atomic_bool tx_pending_out;
    px_tx_seen_t tx_seen[PX_TX_CHECK_BATCH];
    size_t n_tx_seen;
    /* Set before the server stops: streams that end then do not mean
     * their clients went away (they will reconnect to the next run), so
     * their messages are not given back. */
    atomic_bool draining;
    /* Counters of /metrics (px_svc_set_metrics); NULL: none. */
    struct px_metrics *metrics;
    px_storage_bytes_fn storage_bytes; /* px_svc_set_storage_bytes */
    void *storage_bytes_arg;
    /* Message trace (px_trace.c): set in px_svc_start, NULL when off. */
    px_trace_t *trace;
    /* Test only (GANTRY_TEST_LATE_ATTACH=1, px_test_late_attach): calls
     * whose cancel/shutdown interrupt came; under recv_mu. */
    bool test_late_attach;
    pthread_cond_t test_cv;
    const px_call_t *test_seen[8];
    unsigned test_nseen;
};
typedef struct px_svc px_svc_t;

static inline px_svc_t *px_svc(px_call_t *call)
{
    return (px_svc_t *)px_call_app(call);
}

/* ---- test hooks (px_service.c) ---- */

/* Test only, off unless the environment has GANTRY_TEST_LATE_ATTACH=1:
 * ReceiveMessage and PullMessage call it before attaching their store
 * request to the call; it waits (10 s at most) until the call's
 * cancel/shutdown interrupt has come and gone, so that the interrupt
 * finds nothing to cancel -- the window their re-check after attaching
 * closes, opened wide for a deterministic test. */
void px_test_late_attach(px_svc_t *svc, px_call_t *call, const char *rpc);
/* Notes that `call`'s interrupt came (hold recv_mu). */
void px_test_interrupted(px_svc_t *svc, const px_call_t *call);

/* The interrupt a call may have had before its handler attached a long
 * wait to it (found nothing to end then): CANCELLED, SHUTDOWN, or 0 if
 * none.  ReceiveMessage and PullMessage re-check with it after attaching. */
static inline px_interrupt_t px_call_missed_interrupt(const px_call_t *call)
{
    if (px_call_is_cancelled(call))
        return PX_INTERRUPT_CANCELLED;
    if (px_call_server_stopping(call))
        return PX_INTERRUPT_SHUTDOWN;
    return 0;
}

/* ---- common (px_common.c) ---- */

/* Initializes `st` and points it at `msg` (borrowed). */
void px_status_set(Apache__Rocketmq__V2__Status *st, px_code_t code,
                   const char *msg);
/* Maps a store error to a RocketMQ code. */
px_code_t px_code_from_err(gt_err_t err);
/* The x-mq-client-id of the call, or NULL when absent, empty, not
 * printable ASCII or too long (PX_CLIENT_ID_MAX bytes with the NUL). */
const char *px_client_id(px_call_t *call);
/* Duration / Timestamp in ms, saturated at INT64_MIN / INT64_MAX (never
 * wrapped); 0 for NULL. */
int64_t px_duration_ms(const Google__Protobuf__Duration *d);
void px_duration_set(Google__Protobuf__Duration *d, int64_t ms);
void px_timestamp_set(Google__Protobuf__Timestamp *t, int64_t ms);
int64_t px_timestamp_ms(const Google__Protobuf__Timestamp *t);
int64_t px_now_ms(void);

/* The service's copy of the store's topics and groups (px_meta.c). */
gt_err_t px_topic_find(px_svc_t *svc, const char *name, st_topic_t *out);
gt_err_t px_group_find(px_svc_t *svc, const char *name, st_group_t *out);
/* Look up a topic or a group in the copy; when it does not exist, answer
 * `rd` with TOPIC_NOT_FOUND / CONSUMER_GROUP_NOT_FOUND and return false. */
bool px_topic_or_reply(px_call_t *call, const ProtobufCMessageDescriptor *rd,
                       const char *name, st_topic_t *t);
bool px_group_or_reply(px_call_t *call, const ProtobufCMessageDescriptor *rd,
                       const char *name, st_group_t *g);
/* For handlers of RPCs that create unknown topics when
 * server.auto_create_topics is on (QueryRoute, QueryAssignment,
 * SendMessage): true when `name` is unknown and auto-creation applies; the
 * topic is then being created, `req` is kept, and the call's handler runs
 * again on it once the store answered -- the caller returns at once
 * without answering.  False when the topic exists, auto-creation is off or
 * does not apply (derived names), or this is already the second run. */
bool px_topic_autocreate(px_call_t *call, const char *name,
                         ProtobufCMessage *req);
/* Handlers keep their request with this instead of px_call_keep_request():
 * it also works in the second run of px_topic_autocreate. */
void px_keep_request(px_call_t *call);
/* The store error of a failed auto-creation, during the handler's second
 * run (GT_OK otherwise): answer it rather than TOPIC_NOT_FOUND. */
gt_err_t px_topic_autocreate_err(void);
/* Answers CLIENT_ID_REQUIRED (in `resp`) and returns false when the call
 * has no x-mq-client-id. */
bool px_require_client(px_call_t *call, const ProtobufCMessageDescriptor *resp);
/* on_reject of the MessagingService methods: CLIENT_ID_REQUIRED first
 * (as every handler checks the client before anything else), then
 * BAD_REQUEST "malformed <Request>" or TOO_MANY_REQUESTS, in-band in the
 * method's response type (resp_desc). */
void px_reject_client(px_call_t *call, px_reject_t why);
/* The same without the client check. */
void px_reject(px_call_t *call, px_reject_t why);
/* Answers a unary call whose response has only `status` with `code`. */
void px_reply_status(px_call_t *call, const ProtobufCMessageDescriptor *desc,
                     px_code_t code, const char *msg);

/* ---- auth (px_auth_rpc.c) ---- */

/* A method's table entry (px_method_t.data) for px_auth_gate: the
 * handler the gate passes the request on to. */
typedef struct px_gate {
    void (*handler)(px_call_t *call, ProtobufCMessage *req);
} px_gate_t;
/* on_request of the RocketMQ methods: checks the call's credentials and
 * the request's resources (when auth is enabled), then runs the entry's
 * handler; a refused call is answered here. */
void px_auth_gate(px_call_t *call, ProtobufCMessage *req);
/* The check alone: true when the call may go on; false when it was
 * answered (UNAUTHORIZED / FORBIDDEN). */
bool px_auth_check_call(px_call_t *call, const ProtobufCMessage *req);
struct px_auth_user;
/* The authorization part on its own, for a decoded MessagingService
 * request (borrowed) of an authenticated user: true when the ACLs allow
 * every resource the request needs (RocketMQ 5's mapping, see
 * px_auth_rpc.c), else false with the reason in why. */
bool px_auth_request_allowed(const struct px_auth *auth, const struct px_auth_user *user,
                             const ProtobufCMessage *req, const char *peer, char *why,
                             size_t whylen);

/* ---- validation (px_validate.c) ---- */

/* Checks a topic / group resource (borrowed): OK, or ILLEGAL_TOPIC /
 * ILLEGAL_CONSUMER_GROUP for a missing, malformed, reserved or system name,
 * with a reason in `why` (size >= 160). */
px_code_t px_check_topic(const Apache__Rocketmq__V2__Resource *r, char *why,
                         size_t whylen);
px_code_t px_check_group(const Apache__Rocketmq__V2__Resource *r, char *why,
                         size_t whylen);
/* A name the store derives from a group: %DLQ%<group> or %RETRY%<group>. */
bool px_name_is_derived(const char *name);
/* A store system name (%SYS%…), also behind a %DLQ% / %RETRY% prefix. */
bool px_name_is_system(const char *name);
/* Checks a filter (borrowed; NULL: none): a SQL92 expression must compile,
 * a tag expression follow gt_tagexpr_check().  OK or
 * ILLEGAL_FILTER_EXPRESSION with a reason in `why`; *sql tells whether it
 * is SQL92. */
px_code_t px_check_filter(const Apache__Rocketmq__V2__FilterExpression *f, bool *sql,
                          char *why, size_t whylen);
/* True when `t` (borrowed) is inside google.protobuf.Timestamp's range
 * (years 1..9999, nanos 0..999999999). */
bool px_timestamp_valid(const Google__Protobuf__Timestamp *t);
/* Checks every string field of the raw request bytes (borrowed), a `desc`
 * message: valid UTF-8 without NUL.  OK (also for bytes that do not parse:
 * the decoder refuses those), or the RocketMQ code of the first bad field
 * (ILLEGAL_MESSAGE_TAG for a tag, …, BAD_REQUEST when no specific code
 * applies) with a reason in `why`. */
px_code_t px_validate_wire(const ProtobufCMessageDescriptor *desc,
                           const uint8_t *data, size_t len, char *why,
                           size_t whylen);
/* The method table's on_screen: px_validate_wire() on the request, and when
 * it fails an in-band answer with its code (after CLIENT_ID_REQUIRED, as for
 * malformed requests); a bidi stream (Telemetry) finishes INVALID_ARGUMENT. */
bool px_screen_request(px_call_t *call, const uint8_t *data, size_t len);
/* The call's :authority (borrowed) when it is valid UTF-8, else "": it is
 * echoed to clients (route endpoints, store host). */
const char *px_authority_text(px_call_t *call);

/* ---- clients (px_client.c registry, px_ticks.c renewer) ---- */

/* Settings replies are repeated this many times, 1 s, 2 s, 4 s … after the
 * first: Node SDK 1.0.8 starts waiting for the reply only after it has
 * fetched the routes of all its topics, and drops a reply that arrives
 * before (a producer of several topics then never finishes startup).  The
 * reply is idempotent, so repeating it is harmless to every SDK. */
#define PX_SETTINGS_RESENDS 4
#define PX_SETTINGS_RESEND_MS 1000
/* Renew an auto-renew delivery this long before its invisible time ends. */
#define PX_RENEW_AHEAD_MS 10000
#define PX_RENEW_TICK_MS 1000

/* Finds (or with `create`, creates) a client.  Called with clients_mu;
 * the client belongs to the registry. */
px_client_t *px_client_get_locked(px_svc_t *svc, const char *id, bool create);
/* The held entry for the client's `handle`, or NULL.  Called with
 * clients_mu. */
px_held_t *px_held_find_locked(px_client_t *c, const char *handle);
/* Takes a held entry out of the client's list and index (the caller frees
 * it).  Called with clients_mu. */
void px_held_remove_locked(px_client_t *c, px_held_t *h);
/* Frees every held entry of a client and its index (the client is out of
 * the registry, or the registry is going). */
void px_held_free_all(px_client_t *c);
/* Frees a client's publishing topics.  Called with clients_mu. */
void px_client_topics_free(px_client_t *c);

/* Records that `client_id` holds `handle`.  With auto_renew the server
 * keeps the message invisible (renewing every invisible_ms) while the
 * client lives. */
void px_client_hold(px_svc_t *svc, const char *client_id, const char *group,
                    const char *topic, const char *handle, bool auto_renew,
                    int64_t invisible_ms);
/* px_client_hold() for each of msgs[0..n), under one lock. */
void px_client_hold_n(px_svc_t *svc, const char *client_id, const char *group,
                      const char *topic, const st_popped_t *msgs, size_t n,
                      bool auto_renew, int64_t invisible_ms);
/* Forgets a held message (by the client's handle), e.g. after an ack. */
void px_client_release(px_svc_t *svc, const char *client_id,
                       const char *handle);
/* px_client_release() for each of handles[0..n) that is not NULL, under
 * one lock. */
void px_client_release_n(px_svc_t *svc, const char *client_id,
                         const char *const *handles, size_t n);
/* The store's current handle for the client's `handle` (itself when not
 * renewed). `out` has ST_HANDLE_MAX bytes. */
void px_client_current(px_svc_t *svc, const char *client_id,
                       const char *handle, char *out);
/* px_client_current() for each of handles[0..n) (NULL: ""), under one
 * lock. */
void px_client_current_n(px_svc_t *svc, const char *client_id,
                         const char *const *handles, size_t n,
                         char (*out)[ST_HANDLE_MAX]);
/* Starts / stops the renewer thread (main, around the server's life). */
gt_err_t px_clients_start(px_svc_t *svc);
void px_clients_stop(px_svc_t *svc);
/* The client went away: make every message it holds visible again. */
void px_client_forget(px_svc_t *svc, const char *client_id);

/* ---- send (px_send.c) ---- */

/* The message type a message declares, or derives from its properties. */
px_msg_type_t px_msg_type_of(const Apache__Rocketmq__V2__SystemProperties *sp);
/* Checks one message of a SendMessage for topic `t` in RocketMQ's order;
 * returns OK or the code, with a reason in `why`. */
px_code_t px_send_validate(const Apache__Rocketmq__V2__Message *m,
                           const st_topic_t *t, int64_t now_ms,
                           int64_t max_delay_ms, char *why, size_t whylen);

/* ---- delivery (px_receive.c) ---- */

/* A wire Message built over a store message: all storage inline, pointers
 * borrowed from the store message (valid while it is). */
typedef struct px_msg_view {
    Apache__Rocketmq__V2__Message msg;
    Apache__Rocketmq__V2__SystemProperties sp;
    Apache__Rocketmq__V2__Resource topic;
    Apache__Rocketmq__V2__Digest digest;
    Apache__Rocketmq__V2__DeadLetterQueue dlq;
    Apache__Rocketmq__V2__Message__UserPropertiesEntry ups[ST_MAX_PROPS];
    Apache__Rocketmq__V2__Message__UserPropertiesEntry *upp[ST_MAX_PROPS];
    Google__Protobuf__Timestamp born, stored, deliver;
    Google__Protobuf__Duration invis;
    char md5[33];
} px_msg_view_t;

/* Fills `v` for delivery: user properties without the internal ones,
 * MD5 digest (uppercase hex), timestamps, queue and offset, and (when
 * `handle` is given) receipt handle and invisible duration. */
void px_msg_view_build(px_msg_view_t *v, const st_message_t *m,
                       const char *topic, const char *ns,
                       const char *store_host, const char *handle,
                       uint32_t attempt, int64_t invisible_ms);
void px_md5_hex(const void *data, size_t len, char out[33]);

/* ---- handlers ---- */
void px_route_query(px_call_t *call, ProtobufCMessage *msg);
void px_route_heartbeat(px_call_t *call, ProtobufCMessage *msg);
void px_route_assignment(px_call_t *call, ProtobufCMessage *msg);
void px_route_terminate(px_call_t *call, ProtobufCMessage *msg);
void px_send_message(px_call_t *call, ProtobufCMessage *msg);
void px_receive_message(px_call_t *call, ProtobufCMessage *msg);
void px_receive_interrupt(px_call_t *call, px_interrupt_t why);
void px_ack_message(px_call_t *call, ProtobufCMessage *msg);
void px_change_invisible(px_call_t *call, ProtobufCMessage *msg);
void px_forward_dlq(px_call_t *call, ProtobufCMessage *msg);
void px_pull_message(px_call_t *call, ProtobufCMessage *msg);
void px_pull_interrupt(px_call_t *call, px_interrupt_t why);
void px_offset_update(px_call_t *call, ProtobufCMessage *msg);
void px_offset_get(px_call_t *call, ProtobufCMessage *msg);
void px_offset_query(px_call_t *call, ProtobufCMessage *msg);
void px_end_transaction(px_call_t *call, ProtobufCMessage *msg);
void px_recall_message(px_call_t *call, ProtobufCMessage *msg);
/* Runs the orphaned-transaction check when due (renewer thread). */
void px_tx_check_tick(px_svc_t *svc);
/* "R1.<topic>.<msg id>" into out; GT_ERANGE if it does not fit. */
gt_err_t px_recall_handle(const char *topic, const char *msg_id, char *out,
                          size_t outlen);
void px_telemetry_message(px_call_t *call, ProtobufCMessage *msg);
void px_telemetry_reject(px_call_t *call, px_reject_t why);
void px_telemetry_half_close(px_call_t *call);
void px_telemetry_interrupt(px_call_t *call, px_interrupt_t why);
void px_telemetry_done(px_call_t *call);

#endif
