/* fuzz_pyc_header.c: the 16-byte pyc header (pcc_pyc_header_parse, proto/pyc.c) and the text
 * forms that come with it in responses and queries: magic, digest and checksum in hex, the pyc in
 * base64 (pcc_base64_decode), server texts cut to whole UTF-8 characters (pcc_utf8_trim).
 *
 * Input: any bytes. Checked: a header that parses is timestamp-based with a well-formed magic and
 * is written back to the same 16 bytes; each hex form that parses prints back to the same text
 * (lowercased); base64 that decodes encodes and decodes again to the same bytes; the trim keeps a
 * prefix. */
#include <ctype.h>

#include "fuzz_common.h"

static void check_hex(const char *text)
{
  char lower[PCC_DIGEST_HEX_LEN + 1];
  size_t len = strlen(text);
  for (size_t i = 0; i < len && i < PCC_DIGEST_HEX_LEN; i++)
    lower[i] = (char)tolower((unsigned char)text[i]);
  lower[len < PCC_DIGEST_HEX_LEN ? len : PCC_DIGEST_HEX_LEN] = '\0';

  pcc_magic magic;
  if (pcc_magic_from_hex(text, &magic) == PCC_PROTO_OK) {
    char hex[2 * PCC_MAGIC_LEN + 1];
    pcc_magic_to_hex(&magic, hex);
    FUZZ_CHECK(len == 8 && strcmp(hex, lower) == 0);
    FUZZ_CHECK(magic.bytes[2] == '\r' && magic.bytes[3] == '\n');
  }
  pcc_digest digest;
  if (pcc_digest_from_hex(text, &digest) == PCC_PROTO_OK) {
    char hex[PCC_DIGEST_HEX_LEN + 1];
    pcc_digest_to_hex(&digest, hex);
    FUZZ_CHECK(len == PCC_DIGEST_HEX_LEN && strcmp(hex, lower) == 0);
  }
  uint64_t checksum;
  if (pcc_checksum_from_hex(text, &checksum) == PCC_PROTO_OK) {
    char hex[17];
    pcc_checksum_to_hex(checksum, hex);
    FUZZ_CHECK(len == 16 && strcmp(hex, lower) == 0);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  pcc_pyc_header header;
  if (pcc_pyc_header_parse(data, size, &header) == PCC_PROTO_OK) {
    uint8_t out[PCC_PYC_HEADER_LEN];
    FUZZ_CHECK(size >= PCC_PYC_HEADER_LEN && header.flags == 0);
    pcc_pyc_header_write(&header, out);
    FUZZ_CHECK(memcmp(out, data, sizeof out) == 0);
  }

  char *text = fuzz_text(data, size);
  check_hex(text);

  uint8_t *bytes = NULL;
  size_t n = 0;
  if (pcc_base64_decode(text, strlen(text), &bytes, &n) == PCC_PROTO_OK) {
    char *again = pcc_base64_encode(bytes, n);
    uint8_t *round = NULL;
    size_t m = 0;
    FUZZ_CHECK(again != NULL &&
               pcc_base64_decode(again, strlen(again), &round, &m) == PCC_PROTO_OK);
    FUZZ_CHECK(m == n && (n == 0 || memcmp(round, bytes, n) == 0));
    free(round);
    free(again);
  }
  free(bytes);

  size_t before = strlen(text);
  char *copy = strdup(text);
  FUZZ_CHECK(copy != NULL);
  pcc_utf8_trim(copy);
  FUZZ_CHECK(strlen(copy) <= before && strncmp(copy, text, strlen(copy)) == 0);
  free(copy);
  free(text);
  return 0;
}
