/* The AMQP 0-9-1 codec: a pure, socket-free encoder and decoder for the
 * wire protocol as RabbitMQ speaks it.
 *
 * Layers, bottom up:
 *   - the protocol header ("AMQP\0\0\x09\x01") a client sends first;
 *   - frames (type, channel, size, payload, frame-end 0xCE), decoded one
 *     at a time from a buffer (gw_frame_decode) or from arbitrary chunks
 *     through a bounded incremental parser (gw_parser_t);
 *   - methods of classes connection, channel, access, exchange, queue,
 *     basic, confirm and tx, RabbitMQ's extensions included, each a typed
 *     struct inside gw_method_t, decoded and encoded in both directions
 *     by one descriptor table (gw_method_info);
 *   - field tables and arrays (RabbitMQ's type letters), kept as their
 *     validated wire bytes and read through lookups and iterators, so
 *     they re-encode byte for byte; gw_tbuild_t writes new ones;
 *   - content: the content header with the 14 basic properties, body
 *     frames split by frame_max, and a per-channel assembler
 *     (gw_asm_t) that checks the method/header/body sequence.
 *
 * Decoders borrow: strings, tables and payloads they return point into
 * the caller's input and live as long as it does.  They check every
 * bound and never read outside the frame.  A failure fills a gw_fault_t
 * with the reply code and reply text RabbitMQ would send in
 * connection.close (all decode failures are connection errors).
 * Encoders write into caller buffers whose size the matching *_size()
 * function gives; they fail with GT_ERANGE when the buffer is short and
 * GT_EINVAL when a value cannot be represented (a shortstr over 255
 * bytes).  Nothing here allocates except gw_parser_t's buffer. */
#ifndef GW_CODEC_H
#define GW_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gt_err.h"

/* ---- constants ------------------------------------------------------ */

enum {
    GW_FRAME_METHOD = 1,
    GW_FRAME_HEADER = 2,
    GW_FRAME_BODY = 3,
    GW_FRAME_HEARTBEAT = 8,
};

#define GW_FRAME_END 0xCE
#define GW_FRAME_OVERHEAD 8u      /* 7-byte frame header + frame-end */
#define GW_FRAME_MIN_SIZE 4096u   /* the spec's floor for frame_max */
#define GW_HEADER_LEN 8u          /* protocol header */
#define GW_TABLE_MAX_DEPTH 32     /* nested tables/arrays accepted */
#define GW_REPLY_TEXT_MAX 255     /* reply-text is a shortstr */

/* The protocol header this codec speaks; also what a server answers to a
 * bad one before closing. */
extern const uint8_t gw_protocol_header[GW_HEADER_LEN];

/* Reply codes (AMQP 0-9-1 constants). */
enum {
    GW_REPLY_SUCCESS = 200,
    GW_CONTENT_TOO_LARGE = 311,
    GW_NO_ROUTE = 312,
    GW_NO_CONSUMERS = 313,
    GW_CONNECTION_FORCED = 320,
    GW_INVALID_PATH = 402,
    GW_ACCESS_REFUSED = 403,
    GW_NOT_FOUND = 404,
    GW_RESOURCE_LOCKED = 405,
    GW_PRECONDITION_FAILED = 406,
    GW_FRAME_ERROR = 501,
    GW_SYNTAX_ERROR = 502,
    GW_COMMAND_INVALID = 503,
    GW_CHANNEL_ERROR = 504,
    GW_UNEXPECTED_FRAME = 505,
    GW_RESOURCE_ERROR = 506,
    GW_NOT_ALLOWED = 530,
    GW_NOT_IMPLEMENTED = 540,
    GW_INTERNAL_ERROR = 541,
};

/* "FRAME_ERROR", "NOT_FOUND", ...; "UNKNOWN" for other codes.  Static. */
const char *gw_reply_name(uint16_t code);

/* What a decoder reports when it refuses input.  code is the reply code
 * for connection.close (0 with bad_header), text the full reply-text
 * ("FRAME_ERROR - ..."; RabbitMQ's "<NAME> - <explanation>" form, cut to
 * 255 bytes), class_id/method_id the method it concerns (0 when none).
 * bad_header: the protocol header was wrong; the server must write
 * gw_protocol_header and close, with no connection.close. */
typedef struct gw_fault {
    uint16_t code;
    uint16_t class_id;
    uint16_t method_id;
    bool bad_header;
    char text[GW_REPLY_TEXT_MAX + 1];
} gw_fault_t;

/* Fills *f: code, ids, and text "<NAME> - " + printf(fmt, ...), cut to
 * 255 bytes with "..." as RabbitMQ does.  For the gateway's own errors
 * too (e.g. 404 "NOT_FOUND - no queue 'q' in vhost '/'"). */
void gw_fault_set(gw_fault_t *f, uint16_t code, uint16_t class_id, uint16_t method_id,
                  const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* ---- protocol header ------------------------------------------------ */

typedef enum gw_header_rc {
    GW_HEADER_OK,    /* 8 bytes of AMQP 0-9-1 */
    GW_HEADER_AGAIN, /* a correct prefix; need more bytes */
    GW_HEADER_BAD,   /* anything else: answer gw_protocol_header, close */
} gw_header_rc_t;

/* Checks the first min(len, 8) bytes a client sent.  A mismatch is
 * reported as soon as a byte differs, so garbage is refused at once. */
gw_header_rc_t gw_header_check(const uint8_t *buf, size_t len);

/* ---- primitive values ----------------------------------------------- */

/* A shortstr (<= 255 bytes) or any borrowed string; not NUL-terminated. */
typedef struct gw_str {
    const char *ptr;
    size_t len;
} gw_str_t;

/* A longstr / byte array (<= 2^32-1 bytes); not NUL-terminated. */
typedef struct gw_bytes {
    const uint8_t *ptr;
    size_t len;
} gw_bytes_t;

/* A field table or field array: its validated wire bytes, without the
 * 4-byte length prefix.  {NULL, 0} is the empty table. */
typedef struct gw_table {
    const uint8_t *ptr;
    size_t len;
} gw_table_t;

typedef gw_table_t gw_array_t;

/* Makes a gw_str_t of a C string (NULL gives the empty string). */
gw_str_t gw_str(const char *s);

/* True when s equals the C string c. */
bool gw_str_eq(gw_str_t s, const char *c);

/* ---- field tables --------------------------------------------------- */

/* A decoded field value.  type is RabbitMQ's type letter:
 *   't' bool (i: the raw octet, true when non-zero)
 *   'b' int8, 's' int16, 'I' int32, 'l' int64 ('L' too, as RabbitMQ)  -> i
 *   'B' uint8, 'u' uint16, 'i' uint32, 'T' timestamp (uint64)         -> u
 *   'f' float -> f, 'd' double -> d
 *   'D' decimal -> dec (scale = digits after the point, value)
 *   'S' longstr, 'x' byte array -> bytes
 *   'F' table -> table, 'A' array -> table (the array's element bytes)
 *   'V' void (no value) */
typedef struct gw_value {
    char type;
    union {
        int64_t i;
        uint64_t u;
        float f;
        double d;
        struct {
            uint8_t scale;
            uint32_t value;
        } dec;
        gw_bytes_t bytes;
        gw_table_t table;
    } v;
} gw_value_t;

/* Checks that buf[0..len) is a well-formed table body (or array body),
 * nested at most GW_TABLE_MAX_DEPTH deep.  GT_OK or GT_EINVAL. */
gt_err_t gw_table_validate(const uint8_t *buf, size_t len);
gt_err_t gw_array_validate(const uint8_t *buf, size_t len);

/* Iterates a validated table: start with gw_table_iter_init, then each
 * gw_table_iter_next gives one entry in wire order (false at the end). */
typedef struct gw_table_iter {
    const uint8_t *p, *end;
} gw_table_iter_t;

void gw_table_iter_init(gw_table_iter_t *it, gw_table_t t);
bool gw_table_iter_next(gw_table_iter_t *it, gw_str_t *key, gw_value_t *val);
/* The same over a validated array (elements have no keys). */
bool gw_array_iter_next(gw_table_iter_t *it, gw_value_t *val);

/* Finds key in a validated table (the first entry with that key, as
 * RabbitMQ's lookup does).  false when absent. */
bool gw_table_get(gw_table_t t, const char *key, gw_value_t *val);

/* Number of entries / elements of a validated table / array. */
size_t gw_table_count(gw_table_t t);
size_t gw_array_count(gw_array_t a);

/* Integer value of any integer type (b B s u I i l L); false otherwise. */
bool gw_value_int(const gw_value_t *v, int64_t *out);

/* Writes a table into a caller buffer.  Calls never fail one by one: an
 * overflow or misuse is remembered and reported by gw_tbuild_finish.
 * Inside gw_tbuild_array_begin/end, key must be NULL (array elements
 * have no keys); elsewhere it must not be. */
typedef struct gw_tbuild {
    uint8_t *buf;
    size_t cap, len;
    bool overflow, misuse;
    int depth;
    size_t open[GW_TABLE_MAX_DEPTH]; /* offsets of open length words */
    bool is_array[GW_TABLE_MAX_DEPTH + 1];
} gw_tbuild_t;

void gw_tbuild_init(gw_tbuild_t *b, uint8_t *buf, size_t cap);
void gw_tbuild_bool(gw_tbuild_t *b, const char *key, bool v);
void gw_tbuild_int8(gw_tbuild_t *b, const char *key, int8_t v);
void gw_tbuild_uint8(gw_tbuild_t *b, const char *key, uint8_t v);
void gw_tbuild_int16(gw_tbuild_t *b, const char *key, int16_t v);
void gw_tbuild_uint16(gw_tbuild_t *b, const char *key, uint16_t v);
void gw_tbuild_int32(gw_tbuild_t *b, const char *key, int32_t v);
void gw_tbuild_uint32(gw_tbuild_t *b, const char *key, uint32_t v);
void gw_tbuild_int64(gw_tbuild_t *b, const char *key, int64_t v);
void gw_tbuild_float(gw_tbuild_t *b, const char *key, float v);
void gw_tbuild_double(gw_tbuild_t *b, const char *key, double v);
void gw_tbuild_decimal(gw_tbuild_t *b, const char *key, uint8_t scale, uint32_t value);
void gw_tbuild_timestamp(gw_tbuild_t *b, const char *key, uint64_t v);
void gw_tbuild_void(gw_tbuild_t *b, const char *key);
/* 'S' longstr of len bytes; gw_tbuild_string takes a C string. */
void gw_tbuild_longstr(gw_tbuild_t *b, const char *key, const void *p, size_t len);
void gw_tbuild_string(gw_tbuild_t *b, const char *key, const char *s);
void gw_tbuild_bytes(gw_tbuild_t *b, const char *key, const void *p, size_t len); /* 'x' */
/* Any decoded value, byte-exact (nested tables and arrays copied raw). */
void gw_tbuild_value(gw_tbuild_t *b, const char *key, const gw_value_t *v);
/* Same with a key that is not NUL-terminated (for copying entries);
 * key.ptr NULL means no key (array elements). */
void gw_tbuild_value_k(gw_tbuild_t *b, gw_str_t key, const gw_value_t *v);
void gw_tbuild_table_begin(gw_tbuild_t *b, const char *key);
void gw_tbuild_array_begin(gw_tbuild_t *b, const char *key);
void gw_tbuild_end(gw_tbuild_t *b);
/* GT_OK with *out = the table written (borrowing b's buffer); GT_ERANGE
 * when the buffer was too small; GT_EINVAL on misuse (unbalanced
 * begin/end, a key where none belongs or none where one does, a key
 * over 255 bytes, nesting past GW_TABLE_MAX_DEPTH). */
gt_err_t gw_tbuild_finish(gw_tbuild_t *b, gw_table_t *out);

/* ---- frames --------------------------------------------------------- */

/* One frame; payload borrows from the decoder's input. */
typedef struct gw_frame {
    uint8_t type;
    uint16_t channel;
    uint32_t size;
    const uint8_t *payload;
} gw_frame_t;

/* Decodes one frame at buf.  GT_OK: *out is the frame and *used its
 * length on the wire.  GT_AGAIN: incomplete; *used is the number of
 * bytes needed in all to go on (at least len + 1).  GT_EINVAL: 501
 * FRAME_ERROR in *fault: unknown frame type, a payload over frame_max
 * (RabbitMQ checks the header before reading the payload; 0 = no
 * limit), a frame-end other than 0xCE, a heartbeat with a payload or on
 * a channel other than 0, a method frame under 4 bytes, a content header
 * under 14 bytes.  Never reads past the frame's own bytes. */
gt_err_t gw_frame_decode(const uint8_t *buf, size_t len, uint32_t frame_max, gw_frame_t *out,
                         size_t *used, gw_fault_t *fault);

/* Writes a frame header (7 bytes) for a payload of size bytes; the
 * caller writes the payload after it and then GW_FRAME_END. */
void gw_frame_put_header(uint8_t *buf, uint8_t type, uint16_t channel, uint32_t size);

/* Writes a whole frame with the given payload: GT_OK or GT_ERANGE. */
gt_err_t gw_frame_encode(uint8_t type, uint16_t channel, const void *payload, uint32_t size,
                         uint8_t *buf, size_t cap, size_t *len);

/* The 8 bytes of a heartbeat frame. */
extern const uint8_t gw_heartbeat_frame[GW_FRAME_OVERHEAD];

/* An incremental frame parser over a bounded buffer.  Feed it chunks of
 * any size (gw_parser_feed takes only what fits: at most one frame's
 * worth beyond what it holds), then take frames with gw_parser_next
 * until GT_AGAIN.  A frame returned borrows the parser's buffer until
 * the next gw_parser_feed.  With expect_header, the first 8 bytes must
 * be the protocol header (server side): gw_parser_next reports it as a
 * frame of type 0 when good, or GT_EINVAL with fault->bad_header.  After
 * an error the parser stays failed (every call returns the same fault).
 * The buffer grows on demand to frame_max + 8 (GW_FRAME_MIN_SIZE + 8 while
 * frame_max is 0) and never beyond. */
typedef struct gw_parser {
    uint8_t *buf;
    size_t cap, len, off;
    uint32_t frame_max;
    bool expect_header;
    bool failed;
    gw_fault_t fault;
} gw_parser_t;

/* frame_max: the limit before tune (RabbitMQ uses 4096 until tune-ok). */
void gw_parser_init(gw_parser_t *p, uint32_t frame_max, bool expect_header);
void gw_parser_free(gw_parser_t *p);
/* Sets the negotiated frame_max (0: none; then frames up to 128 MiB). */
void gw_parser_set_frame_max(gw_parser_t *p, uint32_t frame_max);
/* Copies up to len bytes in; returns how many it took (0 when it holds a
 * complete frame not yet taken, or after an allocation failure, which
 * gw_parser_next then reports as GT_ENOMEM). */
size_t gw_parser_feed(gw_parser_t *p, const uint8_t *data, size_t len);
/* GT_OK (a frame), GT_AGAIN (feed more), GT_EINVAL (fault), GT_ENOMEM. */
gt_err_t gw_parser_next(gw_parser_t *p, gw_frame_t *out, gw_fault_t *fault);

/* ---- methods -------------------------------------------------------- */

#define GW_MID(c, m) (((uint32_t)(c) << 16) | (uint32_t)(m))

typedef enum gw_method_id {
    GW_CONNECTION_START = GW_MID(10, 10),
    GW_CONNECTION_START_OK = GW_MID(10, 11),
    GW_CONNECTION_SECURE = GW_MID(10, 20),
    GW_CONNECTION_SECURE_OK = GW_MID(10, 21),
    GW_CONNECTION_TUNE = GW_MID(10, 30),
    GW_CONNECTION_TUNE_OK = GW_MID(10, 31),
    GW_CONNECTION_OPEN = GW_MID(10, 40),
    GW_CONNECTION_OPEN_OK = GW_MID(10, 41),
    GW_CONNECTION_CLOSE = GW_MID(10, 50),
    GW_CONNECTION_CLOSE_OK = GW_MID(10, 51),
    GW_CONNECTION_BLOCKED = GW_MID(10, 60),
    GW_CONNECTION_UNBLOCKED = GW_MID(10, 61),
    GW_CONNECTION_UPDATE_SECRET = GW_MID(10, 70),
    GW_CONNECTION_UPDATE_SECRET_OK = GW_MID(10, 71),
    GW_CHANNEL_OPEN = GW_MID(20, 10),
    GW_CHANNEL_OPEN_OK = GW_MID(20, 11),
    GW_CHANNEL_FLOW = GW_MID(20, 20),
    GW_CHANNEL_FLOW_OK = GW_MID(20, 21),
    GW_CHANNEL_CLOSE = GW_MID(20, 40),
    GW_CHANNEL_CLOSE_OK = GW_MID(20, 41),
    GW_ACCESS_REQUEST = GW_MID(30, 10),
    GW_ACCESS_REQUEST_OK = GW_MID(30, 11),
    GW_EXCHANGE_DECLARE = GW_MID(40, 10),
    GW_EXCHANGE_DECLARE_OK = GW_MID(40, 11),
    GW_EXCHANGE_DELETE = GW_MID(40, 20),
    GW_EXCHANGE_DELETE_OK = GW_MID(40, 21),
    GW_EXCHANGE_BIND = GW_MID(40, 30),
    GW_EXCHANGE_BIND_OK = GW_MID(40, 31),
    GW_EXCHANGE_UNBIND = GW_MID(40, 40),
    GW_EXCHANGE_UNBIND_OK = GW_MID(40, 51), /* 51, not 41: RabbitMQ's id */
    GW_QUEUE_DECLARE = GW_MID(50, 10),
    GW_QUEUE_DECLARE_OK = GW_MID(50, 11),
    GW_QUEUE_BIND = GW_MID(50, 20),
    GW_QUEUE_BIND_OK = GW_MID(50, 21),
    GW_QUEUE_PURGE = GW_MID(50, 30),
    GW_QUEUE_PURGE_OK = GW_MID(50, 31),
    GW_QUEUE_DELETE = GW_MID(50, 40),
    GW_QUEUE_DELETE_OK = GW_MID(50, 41),
    GW_QUEUE_UNBIND = GW_MID(50, 50),
    GW_QUEUE_UNBIND_OK = GW_MID(50, 51),
    GW_BASIC_QOS = GW_MID(60, 10),
    GW_BASIC_QOS_OK = GW_MID(60, 11),
    GW_BASIC_CONSUME = GW_MID(60, 20),
    GW_BASIC_CONSUME_OK = GW_MID(60, 21),
    GW_BASIC_CANCEL = GW_MID(60, 30),
    GW_BASIC_CANCEL_OK = GW_MID(60, 31),
    GW_BASIC_PUBLISH = GW_MID(60, 40),
    GW_BASIC_RETURN = GW_MID(60, 50),
    GW_BASIC_DELIVER = GW_MID(60, 60),
    GW_BASIC_GET = GW_MID(60, 70),
    GW_BASIC_GET_OK = GW_MID(60, 71),
    GW_BASIC_GET_EMPTY = GW_MID(60, 72),
    GW_BASIC_ACK = GW_MID(60, 80),
    GW_BASIC_REJECT = GW_MID(60, 90),
    GW_BASIC_RECOVER_ASYNC = GW_MID(60, 100),
    GW_BASIC_RECOVER = GW_MID(60, 110),
    GW_BASIC_RECOVER_OK = GW_MID(60, 111),
    GW_BASIC_NACK = GW_MID(60, 120),
    GW_CONFIRM_SELECT = GW_MID(85, 10),
    GW_CONFIRM_SELECT_OK = GW_MID(85, 11),
    GW_TX_SELECT = GW_MID(90, 10),
    GW_TX_SELECT_OK = GW_MID(90, 11),
    GW_TX_COMMIT = GW_MID(90, 20),
    GW_TX_COMMIT_OK = GW_MID(90, 21),
    GW_TX_ROLLBACK = GW_MID(90, 30),
    GW_TX_ROLLBACK_OK = GW_MID(90, 31),
} gw_method_id_t;

#define GW_CLASS_CONNECTION 10
#define GW_CLASS_CHANNEL 20
#define GW_CLASS_ACCESS 30
#define GW_CLASS_EXCHANGE 40
#define GW_CLASS_QUEUE 50
#define GW_CLASS_BASIC 60
#define GW_CLASS_CONFIRM 85
#define GW_CLASS_TX 90

/* Method arguments, in spec order.  Methods without arguments (the -ok
 * replies mostly) have no struct.  ticket fields are deprecated and
 * carried as read. */
typedef struct gw_connection_start {
    uint8_t version_major, version_minor;
    gw_table_t server_properties;
    gw_bytes_t mechanisms, locales;
} gw_connection_start_t;
typedef struct gw_connection_start_ok {
    gw_table_t client_properties;
    gw_str_t mechanism;
    gw_bytes_t response;
    gw_str_t locale;
} gw_connection_start_ok_t;
typedef struct gw_connection_secure {
    gw_bytes_t challenge;
} gw_connection_secure_t;
typedef struct gw_connection_secure_ok {
    gw_bytes_t response;
} gw_connection_secure_ok_t;
typedef struct gw_connection_tune {
    uint16_t channel_max;
    uint32_t frame_max;
    uint16_t heartbeat;
} gw_connection_tune_t; /* tune and tune-ok */
typedef struct gw_connection_open {
    gw_str_t virtual_host, capabilities;
    bool insist;
} gw_connection_open_t;
typedef struct gw_connection_open_ok {
    gw_str_t known_hosts;
} gw_connection_open_ok_t;
typedef struct gw_close {
    uint16_t reply_code;
    gw_str_t reply_text;
    uint16_t class_id, method_id;
} gw_close_t; /* connection.close and channel.close */
typedef struct gw_connection_blocked {
    gw_str_t reason;
} gw_connection_blocked_t;
typedef struct gw_connection_update_secret {
    gw_bytes_t new_secret;
    gw_str_t reason;
} gw_connection_update_secret_t;
typedef struct gw_channel_open {
    gw_str_t out_of_band;
} gw_channel_open_t;
typedef struct gw_channel_open_ok {
    gw_bytes_t channel_id;
} gw_channel_open_ok_t;
typedef struct gw_channel_flow {
    bool active;
} gw_channel_flow_t; /* flow and flow-ok */
typedef struct gw_access_request {
    gw_str_t realm;
    bool exclusive, passive, active, write, read;
} gw_access_request_t;
typedef struct gw_access_request_ok {
    uint16_t ticket;
} gw_access_request_ok_t;
typedef struct gw_exchange_declare {
    uint16_t ticket;
    gw_str_t exchange, type;
    bool passive, durable, auto_delete, internal, nowait;
    gw_table_t arguments;
} gw_exchange_declare_t;
typedef struct gw_exchange_delete {
    uint16_t ticket;
    gw_str_t exchange;
    bool if_unused, nowait;
} gw_exchange_delete_t;
typedef struct gw_exchange_bind {
    uint16_t ticket;
    gw_str_t destination, source, routing_key;
    bool nowait;
    gw_table_t arguments;
} gw_exchange_bind_t; /* bind and unbind */
typedef struct gw_queue_declare {
    uint16_t ticket;
    gw_str_t queue;
    bool passive, durable, exclusive, auto_delete, nowait;
    gw_table_t arguments;
} gw_queue_declare_t;
typedef struct gw_queue_declare_ok {
    gw_str_t queue;
    uint32_t message_count, consumer_count;
} gw_queue_declare_ok_t;
typedef struct gw_queue_bind {
    uint16_t ticket;
    gw_str_t queue, exchange, routing_key;
    bool nowait; /* queue.unbind has none on the wire */
    gw_table_t arguments;
} gw_queue_bind_t; /* bind and unbind */
typedef struct gw_queue_purge {
    uint16_t ticket;
    gw_str_t queue;
    bool nowait;
} gw_queue_purge_t;
typedef struct gw_queue_delete {
    uint16_t ticket;
    gw_str_t queue;
    bool if_unused, if_empty, nowait;
} gw_queue_delete_t;
typedef struct gw_message_count {
    uint32_t message_count;
} gw_message_count_t; /* queue.purge-ok and queue.delete-ok */
typedef struct gw_basic_qos {
    uint32_t prefetch_size;
    uint16_t prefetch_count;
    bool global;
} gw_basic_qos_t;
typedef struct gw_basic_consume {
    uint16_t ticket;
    gw_str_t queue, consumer_tag;
    bool no_local, no_ack, exclusive, nowait;
    gw_table_t arguments;
} gw_basic_consume_t;
typedef struct gw_consumer_tag {
    gw_str_t consumer_tag;
} gw_consumer_tag_t; /* consume-ok and cancel-ok */
typedef struct gw_basic_cancel {
    gw_str_t consumer_tag;
    bool nowait;
} gw_basic_cancel_t;
typedef struct gw_basic_publish {
    uint16_t ticket;
    gw_str_t exchange, routing_key;
    bool mandatory, immediate;
} gw_basic_publish_t;
typedef struct gw_basic_return {
    uint16_t reply_code;
    gw_str_t reply_text, exchange, routing_key;
} gw_basic_return_t;
typedef struct gw_basic_deliver {
    gw_str_t consumer_tag;
    uint64_t delivery_tag;
    bool redelivered;
    gw_str_t exchange, routing_key;
} gw_basic_deliver_t;
typedef struct gw_basic_get {
    uint16_t ticket;
    gw_str_t queue;
    bool no_ack;
} gw_basic_get_t;
typedef struct gw_basic_get_ok {
    uint64_t delivery_tag;
    bool redelivered;
    gw_str_t exchange, routing_key;
    uint32_t message_count;
} gw_basic_get_ok_t;
typedef struct gw_basic_get_empty {
    gw_str_t cluster_id;
} gw_basic_get_empty_t;
typedef struct gw_basic_ack {
    uint64_t delivery_tag;
    bool multiple;
} gw_basic_ack_t;
typedef struct gw_basic_reject {
    uint64_t delivery_tag;
    bool requeue;
} gw_basic_reject_t;
typedef struct gw_basic_recover {
    bool requeue;
} gw_basic_recover_t; /* recover and recover-async */
typedef struct gw_basic_nack {
    uint64_t delivery_tag;
    bool multiple, requeue;
} gw_basic_nack_t;
typedef struct gw_nowait {
    bool nowait;
} gw_nowait_t; /* confirm.select */

/* A method: its id and its arguments (the union member named after the
 * method, or the shared one its struct comment names). */
typedef struct gw_method {
    gw_method_id_t id;
    union {
        gw_connection_start_t connection_start;
        gw_connection_start_ok_t connection_start_ok;
        gw_connection_secure_t connection_secure;
        gw_connection_secure_ok_t connection_secure_ok;
        gw_connection_tune_t connection_tune; /* tune, tune-ok */
        gw_connection_open_t connection_open;
        gw_connection_open_ok_t connection_open_ok;
        gw_close_t close; /* connection.close, channel.close */
        gw_connection_blocked_t connection_blocked;
        gw_connection_update_secret_t connection_update_secret;
        gw_channel_open_t channel_open;
        gw_channel_open_ok_t channel_open_ok;
        gw_channel_flow_t channel_flow; /* flow, flow-ok */
        gw_access_request_t access_request;
        gw_access_request_ok_t access_request_ok;
        gw_exchange_declare_t exchange_declare;
        gw_exchange_delete_t exchange_delete;
        gw_exchange_bind_t exchange_bind; /* bind, unbind */
        gw_queue_declare_t queue_declare;
        gw_queue_declare_ok_t queue_declare_ok;
        gw_queue_bind_t queue_bind; /* bind, unbind */
        gw_queue_purge_t queue_purge;
        gw_queue_delete_t queue_delete;
        gw_message_count_t message_count; /* purge-ok, delete-ok */
        gw_basic_qos_t basic_qos;
        gw_basic_consume_t basic_consume;
        gw_consumer_tag_t consumer_tag; /* consume-ok, cancel-ok */
        gw_basic_cancel_t basic_cancel;
        gw_basic_publish_t basic_publish;
        gw_basic_return_t basic_return;
        gw_basic_deliver_t basic_deliver;
        gw_basic_get_t basic_get;
        gw_basic_get_ok_t basic_get_ok;
        gw_basic_get_empty_t basic_get_empty;
        gw_basic_ack_t basic_ack;
        gw_basic_reject_t basic_reject;
        gw_basic_recover_t basic_recover; /* recover, recover-async */
        gw_basic_nack_t basic_nack;
        gw_nowait_t confirm_select;
    } u;
} gw_method_t;

/* Argument types on the wire. */
typedef enum gw_field_kind {
    GW_F_OCTET,
    GW_F_SHORT,
    GW_F_LONG,
    GW_F_LONGLONG,
    GW_F_SHORTSTR,
    GW_F_LONGSTR,
    GW_F_BIT,
    GW_F_TABLE,
    GW_F_TIMESTAMP,
} gw_field_kind_t;

typedef struct gw_field_info {
    gw_field_kind_t kind;
    uint16_t offset; /* of the value inside gw_method_t */
    const char *name; /* spec name, e.g. "routing-key" */
} gw_field_info_t;

/* Who sends a method. */
#define GW_FROM_CLIENT 1u
#define GW_FROM_SERVER 2u

typedef struct gw_method_info {
    gw_method_id_t id;
    const char *name;        /* "basic.publish", as RabbitMQ names it */
    uint8_t from;            /* GW_FROM_CLIENT | GW_FROM_SERVER */
    bool has_content;        /* publish, return, deliver, get-ok */
    bool synchronous;        /* expects a reply (when nowait is false) */
    uint8_t nfields;
    const gw_field_info_t *fields;
} gw_method_info_t;

/* The descriptor of a method id, or NULL when unknown.  Immutable. */
const gw_method_info_t *gw_method_info(uint32_t id);
/* All descriptors (for tests and tools); *n gets the count. */
const gw_method_info_t *gw_method_all(size_t *n);

/* Decodes a method frame's payload.  GT_OK, or GT_EINVAL with *fault:
 * 540 NOT_IMPLEMENTED for an unknown class/method, 501 FRAME_ERROR
 * "cannot decode ..." (RabbitMQ's answer) for arguments that are short,
 * long, or hold a malformed table.  Strings and tables borrow payload. */
gt_err_t gw_method_decode(const uint8_t *payload, size_t len, gw_method_t *out, gw_fault_t *fault);

/* Bytes gw_method_encode writes (the payload: ids + arguments), or 0
 * when the method cannot be encoded (unknown id, shortstr > 255 bytes,
 * table or longstr > 4 GiB). */
size_t gw_method_size(const gw_method_t *m);
gt_err_t gw_method_encode(const gw_method_t *m, uint8_t *buf, size_t cap, size_t *len);
/* The same wrapped in a method frame on channel ch (size + 8 bytes). */
gt_err_t gw_method_frame(uint16_t ch, const gw_method_t *m, uint8_t *buf, size_t cap, size_t *len);

/* The connection.close (or, with channel, channel.close) that answers
 * *f: reply code, text and the failing method's ids.  out borrows f's
 * text.  (A bad protocol header has no close: see gw_fault_t.) */
void gw_fault_close(const gw_fault_t *f, bool channel, gw_method_t *out);

/* ---- content -------------------------------------------------------- */

/* Property flags of class basic, in the flags word. */
enum {
    GW_P_CONTENT_TYPE = 1u << 15,
    GW_P_CONTENT_ENCODING = 1u << 14,
    GW_P_HEADERS = 1u << 13,
    GW_P_DELIVERY_MODE = 1u << 12,
    GW_P_PRIORITY = 1u << 11,
    GW_P_CORRELATION_ID = 1u << 10,
    GW_P_REPLY_TO = 1u << 9,
    GW_P_EXPIRATION = 1u << 8,
    GW_P_MESSAGE_ID = 1u << 7,
    GW_P_TIMESTAMP = 1u << 6,
    GW_P_TYPE = 1u << 5,
    GW_P_USER_ID = 1u << 4,
    GW_P_APP_ID = 1u << 3,
    GW_P_CLUSTER_ID = 1u << 2,
};

/* The basic properties; a field counts only when its flag is set. */
typedef struct gw_props {
    uint16_t flags;
    gw_str_t content_type, content_encoding;
    gw_table_t headers;
    uint8_t delivery_mode, priority;
    gw_str_t correlation_id, reply_to, expiration, message_id;
    uint64_t timestamp;
    gw_str_t type, user_id, app_id, cluster_id;
} gw_props_t;

/* A content header frame's payload.  raw_props is the property list as
 * received (flags included), so a gateway can store and re-send it
 * unchanged, as RabbitMQ does. */
typedef struct gw_content_header {
    uint16_t class_id;
    uint16_t weight;
    uint64_t body_size;
    gw_props_t props;
    gw_bytes_t raw_props;
} gw_content_header_t;

/* Decodes a content header payload (class 60 properties).  GT_OK or
 * GT_EINVAL with a 501 fault.  Does not check the class against the
 * method: gw_asm_frame does. */
gt_err_t gw_header_decode(const uint8_t *payload, size_t len, gw_content_header_t *out,
                          gw_fault_t *fault);
/* Encoded size of the property list (flags + present properties), or 0
 * when a value cannot be encoded. */
size_t gw_props_size(const gw_props_t *p);
gt_err_t gw_props_encode(const gw_props_t *p, uint8_t *buf, size_t cap, size_t *len);

/* Bytes of a header frame plus the body frames for body_len bytes of
 * body split at frame_max (each body frame carries at most
 * frame_max - 8 bytes; frame_max 0 means no split), props given either
 * decoded (props) or raw (raw_props, when props is NULL). */
size_t gw_content_size(const gw_props_t *props, gw_bytes_t raw_props, size_t body_len,
                       uint32_t frame_max);
/* Writes the header frame and body frames on channel ch (class 60). */
gt_err_t gw_content_encode(uint16_t ch, const gw_props_t *props, gw_bytes_t raw_props,
                           const void *body, size_t body_len, uint32_t frame_max, uint8_t *buf,
                           size_t cap, size_t *len);

/* ---- command assembly ----------------------------------------------- */

/* A channel's frame sequence: a method; for publish (and, client side,
 * deliver/return/get-ok) then a content header and body frames adding up
 * to its body size.  One gw_asm_t per channel; zero it to start. */
typedef struct gw_asm {
    uint8_t state;           /* internal */
    gw_method_id_t method;   /* the content-bearing method in progress */
    uint64_t remaining;      /* body bytes still due */
    uint64_t max_body;       /* 0: RabbitMQ's 512 MiB hard limit */
} gw_asm_t;

typedef enum gw_asm_event {
    GW_EV_METHOD,      /* a complete method without content */
    GW_EV_CONTENT,     /* a method whose content follows (ev->method) */
    GW_EV_HEADER,      /* its content header (ev->header); done if body 0 */
    GW_EV_BODY,        /* a body fragment (ev->body); done when last */
} gw_asm_event_t;

typedef struct gw_asm_out {
    gw_asm_event_t event;
    bool done; /* the command (method + content) is complete */
    gw_method_t method;
    gw_content_header_t header;
    gw_bytes_t body;
} gw_asm_out_t;

/* Takes one method, header or body frame of the channel (not heartbeats)
 * and decodes it.  GT_OK with *out, or GT_EINVAL with *fault: what
 * gw_method_decode and gw_header_decode report, 505 UNEXPECTED_FRAME
 * for a frame out of sequence ("expected content header for class 60,
 * got non content header frame instead", ...), 501 for a body larger
 * than announced or a body size over max_body.  out borrows frame. */
gt_err_t gw_asm_frame(gw_asm_t *a, const gw_frame_t *frame, gw_asm_out_t *out, gw_fault_t *fault);

#endif
