/* tls.h: TLS of pycached's HTTP front (libmicrohttpd over GnuTLS): the files of --tls-cert,
 * --tls-key and --tls-client-ca, read and checked at start; the daemon options that turn TLS
 * on; and, for mutual TLS, the check of each request's client certificate, which libmicrohttpd
 * only asks for (docs/OPERATIONS.md, "TLS"). */
#ifndef PCC_TLS_H
#define PCC_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include <microhttpd.h>

#include "config.h"

typedef struct pcc_tls pcc_tls;

typedef enum {
  PCC_TLS_OK = 0,
  PCC_TLS_UNSUPPORTED, /* libmicrohttpd was built without TLS */
  PCC_TLS_FILE,        /* a file cannot be read, is not a regular file, or is over the limit */
  PCC_TLS_BAD_CERT,    /* --tls-cert holds no PEM certificate GnuTLS can parse */
  PCC_TLS_BAD_KEY,     /* --tls-key holds no unencrypted PEM private key GnuTLS can parse */
  PCC_TLS_MISMATCH,    /* the key is not the key of the certificate */
  PCC_TLS_BAD_CA,      /* --tls-client-ca holds no PEM certificate */
  PCC_TLS_NOMEM,
  PCC_TLS_RELOADS,     /* pcc_tls_reload: PCC_TLS_RELOADS_MAX reached */
} pcc_tls_status;

const char *pcc_tls_strerror(pcc_tls_status rc);

/* Reads and checks config's --tls-cert, --tls-key and --tls-client-ca (each at most
 * PCC_TLS_FILE_MAX bytes; a chain of at most PCC_TLS_CHAIN_MAX certificates). On PCC_TLS_OK
 * *out is the caller's (pcc_tls_close), or NULL when TLS is off (no --tls-cert); otherwise
 * error (error_len bytes) names the file and the problem and *out is unchanged. Prints a warning when the certificate has expired or is not yet valid.
 * config must outlive *out. */
pcc_tls_status pcc_tls_open(const pcc_config *config, pcc_tls **out, char *error,
                            size_t error_len);

/* Reads --tls-cert, --tls-key and --tls-client-ca again (SIGHUP) and, when they pass the
 * checks of pcc_tls_open, has every new handshake use the pair and the first request of every
 * new connection be checked against the CAs; connections already open keep theirs. On failure
 * the files in force stay and error names the problem. At most PCC_TLS_RELOADS_MAX times a process (PCC_TLS_RELOADS past it): each replaced
 * set is kept until pcc_tls_close. Thread-safe against handshakes and pcc_tls_client_ok. */
pcc_tls_status pcc_tls_reload(pcc_tls *tls, char *error, size_t error_len);

/* Frees tls and every key pair it loaded. NULL is fine. */
void pcc_tls_close(pcc_tls *tls);

/* The MHD_start_daemon options of tls (NULL: none), as the items of an MHD_OPTION_ARRAY ending
 * in MHD_OPTION_END, into items (room for PCC_TLS_OPTIONS_MAX); returns the MHD_USE_* flags to
 * add (MHD_USE_TLS, or 0). tls becomes the one whose keys handshakes get (one a process); its
 * strings stay its own: it must outlive the daemon. */
#define PCC_TLS_OPTIONS_MAX 4
unsigned pcc_tls_daemon_options(const pcc_tls *tls, struct MHD_OptionItem *items);

/* Mutual TLS: does the connection's client present a certificate that verifies against
 * --tls-client-ca (as last loaded), for client authentication, now valid? True when it does, or when tls
 * (NULL: no TLS) asks for none. Otherwise *why (static text) says what is wrong. Thread-safe. */
bool pcc_tls_client_ok(const pcc_tls *tls, struct MHD_Connection *connection, const char **why);

/* Is mutual TLS on? */
bool pcc_tls_mutual(const pcc_tls *tls);

#endif
