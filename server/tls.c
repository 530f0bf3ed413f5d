/* tls.c: the TLS files of pycached and the client-certificate check of mutual TLS (tls.h).
 *
 * The files are read whole at start and at each reload (PCC_TLS_FILE_MAX each) and parsed
 * with GnuTLS before any handshake uses them, so that a bad one is named in one line rather than
 * as libmicrohttpd's "cannot start". libmicrohttpd takes the client CAs as NUL-terminated PEM
 * text (MHD_OPTION_HTTPS_MEM_TRUST) and keeps the pointer: it lives as long as the pcc_tls.
 * That copy, read at start, only makes GnuTLS ask each client for a certificate (and names those
 * CAs in the request); the check is made against the trust list of the current key set, which
 * a reload builds again from the file, so that a rotated client CA takes effect on SIGHUP.
 *
 * The certificate and key are not given to libmicrohttpd as text but handed out at each
 * handshake by a GnuTLS callback (MHD_OPTION_HTTPS_CERT_CALLBACK) from the current key set, so
 * that pcc_tls_reload (SIGHUP) can put a renewed pair in force without a restart. A session
 * keeps pointing at the set its handshake got, so a replaced set is kept until pcc_tls_close
 * (at most PCC_TLS_RELOADS_MAX of them). The callback takes no context: one pcc_tls a process
 * serves (`served`).
 *
 * With _TRUST libmicrohttpd asks each client for a certificate (GNUTLS_CERT_REQUEST)
 * and checks nothing: a client that sends none, or one of another CA, completes the handshake.
 * pcc_tls_client_ok is the check, made at the first request of a connection (its peer
 * certificate cannot change: libmicrohttpd never renegotiates) against the current set's
 * trust list; the HTTP front answers 403 when it fails. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "proto.h"
#include "tls.h"
#include "pcc_log.h"

typedef struct {
  char *text; /* NUL-terminated PEM, len bytes before the NUL; NULL: not given */
  size_t len;
} tls_file;

/* A certificate chain and its key, as handed to each handshake, and the client CAs that
 * certificates are checked against (loaded and replaced together). */
typedef struct tls_keys {
  gnutls_pcert_st chain[PCC_TLS_CHAIN_MAX];
  unsigned n_chain;
  gnutls_privkey_t key;
  gnutls_x509_trust_list_t client_cas; /* --tls-client-ca's, or NULL without mutual TLS */
  struct tls_keys *older; /* the set this one replaced (kept: sessions may point at it) */
} tls_keys;

struct pcc_tls {
  const pcc_config *config;
  tls_file client_ca;            /* --tls-client-ca's PEM as read at start: libmicrohttpd's */
  _Atomic(tls_keys *) keys;      /* the set new handshakes get */
  unsigned reloads;              /* sets that replaced the first one */
  pthread_mutex_t reload_lock;
};

static _Atomic(pcc_tls *) served; /* the pcc_tls whose keys the callback hands out */

const char *pcc_tls_strerror(pcc_tls_status rc)
{
  static const char *const text[] = {
    [PCC_TLS_OK] = "ok",
    [PCC_TLS_UNSUPPORTED] = "this libmicrohttpd was built without TLS (HTTPS) support",
    [PCC_TLS_FILE] = "a TLS file cannot be read",
    [PCC_TLS_BAD_CERT] = "not a PEM certificate",
    [PCC_TLS_BAD_KEY] = "not an unencrypted PEM private key",
    [PCC_TLS_MISMATCH] = "the key does not match the certificate",
    [PCC_TLS_BAD_CA] = "no PEM CA certificate",
    [PCC_TLS_NOMEM] = "out of memory",
    [PCC_TLS_RELOADS] = "reloaded PCC_TLS_RELOADS_MAX times: restart the server",
  };
  return (size_t)rc < sizeof text / sizeof text[0] ? text[rc] : "unknown TLS status";
}

/* Reads path (the file of option) into *out, NUL-terminated. On failure writes why. */
static pcc_tls_status read_pem(const char *option, const char *path, tls_file *out, char *error,
                               size_t error_len)
{
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  struct stat sb;
  if (fd < 0 || fstat(fd, &sb) != 0) {
    snprintf(error, error_len, "--%s %s: %s", option, path, strerror(errno));
    if (fd >= 0)
      close(fd);
    return PCC_TLS_FILE;
  }
  const char *why = !S_ISREG(sb.st_mode)                   ? "not a regular file"
                    : sb.st_size > (off_t)PCC_TLS_FILE_MAX ? "larger than PCC_TLS_FILE_MAX"
                                                            : NULL;
  char *text = why == NULL ? malloc(PCC_TLS_FILE_MAX + 1) : NULL;
  if (why == NULL && text == NULL) {
    close(fd);
    return PCC_TLS_NOMEM;
  }
  size_t len = 0;
  int read_errno = why == NULL ? pcc_read_upto(fd, text, PCC_TLS_FILE_MAX + 1, &len) : 0;
  if (read_errno != 0)
    why = strerror(read_errno);
  close(fd);
  if (why == NULL && len > PCC_TLS_FILE_MAX)
    why = "larger than PCC_TLS_FILE_MAX"; /* it grew since fstat */
  if (why == NULL && memchr(text, '\0', len) != NULL)
    why = "a NUL byte: not a PEM file";
  if (why != NULL) {
    snprintf(error, error_len, "--%s %s: %s (at most %llu bytes of PEM)", option, path, why,
             (unsigned long long)PCC_TLS_FILE_MAX);
    if (text != NULL)
      explicit_bzero(text, len);
    free(text);
    return PCC_TLS_FILE;
  }
  text[len] = '\0';
  out->text = text;
  out->len = len;
  return PCC_TLS_OK;
}

static gnutls_datum_t datum_of(const tls_file *file)
{
  return (gnutls_datum_t){(unsigned char *)file->text, (unsigned)file->len};
}

/* Warns when the server's certificate (the first of the chain) is outside its validity. */
static void warn_validity(const pcc_config *config, gnutls_x509_crt_t crt)
{
  time_t now = time(NULL);
  time_t from = gnutls_x509_crt_get_activation_time(crt);
  time_t until = gnutls_x509_crt_get_expiration_time(crt);
  if (until != (time_t)-1 && until < now)
    pcc_logf(PCC_LOG_WARN, "--tls-cert %s expired %lld seconds ago: clients will "
             "refuse it", config->tls_cert, (long long)(now - until));
  else if (from != (time_t)-1 && from > now)
    pcc_logf(PCC_LOG_WARN, "--tls-cert %s is not valid for another %lld seconds",
             config->tls_cert, (long long)(from - now));
}

/* Parses the certificate chain and the key and matches the key to the certificate, as GnuTLS
 * will use them. */
static pcc_tls_status check_files(const pcc_config *config, const tls_file *cert_file,
                                  const tls_file *key_file, char *error, size_t error_len)
{
  gnutls_datum_t cert = datum_of(cert_file), key = datum_of(key_file);
  gnutls_x509_crt_t *chain = NULL;
  unsigned n_chain = 0;
  int rc = gnutls_x509_crt_list_import2(&chain, &n_chain, &cert, GNUTLS_X509_FMT_PEM, 0);
  if (rc < 0 || n_chain == 0 || n_chain > PCC_TLS_CHAIN_MAX) {
    snprintf(error, error_len, "--tls-cert %s: %s (%s)", config->tls_cert,
             pcc_tls_strerror(PCC_TLS_BAD_CERT), rc < 0 ? gnutls_strerror(rc)
                                                 : n_chain == 0 ? "none in it"
                                                                : "over PCC_TLS_CHAIN_MAX");
    for (unsigned i = 0; rc >= 0 && i < n_chain; i++)
      gnutls_x509_crt_deinit(chain[i]);
    if (rc >= 0)
      gnutls_free(chain);
    return PCC_TLS_BAD_CERT;
  }
  warn_validity(config, chain[0]);
  for (unsigned i = 0; i < n_chain; i++)
    gnutls_x509_crt_deinit(chain[i]);
  gnutls_free(chain);

  gnutls_x509_privkey_t parsed;
  if (gnutls_x509_privkey_init(&parsed) < 0)
    return PCC_TLS_NOMEM;
  rc = gnutls_x509_privkey_import2(parsed, &key, GNUTLS_X509_FMT_PEM, NULL, 0);
  gnutls_x509_privkey_deinit(parsed);
  if (rc < 0) {
    snprintf(error, error_len, "--tls-key %s: %s (%s)", config->tls_key,
             pcc_tls_strerror(PCC_TLS_BAD_KEY), gnutls_strerror(rc));
    return PCC_TLS_BAD_KEY;
  }

  gnutls_certificate_credentials_t cred;
  if (gnutls_certificate_allocate_credentials(&cred) < 0)
    return PCC_TLS_NOMEM;
  pcc_tls_status status = PCC_TLS_OK;
  rc = gnutls_certificate_set_x509_key_mem2(cred, &cert, &key, GNUTLS_X509_FMT_PEM, NULL, 0);
  if (rc < 0) {
    status = rc == GNUTLS_E_CERTIFICATE_KEY_MISMATCH ? PCC_TLS_MISMATCH : PCC_TLS_BAD_KEY;
    snprintf(error, error_len, "--tls-key %s: %s of --tls-cert %s (%s)", config->tls_key,
             status == PCC_TLS_MISMATCH ? "not the key" : "cannot be used as the key",
             config->tls_cert, gnutls_strerror(rc));
  }
  gnutls_certificate_free_credentials(cred);
  return status;
}

/* The trust list of the CAs in client_ca into *out (the caller's), or PCC_TLS_BAD_CA with
 * error naming the file when it holds none GnuTLS can parse. */
static pcc_tls_status client_cas_load(const pcc_config *config, const tls_file *client_ca,
                                      gnutls_x509_trust_list_t *out, char *error,
                                      size_t error_len)
{
  gnutls_x509_trust_list_t list;
  if (gnutls_x509_trust_list_init(&list, 0) < 0)
    return PCC_TLS_NOMEM;
  gnutls_datum_t ca = datum_of(client_ca);
  int rc = gnutls_x509_trust_list_add_trust_mem(list, &ca, NULL, GNUTLS_X509_FMT_PEM, 0, 0);
  if (rc <= 0) {
    gnutls_x509_trust_list_deinit(list, 1);
    snprintf(error, error_len, "--tls-client-ca %s: %s (%s)", config->tls_client_ca,
             pcc_tls_strerror(PCC_TLS_BAD_CA), rc < 0 ? gnutls_strerror(rc) : "none in it");
    return PCC_TLS_BAD_CA;
  }
  *out = list;
  return PCC_TLS_OK;
}

/* Frees a key set and the ones it replaced. NULL is fine. */
static void keys_free(tls_keys *keys)
{
  while (keys != NULL) {
    tls_keys *older = keys->older;
    for (unsigned i = 0; i < keys->n_chain; i++)
      gnutls_pcert_deinit(&keys->chain[i]);
    gnutls_privkey_deinit(keys->key);
    if (keys->client_cas != NULL)
      gnutls_x509_trust_list_deinit(keys->client_cas, 1);
    free(keys);
    keys = older;
  }
}

/* Reads --tls-cert and --tls-key, and takes the CAs of client_ca (NULL: none), into a new key
 * set *out (the caller's). The key's text is wiped once imported. */
static pcc_tls_status keys_load(const pcc_config *config, const tls_file *client_ca,
                                tls_keys **out, char *error, size_t error_len)
{
  tls_file cert = {NULL, 0}, key = {NULL, 0};
  pcc_tls_status rc = read_pem("tls-cert", config->tls_cert, &cert, error, error_len);
  if (rc == PCC_TLS_OK)
    rc = read_pem("tls-key", config->tls_key, &key, error, error_len);
  if (rc == PCC_TLS_OK)
    rc = check_files(config, &cert, &key, error, error_len);
  tls_keys *keys = rc == PCC_TLS_OK ? calloc(1, sizeof *keys) : NULL;
  if (rc == PCC_TLS_OK && keys == NULL)
    rc = PCC_TLS_NOMEM;
  if (rc == PCC_TLS_OK) {
    gnutls_datum_t cert_datum = datum_of(&cert), key_datum = datum_of(&key);
    keys->n_chain = PCC_TLS_CHAIN_MAX;
    int grc = gnutls_pcert_list_import_x509_raw(keys->chain, &keys->n_chain, &cert_datum,
                                                GNUTLS_X509_FMT_PEM, 0);
    if (grc < 0)
      keys->n_chain = 0;
    if (grc >= 0 && (grc = gnutls_privkey_init(&keys->key)) >= 0)
      grc = gnutls_privkey_import_x509_raw(keys->key, &key_datum, GNUTLS_X509_FMT_PEM, NULL, 0);
    if (grc < 0) { /* parsed by check_files already: only memory can be missing here */
      snprintf(error, error_len, "--tls-cert %s: %s", config->tls_cert, gnutls_strerror(grc));
      rc = PCC_TLS_NOMEM;
    }
  }
  if (rc == PCC_TLS_OK && client_ca != NULL)
    rc = client_cas_load(config, client_ca, &keys->client_cas, error, error_len);
  if (key.text != NULL)
    explicit_bzero(key.text, key.len);
  free(key.text);
  free(cert.text);
  if (rc != PCC_TLS_OK) {
    keys_free(keys);
    return rc;
  }
  *out = keys;
  return PCC_TLS_OK;
}

pcc_tls_status pcc_tls_open(const pcc_config *config, pcc_tls **out, char *error,
                            size_t error_len)
{
  if (config->tls_cert == NULL) { /* config.c: then there is no --tls-key nor --tls-client-ca */
    *out = NULL;
    return PCC_TLS_OK;
  }
  if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
    snprintf(error, error_len, "--tls-cert: %s", pcc_tls_strerror(PCC_TLS_UNSUPPORTED));
    return PCC_TLS_UNSUPPORTED;
  }
  pcc_tls *tls = calloc(1, sizeof *tls);
  if (tls == NULL)
    return PCC_TLS_NOMEM;
  tls->config = config;
  pthread_mutex_init(&tls->reload_lock, NULL);
  pcc_tls_status rc = PCC_TLS_OK;
  if (config->tls_client_ca != NULL)
    rc = read_pem("tls-client-ca", config->tls_client_ca, &tls->client_ca, error, error_len);
  tls_keys *keys = NULL;
  if (rc == PCC_TLS_OK)
    rc = keys_load(config, tls->client_ca.text ? &tls->client_ca : NULL, &keys, error,
                   error_len);
  atomic_store(&tls->keys, keys);
  if (rc != PCC_TLS_OK) {
    if (rc == PCC_TLS_NOMEM)
      snprintf(error, error_len, "TLS files: %s", pcc_tls_strerror(rc));
    pcc_tls_close(tls);
    return rc;
  }
  *out = tls;
  return PCC_TLS_OK;
}

pcc_tls_status pcc_tls_reload(pcc_tls *tls, char *error, size_t error_len)
{
  pthread_mutex_lock(&tls->reload_lock);
  tls_keys *keys = NULL;
  pcc_tls_status rc = tls->reloads >= PCC_TLS_RELOADS_MAX ? PCC_TLS_RELOADS : PCC_TLS_OK;
  tls_file client_ca = {NULL, 0};
  if (rc == PCC_TLS_OK && tls->config->tls_client_ca != NULL)
    rc = read_pem("tls-client-ca", tls->config->tls_client_ca, &client_ca, error, error_len);
  if (rc == PCC_TLS_OK)
    rc = keys_load(tls->config, client_ca.text ? &client_ca : NULL, &keys, error, error_len);
  free(client_ca.text);
  if (rc == PCC_TLS_OK) {
    keys->older = atomic_load(&tls->keys);
    atomic_store(&tls->keys, keys); /* the next handshake gets it */
    tls->reloads++;
  } else if (rc == PCC_TLS_RELOADS || rc == PCC_TLS_NOMEM) {
    snprintf(error, error_len, "%s", pcc_tls_strerror(rc));
  }
  pthread_mutex_unlock(&tls->reload_lock);
  return rc;
}

void pcc_tls_close(pcc_tls *tls)
{
  if (tls == NULL)
    return;
  pcc_tls *self = tls;
  atomic_compare_exchange_strong(&served, &self, NULL);
  keys_free(atomic_load(&tls->keys));
  free(tls->client_ca.text);
  pthread_mutex_destroy(&tls->reload_lock);
  free(tls);
}

/* GnuTLS's question at each handshake: the current key set of the served pcc_tls. The set
 * stays valid until pcc_tls_close (replaced sets are kept). */
static int retrieve_keys(gnutls_session_t session, const gnutls_datum_t *req_ca_rdn, int nreqs,
                         const gnutls_pk_algorithm_t *pk_algos, int pk_algos_length,
                         gnutls_pcert_st **chain, unsigned int *n_chain, gnutls_privkey_t *key)
{
  (void)session, (void)req_ca_rdn, (void)nreqs, (void)pk_algos, (void)pk_algos_length;
  pcc_tls *tls = atomic_load(&served);
  tls_keys *keys = tls != NULL ? atomic_load(&tls->keys) : NULL;
  if (keys == NULL)
    return -1;
  *chain = keys->chain;
  *n_chain = keys->n_chain;
  *key = keys->key;
  return 0;
}

unsigned pcc_tls_daemon_options(const pcc_tls *tls, struct MHD_OptionItem *items)
{
  size_t n = 0;
  if (tls != NULL) {
    atomic_store(&served, (pcc_tls *)tls);
    /* the option array carries the callback as a void * (POSIX: same size and form) */
    gnutls_certificate_retrieve_function2 *callback = retrieve_keys;
    void *as_pointer;
    _Static_assert(sizeof callback == sizeof as_pointer, "function pointers fit a void *");
    memcpy(&as_pointer, &callback, sizeof as_pointer);
    items[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_CERT_CALLBACK, 0, as_pointer};
    if (tls->client_ca.text != NULL)
      items[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_TRUST, 0, tls->client_ca.text};
  }
  items[n] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
  return tls != NULL ? MHD_USE_TLS : 0;
}

bool pcc_tls_mutual(const pcc_tls *tls)
{
  return tls != NULL && tls->client_ca.text != NULL;
}

/* What a verification status says is wrong, the likeliest first. */
static const char *status_text(unsigned status)
{
  static const struct {
    unsigned bit;
    const char *text;
  } reasons[] = {
    {GNUTLS_CERT_SIGNER_NOT_FOUND, "the client certificate is not signed by a --tls-client-ca"},
    {GNUTLS_CERT_EXPIRED, "the client certificate has expired"},
    {GNUTLS_CERT_NOT_ACTIVATED, "the client certificate is not valid yet"},
    {GNUTLS_CERT_REVOKED, "the client certificate is revoked"},
    {GNUTLS_CERT_PURPOSE_MISMATCH, "the client certificate is not for client authentication"},
    {GNUTLS_CERT_INSECURE_ALGORITHM, "the client certificate uses an insecure algorithm"},
  };
  for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
    if (status & reasons[i].bit)
      return reasons[i].text;
  return "the client certificate does not verify against the --tls-client-ca";
}

bool pcc_tls_client_ok(const pcc_tls *tls, struct MHD_Connection *connection, const char **why)
{
  if (!pcc_tls_mutual(tls))
    return true;
  const union MHD_ConnectionInfo *info =
    MHD_get_connection_info(connection, MHD_CONNECTION_INFO_GNUTLS_SESSION);
  gnutls_session_t session = info != NULL ? (gnutls_session_t)info->tls_session : NULL;
  unsigned n_peers = 0;
  const gnutls_datum_t *peers = NULL;
  if (session != NULL && gnutls_certificate_type_get(session) == GNUTLS_CRT_X509)
    peers = gnutls_certificate_get_peers(session, &n_peers);
  if (peers == NULL || n_peers == 0) {
    *why = "mutual TLS: present a client certificate signed by a --tls-client-ca";
    return false;
  }
  if (n_peers > PCC_TLS_CHAIN_MAX) {
    *why = "the client certificate chain is longer than PCC_TLS_CHAIN_MAX";
    return false;
  }
  gnutls_x509_crt_t chain[PCC_TLS_CHAIN_MAX];
  unsigned n_chain = 0;
  int rc = 0;
  for (; rc >= 0 && n_chain < n_peers; n_chain++) {
    if ((rc = gnutls_x509_crt_init(&chain[n_chain])) < 0)
      break;
    rc = gnutls_x509_crt_import(chain[n_chain], &peers[n_chain], GNUTLS_X509_FMT_DER);
  }
  gnutls_typed_vdata_st purpose = {GNUTLS_DT_KEY_PURPOSE_OID,
                                   (unsigned char *)GNUTLS_KP_TLS_WWW_CLIENT, 0};
  unsigned status = 0;
  /* the set in force now (a reload replaces it; every set is kept until pcc_tls_close) */
  const tls_keys *keys = atomic_load(&((pcc_tls *)tls)->keys);
  if (rc >= 0)
    rc = gnutls_x509_trust_list_verify_crt2(keys->client_cas, chain, n_chain, &purpose, 1, 0,
                                            &status, NULL);
  for (unsigned i = 0; i < n_chain; i++)
    gnutls_x509_crt_deinit(chain[i]);
  if (rc < 0 || status != 0) {
    *why = rc < 0 ? "the client certificate cannot be verified" : status_text(status);
    return false;
  }
  return true;
}
