/* test_conns.c: the Check suite of the connection table (server/conns.c), without HTTP: each
 * connection is one end of a socketpair, so that a cut shows as the end of the stream at the
 * other. Deadlines on both sides of each boundary, the phases that set and keep them, eviction
 * of the connection idle the longest, the reserve, the accept limit, and the sweeper thread. */
#include <check.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "conns.h"
#include "pcc_limits.h"
#include "test_helpers.h"

#define HEADER_MS 100
#define BODY_MS 300
#define IDLE_MS 500
#define RESERVE_MS 50

typedef struct {
  int ours, peer; /* ours is the server's descriptor, peer the client's */
} pair;

static pair make_pair(void)
{
  int fds[2];
  ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  return (pair){fds[0], fds[1]};
}

static void close_pair(pair p)
{
  close(p.ours);
  close(p.peer);
}

/* Has the server's side been shut down (the peer reads the end of the stream)? */
static bool is_cut(pair p, int wait_ms)
{
  struct pollfd pfd = {.fd = p.peer, .events = POLLIN};
  if (poll(&pfd, 1, wait_ms) != 1)
    return false;
  char byte;
  return recv(p.peer, &byte, 1, MSG_DONTWAIT) == 0;
}

static pcc_conns *open_table(uint64_t max, uint64_t reserve, uint64_t tick_ms)
{
  const pcc_conns_limits limits = {max, reserve, HEADER_MS, BODY_MS, IDLE_MS, RESERVE_MS,
                                   tick_ms, 2};
  pcc_conns *conns = NULL;
  CHECK_RC(pcc_conns_open(&limits, &conns), pcc_conns_strerror);
  return conns;
}

START_TEST(test_header_deadline_runs_from_accept)
{
  pcc_conns *conns = open_table(8, 2, 0);
  pair p = make_pair();
  pcc_conn *conn = pcc_conns_add(conns, p.ours, 1000);
  ck_assert_ptr_nonnull(conn);
  ck_assert(!pcc_conns_reserved(conn));
  pcc_conns_enter(conns, conn, PCC_CONN_HEADERS, 1090); /* the request line: no extension */
  ck_assert_uint_eq(pcc_conns_sweep(conns, 1000 + HEADER_MS - 1), 0);
  ck_assert(!is_cut(p, 0));
  ck_assert_uint_eq(pcc_conns_sweep(conns, 1000 + HEADER_MS), 1);
  ck_assert(is_cut(p, 0));
  ck_assert_uint_eq(pcc_conns_sweep(conns, 1000 + HEADER_MS + 1), 0); /* cut once */
  pcc_conns_counts counts = pcc_conns_counts_now(conns);
  ck_assert_uint_eq(counts.open, 1);
  ck_assert_uint_eq(counts.cut, 1);
  pcc_conns_remove(conns, conn);
  ck_assert_uint_eq(pcc_conns_counts_now(conns).open, 0);
  close_pair(p);
  pcc_conns_close(conns);
}
END_TEST

/* Mutual TLS's mark: an entry starts unverified, keeps the mark once set, and a new entry on the
 * same descriptor (a new connection) starts without it. */
START_TEST(test_certified_is_per_connection)
{
  pcc_conns *conns = open_table(8, 2, 0);
  pair p = make_pair();
  pcc_conn *conn = pcc_conns_add(conns, p.ours, 1000);
  ck_assert(!pcc_conns_certified(conn));
  pcc_conns_set_certified(conn);
  pcc_conns_enter(conns, conn, PCC_CONN_IDLE, 1001);
  ck_assert(pcc_conns_certified(conn));
  pcc_conns_remove(conns, conn);
  conn = pcc_conns_add(conns, p.ours, 1002);
  ck_assert(!pcc_conns_certified(conn));
  ck_assert(!pcc_conns_certified(NULL));
  pcc_conns_set_certified(NULL);
  pcc_conns_remove(conns, conn);
  close_pair(p);
  pcc_conns_close(conns);
}
END_TEST

START_TEST(test_phases_set_their_deadlines)
{
  pcc_conns *conns = open_table(8, 2, 0);
  pair p = make_pair();
  pcc_conn *conn = pcc_conns_add(conns, p.ours, 0);
  pcc_conns_enter(conns, conn, PCC_CONN_BODY, 50); /* headers in after 50 ms */
  ck_assert_uint_eq(pcc_conns_sweep(conns, 50 + BODY_MS - 1), 0);
  pcc_conns_enter(conns, conn, PCC_CONN_ANSWERING, 200); /* a compile: no deadline */
  ck_assert_uint_eq(pcc_conns_sweep(conns, 1000000), 0);
  pcc_conns_enter(conns, conn, PCC_CONN_IDLE, 2000);
  ck_assert_uint_eq(pcc_conns_sweep(conns, 2000 + IDLE_MS - 1), 0);
  pcc_conns_enter(conns, conn, PCC_CONN_HEADERS, 2450); /* the next request line */
  ck_assert_uint_eq(pcc_conns_sweep(conns, 2000 + IDLE_MS), 0); /* idle deadline gone */
  ck_assert_uint_eq(pcc_conns_sweep(conns, 2450 + HEADER_MS - 1), 0);
  ck_assert(!is_cut(p, 0));
  ck_assert_uint_eq(pcc_conns_sweep(conns, 2450 + HEADER_MS), 1);
  ck_assert(is_cut(p, 0));
  pcc_conns_enter(conns, NULL, PCC_CONN_IDLE, 0); /* an untracked connection: ignored */
  pcc_conns_remove(conns, NULL);
  pcc_conns_remove(conns, conn);
  close_pair(p);
  pcc_conns_close(conns);
}
END_TEST

START_TEST(test_full_table_evicts_the_longest_idle)
{
  pcc_conns *conns = open_table(3, 2, 0);
  pair p[5];
  pcc_conn *c[5];
  for (int i = 0; i < 3; i++) {
    p[i] = make_pair();
    c[i] = pcc_conns_add(conns, p[i].ours, 0);
  }
  pcc_conns_enter(conns, c[1], PCC_CONN_IDLE, 10); /* idle the longest */
  pcc_conns_enter(conns, c[2], PCC_CONN_IDLE, 20);
  p[3] = make_pair();
  c[3] = pcc_conns_add(conns, p[3].ours, 30); /* full: c[1] makes room */
  ck_assert(!pcc_conns_reserved(c[3]));
  ck_assert(is_cut(p[1], 0));
  ck_assert(!is_cut(p[2], 0));
  ck_assert(!is_cut(p[0], 0));
  ck_assert_uint_eq(pcc_conns_counts_now(conns).evicted, 1);
  /* c[1] is cut but still open: it does not count against the limit, nor is it evicted again */
  pcc_conns_enter(conns, c[2], PCC_CONN_HEADERS, 40); /* c[2] busy again: nothing idle */
  p[4] = make_pair();
  c[4] = pcc_conns_add(conns, p[4].ours, 45);
  ck_assert(pcc_conns_reserved(c[4]));
  ck_assert(!is_cut(p[2], 0));
  pcc_conns_counts counts = pcc_conns_counts_now(conns);
  ck_assert_uint_eq(counts.reserved, 1);
  ck_assert_uint_eq(counts.evicted, 1);
  ck_assert_uint_eq(counts.open, 5);
  /* a reserve connection's deadlines are at most RESERVE_MS */
  ck_assert_uint_eq(pcc_conns_sweep(conns, 45 + RESERVE_MS - 1), 0); /* before c[0]'s 100 */
  ck_assert_uint_eq(pcc_conns_sweep(conns, 45 + RESERVE_MS), 1);
  ck_assert(is_cut(p[4], 0));
  pcc_conns_remove(conns, c[1]);
  for (int i = 0; i < 5; i++)
    close_pair(p[i]);
  pcc_conns_close(conns); /* frees the entries still in the table */
}
END_TEST

/* A reserve connection is answered and closed: between its answer and libmicrohttpd's close it
 * is not idle, or the next connection would evict it and be served as if one of max had gone
 * (the connections suite's silent flood answered 200 where it wants 503 busy, under ASan). */
START_TEST(test_an_answered_reserve_connection_makes_no_room)
{
  pcc_conns *conns = open_table(1, 2, 0);
  pair p[3] = {make_pair(), make_pair(), make_pair()};
  pcc_conn *held = pcc_conns_add(conns, p[0].ours, 0); /* silent: never idle */
  pcc_conn *first = pcc_conns_add(conns, p[1].ours, 0);
  ck_assert(pcc_conns_reserved(first));
  pcc_conns_enter(conns, first, PCC_CONN_IDLE, 10); /* answered, not closed yet */
  pcc_conn *next = pcc_conns_add(conns, p[2].ours, 20);
  ck_assert(pcc_conns_reserved(next));
  ck_assert(!is_cut(p[1], 0));
  ck_assert_uint_eq(pcc_conns_counts_now(conns).evicted, 0);
  /* its reserve deadline still applies while it lingers */
  ck_assert_uint_eq(pcc_conns_sweep(conns, 10 + RESERVE_MS), 1);
  ck_assert(is_cut(p[1], 0));
  pcc_conns_remove(conns, held);
  for (int i = 0; i < 3; i++)
    close_pair(p[i]);
  pcc_conns_close(conns);
}
END_TEST

START_TEST(test_admit_up_to_max_and_reserve)
{
  pcc_conns *conns = open_table(1, 1, 0);
  pair p[2] = {make_pair(), make_pair()};
  ck_assert(pcc_conns_admit(conns));
  pcc_conn *a = pcc_conns_add(conns, p[0].ours, 0);
  ck_assert(pcc_conns_admit(conns));
  pcc_conn *b = pcc_conns_add(conns, p[1].ours, 0);
  ck_assert(pcc_conns_reserved(b));
  ck_assert(!pcc_conns_admit(conns));
  pcc_conns_remove(conns, a);
  ck_assert(pcc_conns_admit(conns));
  pcc_conns_remove(conns, b);
  close_pair(p[0]);
  close_pair(p[1]);
  pcc_conns_close(conns);
}
END_TEST

/* A connection takes its slot at accept, before libmicrohttpd has it (the listener's accept
 * policy): max + reserve and the per-address share count taken slots at once; a slot never
 * started is given up after PCC_CONN_START_MS without its descriptor being touched. */
START_TEST(test_take_counts_at_accept_and_per_address)
{
  pcc_conns *conns = open_table(2, 1, 0); /* per_ip 2 */
  struct sockaddr_in a = {.sin_family = AF_INET}, b = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(0x7f000001);
  b.sin_addr.s_addr = htonl(0x7f000002);
  pair p[4] = {make_pair(), make_pair(), make_pair(), make_pair()};
  pcc_conn *c0 = pcc_conns_take(conns, p[0].ours, (struct sockaddr *)&a, sizeof a, 0);
  pcc_conn *c1 = pcc_conns_take(conns, p[1].ours, (struct sockaddr *)&a, sizeof a, 0);
  ck_assert_ptr_nonnull(c0);
  ck_assert_ptr_nonnull(c1);
  /* a third from the same address: refused, though the table has room */
  ck_assert_ptr_null(pcc_conns_take(conns, p[2].ours, (struct sockaddr *)&a, sizeof a, 0));
  pcc_conn *c2 = pcc_conns_take(conns, p[2].ours, (struct sockaddr *)&b, sizeof b, 0);
  ck_assert_ptr_nonnull(c2); /* the reserve */
  ck_assert(pcc_conns_reserved(c2));
  /* max + reserve taken, none started yet: full */
  ck_assert_ptr_null(pcc_conns_take(conns, p[3].ours, (struct sockaddr *)&b, sizeof b, 0));
  ck_assert_ptr_eq(pcc_conns_start(conns, p[0].ours), c0);
  ck_assert_ptr_null(pcc_conns_start(conns, p[0].ours)); /* started once */
  /* never started: not cut at its header deadline, given up at PCC_CONN_START_MS */
  ck_assert_uint_eq(pcc_conns_sweep(conns, HEADER_MS + 1), 1); /* c0 only */
  ck_assert(!is_cut(p[1], 0));
  ck_assert_uint_eq(pcc_conns_counts_now(conns).open, 3);
  pcc_conns_sweep(conns, PCC_CONN_START_MS);
  ck_assert_uint_eq(pcc_conns_counts_now(conns).open, 1);
  ck_assert(!is_cut(p[1], 0));
  pcc_conns_remove(conns, c0);
  pcc_conns_close(conns);
  for (int i = 0; i < 4; i++)
    close_pair(p[i]);
}
END_TEST

START_TEST(test_sweeper_thread_cuts_on_its_own)
{
  pcc_conns *conns = open_table(8, 2, 10);
  pair slow = make_pair(), busy = make_pair();
  pcc_conn *a = pcc_conns_add(conns, slow.ours, pcc_conns_now_ms());
  pcc_conn *b = pcc_conns_add(conns, busy.ours, pcc_conns_now_ms());
  pcc_conns_enter(conns, b, PCC_CONN_ANSWERING, pcc_conns_now_ms());
  ck_assert(is_cut(slow, 2000));
  ck_assert(!is_cut(busy, 200));
  pcc_conns_remove(conns, a);
  pcc_conns_remove(conns, b);
  close_pair(slow);
  close_pair(busy);
  pcc_conns_close(conns);
  pcc_conns_close(NULL);
}
END_TEST

static Suite *conns_suite(void)
{
  Suite *suite = suite_create("conns");
  TCase *table = tcase_create("table");
  tcase_add_test(table, test_header_deadline_runs_from_accept);
  tcase_add_test(table, test_phases_set_their_deadlines);
  tcase_add_test(table, test_certified_is_per_connection);
  tcase_add_test(table, test_full_table_evicts_the_longest_idle);
  tcase_add_test(table, test_an_answered_reserve_connection_makes_no_room);
  tcase_add_test(table, test_admit_up_to_max_and_reserve);
  tcase_add_test(table, test_take_counts_at_accept_and_per_address);
  tcase_add_test(table, test_sweeper_thread_cuts_on_its_own);
  suite_add_tcase(suite, table);
  return suite;
}

int main(void)
{
  return test_run_suite(conns_suite());
}
