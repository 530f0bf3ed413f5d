/* sandbox.h: the seccomp filter of pycached-cpython-worker (sandbox.c), and the probes its tests
 * use. Internal to the compiler module: only worker.c includes it. The policy, and why, is in
 * sandbox.c and docs/DESIGN.md ("Security"). */
#ifndef PCC_COMPILER_SANDBOX_H
#define PCC_COMPILER_SANDBOX_H

#include <stdbool.h>

/* Confines the calling process for the rest of its life: sets PR_SET_NO_NEW_PRIVS, then installs
 * the filter. Call it once, single-threaded, after everything a compile may load lazily is loaded
 * (the filter refuses every later open). frame_out is the descriptor answers go to; writes are
 * allowed there and on 1 and 2 only. Returns 0, or an errno value when the filter could not be
 * installed; the caller must then not serve. */
int compiler_sandbox_install(int frame_out);

/* Whether kind names a probe: "open" (a file for writing), "socket", "exec", "fork". */
bool compiler_sandbox_probe_known(const char *kind);

/* Attempts the call the probe kind names, which the filter forbids: a confined process is killed
 * by the kernel (SIGSYS) and never returns. An unconfined one notes on stderr that the call was
 * not stopped, and returns; the probe has no other effect (it names a path that does not exist,
 * closes what it got, reaps what it forked). kind must be known. Tests only: the worker's hidden
 * --sandbox-probe option runs it at the first compile. */
void compiler_sandbox_probe(const char *kind);

#endif /* PCC_COMPILER_SANDBOX_H */
