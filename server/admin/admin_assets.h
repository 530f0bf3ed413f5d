/* admin_assets.h: the admin page's files (server/admin/index.html), embedded into the binary at
 * build time by server/admin/embed.py, which generates admin_assets.c. http.c serves them for
 * GET /admin (docs/API.md, "Admin page"). */
#ifndef PCC_ADMIN_ASSETS_H
#define PCC_ADMIN_ASSETS_H

#include <stdbool.h>
#include <stddef.h>

/* One embedded file: its URL path, its Content-Type and its bytes (static, never freed). */
typedef struct pcc_admin_asset {
  const char *url_path;
  const char *content_type;
  const unsigned char *data;
  size_t len;
} pcc_admin_asset;

/* Every embedded file; the index appears twice, as "/admin" and "/admin/". */
extern const pcc_admin_asset pcc_admin_assets[];
extern const size_t pcc_admin_asset_count;

/* Looks up url_path (the path alone, no query string; NULL finds nothing). On a match returns
 * true and sets *data, *len and *content_type to static storage that lives as long as the
 * program, so a response may use it with MHD_RESPMEM_PERSISTENT; otherwise returns false and
 * leaves the out-parameters alone. */
bool pcc_admin_asset_find(const char *url_path, const unsigned char **data, size_t *len,
                          const char **content_type);

#endif
