/* The AMQP 0-9-1 router: exchanges, bindings and the routing of a
 * publish to its set of queues, with RabbitMQ 3.10's semantics.
 *
 * Pure: no I/O, no threads, no logging, no globals.  A gw_router_t is one
 * virtual host's routing state; it is not thread-safe, the caller (the
 * gateway's model) serialises every call on it, routing included (a route
 * uses scratch space inside the router).
 *
 * What it holds:
 *   - exchanges: a name (any bytes, at most 255: AMQP names are shortstrs),
 *     a type (direct, fanout, topic, headers), opaque flags the caller
 *     keeps (durable, auto-delete, internal...) and an optional alternate
 *     exchange (RabbitMQ's "alternate-exchange" argument or policy);
 *   - bindings: source exchange -> destination queue or destination
 *     exchange, with a routing key (<= 255 bytes) and arguments (a field
 *     table).  A binding is identified by all four, as in RabbitMQ: the
 *     same source, destination and key with other arguments is another
 *     binding.  Arguments are kept normalised the way RabbitMQ keeps them
 *     (top-level entries stably sorted by key, 'L' read as 'l', booleans
 *     as 0/1), so two encodings RabbitMQ treats as one binding are one.
 *
 * Queues are not declared here: a queue is known to the router only
 * through its bindings (the model owns queues and tells the router when
 * one is deleted, gw_route_unbind_queue).
 *
 * Routing (gw_route) follows rabbit_exchange:route/2: the exchange's type
 * picks matching bindings; a destination exchange is routed in turn with
 * the same message, each exchange at most once per route (cycles end
 * there); an exchange whose own bindings matched nothing hands the message
 * to its alternate exchange, if that exists; the result is the set of
 * queues, each once, sorted by name (RabbitMQ's lists:usort).
 *   - direct: binding key equals a routing key;
 *   - fanout: every binding;
 *   - topic: keys split on '.' into words ("" is zero words, "a..b" has an
 *     empty middle word), '*' is exactly one word, '#' zero or more;
 *     bindings sit in a trie walked as a set of states, one step per word
 *     (no backtracking, no recursion);
 *   - headers: x-match all (the default, also for an unknown value), any,
 *     all-with-x, any-with-x; see gw_route_headers_match.
 * Several routing keys (the publish's plus RabbitMQ's CC and BCC headers,
 * gw_route_header_keys) route as one message: a queue reached by several
 * keys gets it once.
 *
 * The default exchange ("") is the caller's business: RabbitMQ routes it to
 * the queue named by each routing key, without bindings, and no binding
 * may have it as source or destination (403).  The router treats "" like
 * any other name if the caller adds it; the model should not.
 *
 * Ownership: every gw_str_t / gw_table_t passed in is borrowed for the
 * call and copied when kept.  Everything the router hands out (names,
 * keys, arguments, route results) is borrowed from it and valid until the
 * next call that changes the router (or, for route results, the next
 * gw_route).  Callbacks must not change the router. */
#ifndef GW_ROUTE_H
#define GW_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gt_err.h"
#include "gw_codec.h"

#define GW_ROUTE_NAME_MAX 255u /* exchange and queue names: shortstr */
#define GW_ROUTE_KEY_MAX 255u  /* binding keys and the publish's key: shortstr */

typedef struct gw_router gw_router_t;

typedef enum gw_xtype {
    GW_XTYPE_DIRECT,
    GW_XTYPE_FANOUT,
    GW_XTYPE_TOPIC,
    GW_XTYPE_HEADERS,
} gw_xtype_t;

typedef enum gw_dest_kind {
    GW_DEST_QUEUE,
    GW_DEST_EXCHANGE,
} gw_dest_kind_t;

/* A binding as the router reports it; every field borrowed from the
 * router (valid until it changes). */
typedef struct gw_binding {
    gw_str_t source;
    gw_dest_kind_t dest_kind;
    gw_str_t dest;
    gw_str_t key;
    gw_table_t args; /* normalised (see above); {NULL, 0} when empty */
} gw_binding_t;

/* Called once per binding listed or removed (for a removal, before the
 * binding is freed).  Must not change the router. */
typedef void (*gw_binding_fn)(void *ctx, const gw_binding_t *b);

/* "direct", "fanout", "topic", "headers" -> the type; GT_EINVAL for any
 * other name (RabbitMQ answers 503 COMMAND_INVALID "unknown exchange type
 * '...'"; that reply is the caller's). */
gt_err_t gw_xtype_parse(gw_str_t name, gw_xtype_t *out);
/* The type's name (static string). */
const char *gw_xtype_name(gw_xtype_t t);

/* ---- router --------------------------------------------------------- */

/* Returns an empty router (free with gw_router_free), NULL when out of
 * memory. */
gw_router_t *gw_router_new(void);
/* Frees the router and everything in it.  NULL is fine. */
void gw_router_free(gw_router_t *r);

/* ---- exchanges ------------------------------------------------------ */

/* Adds an exchange.  GT_EEXIST when the name is taken (redeclare checks
 * are the caller's: compare gw_route_exchange_get), GT_EINVAL for a name
 * over 255 bytes, GT_ENOMEM. */
gt_err_t gw_route_exchange_add(gw_router_t *r, gw_str_t name, gw_xtype_t type, uint32_t flags);

/* True when the exchange exists; fills *type and *flags when non-NULL. */
bool gw_route_exchange_get(const gw_router_t *r, gw_str_t name, gw_xtype_t *type,
                           uint32_t *flags);

/* Replaces the caller's flags.  GT_ENOTFOUND when there is no such
 * exchange. */
gt_err_t gw_route_exchange_set_flags(gw_router_t *r, gw_str_t name, uint32_t flags);

/* Sets (ae non-NULL) or clears (ae NULL) the exchange's alternate
 * exchange, by name: it need not exist now; a route uses it when it exists
 * then (as RabbitMQ does).  GT_ENOTFOUND, GT_EINVAL (ae over 255 bytes),
 * GT_ENOMEM. */
gt_err_t gw_route_exchange_set_alternate(gw_router_t *r, gw_str_t name, const gw_str_t *ae);

/* Removes an exchange and every binding it is the source or the
 * destination of (RabbitMQ's exchange.delete), reporting each binding to
 * fn (may be NULL) before it goes: the model deletes them from storage and
 * checks auto-delete of the sources that lost one.  GT_ENOTFOUND when
 * there is no such exchange. */
gt_err_t gw_route_exchange_remove(gw_router_t *r, gw_str_t name, gw_binding_fn fn, void *ctx);

/* Calls fn(ctx, name, type, flags) for every exchange (unordered). */
typedef void (*gw_exchange_fn)(void *ctx, gw_str_t name, gw_xtype_t type, uint32_t flags);
void gw_route_exchange_each(const gw_router_t *r, gw_exchange_fn fn, void *ctx);

/* Number of exchanges. */
size_t gw_route_exchange_count(const gw_router_t *r);

/* ---- bindings ------------------------------------------------------- */

/* Adds the binding source -> (kind, dest) with key and args (a validated
 * or unvalidated table: it is checked).  An exact duplicate (same source,
 * destination, key and normalised args) is a no-op: GT_OK with
 * *created = false (created may be NULL).
 * GT_ENOTFOUND: no source exchange, or kind is GW_DEST_EXCHANGE and no
 * such destination exchange (RabbitMQ's 404; queue existence is the
 * caller's).  GT_EINVAL: a name or key over 255 bytes, a malformed table,
 * or, when the source is a headers exchange, an x-match RabbitMQ refuses
 * (gw_route_headers_check gives its 406 text).  GT_ENOMEM. */
gt_err_t gw_route_bind(gw_router_t *r, gw_str_t source, gw_dest_kind_t kind, gw_str_t dest,
                       gw_str_t key, gw_table_t args, bool *created);

/* Removes that binding; a missing one (or a missing source/destination)
 * is GT_OK with *removed = false, as RabbitMQ's unbind is.  GT_EINVAL for
 * a malformed table or over-long name/key. */
gt_err_t gw_route_unbind(gw_router_t *r, gw_str_t source, gw_dest_kind_t kind, gw_str_t dest,
                         gw_str_t key, gw_table_t args, bool *removed);

/* Removes every binding to a queue (queue.delete), reporting each to fn
 * (may be NULL).  Returns how many went. */
size_t gw_route_unbind_queue(gw_router_t *r, gw_str_t queue, gw_binding_fn fn, void *ctx);

/* Lists the bindings whose source is exchange `source` (for auto-delete
 * decisions, exchange.delete checks, persistence), in the order they were
 * added.  Returns how many. */
size_t gw_route_list_source(const gw_router_t *r, gw_str_t source, gw_binding_fn fn, void *ctx);

/* Lists the bindings whose destination is (kind, dest), in the order they
 * were added.  Returns how many. */
size_t gw_route_list_dest(const gw_router_t *r, gw_dest_kind_t kind, gw_str_t dest,
                          gw_binding_fn fn, void *ctx);

/* Counts without listing (fn NULL does the same). */
size_t gw_route_count_source(const gw_router_t *r, gw_str_t source);
size_t gw_route_count_dest(const gw_router_t *r, gw_dest_kind_t kind, gw_str_t dest);

/* Total number of bindings. */
size_t gw_route_binding_count(const gw_router_t *r);

/* ---- routing -------------------------------------------------------- */

/* The queues a route reached: sorted by name (bytewise), each once;
 * borrowed from the router until the next gw_route or change. */
typedef struct gw_route_out {
    const gw_str_t *queues;
    size_t n;
    const gw_str_t *held; /* gw_route_held: the exchanges held, in the order reached */
    size_t nheld;
} gw_route_out_t;

/* Routes a message published to `exchange` with routing keys keys[0..nkeys)
 * (the publish's key, then CC and BCC entries if the caller has them) and
 * headers (the message's validated headers table, {NULL, 0} for none;
 * only headers exchanges read it).  Keys may be longer than 255 bytes (CC
 * entries are longstrs): such a key never equals a direct binding's and
 * matches topic bindings word by word like any other.  GT_ENOTFOUND when
 * the exchange does not exist (for "" see above), GT_ENOMEM (out of
 * scratch space; nothing was routed).  An empty result is GT_OK with
 * n = 0 (mandatory -> basic.return, the caller's). */
gt_err_t gw_route(gw_router_t *r, gw_str_t exchange, const gw_str_t *keys, size_t nkeys,
                  gw_table_t headers, gw_route_out_t *out);
/* The same, but an exchange reached through an exchange-to-exchange
 * binding whose flags (gw_route_exchange_add) have one of `hold` is not
 * routed through: it goes to out->held (each once; its bindings and
 * alternate exchange are not followed).  The publish's own exchange is
 * routed through whatever its flags.  (x-delayed-message exchanges with
 * a due x-delay: the message waits there, gw_delay.c.) */
gt_err_t gw_route_held(gw_router_t *r, gw_str_t exchange, const gw_str_t *keys, size_t nkeys,
                       gw_table_t headers, uint32_t hold, gw_route_out_t *out);

/* RabbitMQ's sender-selected distribution (rabbit_basic:header_routes):
 * the extra routing keys of a message are the longstr elements of its
 * "CC" header array, then of its "BCC" one (the first entry of each name;
 * other element types are skipped).  Fills keys[0..min(*n, cap)) borrowing
 * from headers and sets *n to how many there are (call again with more
 * room when *n > cap).  GT_EINVAL when CC or BCC is there but not an
 * array: RabbitMQ refuses the publish with 406 PRECONDITION_FAILED and
 * text (cap textcap, may be NULL) `invalid message:
 * {unacceptable_type_in_header,"CC",longstr}`.  The caller routes the
 * publish's own key first, then these, and stores the message without
 * its BCC header (RabbitMQ strips the first BCC entry). */
gt_err_t gw_route_header_keys(gw_table_t headers, gw_str_t *keys, size_t cap, size_t *n,
                              char *text, size_t textcap);

/* ---- matching primitives (exposed for the model and tests) ---------- */

/* Whether binding key `pattern` matches routing key `key` with topic
 * semantics: the same answer the trie gives, by plain wildcard matching
 * over words (time: words x words; for checks, not for routing).  Both at
 * most 255 bytes (false otherwise). */
bool gw_route_topic_match(gw_str_t pattern, gw_str_t key);

/* Whether a headers binding with (validated) arguments `args` matches a
 * message with (validated) headers `headers`, as RabbitMQ 3.10's
 * rabbit_exchange_type_headers: both tables stably sorted by key, then
 * merged:
 *   - x-match "all" (default, also when absent or not a known longstr),
 *     "any", "all-with-x", "any-with-x";
 *   - the binding's "x-match" entry is never compared; its other "x-"
 *     entries are ignored unless x-match ends in "-with-x";
 *   - a void ('V') binding value matches the key's presence;
 *   - values compare as Erlang's ==: any two integers (b B s u I i l L T)
 *     by value, integers and floats (f d) by exact numeric value, a
 *     longstr equals a byte array with the same bytes, booleans, decimals
 *     (scale and value) only among themselves, a void header equals no
 *     value, tables and arrays element by element with types (an empty
 *     table equals an empty array);
 *   - "all" with no comparable entries matches every message; "any" with
 *     none matches nothing.
 * GT_ENOMEM (scratch for sorting) is reported as no match. */
bool gw_route_headers_match(gw_table_t args, gw_table_t headers);

/* Checks a headers-exchange binding's x-match as RabbitMQ's
 * validate_binding does.  GT_OK, or GT_EINVAL with text (cap bytes,
 * NUL-terminated, cut to fit) set to RabbitMQ's 406 PRECONDITION_FAILED
 * text without the "PRECONDITION_FAILED - " prefix, e.g.
 * `Invalid x-match field value <<"foo">>; expected all, any, all-with-x,
 * or any-with-x`.  text may be NULL. */
gt_err_t gw_route_headers_check(gw_table_t args, char *text, size_t cap);

#endif
