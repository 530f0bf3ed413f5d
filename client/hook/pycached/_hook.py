"""The pycached import hook: a FileFinder path hook whose source loader asks a pycached server for
a module's code before compiling it.

Order for each .py module: a valid local pyc (__pycache__, or PYCACHED_LOCAL_PREFIX), then a
pycached hit, then (unless read-only) a pycached compile of this source, then CPython's own
SourceFileLoader (local compilation, which also writes __pycache__ when it can). A served pyc is
used only after pycached._native verified its checksum, magic, mtime and size, and marshal.loads
produced a code object; anything else falls back to local compilation, never to an ImportError.
Extension modules and sourceless pycs keep their usual loaders.

With access control on the server, the token comes from PYCACHED_TOKEN, else from the file named
by PYCACHED_TOKEN_FILE; a refused token (401/403) is a fallback that stops the requests.

Warm start: at install a thread of the hook starts fetching the bundle of this program's import
profile (PYCACHED_PROFILE, derived from the command line by default) in one request, so that the
transfer overlaps the rest of the start-up; an import that needs it waits for it (bounded). A
module is served from it only after validating it exactly as a lookup would (mtime, size and, in
hash mode, the source's hash and digest, which the same thread computes ahead of the imports for
sources that did not change recently); at exit the hook sends the server the paths it imported,
which the server merges into the profile for the next start.

Nothing the cache machinery raises reaches the importing program: the hook's way to a served or
bundled code object runs under a catch-all that falls back to local compilation (counted as the
fallback hook-error), so a source's own SyntaxError is always CPython's, raised by its loader.
"""
import atexit
import _imp
import marshal
import os
import sys
import _thread  # not threading: importing it costs every process 1-3 ms (BENCHMARKS.md, issue 12)
import time
# importlib.machinery's classes without importing the importlib package (and the warnings it
# imports: 0.4 ms of every start): the frozen module both re-export, there in every interpreter
_bx = sys.modules["_frozen_importlib_external"]
machinery = _bx



def _import_native():
    """pycached._native as built for this interpreter, or an ImportError that says why not in
    one line (pycached_unavailable set): `from . import _native` would hide a missing build or a
    failed load behind "cannot import name '_native' from partially initialized module"."""
    package = __name__.rpartition(".")[0]
    try:
        __import__(package + "._native")
        return sys.modules[package + "._native"]
    except ImportError as exc:
        here = os.path.dirname(os.path.abspath(__file__))
        if isinstance(exc, ModuleNotFoundError) and exc.name == package + "._native":
            impl = sys.implementation
            built = sorted(f[len("_native"):] for f in os.listdir(here)
                           if f.startswith("_native.") and not f.endswith(".p"))
            why = ("%s._native is not built for %s %d.%d (%s): %s has no _native%s (built: %s; "
                   "rebuild with meson -Dhook_pythons=...)" % (
                       package, impl.name, sys.version_info[0], sys.version_info[1], sys.executable,
                       here, machinery.EXTENSION_SUFFIXES[0], ", ".join(built) or "none"))
        else:
            why = "%s._native cannot be loaded by %s: %s" % (package, sys.executable, exc)
        error = ImportError(why)
        error.pycached_unavailable = True
        raise error from None


_native = _import_native()

MAGIC = _bx.MAGIC_NUMBER
_ENV_DEFAULTS = {
    "PYCACHED_URL": "",
    "PYCACHED_TIMEOUT_MS": "500",
    "PYCACHED_COMPILE_TIMEOUT_MS": "10000",
    "PYCACHED_READONLY": "0",
    "PYCACHED_VALIDATION": "hash",
    "PYCACHED_LOCAL_PREFIX": "",
    "PYCACHED_DEBUG": "0",
    "PYCACHED_BREAKER_SECONDS": "30",
    "PYCACHED_BREAKER_5XX": str(_native.BREAKER_5XX_DEFAULT),
    "PYCACHED_TOKEN": "",
    "PYCACHED_TOKEN_FILE": "",
    "PYCACHED_PROFILE": "",
    "PYCACHED_BUNDLE_ZSTD": "0",
    "PYCACHED_ZSTD": "auto",
    "PYCACHED_CA_FILE": "",
    "PYCACHED_CLIENT_CERT": "",
    "PYCACHED_CLIENT_KEY": "",
}
_TLS_FILES = ("PYCACHED_CA_FILE", "PYCACHED_CLIENT_CERT", "PYCACHED_CLIENT_KEY")
# limits from the one table, proto/pcc_limits.h (the extension exports them)
_MAX_SOURCE = _native.SOURCE_MAX_DEFAULT  # the server's default --max-source
_TOKEN_MAX = _native.TOKEN_MAX  # bytes of a token
_TOKEN_FILE_MAX = _native.TOKEN_FILE_MAX  # bytes of a token file, white space included
_PROFILE_NAME_MAX = _native.PROFILE_NAME_MAX  # bytes of a profile name
_URLS_MAX = _native.URLS_MAX  # servers PYCACHED_URL may list
_UNIX_PATH_MAX = _native.UNIX_PATH_MAX  # bytes of a unix: URL's socket path
_PROFILE_TAG_HEX = 16  # hex digits of the digest that tag a shortened or cleaned profile name

# A source whose ctime is this recent when the fetch thread hashes it may still change within one
# tick of the file system's clock without its stat changing: it is hashed at its import instead.
_RACY_SECONDS = 2.0

class _Ready:
    """threading.Event's set() and wait(timeout) on a _thread lock, held until set()."""

    def __init__(self):
        self._lock = _thread.allocate_lock()
        self._lock.acquire()
        self._set = False

    def set(self):  # called once, by the fetch thread
        if not self._set:
            self._set = True
            self._lock.release()

    def wait(self, timeout):
        if self._set:
            return True
        if self._lock.acquire(timeout > 0, timeout if timeout > 0 else -1):
            self._lock.release()  # the next waiter passes too
            return True
        return self._set


_lock = _thread.allocate_lock()         # counters
_bundle_lock = _thread.allocate_lock()  # a process without a fetch thread fetches at its first import
_bundle_ready = _Ready()  # set once the fetch thread has set _bundle
_bundle_thread = None  # the ident of the thread fetching the bundle (started by install), or None
_bundle_waited_out = False  # an import waited its bound for the bundle: later ones do not wait
_counters = {}
_settings = None
_path_hook = None
_bundle = None   # source path -> (mtime, size, hash, digest, pyc); None until fetched
_source_ids = {}  # source path -> (stat key, (hash, digest)) hashed ahead by the fetch thread
_no_pycache = set()  # directories seen without a __pycache__ (saves a failed open a module)
_imported = {}   # source paths this process handled (an ordered set), for the profile


def _after_fork_in_child():
    """A child forked while another thread held one of the locks, or while the fetch thread was
    fetching the bundle, must not wait for a thread it does not have: it gets fresh locks and no
    fetch thread, and a bundle its parent was still fetching is fetched again, by the child, at
    its first import that needs it (the C part gives the child a connection of its own)."""
    global _lock, _bundle_lock, _bundle_ready, _bundle_thread
    _lock = _thread.allocate_lock()
    _bundle_lock = _thread.allocate_lock()
    _bundle_ready = _Ready()
    _bundle_thread = None


os.register_at_fork(after_in_child=_after_fork_in_child)


def _count(name):
    with _lock:
        _counters[name] = _counters.get(name, 0) + 1


def stats():
    """This process's counters: hits (code from the store), compiles_asked (the lookup missed
    and the server compiled the source for us), misses (lookups that missed: compiles_asked plus
    read-only misses), local_pyc, local_compile, and fallbacks by reason."""
    with _lock:
        counters = dict(_counters)
    fallbacks = {k[9:]: v for k, v in counters.items() if k.startswith("fallback:")}
    result = {k: v for k, v in counters.items() if not k.startswith("fallback:")}
    for key in ("hits", "compiles_asked", "local_pyc", "local_compile"):
        result.setdefault(key, 0)
    result["misses"] = result["compiles_asked"] + fallbacks.get("miss", 0)
    result["fallbacks"] = fallbacks
    return result


def _debug(outcome, fullname, path, detail=""):
    if _settings and _settings["debug"]:
        try:
            sys.stderr.write("pycached: %-14s %s (%s)%s\n" % (
                outcome, fullname, path, ": " + detail if detail else ""))
        except Exception:  # no stderr, or one that cannot take the text: no debug line
            pass


def _positive_int(env, name, most=None):
    text = env.get(name, _ENV_DEFAULTS[name])
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError("%s must be a positive whole number, not %r" % (name, text))
    if most is not None and value > most:
        raise ValueError("%s must be at most %d, not %r" % (name, most, text))
    return value


def _check_token(token, origin):
    if not token:
        raise ValueError("%s holds no token" % origin)
    if len(token) > _TOKEN_MAX or any(not "!" <= c <= "~" for c in token):
        raise ValueError("%s: a token is 1..%d printable ASCII characters without spaces"
                         % (origin, _TOKEN_MAX))
    return token


def _read_token(env):
    """(token, where it came from), or (None, None): PYCACHED_TOKEN, else the file named by
    PYCACHED_TOKEN_FILE (surrounding white space trimmed), else none."""
    token = env.get("PYCACHED_TOKEN", "")
    if token:
        return _check_token(token, "PYCACHED_TOKEN"), "PYCACHED_TOKEN"
    name = env.get("PYCACHED_TOKEN_FILE", "")
    if not name:
        return None, None
    origin = "PYCACHED_TOKEN_FILE %s" % name
    try:
        with open(name, "rb") as f:
            data = f.read(_TOKEN_FILE_MAX + 1)
    except OSError as exc:
        raise ValueError("%s: %s" % (origin, exc.strerror or exc)) from None
    if len(data) > _TOKEN_FILE_MAX:
        raise ValueError("%s is over %d bytes" % (origin, _TOKEN_FILE_MAX))
    try:
        token = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ValueError("%s: a token is printable ASCII" % origin) from None
    return _check_token(token, origin), origin


def read_settings(env=None):
    """The hook's settings from the environment (see the README), validated. "token" is the
    token itself (keep it out of logs), "token_source" where it came from."""
    env = os.environ if env is None else env
    validation = env.get("PYCACHED_VALIDATION", "hash") or "hash"
    if validation not in ("hash", "timestamp"):
        raise ValueError("PYCACHED_VALIDATION must be 'hash' or 'timestamp', not %r" % validation)
    urls = _server_urls(env.get("PYCACHED_URL", ""))
    conf = {
        "url": ",".join(urls),  # what _native.configure takes: the servers in order
        "urls": urls,
        "timeout_ms": _positive_int(env, "PYCACHED_TIMEOUT_MS"),
        "compile_timeout_ms": _positive_int(env, "PYCACHED_COMPILE_TIMEOUT_MS"),
        "readonly": env.get("PYCACHED_READONLY", "0") not in ("", "0"),
        "validation": validation,
        "local_prefix": env.get("PYCACHED_LOCAL_PREFIX", ""),
        "debug": env.get("PYCACHED_DEBUG", "0") not in ("", "0"),
        "breaker_seconds": _positive_int(env, "PYCACHED_BREAKER_SECONDS"),
        "breaker_5xx": _positive_int(env, "PYCACHED_BREAKER_5XX", _native.BREAKER_5XX_MAX),
        "profile": _profile_setting(env.get("PYCACHED_PROFILE", "")) or default_profile(),
        "bundle_zstd": env.get("PYCACHED_BUNDLE_ZSTD", "0") not in ("", "0"),
        "zstd": _zstd_setting(env.get("PYCACHED_ZSTD", "auto")),
    }
    conf["token"], conf["token_source"] = _read_token(env)
    conf.update(_tls_files(env, urls))
    return conf


_ZSTD_MODES = {"auto": "auto", "": "auto", "1": "on", "on": "on", "0": "off", "off": "off"}


def _zstd_setting(value):
    """PYCACHED_ZSTD: "on" (1), "off" (0) or "auto" (the default: on for a server that is not on
    this host, off for loopback and unix: URLs, where compressing costs more than it saves)."""
    mode = _ZSTD_MODES.get(value.strip().lower())
    if mode is None:
        raise ValueError("PYCACHED_ZSTD must be 'auto', 'on' (1) or 'off' (0), not %r" % value)
    return mode


def _tls_files(env, urls):
    """{"ca_file", "client_cert", "client_key"}: the paths of PYCACHED_CA_FILE,
    PYCACHED_CLIENT_CERT and PYCACHED_CLIENT_KEY, None when unset. ValueError for one set with an
    PYCACHED_URL that lists no https:// server (it would protect nothing; with several servers
    they are the https:// ones'), a key without a certificate, or a file that cannot be
    read (the hook stays off rather than falling back at every import)."""
    files = {}
    for name in _TLS_FILES:
        path = env.get(name, "")
        if path and urls and not any(u.startswith("https://") for u in urls):
            raise ValueError("%s is for an https:// PYCACHED_URL, not %r" % (name, ",".join(urls)))
        if path and not os.access(path, os.R_OK):
            raise ValueError("%s %s cannot be read" % (name, path))
        files[name[len("PYCACHED_"):].lower()] = path or None
    if files["client_key"] and not files["client_cert"]:
        raise ValueError("PYCACHED_CLIENT_KEY needs PYCACHED_CLIENT_CERT")
    return files


def _server_urls(text):
    """The servers of PYCACHED_URL, in order: one base URL or several separated by commas or
    white space (at most URLS_MAX), each http://, https:// or unix:/PATH (a unix socket at an
    absolute PATH), its trailing '/' dropped. ValueError names the first bad one."""
    urls = [u.rstrip("/") for u in text.replace(",", " ").split()]
    if len(urls) > _URLS_MAX:
        raise ValueError("PYCACHED_URL lists %d servers, at most %d" % (len(urls), _URLS_MAX))
    for url in urls:
        if url.startswith("unix:"):
            path = url[len("unix:"):]
            if not path.startswith("/") or len(path.encode("utf-8", "surrogateescape")) > \
                    _UNIX_PATH_MAX:
                raise ValueError("PYCACHED_URL: %r: a unix socket's path is absolute and at "
                                 "most %d bytes (e.g. unix:/run/pycached/pycached.sock)"
                                 % (url, _UNIX_PATH_MAX))
        elif not url.startswith(("http://", "https://")):
            # "127.0.0.1:8700" would leave the hook on, falling back at every import
            raise ValueError("PYCACHED_URL must begin with http://, https:// or unix:/, not %r "
                             "(e.g. http://%s)" % (url, url.split("://", 1)[-1]))
    return urls


def _name_char(c):
    """Whether the server takes character c in a profile name (UTF-8 bytes >= 0x20, not 0x7f;
    a surrogate escape stands for a byte that is not UTF-8)."""
    return c >= " " and c != "\x7f" and not "\ud800" <= c <= "\udfff"


def _profile_setting(name):
    """PYCACHED_PROFILE as given ("" when unset); ValueError when the server would refuse it."""
    if name and (len(name.encode("utf-8", "surrogatepass")) > _PROFILE_NAME_MAX
                 or not all(_name_char(c) for c in name)):
        raise ValueError("PYCACHED_PROFILE must be 1..%d bytes of printable characters, not %r"
                         % (_PROFILE_NAME_MAX, name))
    return name


def _profile_name(kind, text):
    """The profile name "kind:text" in a form the server takes, whatever text is: as it is
    when it fits; otherwise (over PROFILE_NAME_MAX bytes of UTF-8, or with characters a name
    cannot hold, which become '?') as much of it as fits, cut between characters, then '#' and
    16 hex digits of the digest of the whole text, so that two paths stay apart."""
    clean = "".join(c if _name_char(c) else "?" for c in text)
    encoded = ("%s:%s" % (kind, clean)).encode("utf-8")
    if len(encoded) <= _PROFILE_NAME_MAX and clean == text:
        return "%s:%s" % (kind, text)
    tag = "#" + _native.digest(text.encode("utf-8", "surrogatepass"))[:_PROFILE_TAG_HEX]
    return encoded[:_PROFILE_NAME_MAX - len(tag)].decode("utf-8", "ignore") + tag


def default_profile():
    """The profile of the program this interpreter runs: its script's real path, its -m module,
    or for -c a digest of the command (long or unusual paths and names as _profile_name makes
    them)."""
    argv0 = sys.argv[0] if sys.argv else ""
    orig = list(getattr(sys, "orig_argv", []))

    def after(flag):  # the interpreter's own -c or -m comes first in orig_argv
        i = orig.index(flag) + 1 if flag in orig else len(orig)
        return orig[i] if i < len(orig) else ""

    if argv0 == "-m":
        return _profile_name("module", after("-m"))
    if argv0 == "-c":
        return "command:" + _native.digest(after("-c").encode("utf-8", "surrogateescape"))[:16]
    if argv0 in ("", "-"):
        return "interactive"
    return _profile_name("script", os.path.realpath(argv0))


def settings():
    """The settings in force, or None when the hook is not installed. The token itself is left
    out ("token" is True when one is set)."""
    if not _settings:
        return None
    conf = dict(_settings)
    conf["token"] = conf["token"] is not None
    return conf


def _prefix_pyc_path(source_path):
    """Where PYCACHED_LOCAL_PREFIX keeps the pyc of source_path (mirrors the source tree, like
    PYTHONPYCACHEPREFIX), or None."""
    prefix = _settings["local_prefix"] if _settings else ""
    if not prefix:
        return None
    tail = os.path.basename(_bx.cache_from_source(source_path))
    return os.path.join(prefix, os.path.dirname(source_path).lstrip(os.sep), tail)


def _local_pyc(loader, fullname, source_path, source_mtime, source_size):
    """A code object from a valid timestamp-based local pyc, or None."""
    try:
        candidates = [_bx.cache_from_source(source_path)]
    except NotImplementedError:
        return None
    prefixed = _prefix_pyc_path(source_path)
    if prefixed:
        candidates.append(prefixed)
    details = {"name": fullname, "path": source_path}
    for bytecode_path in candidates:
        cache_dir = os.path.dirname(bytecode_path)
        if cache_dir in _no_pycache:
            continue
        try:
            data = loader.get_data(bytecode_path)
            flags = _bx._classify_pyc(data, fullname, details)
            if flags != 0:
                return None  # hash-based pycs: CPython's own loader knows their rules
            _bx._validate_timestamp_pyc(data, source_mtime, source_size, fullname, details)
        except FileNotFoundError:
            if not os.path.isdir(cache_dir):
                _no_pycache.add(cache_dir)
            continue
        except (OSError, ImportError, EOFError):
            continue
        details["path"] = bytecode_path
        try:
            return _bx._compile_bytecode(memoryview(data)[16:], fullname, bytecode_path,
                                         source_path)
        except Exception:  # a right header on damaged marshal bytes: not a valid pyc either
            continue
    return None


def _write_prefix_pyc(source_path, pyc):
    target = _prefix_pyc_path(source_path)
    if not target or sys.dont_write_bytecode:
        return
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        _bx._write_atomic(target, pyc, 0o644)
    except OSError:
        pass  # a read-only or full prefix only costs the next process a request


def _code_from_pyc(fullname, source_path, source_mtime, source_size, pyc, outcome):
    """The code object of a verified pyc for this source, or None (a bad-code fallback)."""
    try:
        if (pyc[:4] != MAGIC or int.from_bytes(pyc[8:12], "little") != source_mtime & 0xFFFFFFFF
                or int.from_bytes(pyc[12:16], "little") != source_size & 0xFFFFFFFF):
            raise ValueError("the pyc header does not describe this source")
        code = marshal.loads(memoryview(pyc)[16:])
        if not isinstance(code, type(_code_from_pyc.__code__)):
            raise TypeError("the pyc does not hold a code object")
    except Exception as exc:  # any surprise in served bytes means: compile locally
        _count("fallback:bad-code")
        _debug("bad-code", fullname, source_path, str(exc))
        return None
    _imp._fix_co_filename(code, source_path)
    _debug(outcome, fullname, source_path)
    _write_prefix_pyc(source_path, pyc)
    return code


def _wait_bundle():
    """The bundle once its fetch has ended, or None when this import waited as long as the fetch
    may take (its connect and transfer timeouts) and it is still not there (the fallback
    bundle-wait, once; later imports do not wait). A process without a fetch thread (a child
    forked during the fetch) fetches it here, once."""
    global _bundle_waited_out
    if _bundle_thread is None:
        with _bundle_lock:
            if _bundle is None:
                _load_bundle(_settings)
        return _bundle
    bound = (_settings["timeout_ms"] + _settings["compile_timeout_ms"]) / 1000.0
    if _bundle_ready.wait(0 if _bundle_waited_out else bound):
        return _bundle
    if not _bundle_waited_out:
        _bundle_waited_out = True
        _count("fallback:bundle-wait")
        _debug("bundle-wait", _settings["profile"], "-", "not there after %.1f s" % bound)
    return None


def _stat_key(st):
    """What changes whenever a file is written or replaced (ctime: even after os.utime)."""
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino, st.st_dev)


def _prefetch_source_ids(bundle):
    """In the fetch thread, in hash mode: the hash and digest of each bundled source, in the
    profile's order, kept with the source's stat key. Only sources whose ctime is over
    _RACY_SECONDS old and whose stat did not change while they were read: a later write would
    change the ctime, so an import that finds the same stat key finds the same bytes."""
    for path in list(bundle):
        if path in _imported:  # its import came first and hashed it
            continue
        try:
            before = os.stat(path)
            if time.time() - before.st_ctime < _RACY_SECONDS:
                continue
            ids = _native.source_ids(path)
            if _stat_key(os.stat(path)) == _stat_key(before):
                _source_ids[path] = (_stat_key(before), ids)
        except Exception:  # unreadable, gone, too large: its import reads it itself
            continue


def _source_ids_now(source_path):
    """(hash, digest) of the source as it is now: the fetch thread's, if the source's stat key
    is still the one it saw, else read and hashed here."""
    ahead = _source_ids.pop(source_path, None)
    if ahead is not None and _stat_key(os.stat(source_path)) == ahead[0]:
        _count("bundle_ids_ahead")
        return ahead[1]
    return _native.source_ids(source_path)


def _bundled_code(fullname, source_path, source_mtime, source_size):
    """A code object from the profile's bundle, validated as a lookup would be, or None."""
    bundle = _bundle if _bundle is not None else _wait_bundle()
    entry = bundle.get(source_path) if bundle is not None else None
    if entry is None:
        return None
    mtime, size, hash_, digest, pyc = entry
    fresh = mtime == source_mtime and size == source_size
    if fresh and _settings["validation"] == "hash":
        try:
            fresh = _source_ids_now(source_path) == (hash_, digest)
        except OSError:
            fresh = False
    if not fresh:  # the source changed since the bundle was made: ask for this one alone
        _count("bundle_stale")
        _debug("bundle-stale", fullname, source_path)
        return None
    code = _code_from_pyc(fullname, source_path, source_mtime, source_size, pyc, "bundle")
    if code is not None:
        _count("bundle_hits")
    return code


def _served_code(fullname, source_path, source_mtime, source_size):
    """A code object from the server, or None (counted as a fallback with its reason)."""
    outcome, pyc, detail = _native.fetch(source_path, sys.flags.optimize)
    if pyc is None:
        _count("fallback:" + outcome)
        _debug(outcome, fullname, source_path, detail)
        return None
    code = _code_from_pyc(fullname, source_path, source_mtime, source_size, pyc, outcome)
    if code is not None:
        _count("hits" if outcome == "hit" else "compiles_asked")
    return code


def _guarded(find, fullname, source_path, *args):
    """find(fullname, source_path, *args), a code object or None; None too when it raised:
    whatever goes wrong on the way to cached code is a fallback (hook-error), never an
    exception of the importing program."""
    try:
        return find(fullname, source_path, *args)
    except Exception as exc:
        _count("fallback:hook-error")
        _debug("hook-error", fullname, source_path, "%s: %s" % (type(exc).__name__, exc))
        return None


class PycachedLoader(machinery.SourceFileLoader):
    """SourceFileLoader that gets code from pycached when no valid local pyc exists."""

    def get_code(self, fullname):
        source_path = self.get_filename(fullname)
        code = _guarded(self._cached_code, fullname, source_path)
        if code is not None:
            return code
        _count("local_compile")
        _no_pycache.discard(os.path.join(os.path.dirname(source_path), "__pycache__"))  # may now
        return super().get_code(fullname)  # CPython's own compilation, and its SyntaxError

    def _cached_code(self, fullname, source_path):
        """Code from a local pyc, the bundle or the server, or None."""
        try:
            st = self.path_stats(source_path)
            mtime, size = int(st["mtime"]), int(st["size"])
        except (OSError, KeyError):
            return None
        code = _local_pyc(self, fullname, source_path, mtime, size)
        if code is not None:
            _count("local_pyc")
            return code
        if not os.path.isabs(source_path):
            return None
        _imported[source_path] = None
        return (_guarded(_bundled_code, fullname, source_path, mtime, size)
                or _guarded(_served_code, fullname, source_path, mtime, size))


def install(env=None):
    """Activates the hook for this interpreter when PYCACHED_URL is set; returns whether it is
    active. Idempotent. Bad settings are reported on stderr and leave the hook off."""
    global _settings, _path_hook
    try:
        conf = read_settings(env)
    except ValueError as exc:
        sys.stderr.write("pycached: hook not installed: %s\n" % exc)
        return False
    if not conf["url"]:
        return False
    try:
        _native.configure(conf["url"], MAGIC, conf["timeout_ms"], conf["compile_timeout_ms"],
                          conf["readonly"], conf["validation"] == "hash",
                          float(conf["breaker_seconds"]), _MAX_SOURCE, token=conf["token"],
                          bundle_zstd=conf["bundle_zstd"], zstd=conf["zstd"],
                          ca_file=conf["ca_file"],
                          client_cert=conf["client_cert"], client_key=conf["client_key"],
                          breaker_5xx=conf["breaker_5xx"])
    except ValueError as exc:  # e.g. a URL over 2048 bytes
        sys.stderr.write("pycached: hook not installed: %s\n" % exc)
        return False
    _settings = conf
    if _path_hook is None:
        atexit.register(_at_exit)
        _path_hook = machinery.FileFinder.path_hook(
            (machinery.ExtensionFileLoader, machinery.EXTENSION_SUFFIXES),
            (PycachedLoader, machinery.SOURCE_SUFFIXES),
            (machinery.SourcelessFileLoader, machinery.BYTECODE_SUFFIXES))
        sys.path_hooks.insert(0, _path_hook)
        sys.path_importer_cache.clear()
    _start_bundle_fetch(conf)
    return True


def _start_bundle_fetch(conf):
    """Starts the fetch thread, once a process (none with profiles off: no bundle)."""
    global _bundle, _bundle_thread
    if _bundle is not None or _bundle_thread is not None:
        return
    if conf["profile"] == "off":
        _bundle = {}
        return
    # a bare thread (no threading.Thread): like a daemon one, never waited for at exit
    _bundle_thread = _thread.start_new_thread(_fetch_thread, (conf,))


def _fetch_thread(conf):
    """The bundle, then (hash mode) its sources' ids ahead of their imports. Nothing it meets
    escapes: an exception is the fallback hook-error, and the imports go on without it."""
    ready = _bundle_ready
    try:
        _load_bundle(conf)
    except Exception as exc:
        _count("fallback:hook-error")
        _debug("hook-error", "(bundle)", conf["profile"], "%s: %s" % (type(exc).__name__, exc))
    finally:
        ready.set()
    try:
        if conf["validation"] == "hash" and _bundle:
            _prefetch_source_ids(_bundle)
    except Exception:  # e.g. the interpreter shutting down under it
        pass


def _load_bundle(conf):
    """Fetches the bundle of this program's profile: one request for every module it imported
    in earlier runs. Sets _bundle last, so that no import sees it half made, and also when the
    fetch raised (the exception goes on to the caller): the bundle is asked for once."""
    global _bundle
    entries = {}
    try:
        if conf["profile"] != "off":
            fetched, reason, skipped = _native.fetch_bundle(conf["profile"], sys.flags.optimize)
            if fetched is None:  # no profile yet (a program's first run) is no fallback
                _count("bundle_missing" if reason == "no-profile"
                       else "fallback:bundle-" + reason)
                _debug("bundle-" + reason, conf["profile"], "-", str(skipped))
            else:
                entries = fetched
                with _lock:
                    _counters["bundle_entries"] = len(entries)
                    _counters["bundle_skipped"] = skipped
    finally:
        _bundle = entries


def _at_exit():
    """At exit: tells the server which sources this run imported (unless the bundle had them
    all, so the profile would not change) and, if there were any, this process's fallbacks, so
    that operators see them fleet-wide (admin stats, metrics)."""
    if not _settings:
        return
    try:
        if _settings["profile"] != "off" and _imported and \
                not all(path in (_bundle or {}) for path in _imported):
            _native.post_profile(_settings["profile"], sys.flags.optimize, list(_imported))
        fallbacks = stats()["fallbacks"]
        if fallbacks:
            _native.report(sys.flags.optimize, fallbacks)
    except Exception:  # at exit, nothing is worth an error
        pass


def uninstall():
    """Removes the hook; modules already imported keep their code."""
    global _settings, _path_hook
    if _path_hook is not None and _path_hook in sys.path_hooks:
        sys.path_hooks.remove(_path_hook)
        sys.path_importer_cache.clear()
    _path_hook = None
    _settings = None


def is_active():
    return _path_hook is not None
