/* Project-wide error codes.
 *
 * Every subsystem returns gt_err_t: GT_OK (0) on success, a positive code
 * otherwise.  gt_err_str() gives a short, stable English text for logs and
 * error messages.  Mapping to wire codes (RocketMQ Code, AMQP reply codes,
 * gRPC status) happens only at the protocol edges. */
#ifndef GT_ERR_H
#define GT_ERR_H

typedef enum gt_err {
    GT_OK = 0,
    GT_AGAIN,       /* need more input / try later */
    GT_EINVAL,      /* bad argument or malformed input */
    GT_ENOMEM,      /* allocation failed */
    GT_EIO,         /* I/O error */
    GT_ENOSPC,      /* disk full */
    GT_ENOTFOUND,   /* no such object */
    GT_EEXIST,      /* object already exists */
    GT_ERANGE,      /* value out of range */
    GT_ECORRUPT,    /* data failed an integrity check */
    GT_ESHUTDOWN,   /* component is shutting down */
    GT_ETIMEDOUT,   /* deadline passed */
    GT_EBUSY,       /* resource in use (e.g. address in use) */
    GT_EUNSUPPORTED,/* not implemented or not supported */
    GT_ERR_MAX_
} gt_err_t;

/* Returns a static string; never NULL. */
const char *gt_err_str(gt_err_t err);

#endif
