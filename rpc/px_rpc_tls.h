/* Internal header of the gRPC runtime (rpc/): TLS on the gRPC port
 * (px_rpc_tls.c).
 *
 * grpc 1.51 can take a connected socket only with insecure credentials
 * (grpc_server_add_channel_from_fd refuses any other), so one port cannot
 * serve both kinds by handing sockets over alone.  In permissive mode a
 * front listener of ours (one libevent thread) accepts on the public port,
 * peeks at each connection's first byte, hands a plaintext one to the core
 * as it is, and relays a TLS one (a record starting 0x16, a handshake) to
 * a TLS listener of the core on 127.0.0.1, which does the handshake.  In
 * enforcing mode the core listens with TLS on the public port itself, and
 * in disabled mode as before without; neither has a front.
 *
 * Peers: the core names a handed-over socket "fd:N" and a relayed one by
 * the relay's loopback address, so the front keeps a map from those names
 * to the client's real address (px_tls_peer). */
#ifndef PX_RPC_TLS_H
#define PX_RPC_TLS_H

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>

#include "gt_tls.h"
#include "px_rpc.h"

typedef struct px_tls px_tls_t;

/* Reads and checks the files (borrowed).  GT_OK with *out, or an error with
 * a message in err. */
gt_err_t px_tls_new(px_tls_mode_t mode, const gt_tls_files_t *files, px_tls_t **out,
                    char *err, size_t errlen);
/* The core's TLS server credentials, reading the certificate through a
 * fetcher (a reload takes effect at the next handshake).  Owned by the
 * caller (grpc_server_credentials_release). */
grpc_server_credentials *px_tls_creds(px_tls_t *t);
/* Reads the files again; the old ones stay when they are bad. */
gt_err_t px_tls_reload(px_tls_t *t, char *err, size_t errlen);

/* Permissive mode: binds the front on `listen` (HOST:PORT), to hand
 * plaintext connections to `server` and relay TLS ones to
 * 127.0.0.1:tls_port.  *port: the port bound.  Nothing is accepted before
 * px_tls_front_run (once the server is started). */
gt_err_t px_tls_front_start(px_tls_t *t, grpc_server *server, const char *listen,
                            int tls_port, int *port, char *err, size_t errlen);
gt_err_t px_tls_front_run(px_tls_t *t, char *err, size_t errlen);
/* Stops accepting and handing over (before the core's shutdown); relayed
 * connections stay until the core closes them.  Returns when no hand-over
 * is under way. */
void px_tls_front_close(px_tls_t *t);
/* The client's address for the core's peer name `grpc_peer` (borrowed),
 * as a string to free with gpr_free; NULL when it is not one of the
 * front's. */
char *px_tls_peer(px_tls_t *t, const char *grpc_peer);
/* Stops the front's thread, closes what it still relays, frees.  After
 * grpc_server_destroy and px_tls_front_close (the core's credentials
 * refer to it).  NULL-safe. */
void px_tls_free(px_tls_t *t);

#endif
