/* feature_list.h: the features of pycached, each in its own file with its routes and handlers
 * (route.h). Only main.c includes this: features never name each other. */
#ifndef PCC_FEATURE_LIST_H
#define PCC_FEATURE_LIST_H

#include "route.h"

extern const pcc_feature pcc_cache_feature; /* cache.c: lookups, compiles, health, stats */
extern const pcc_feature pcc_admin_feature; /* admin.c: admin API, metrics, admin page */
extern const pcc_feature pcc_warm_feature;  /* warm.c: profiles, bundles, batches, reports */

#endif
