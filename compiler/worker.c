/* worker.c: pycached-cpython-worker, the compiler worker that embeds CPython through libpython.
 *
 * The server's compiler pool (compiler/pool.c) starts it, already confined in what the pool
 * applies to every worker (descriptors, working directory, limits, user; compiler.h), with a
 * socket on fd 0 and fd 1, and speaks the frame protocol of compiler/frame.h: the worker says
 * hello once, then answers each compile frame with marshal.dumps(compile(source_bytes, path,
 * "exec", dont_inherit=True, optimize=opt)) or with a structured compile error. It initialises
 * its interpreter, loads what a compile may load lazily, then installs its seccomp filter
 * (sandbox.c) before the hello: from then on it can read frames, compute and answer, nothing
 * else. It never writes anything but frames to the pool: Python's own sys.stdout is pointed at
 * stderr. compiler/compiler.h has the rest.
 *
 * Usage: pycached-cpython-worker [--sandbox-probe open|socket|exec|fork]; the option (tests only)
 * attempts that call at the first compile, which the filter must answer by killing the worker.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <marshal.h>

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "frame.h"
#include "sandbox.h"

/* The limits are those of proto/pcc_limits.h (through frame.h). PCC_FRAME_MAX bounds every frame
 * either way: the pool's max_frame should not exceed it, a larger request makes this worker exit.
 * The pool's PCC_WORKER_NOFILE descriptors are enough for stdio, the frame fds and the imports of
 * the preload. */

/* Exit statuses; the pool treats every non-zero one as a crash. */
enum {
  WORKER_EXIT_EOF = 0,      /* the pool closed our stdin at a frame boundary */
  WORKER_EXIT_IO = 2,       /* a read or write failed, or EOF inside a frame */
  WORKER_EXIT_PROTOCOL = 3, /* a malformed or oversized frame */
  WORKER_EXIT_SETUP = 4,    /* bad arguments; descriptors, Python or the sandbox failed */
  WORKER_EXIT_NOMEM = 5,
};

static int frame_in = -1;  /* where compile frames come from (the pool's socket) */
static int frame_out = -1; /* where answers go; the only writer of the pool's socket */

/* ---- raw I/O ----------------------------------------------------------------------------- */

/* Reads exactly len bytes. Returns 1 when done, 0 on EOF before the first byte, -1 on error or on
 * EOF after a partial read (*partial is then set). */
static int read_full(int fd, void *buf, size_t len, bool *partial)
{
  uint8_t *p = buf;
  size_t done = 0;
  *partial = false;
  while (done < len) {
    ssize_t n = read(fd, p + done, len - done);
    if (n > 0) {
      done += (size_t)n;
    } else if (n == 0) {
      if (done == 0)
        return 0;
      *partial = true;
      return -1;
    } else if (errno != EINTR) {
      return -1;
    }
  }
  return 1;
}

/* Writes exactly len bytes; false on error. */
static bool write_full(int fd, const void *buf, size_t len)
{
  const uint8_t *p = buf;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n > 0) {
      p += n;
      len -= (size_t)n;
    } else if (n < 0 && errno != EINTR) {
      return false;
    }
  }
  return true;
}

/* Reads the body of a frame whose prefix has been consumed; any failure ends the process. */
static void read_body(void *buf, size_t len)
{
  bool partial = false;
  if (len == 0)
    return;
  if (read_full(frame_in, buf, len, &partial) != 1) {
    fprintf(stderr, "pycached-cpython-worker: truncated frame\n");
    exit(WORKER_EXIT_IO);
  }
}

static void write_frame(uint8_t type, const void *payload, size_t len)
{
  uint8_t prefix[PCC_FRAME_PREFIX_LEN];
  uint32_t total;
  if (len > PCC_FRAME_MAX - 1) {
    fprintf(stderr, "pycached-cpython-worker: refusing to write an oversized frame\n");
    exit(WORKER_EXIT_PROTOCOL);
  }
  total = (uint32_t)(len + 1);
  prefix[0] = (uint8_t)(total & 0xff);
  prefix[1] = (uint8_t)((total >> 8) & 0xff);
  prefix[2] = (uint8_t)((total >> 16) & 0xff);
  prefix[3] = (uint8_t)((total >> 24) & 0xff);
  prefix[4] = type;
  if (!write_full(frame_out, prefix, sizeof prefix) || !write_full(frame_out, payload, len)) {
    fprintf(stderr, "pycached-cpython-worker: write to the pool failed: %s\n", strerror(errno));
    exit(WORKER_EXIT_IO);
  }
}

/* Serialises json (consumed) and sends it as one frame of the given type. */
static void write_json_frame(uint8_t type, cJSON *json)
{
  char *text = json ? cJSON_PrintUnformatted(json) : NULL;
  cJSON_Delete(json);
  if (!text) {
    fprintf(stderr, "pycached-cpython-worker: out of memory building JSON\n");
    exit(WORKER_EXIT_NOMEM);
  }
  write_frame(type, text, strlen(text));
  cJSON_free(text);
}

/* ---- descriptors ------------------------------------------------------------------------- */

/* Runs before Python: moves the frame channel off fds 0/1 so that nothing Python prints can
 * corrupt it (sys.stdout goes to stderr, sys.stdin reads /dev/null). The pool has closed every
 * other descriptor. */
static void setup_descriptors(void)
{
  int devnull;

  frame_in = fcntl(0, F_DUPFD_CLOEXEC, 3);
  frame_out = fcntl(1, F_DUPFD_CLOEXEC, 3);
  devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (frame_in < 0 || frame_out < 0 || devnull < 0 || dup2(devnull, 0) < 0 ||
      dup2(fcntl(2, F_GETFD) >= 0 ? 2 : devnull, 1) < 0) {
    fprintf(stderr, "pycached-cpython-worker: cannot set up descriptors: %s\n", strerror(errno));
    exit(WORKER_EXIT_SETUP);
  }
  (void)close(devnull);
}

/* ---- Python ------------------------------------------------------------------------------ */

static void init_python(const char *argv0)
{
  PyConfig config;
  PyStatus status;

  PyConfig_InitIsolatedConfig(&config);
  config.site_import = 0;
  config.user_site_directory = 0;
  config.use_environment = 0;
  config.write_bytecode = 0;
  config.safe_path = 1;
  config.install_signal_handlers = 0;
  config.parse_argv = 0;
  config.faulthandler = 0;
  /* A fixed hash seed makes marshal output reproducible (frozenset constants are written in
   * iteration order), as PYTHONHASHSEED=0 does for reproducible builds. */
  config.use_hash_seed = 1;
  config.hash_seed = 0;
  status = PyConfig_SetBytesString(&config, &config.program_name, argv0);
  if (!PyStatus_Exception(status))
    status = Py_InitializeFromConfig(&config);
  PyConfig_Clear(&config);
  if (PyStatus_Exception(status)) {
    fprintf(stderr, "pycached-cpython-worker: Python initialisation failed: %s\n",
            status.err_msg ? status.err_msg : "unknown error");
    exit(WORKER_EXIT_SETUP);
  }
}

/* What compile() may load lazily, loaded once before the sandbox closes the file system:
 * - every codec of the encodings package, since a PEP 263 declaration may name any of them or
 *   their aliases (the C codecs, _codecs_jp and the like, come with their modules). A module that
 *   is no codec (aliases) or none on POSIX (mbcs, oem) fails its lookup here and gives the same
 *   "unknown encoding" SyntaxError later as in CPython's importer;
 * - unicodedata, whose capsule "\N{...}" escapes import at their first use (the warm-up compile
 *   uses one, under a non-UTF-8 declaration);
 * - warnings and linecache: compile() may warn (SyntaxWarning), and showing a warning looks its
 *   source line up, which the sandbox then refuses quietly instead of importing. */
static const char preload_source[] =
  "import codecs, encodings, linecache, os, unicodedata, warnings\n"
  "for name in os.listdir(encodings.__path__[0]):\n"
  "    stem, ext = os.path.splitext(name)\n"
  "    if ext in ('.py', '.pyc'):\n"
  "        try:\n"
  "            codecs.lookup(stem)\n"
  "        except LookupError:\n"
  "            pass\n"
  "compile(b'# -*- coding: cp1252 -*-\\ns = \"\\\\N{BULLET}\\x80\"\\n', '<preload>', 'exec',\n"
  "        dont_inherit=True)\n";

static void preload(void)
{
  PyObject *globals = PyDict_New(); /* PyRun_String adds __builtins__ */
  PyObject *result = globals ? PyRun_String(preload_source, Py_file_input, globals, globals) : NULL;
  Py_XDECREF(globals);
  if (!result) {
    fprintf(stderr, "pycached-cpython-worker: loading the codecs failed\n");
    PyErr_Print();
    exit(WORKER_EXIT_SETUP);
  }
  Py_DECREF(result);
}

/* Reads sys.version_info as "major.minor.micro" into out; false on failure. */
static bool python_version(char *out, size_t size)
{
  PyObject *info = PySys_GetObject("version_info"); /* borrowed */
  long parts[3];
  int n;
  if (!info || !PyTuple_Check(info) || PyTuple_Size(info) < 3)
    return false;
  for (Py_ssize_t i = 0; i < 3; i++) {
    parts[i] = PyLong_AsLong(PyTuple_GetItem(info, i));
    if (parts[i] < 0 && PyErr_Occurred())
      return false;
  }
  n = snprintf(out, size, "%ld.%ld.%ld", parts[0], parts[1], parts[2]);
  return n > 0 && (size_t)n < size;
}

static void send_hello(void)
{
  long magic = PyImport_GetMagicNumber();
  char magic_hex[9];
  char version[64];
  cJSON *json;

  if (magic == -1 && PyErr_Occurred()) {
    PyErr_Print();
    exit(WORKER_EXIT_SETUP);
  }
  /* PyImport_GetMagicNumber packs the 4 bytes of MAGIC_NUMBER little-endian. */
  (void)snprintf(magic_hex, sizeof magic_hex, "%02x%02x%02x%02x", (unsigned)(magic & 0xff),
                 (unsigned)((magic >> 8) & 0xff), (unsigned)((magic >> 16) & 0xff),
                 (unsigned)((magic >> 24) & 0xff));
  if (!python_version(version, sizeof version)) {
    PyErr_Clear();
    fprintf(stderr, "pycached-cpython-worker: cannot read sys.version_info\n");
    exit(WORKER_EXIT_SETUP);
  }
  json = cJSON_CreateObject();
  if (json && (!cJSON_AddStringToObject(json, "magic", magic_hex) ||
               !cJSON_AddStringToObject(json, "implementation", "cpython") ||
               !cJSON_AddStringToObject(json, "version", version))) {
    cJSON_Delete(json);
    json = NULL;
  }
  write_json_frame(PCC_FRAME_HELLO, json);
}

/* Copies str(obj) as UTF-8 (lone surrogates backslash-escaped) into a malloc'd string of at most
 * max bytes, cut at a character boundary. NULL when obj is NULL or on failure (error cleared). */
static char *object_text(PyObject *obj, size_t max)
{
  PyObject *str = NULL, *utf8 = NULL;
  char *out = NULL;
  if (!obj)
    return NULL;
  str = PyObject_Str(obj);
  if (str)
    utf8 = PyUnicode_AsEncodedString(str, "utf-8", "backslashreplace");
  if (utf8) {
    const char *data = PyBytes_AS_STRING(utf8);
    size_t len = (size_t)PyBytes_GET_SIZE(utf8);
    if (len > max) {
      len = max;
      while (len > 0 && ((uint8_t)data[len] & 0xc0) == 0x80)
        len--;
    }
    out = malloc(len + 1);
    if (out) {
      memcpy(out, data, len);
      out[len] = '\0';
    }
  }
  Py_XDECREF(utf8);
  Py_XDECREF(str);
  PyErr_Clear();
  return out;
}

/* Reads an int attribute (lineno, offset) of a SyntaxError; 0 when absent, None or odd. */
static int int_attr(PyObject *obj, const char *name)
{
  PyObject *value = PyObject_GetAttrString(obj, name);
  long n = 0;
  if (value && PyLong_Check(value)) {
    n = PyLong_AsLong(value);
    if (n < 0 || n > INT32_MAX)
      n = 0;
  }
  Py_XDECREF(value);
  PyErr_Clear();
  return (int)n;
}

/* Sends an 'E' frame; type and message may be NULL (then "Exception" and ""). */
static void send_error_frame(const char *type, const char *message, int line, int offset,
                             bool transient)
{
  cJSON *json = cJSON_CreateObject();
  if (json && (!cJSON_AddStringToObject(json, "type", type ? type : "Exception") ||
               !cJSON_AddStringToObject(json, "message", message ? message : "") ||
               !cJSON_AddNumberToObject(json, "line", line) ||
               !cJSON_AddNumberToObject(json, "offset", offset) ||
               !cJSON_AddBoolToObject(json, "transient", transient))) {
    cJSON_Delete(json);
    json = NULL;
  }
  write_json_frame(PCC_FRAME_ERROR, json);
}

/* Turns the pending exception into an 'E' frame: type name, message (SyntaxError.msg for
 * SyntaxError and its subclasses, else str(exc)), line and offset. Only SyntaxError and ValueError
 * (null bytes; their subclasses: IndentationError, UnicodeDecodeError) are the source's fault;
 * any other exception (MemoryError, RecursionError) is transient (frame.h). Clears the
 * exception. */
static void send_error(void)
{
  PyObject *type = NULL, *value = NULL, *tb = NULL;
  PyObject *name_obj = NULL, *msg_obj = NULL;
  char *name = NULL, *message = NULL;
  int line = 0, offset = 0;
  bool transient;

  PyErr_Fetch(&type, &value, &tb);
  PyErr_NormalizeException(&type, &value, &tb);
  transient = !type || !(PyErr_GivenExceptionMatches(type, PyExc_SyntaxError) ||
                         PyErr_GivenExceptionMatches(type, PyExc_ValueError));
  if (type)
    name_obj = PyObject_GetAttrString(type, "__name__");
  PyErr_Clear();
  name = object_text(name_obj, PCC_WORKER_ERROR_TYPE_MAX);
  if (value && type && PyErr_GivenExceptionMatches(type, PyExc_SyntaxError)) {
    msg_obj = PyObject_GetAttrString(value, "msg");
    PyErr_Clear();
    if (msg_obj == Py_None)
      Py_CLEAR(msg_obj);
    line = int_attr(value, "lineno");
    offset = int_attr(value, "offset");
  }
  message = object_text(msg_obj ? msg_obj : value, PCC_WORKER_ERROR_MESSAGE_MAX);
  send_error_frame(name, message, line, offset, transient);
  free(name);
  free(message);
  Py_XDECREF(msg_obj);
  Py_XDECREF(name_obj);
  Py_XDECREF(type);
  Py_XDECREF(value);
  Py_XDECREF(tb);
}

/* Compiles and answers one request. compile_fn is builtins.compile. */
static void handle_compile(PyObject *compile_fn, int opt, PyObject *path, PyObject *source)
{
  PyObject *code = PyObject_CallFunction(compile_fn, "OOsiOi", source, path, "exec", 0, Py_True,
                                         opt);
  PyObject *marshalled = NULL;
  if (code) {
    /* marshal sets FLAG_REF on objects with more than one reference. In Python code (importlib,
     * py_compile) the code object always has a second one, the caller's variable, so its type
     * byte is 0xe3; hold a second reference too and produce byte-identical output. */
    Py_INCREF(code);
    marshalled = PyMarshal_WriteObjectToString(code, Py_MARSHAL_VERSION);
    Py_DECREF(code);
  }
  Py_XDECREF(code);
  if (!marshalled) {
    send_error();
    return;
  }
  if ((size_t)PyBytes_GET_SIZE(marshalled) > PCC_FRAME_MAX - 1) {
    /* a limit of ours, not a fault of the source: transient */
    Py_DECREF(marshalled);
    send_error_frame("OverflowError", "marshalled code exceeds the frame limit", 0, 0, true);
    return;
  }
  write_frame(PCC_FRAME_CODE, PyBytes_AS_STRING(marshalled), (size_t)PyBytes_GET_SIZE(marshalled));
  Py_DECREF(marshalled);
}

/* Reads compile frames until EOF. probe (NULL: none) is attempted at the first compile, once the
 * request has been read. Returns the exit status. */
static int serve(PyObject *compile_fn, const char *probe)
{
  for (;;) {
    uint8_t prefix[PCC_FRAME_PREFIX_LEN + 5];
    bool partial = false;
    int rc = read_full(frame_in, prefix, PCC_FRAME_PREFIX_LEN, &partial);
    uint32_t total, path_len;
    size_t source_len;
    int opt;
    char *path_bytes;
    PyObject *path, *source;

    if (rc == 0)
      return WORKER_EXIT_EOF;
    if (rc < 0) {
      fprintf(stderr, "pycached-cpython-worker: reading a frame failed\n");
      return WORKER_EXIT_IO;
    }
    total = (uint32_t)prefix[0] | (uint32_t)prefix[1] << 8 | (uint32_t)prefix[2] << 16 |
            (uint32_t)prefix[3] << 24;
    /* type + opt + path length at least, and never more than the limit */
    if (prefix[4] != PCC_FRAME_COMPILE || total < 6 || total > PCC_FRAME_MAX) {
      fprintf(stderr, "pycached-cpython-worker: bad frame (type 0x%02x, length %lu)\n", prefix[4],
              (unsigned long)total);
      return WORKER_EXIT_PROTOCOL;
    }
    read_body(prefix + PCC_FRAME_PREFIX_LEN, 5);
    opt = prefix[5];
    path_len = (uint32_t)prefix[6] | (uint32_t)prefix[7] << 8 | (uint32_t)prefix[8] << 16 |
               (uint32_t)prefix[9] << 24;
    if (opt > PCC_OPT_MAX || path_len > total - 6) {
      fprintf(stderr, "pycached-cpython-worker: bad compile frame\n");
      return WORKER_EXIT_PROTOCOL;
    }
    source_len = (size_t)(total - 6 - path_len);

    path_bytes = malloc((size_t)path_len + 1);
    if (!path_bytes)
      return WORKER_EXIT_NOMEM;
    read_body(path_bytes, path_len);
    path = PyUnicode_DecodeFSDefaultAndSize(path_bytes, (Py_ssize_t)path_len);
    free(path_bytes);
    /* Read the source straight into a fresh bytes object: no second copy. */
    source = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)source_len);
    if (!path || !source) {
      PyErr_Print();
      return WORKER_EXIT_NOMEM;
    }
    read_body(PyBytes_AS_STRING(source), source_len);
    if (probe) {
      compiler_sandbox_probe(probe);
      probe = NULL;
    }
    handle_compile(compile_fn, opt, path, source);
    Py_DECREF(source);
    Py_DECREF(path);
  }
}

int main(int argc, char **argv)
{
  const char *probe = NULL;
  PyObject *builtins, *compile_fn;
  int rc;

  if (argc == 3 && strcmp(argv[1], "--sandbox-probe") == 0 &&
      compiler_sandbox_probe_known(argv[2])) {
    probe = argv[2];
  } else if (argc > 1) {
    fprintf(stderr, "usage: pycached-cpython-worker (started by pycached's compiler pool)\n");
    return WORKER_EXIT_SETUP;
  }
  setup_descriptors();
  init_python(argv[0] ? argv[0] : "pycached-cpython-worker");
  preload();
  builtins = PyImport_ImportModule("builtins");
  compile_fn = builtins ? PyObject_GetAttrString(builtins, "compile") : NULL;
  Py_XDECREF(builtins);
  if (!compile_fn) {
    PyErr_Print();
    return WORKER_EXIT_SETUP;
  }
  rc = compiler_sandbox_install(frame_out);
  if (rc != 0) {
    fprintf(stderr, "pycached-cpython-worker: cannot install the seccomp filter: %s\n",
            strerror(rc));
    return WORKER_EXIT_SETUP;
  }
  send_hello();
  rc = serve(compile_fn, probe);
  Py_DECREF(compile_fn);
  if (Py_FinalizeEx() != 0 && rc == WORKER_EXIT_EOF)
    rc = WORKER_EXIT_IO;
  return rc;
}
