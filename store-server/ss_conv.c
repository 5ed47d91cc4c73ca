/* Conversions between the store protocol's messages (gantry.store.v1) and
 * st.h's structures.  Requests are read in place (st.h borrows strings for
 * the duration of a call); results borrow the store's borrowed result for
 * as long as the callback that packs them. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gt_pbwire.h"
#include "ss_int.h"

int64_t ss_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Every response type but MetaWatchResponse starts with `ErrorCode err =
 * 1`: a response holding only err is that one varint field (proto3 leaves
 * out a zero).  Writing it directly serves all of them. */
void ss_reply_err(px_call_t *call, gt_err_t err)
{
    uint8_t buf[2];
    size_t len = 0;

    if (err != GT_OK) {
        buf[0] = 0x08; /* field 1, varint */
        buf[1] = (uint8_t)err; /* < 128 */
        len = 2;
    }
    if (ss_srv(call)->repl != NULL) {
        ss_repl_reply(ss_srv(call)->repl, call, buf, len);
        return;
    }
    px_call_reply(call, buf, len);
}

void ss_reply_pb(px_call_t *call, const ProtobufCMessage *msg)
{
    ss_repl_t *r = ss_srv(call)->repl;
    uint8_t small[512], *b;
    size_t n;

    if (r == NULL) {
        px_call_reply_pb(call, msg);
        return;
    }
    n = protobuf_c_message_get_packed_size(msg);
    if ((b = n <= sizeof(small) ? small : malloc(n)) == NULL) {
        px_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    protobuf_c_message_pack(msg, b);
    ss_repl_reply(r, call, b, n);
    if (b != small)
        free(b);
}

gt_err_t ss_msg_from_pb(const ss_pb_msg_t *m, st_message_t *out)
{
    memset(out, 0, sizeof(*out));
    if (m->n_keys > ST_MAX_KEYS || m->n_props > ST_MAX_PROPS)
        return GT_EINVAL;
    if (m->queue_id < ST_QUEUE_ANY)
        return GT_EINVAL;
    out->tag = ss_opt(m->tag);
    for (size_t i = 0; i < m->n_keys; i++)
        out->keys[i] = m->keys[i];
    out->nkeys = (uint32_t)m->n_keys;
    out->msg_id = ss_opt(m->msg_id);
    for (size_t i = 0; i < m->n_props; i++) {
        if (m->props[i] == NULL)
            return GT_EINVAL;
        out->props[i].key = m->props[i]->key;
        out->props[i].value = m->props[i]->value;
    }
    out->nprops = (uint32_t)m->n_props;
    out->born_ts_ms = m->born_ts_ms;
    out->born_host = ss_opt(m->born_host);
    out->msg_group = ss_opt(m->msg_group);
    out->delivery_ts_ms = m->delivery_ts_ms;
    out->body = m->body.data;
    out->body_len = (uint32_t)m->body.len;
    out->queue_id = m->queue_id;
    out->tx_half = m->tx_half;
    return GT_OK;
}

static char *ss_str(const char *s)
{
    return (char *)(s != NULL ? s : "");
}

static void ss_msg_to_pb(const st_message_t *in, ss_pb_msg_t *m,
                         Gantry__Store__V1__Property *props,
                         Gantry__Store__V1__Property **pprops, char **keys)
{
    uint32_t nk = in->nkeys < ST_MAX_KEYS ? in->nkeys : ST_MAX_KEYS;
    uint32_t np = in->nprops < ST_MAX_PROPS ? in->nprops : ST_MAX_PROPS;

    gantry__store__v1__message__init(m);
    m->tag = ss_str(in->tag);
    for (uint32_t i = 0; i < nk; i++)
        keys[i] = ss_str(in->keys[i]);
    m->n_keys = nk;
    m->keys = keys;
    m->msg_id = ss_str(in->msg_id);
    for (uint32_t i = 0; i < np; i++) {
        gantry__store__v1__property__init(&props[i]);
        props[i].key = ss_str(in->props[i].key);
        props[i].value = ss_str(in->props[i].value);
        pprops[i] = &props[i];
    }
    m->n_props = np;
    m->props = pprops;
    m->born_ts_ms = in->born_ts_ms;
    m->born_host = ss_str(in->born_host);
    m->msg_group = ss_str(in->msg_group);
    m->delivery_ts_ms = in->delivery_ts_ms;
    m->body.data = (uint8_t *)in->body;
    m->body.len = in->body_len;
    m->queue_id = in->queue_id;
    m->tx_half = in->tx_half;
    m->topic = ss_str(in->topic);
    m->queue_offset = in->queue_offset;
    m->position = in->position;
    m->store_ts_ms = in->store_ts_ms;
    m->flags = in->flags;
    m->tx_checks = in->tx_checks;
}

#define SS_MSG_AT(base, stride, i)                                          \
    ((const st_message_t *)((const char *)(base) + (i) * (stride)))

gt_err_t ss_msgs_to_pb(const void *base, size_t stride, size_t n,
                       ss_msgs_out_t *out)
{
    size_t np = 0, nk = 0, ip = 0, ik = 0;
    Gantry__Store__V1__Property *props, **pprops;
    char **keys;
    uint8_t *mem;

    for (size_t i = 0; i < n; i++) {
        const st_message_t *m = SS_MSG_AT(base, stride, i);
        np += m->nprops < ST_MAX_PROPS ? m->nprops : ST_MAX_PROPS;
        nk += m->nkeys < ST_MAX_KEYS ? m->nkeys : ST_MAX_KEYS;
    }
    /* every part a multiple of the pointer size: one aligned block */
    mem = malloc(n * (sizeof(ss_pb_msg_t) + sizeof(ss_pb_msg_t *)) +
                 np * (sizeof(*props) + sizeof(*pprops)) + nk * sizeof(*keys) + 1);
    if (mem == NULL)
        return GT_ENOMEM;
    out->m = (ss_pb_msg_t *)mem;
    out->pm = (ss_pb_msg_t **)(out->m + n);
    props = (Gantry__Store__V1__Property *)(out->pm + n);
    pprops = (Gantry__Store__V1__Property **)(props + np);
    keys = (char **)(pprops + np);
    for (size_t i = 0; i < n; i++) {
        const st_message_t *m = SS_MSG_AT(base, stride, i);
        ss_msg_to_pb(m, &out->m[i], props + ip, pprops + ip, keys + ik);
        ip += out->m[i].n_props;
        ik += out->m[i].n_keys;
        out->pm[i] = &out->m[i];
    }
    return GT_OK;
}

void ss_msgs_out_free(ss_msgs_out_t *out)
{
    free(out->m);
    out->m = NULL;
    out->pm = NULL;
}

void ss_reply_msgs(px_call_t *call, gt_err_t err, const st_message_t *msgs,
                   size_t n, uint64_t next_offset)
{
    Gantry__Store__V1__MessagesResponse resp =
        GANTRY__STORE__V1__MESSAGES_RESPONSE__INIT;
    ss_msgs_out_t outs = {NULL, NULL};

    if (err == GT_OK && n > 0) {
        if (ss_msgs_to_pb(msgs, sizeof(*msgs), n, &outs) != GT_OK) {
            ss_reply_err(call, GT_ENOMEM);
            return;
        }
        resp.n_messages = n;
        resp.messages = outs.pm;
    }
    resp.err = (Gantry__Store__V1__ErrorCode)err;
    resp.next_offset = err == GT_OK ? next_offset : 0;
    ss_reply_pb(call, &resp.base);
    ss_msgs_out_free(&outs);
}

/* ---- screening: strings holding a NUL ---- */

#define SS_SCREEN_MAX_DEPTH 8

bool ss_screen(px_call_t *call, const uint8_t *data, size_t len)
{
    const px_method_t *m = px_call_method_entry(call);

    gt_pbwire_bad_t bad;

    if (gt_pbwire_strings_ok(m->req_desc, data, len, false, SS_SCREEN_MAX_DEPTH, &bad))
        return true;
    /* A C string would end at the NUL and name something else. */
    ss_reply_err(call, GT_EINVAL);
    return false;
}
