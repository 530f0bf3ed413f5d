/* tls.c: the TLS files of pycached and the client-certificate check of mutual TLS (tls.h).
 *
 * The files are read whole at start (PCC_TLS_FILE_MAX each) and parsed with GnuTLS before the
 * daemon sees them, so that a bad one is named in one line rather than as libmicrohttpd's
 * "cannot start". libmicrohttpd takes them as NUL-terminated PEM text
 * (MHD_OPTION_HTTPS_MEM_CERT, _KEY, _TRUST) and keeps the pointers: they live as long as the
 * pcc_tls. With _TRUST libmicrohttpd asks each client for a certificate (GNUTLS_CERT_REQUEST)
 * and checks nothing: a client that sends none, or one of another CA, completes the handshake.
 * pcc_tls_client_ok is the check, done on every request (a TLS 1.2 renegotiation may bring
 * another certificate); the HTTP front answers 403 when it fails. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "tls.h"

typedef struct {
  char *text; /* NUL-terminated PEM, len bytes before the NUL; NULL: not given */
  size_t len;
} tls_file;

struct pcc_tls {
  tls_file cert, key, client_ca;
};

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
  while (why == NULL && len <= PCC_TLS_FILE_MAX) { /* bounded: each pass reads or ends */
    ssize_t n = read(fd, text + len, PCC_TLS_FILE_MAX + 1 - len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      why = strerror(errno);
    if (n <= 0)
      break;
    len += (size_t)n;
  }
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
    fprintf(stderr, "pycached: warning: --tls-cert %s expired %lld seconds ago: clients will "
            "refuse it\n", config->tls_cert, (long long)(now - until));
  else if (from != (time_t)-1 && from > now)
    fprintf(stderr, "pycached: warning: --tls-cert %s is not valid for another %lld seconds\n",
            config->tls_cert, (long long)(from - now));
}

/* Parses the certificate chain, the key and the client CAs, and matches the key to the
 * certificate, the way libmicrohttpd will load them. */
static pcc_tls_status check_files(const pcc_config *config, const pcc_tls *tls, char *error,
                                  size_t error_len)
{
  gnutls_datum_t cert = datum_of(&tls->cert), key = datum_of(&tls->key);
  gnutls_x509_crt_t *chain = NULL;
  unsigned n_chain = 0;
  int rc = gnutls_x509_crt_list_import2(&chain, &n_chain, &cert, GNUTLS_X509_FMT_PEM, 0);
  if (rc < 0 || n_chain == 0) {
    snprintf(error, error_len, "--tls-cert %s: %s (%s)", config->tls_cert,
             pcc_tls_strerror(PCC_TLS_BAD_CERT), rc < 0 ? gnutls_strerror(rc) : "none in it");
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
  if (status == PCC_TLS_OK && tls->client_ca.text != NULL) {
    gnutls_datum_t ca = datum_of(&tls->client_ca);
    rc = gnutls_certificate_set_x509_trust_mem(cred, &ca, GNUTLS_X509_FMT_PEM);
    if (rc <= 0) {
      status = PCC_TLS_BAD_CA;
      snprintf(error, error_len, "--tls-client-ca %s: %s (%s)", config->tls_client_ca,
               pcc_tls_strerror(status), rc < 0 ? gnutls_strerror(rc) : "none in it");
    }
  }
  gnutls_certificate_free_credentials(cred);
  return status;
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
  pcc_tls_status rc = read_pem("tls-cert", config->tls_cert, &tls->cert, error, error_len);
  if (rc == PCC_TLS_OK)
    rc = read_pem("tls-key", config->tls_key, &tls->key, error, error_len);
  if (rc == PCC_TLS_OK && config->tls_client_ca != NULL)
    rc = read_pem("tls-client-ca", config->tls_client_ca, &tls->client_ca, error, error_len);
  if (rc == PCC_TLS_OK)
    rc = check_files(config, tls, error, error_len);
  if (rc != PCC_TLS_OK) {
    if (rc == PCC_TLS_NOMEM)
      snprintf(error, error_len, "TLS files: %s", pcc_tls_strerror(rc));
    pcc_tls_close(tls);
    return rc;
  }
  *out = tls;
  return PCC_TLS_OK;
}

void pcc_tls_close(pcc_tls *tls)
{
  if (tls == NULL)
    return;
  if (tls->key.text != NULL)
    explicit_bzero(tls->key.text, tls->key.len);
  free(tls->key.text);
  free(tls->cert.text);
  free(tls->client_ca.text);
  free(tls);
}

unsigned pcc_tls_daemon_options(const pcc_tls *tls, struct MHD_OptionItem *items)
{
  size_t n = 0;
  if (tls != NULL) {
    items[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, tls->cert.text};
    items[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, tls->key.text};
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
  if (session == NULL || gnutls_certificate_type_get(session) != GNUTLS_CRT_X509 ||
      gnutls_certificate_get_peers(session, &n_peers) == NULL || n_peers == 0) {
    *why = "mutual TLS: present a client certificate signed by a --tls-client-ca";
    return false;
  }
  gnutls_typed_vdata_st purpose = {GNUTLS_DT_KEY_PURPOSE_OID,
                                   (unsigned char *)GNUTLS_KP_TLS_WWW_CLIENT, 0};
  unsigned status = 0;
  int rc = gnutls_certificate_verify_peers(session, &purpose, 1, &status);
  if (rc < 0 || status != 0) {
    *why = rc < 0 ? "the client certificate cannot be verified" : status_text(status);
    return false;
  }
  return true;
}
