/* notify.h: pycached's side of systemd's service protocol (sd_notify(3), libsystemd): READY=1
 * once the listener is up, RELOADING=1 and READY=1 around a SIGHUP reload, STOPPING=1 at
 * shutdown, and WATCHDOG=1 from a thread of its own at half of WATCHDOG_USEC while the
 * watchdog is on (deploy/systemd/pycached.service, docs/OPERATIONS.md "systemd"). Without
 * NOTIFY_SOCKET in the environment (not started by systemd as Type=notify) every call is a
 * no-op. main.c is the only caller. */
#ifndef PCC_NOTIFY_H
#define PCC_NOTIFY_H

typedef enum {
  PCC_NOTIFY_OK = 0,
  PCC_NOTIFY_NOMEM,
  PCC_NOTIFY_THREAD, /* the watchdog thread could not be started */
} pcc_notify_status;

typedef struct pcc_notify pcc_notify;

/* Opens the notifier into *out, owned by the caller until pcc_notify_close. When systemd asked
 * for a watchdog (sd_watchdog_enabled: WATCHDOG_USEC, for this pid), starts the thread that
 * sends WATCHDOG=1 every half interval until pcc_notify_close. */
pcc_notify_status pcc_notify_open(pcc_notify **out);

/* READY=1, with STATUS=status (a line for `systemctl status`; NULL: none). */
void pcc_notify_ready(pcc_notify *notify, const char *status);

/* RELOADING=1: a reload (SIGHUP) begins; pcc_notify_ready says it ended. */
void pcc_notify_reloading(pcc_notify *notify);

/* STOPPING=1: shutdown begins. */
void pcc_notify_stopping(pcc_notify *notify);

/* Stops the watchdog thread (waits for it) and frees notify. NULL is accepted. */
void pcc_notify_close(pcc_notify *notify);

const char *pcc_notify_strerror(pcc_notify_status rc);

#endif
