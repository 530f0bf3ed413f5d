/* pcc_limits.c: the rows of the limits table (proto/pcc_limits.h), for `pycached --limits` and
 * for the check that docs/DESIGN.md lists every limit with its value (tests/e2e/test_e2e.py). */
#include "pcc_limits.h"

#define ROW(name, option, what) {#name, (uint64_t)(name), option, what}

static const pcc_limit rows[] = {
  ROW(PCC_PATH_MAX, NULL, "bytes of a source path"),
  ROW(PCC_OPT_MAX, NULL, "highest optimization level"),
  ROW(PCC_SOURCE_MAX_DEFAULT, "--max-source", "bytes of a source file"),
  ROW(PCC_SOURCE_MAX_CEILING, NULL, "the most --max-source may be set to"),
  ROW(PCC_PROFILE_BODY_MAX_DEFAULT, "--max-profile-body", "bytes of a POST /v1/profile body"),
  ROW(PCC_BATCH_BODY_MAX_DEFAULT, "--max-batch-body", "bytes of a POST /v1/batch body"),
  ROW(PCC_REPORT_BODY_MAX, NULL, "bytes of a POST /v1/report body"),
  ROW(PCC_REQUEST_MEMORY, NULL, "libmicrohttpd memory per connection (headers, query)"),
  ROW(PCC_BATCH_LOOKUPS_DEFAULT, "--max-batch", "lookups of one batch"),
  ROW(PCC_BUNDLE_MAX_DEFAULT, "--max-bundle", "bytes of one bundle"),
  ROW(PCC_BUNDLE_CACHE_DEFAULT, "--bundle-cache", "bytes of bundles kept built in memory"),
  ROW(PCC_BUNDLE_SLOTS, NULL, "bundles kept built, at most"),
  ROW(PCC_PROFILE_NAME_MAX, NULL, "bytes of a profile name"),
  ROW(PCC_PROFILE_PATHS_MAX, NULL, "paths of one profile, and of one POST /v1/profile"),
  ROW(PCC_LIST_LIMIT_DEFAULT, NULL, "entries of one admin listing page, by default"),
  ROW(PCC_LIST_LIMIT_MAX, NULL, "entries of one admin listing page, at most"),
  ROW(PCC_LIST_SCAN_MAX, NULL, "keys one admin listing request may look at"),
  ROW(PCC_MAGICS_COUNTED, NULL, "magics with counters of their own"),
  ROW(PCC_REASONS_MAX, NULL, "fallback reasons counted per magic"),
  ROW(PCC_REASON_LEN, NULL, "bytes of a fallback reason"),
  ROW(PCC_HIT_TABLE_SLOTS, NULL, "entries whose hits are counted since start"),
  ROW(PCC_FRAME_MAX, NULL, "bytes of a frame between compiler pool and worker"),
  ROW(PCC_FRAME_HELLO_MAX, NULL, "bytes of a worker's hello frame"),
  ROW(PCC_WORKERS_MAX, "--workers", "compiler worker processes per backend, at most"),
  ROW(PCC_JOB_WAITERS_MAX, NULL, "requests joined to one compile"),
  ROW(PCC_TIMEOUT_MEMORY_DEFAULT, "--timeout-memory",
      "seconds a source whose compile timed out is answered 504 without a compile"),
  ROW(PCC_TIMEOUTS_REMEMBERED, NULL, "sources whose compile timed out, remembered"),
  ROW(PCC_NAMESPACE_MAX, NULL, "bytes of a namespace name"),
  ROW(PCC_PATH_VERSIONS_MAX, NULL, "(mtime, size) versions kept per path entry"),
  ROW(PCC_TOKEN_MAX, NULL, "bytes of a token"),
  ROW(PCC_TOKEN_FILE_MAX, NULL, "bytes of a client's token file"),
  ROW(PCC_TOKENS_FILE_MAX, NULL, "bytes of the server's --tokens file"),
  ROW(PCC_RESPONSE_MAX_DEFAULT, NULL, "bytes of a response body libpycached accepts"),
  ROW(PCC_DOWNLOAD_MAX, NULL, "bytes of a backup download"),
  ROW(PCC_WORKERS_AUTO_MAX, NULL, "compiler workers for --workers 0 (one per core), at most"),
  ROW(PCC_WORKER_ARGS_MAX, NULL, "arguments of the compiler worker command"),
  ROW(PCC_WORKER_NAME_PART_MAX, NULL, "bytes of a worker's implementation name and of its version"),
  ROW(PCC_WORKER_ERROR_TYPE_MAX, NULL, "bytes of the exception type of a compile error"),
  ROW(PCC_WORKER_ERROR_MESSAGE_MAX, NULL, "bytes of the message of a compile error"),
  ROW(PCC_WORKER_NOFILE, NULL, "file descriptors of a compiler worker"),
  ROW(PCC_CLIENT_URL_MAX, NULL, "bytes of libpycached's base URL"),
  ROW(PCC_CLIENT_REQUEST_URL_MAX, NULL, "bytes of a request URL libpycached builds"),
  ROW(PCC_CTL_TIMEOUT_MAX_MS, NULL, "pycachectl --timeout in ms, at most (a download's default)"),
  ROW(PCC_CTL_QUERY_MAX, NULL, "bytes of a pycachectl admin request's path and query"),
  ROW(PCC_CTL_PAGES_MAX, NULL, "pages pycachectl admin ls --all follows"),
  ROW(PCC_CTL_ANSWER_MAX, NULL, "bytes of a pycachectl confirmation answer"),
  ROW(PCC_CTL_JSON_DEPTH_MAX, NULL, "JSON levels pycachectl prints as key lines"),
  ROW(PCC_CTL_SOURCE_LINE_MAX, NULL, "bytes of a source line shown under a compile error"),
  ROW(PCC_CTL_WARM_DIRS_MAX, NULL, "DIR arguments of pycachectl warm"),
  ROW(PCC_CTL_WARM_JOBS_MAX, NULL, "pycachectl warm --jobs, at most"),
  ROW(PCC_CTL_WARM_FILES_MAX, NULL, "*.py files of one pycachectl warm run"),
  ROW(PCC_CTL_WARM_TEXT_MAX, NULL, "bytes of the paths of one pycachectl warm run"),
  ROW(PCC_CTL_WARM_DEPTH_MAX, NULL, "directory levels pycachectl warm enters below a DIR"),
  ROW(PCC_CTL_WARM_REASON_MAX, NULL, "bytes of one problem pycachectl warm reports"),
  ROW(PCC_MAGICS_REFRESH, NULL, "seconds between two reads of the magics the store holds"),
};

const pcc_limit *pcc_limits(size_t *n)
{
  *n = sizeof rows / sizeof rows[0];
  return rows;
}
