/* fuzz_hook_response.c: what the import hook's C part does with a server's answer to a lookup
 * (client/hook/pycached/_native.c calls pcc_client_lookup of libpycached, client/client.c): the
 * X-Pycached-* header lines, the body within the client's limit, an error body's JSON, then the
 * entry (the raw pyc with its headers, as the hook asks for it, or the JSON form) and its checks
 * against the request. pcc_client_replay_lookup runs exactly that on bytes instead of a socket.
 *
 * Input: byte 0: bit 0 the JSON form instead of the raw pyc, bit 1 a fix-up of the checksum
 * (raw: a last X-Pycached-Checksum line with the body's; JSON: fuzz_common.h), bit 2 the lookup
 * sends hash and digest, bit 3 the rest is a whole HTTP response read by libpycached's HTTP/1.1
 * parser (client/http1.c: status line, headers, Content-Length, chunked or close-delimited
 * body, through pcc_client_replay_response; bit 1 then puts an X-Pycached-Checksum line of the
 * bytes after the first empty line below the status line); else byte 1 picks the status;
 * then the header lines up to an empty line, then the body. Checked: a hit is exactly the entry asked for (magic, opt, mtime, size, and hash and
 * digest when sent) with a pyc that matches its checksum and header; anything else is an error
 * status, and the last error's line and offset are -1 or within 2^53. */
#include "fuzz_common.h"
#include "pycached.h"

static pcc_client *raw_client, *json_client;
static pcc_source source;
static const pcc_magic magic = {{0xa7, 0x0d, 0x0d, 0x0a}};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc;
  (void)argv;
  static const char text[] = "print('hi')\n";
  pcc_client_config config = {.base_url = "http://127.0.0.1:1", .max_response = 1u << 20};
  config.raw_pyc = true;
  if (pcc_client_open(&config, &raw_client) != PCC_CLIENT_OK)
    abort();
  config.raw_pyc = false;
  if (pcc_client_open(&config, &json_client) != PCC_CLIENT_OK)
    abort();
  source.path = (char *)"/srv/app/mod.py";
  source.mtime = 1700000000;
  source.size = sizeof text - 1;
  source.hash = pcc_java_hash(text, sizeof text - 1);
  pcc_digest_compute(text, sizeof text - 1, &source.digest);
  source.data = (uint8_t *)(uintptr_t)text;
  source.len = sizeof text - 1;
  source.has_data = true;
  return 0;
}

static const long statuses[] = {200, 200, 200, 200, 201, 204, 206, 299, 300, 304, 400, 401,
                                403, 404, 409, 413, 422, 500, 503, 504, 507, 100, 0, 999};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size < 2)
    return 0;
  bool json = data[0] & 1, fix = data[0] & 2, send_hash = data[0] & 4, http = data[0] & 8;
  long status = statuses[data[1] % (sizeof statuses / sizeof statuses[0])];
  const char *rest = (const char *)data + 2;
  size_t rest_len = size - 2;
  const char *blank = NULL;
  for (size_t i = 0; i + 4 <= rest_len && blank == NULL; i++)
    if (memcmp(rest + i, "\r\n\r\n", 4) == 0)
      blank = rest + i;
  size_t headers_len = blank ? (size_t)(blank - rest) + 2 : rest_len;
  const char *body = blank ? blank + 4 : rest + rest_len;
  size_t body_len = (size_t)(rest + rest_len - body);

  char *headers = malloc(headers_len + 64), *fixed_body = NULL;
  FUZZ_CHECK(headers != NULL);
  memcpy(headers, rest, headers_len);
  if (fix && !json) {
    char hex[17];
    pcc_checksum_to_hex(pcc_checksum(body, body_len), hex);
    headers_len += (size_t)snprintf(headers + headers_len, 64, "X-Pycached-Checksum: %s\r\n",
                                    hex);
  } else if (fix && (fixed_body = fuzz_fix_entry(body, body_len, 1)) != NULL) {
    body = fixed_body;
    body_len = strlen(fixed_body);
  }

  const uint8_t *response = data + 1;
  size_t response_len = size - 1;
  char *fixed_response = NULL;
  const uint8_t *status_end = memmem(response, response_len, "\r\n", 2);
  if (http && fix && status_end != NULL && blank != NULL) {
    size_t head = (size_t)(status_end - response) + 2;
    char line[64];
    char hex[17];
    pcc_checksum_to_hex(pcc_checksum(body, body_len), hex);
    size_t n = (size_t)snprintf(line, sizeof line, "X-Pycached-Checksum: %s\r\n", hex);
    fixed_response = malloc(response_len + n);
    FUZZ_CHECK(fixed_response != NULL);
    memcpy(fixed_response, response, head);
    memcpy(fixed_response + head, line, n);
    memcpy(fixed_response + head + n, response + head, response_len - head);
    response = (const uint8_t *)fixed_response;
    response_len += n;
  }
  pcc_client *client = json ? json_client : raw_client;
  pcc_entry *entry = NULL;
  pcc_client_status rc =
    http ? pcc_client_replay_response(client, &magic, 0, &source, send_hash, response,
                                      response_len, &entry)
         : pcc_client_replay_lookup(client, &magic, 0, &source, send_hash, status, headers,
                                    headers_len, body, body_len, &entry);
  if (rc == PCC_CLIENT_OK) {
    const pcc_entry_view *v = &entry->view;
    FUZZ_CHECK(http || (status >= 200 && status <= 299));
    FUZZ_CHECK(pcc_magic_equal(&v->magic, &magic) && v->opt == 0 && v->mtime == source.mtime &&
               v->size == source.size);
    FUZZ_CHECK(!send_hash || (v->hash == source.hash &&
                              pcc_digest_equal(&v->digest, &source.digest)));
    FUZZ_CHECK(pcc_checksum(v->pyc, v->pyc_len) == v->checksum);
    pcc_pyc_header header;
    FUZZ_CHECK(pcc_pyc_header_parse(v->pyc, v->pyc_len, &header) == PCC_PROTO_OK &&
               pcc_magic_equal(&header.magic, &magic) &&
               header.mtime == (uint32_t)source.mtime && header.size == (uint32_t)source.size);
    pcc_entry_free(entry);
  } else {
    FUZZ_CHECK(entry == NULL);
    const pcc_client_error *err = pcc_client_last_error(client);
    FUZZ_CHECK(err->line == -1 || (err->line >= -PCC_JSON_INT_MAX && err->line <= PCC_JSON_INT_MAX));
    FUZZ_CHECK(err->offset == -1 ||
               (err->offset >= -PCC_JSON_INT_MAX && err->offset <= PCC_JSON_INT_MAX));
    FUZZ_CHECK(err->message != NULL);
  }
  free(fixed_body);
  free(fixed_response);
  free(headers);
  return 0;
}
