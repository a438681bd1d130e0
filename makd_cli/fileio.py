"""The one writer and the file checks every job shares.

``atomic_path`` is how every output is written: a temporary file beside the target, renamed over it
in one step, so an interrupted or failed write never leaves a half-written output and an earlier good
output survives. The temporary file gets the permissions a plain ``open(path, "w")`` would give
(the umask, or the old file's mode), a full disk or a read-only folder becomes one line naming the
file, and hidden ``.NAME.*.tmp`` leftovers of a killed run are removed the next time. ``output_lock``
keeps two jobs from producing the same output at once.

``-`` is standard input or output for every text file (``read_text``, ``atomic_write_text``), so makd
works in shell pipelines; a binary output given as ``-`` is refused in one line, and a file literally
named ``-`` is never created. Standard input is read once and kept, so a command that reads and then
hashes its ``-`` input sees the same bytes twice.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import socket
import stat
import tempfile
import time
from pathlib import Path
from typing import Iterator

from makd_cli.errors import MakdError

_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NOT_ALLOWED = {errno.EACCES, errno.EPERM, errno.EROFS}
STALE_TMP_SECONDS = 600  # a leftover whose writer we cannot identify is removed once it is this old


def _umask() -> int:
    """The process umask; read from /proc on Linux, since setting it to read it races with other threads."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/self/status", encoding="ascii") as fh:
            return int(next(ln for ln in fh if ln.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _new_file_mode(path: Path) -> int:
    """The mode ``open(path, "w")`` would leave: the old file's mode, else 0666 minus the umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return 0o666 & ~_umask()


def _host() -> str:
    return socket.gethostname().replace(".", "_").replace("-", "_") or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_SCANNED: set[str] = set()  # folders already cleaned by this process: one scan each, not one per write
_OURS = re.compile(r"^\.(?P<name>.+)\.(?P<host>[^.\-]+)-(?P<pid>\d+)\.[^.]+(\.[^.]+)*\.tmp$")
_OLD = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}(\.[^.]+)*\.tmp$")  # mkstemp names of older makd versions


def clean_stale_temporaries(path: Path) -> int:
    """Remove hidden ``.NAME.*.tmp`` files in ``path``'s folder left by killed writers; returns how many.

    Temporaries carry ``HOST-PID`` in their name: one from this host whose process is gone is stale.
    Others (another host, or an older makd's name) go once they are ``STALE_TMP_SECONDS`` old, and
    only when their NAME is ``path``'s or a file beside them. Each folder is scanned once per process
    (a resumable extraction writes thousands of units into one folder)."""
    folder = path.parent
    key = os.path.abspath(folder)
    if key in _SCANNED:
        return 0
    _SCANNED.add(key)
    try:
        entries = [e for e in os.scandir(folder) if e.name.startswith(".") and e.name.endswith(".tmp")]
    except OSError:
        return 0
    host, removed = _host(), 0
    for entry in entries:
        ours = _OURS.match(entry.name)
        try:
            if ours and ours["host"] == host:
                stale = not _pid_alive(int(ours["pid"]))
            else:
                m = ours or _OLD.match(entry.name)
                beside = m is not None and (m["name"] == path.name or (folder / m["name"]).exists())
                stale = beside and time.time() - entry.stat().st_mtime > STALE_TMP_SECONDS
            if stale:
                os.unlink(entry.path)
                removed += 1
        except OSError:
            continue
    return removed


STDIO = "-"  # the path that means standard input (reading) or standard output (writing)
_stdin: dict = {}  # the bytes of standard input once read, and which input read them
_stdout: dict = {}  # what was written to standard output (its sha256), once a text output went there


def is_stdio(path) -> bool:
    """Whether ``path`` is ``-``: standard input or output, not a file."""
    return path is not None and os.fspath(path) == STDIO


def stdout_is_taken() -> bool:
    """Whether a text output of this command goes to standard output (human summaries then go to stderr)."""
    return bool(_stdout)


def reset_stdio() -> None:
    """Forget standard input/output use (the CLI calls this once per command)."""
    _stdin.clear()
    _stdout.clear()


def _stdin_bytes(what: str | None) -> bytes:
    if "data" not in _stdin:
        import sys

        stream = getattr(sys.stdin, "buffer", None)
        try:
            data = stream.read() if stream is not None else (sys.stdin.read() if sys.stdin else "").encode("utf-8")
        except (OSError, ValueError) as exc:
            raise MakdError(f"cannot read {what or 'input'} from standard input (-): {exc}") from None
        _stdin.update(data=data, what=what)
    elif what is not None and _stdin.get("what") not in (None, what):
        raise MakdError(f"standard input (-) is already the {_stdin['what']}; only one input can be `-`, give {what} as a file")
    if what is not None and _stdin.get("what") is None:
        _stdin["what"] = what
    return _stdin["data"]


def _refuse_binary_stdio(what: str, writing: bool) -> MakdError:
    stream, verb = ("standard output", "written to") if writing else ("standard input", "read from")
    return MakdError(f"{what} is binary and cannot be {verb} {stream} (-); give a file path")


def check_output_path(path: str | os.PathLike, what: str = "output", text: bool = False) -> Path:
    """An output file path that can be written: not a folder, not under a file; its folder is created.

    ``-`` is standard output for a ``text`` output and refused (one line) for any other."""
    if is_stdio(path):
        if not text:
            raise _refuse_binary_stdio(what, writing=True)
        _stdout.setdefault("what", what)
        return Path(STDIO)
    path = Path(path)
    if path.parts[:1] == (STDIO,):  # `-o -` given for a run folder: `-/last.pt` would make a folder named `-`
        raise _refuse_binary_stdio(what, writing=True)
    if path.is_dir():
        raise MakdError(f"{what} {path} is a directory; give a file path")
    parent = path.parent
    for up in [parent, *parent.parents]:
        if up.exists():
            if not up.is_dir():
                raise MakdError(f"cannot write {what} {path}: {up} is a file, not a folder")
            break
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MakdError(f"cannot create the folder of {what} {path}: {exc.strerror or exc}") from None
    if not os.access(parent, os.W_OK | os.X_OK):  # say so now, not after an hour of work
        raise MakdError(f"cannot write {what} {path}: its folder {parent} is not writable; choose a writable -o")
    return path


def write_error(path: Path, exc: BaseException) -> MakdError | None:
    """The one-line error for a failed write of ``path``, or None when ``exc`` is not an I/O failure."""
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code in _DISK_FULL or "No space left" in text or "Disk quota" in text:
        return MakdError(f"cannot write {path}: the disk is full; free space and run again (an earlier {path.name} is untouched)")
    if code in _NOT_ALLOWED:
        return MakdError(f"cannot write {path}: {os.strerror(code)}; choose a writable -o (an earlier {path.name} is untouched)")
    if isinstance(exc, OSError) and code is not None:
        return MakdError(f"cannot write {path}: {os.strerror(code)} (an earlier {path.name} is untouched)")
    return None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    Write through a Python file object where you can (``open(tmp, "wb")``): a full disk then raises
    ``OSError(ENOSPC)``, which leaves here as one line and the earlier output intact. A temporary file
    cannot be renamed onto standard output: ``-`` is refused here (text goes through ``atomic_write_text``)."""
    path = check_output_path(path, what=f"the {suffix.lstrip('.') or 'binary'} output")
    clean_stale_temporaries(path)
    mode = _new_file_mode(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_host()}-{os.getpid()}.", suffix=suffix + ".tmp", dir=path.parent)
    except OSError as exc:
        raise (write_error(path, exc) or MakdError(f"cannot write {path}: {exc}")) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        try:
            os.chmod(tmp_path, mode)  # mkstemp makes 0600; outputs get what a normal write gives
            yield tmp_path
            with open(tmp_path, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp_path, path)
        except (OSError, RuntimeError) as exc:
            error = write_error(path, exc)
            if error is None:
                raise
            raise error from None
    finally:
        with contextlib.suppress(OSError):
            if tmp_path.exists():
                tmp_path.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text output atomically; ``-`` writes it to standard output."""
    if is_stdio(path):
        import sys

        check_output_path(path, "output", text=True)
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except BrokenPipeError:  # the reader of the pipe stopped early (| head): not makd's failure
            pass
        except OSError as exc:
            raise MakdError(f"cannot write to standard output: {exc.strerror or exc}") from None
        _stdout["sha256"] = sha256_text(text)
        return
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, suffix: str = "") -> None:
    with atomic_path(path, suffix=suffix) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)


@contextlib.contextmanager
def output_lock(path: str | os.PathLike, what: str = "output") -> Iterator[None]:
    """Hold an exclusive lock on producing ``path`` (a hidden ``.NAME.lock`` beside it).

    A second job on the same output stops with one line naming the holder (pid and host). The lock is
    an ``flock``, so a killed holder releases it; the lock file is removed on release."""
    import fcntl

    path = check_output_path(path, what)  # `-` refused: the outputs produced under a lock are binary files
    lock_file = path.parent / f".{path.name}.lock"
    while True:
        try:
            fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        except OSError as exc:
            raise (write_error(path, exc) or MakdError(f"cannot lock {path}: {exc}")) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "unknown"
            finally:
                os.close(fd)
            raise MakdError(f"{path} is being written by another makd job ({holder}); wait for it to finish or choose another -o") from None
        # The file may have been removed by the previous holder between our open and our lock: retry.
        try:
            same = os.stat(lock_file).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        with contextlib.suppress(OSError):  # the holder's name is a courtesy: a full disk fails later, at the output
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            lock_file.unlink()
        os.close(fd)


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 of a file; ``-`` is standard input (the same bytes its reader got)."""
    if is_stdio(path):
        return hashlib.sha256(_stdin_bytes(None)).hexdigest()
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_output(path: str | os.PathLike) -> str:
    """The sha256 of an output just written: the file, or what went to standard output for ``-``."""
    if is_stdio(path):
        return _stdout.get("sha256", "")
    return sha256_file(path)


def require_file(path: str | os.PathLike, what: str) -> Path:
    """An input file that exists and is not a folder. ``-`` is refused: files read through here are binary
    (text files go through ``read_text``, where ``-`` is standard input)."""
    if is_stdio(path):
        raise _refuse_binary_stdio(what, writing=False)
    p = Path(path)
    if not p.exists():
        raise MakdError(f"{what} {p} does not exist; check the path")
    if p.is_dir():
        raise MakdError(f"{what} {p} is a directory; give a file")
    return p


def read_bytes(path: str | os.PathLike, what: str) -> bytes:
    """The bytes of an input file; a missing, folder or unreadable path is one line naming it.
    ``-`` is standard input."""
    if is_stdio(path):
        return _stdin_bytes(what)
    p = require_file(path, what)
    try:
        return p.read_bytes()
    except OSError as exc:
        raise MakdError(f"cannot read {what} {p}: {exc.strerror or exc}") from None


def read_text(path: str | os.PathLike, what: str) -> str:
    """An input text file as UTF-8 (a leading byte-order mark dropped); anything else is one line."""
    p = Path(path)
    data = read_bytes(p, what)
    if b"\x00" in data:
        raise MakdError(f"{what} {p} is binary, not text (it holds NUL bytes); give a UTF-8 text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MakdError(f"{what} {p} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); save it as UTF-8") from None


def _identity(path: str | os.PathLike) -> tuple:
    """What decides that two names are one file: the (device, inode) of an existing file, so a
    symbolic or hard link to it, or another spelling of it, matches; else its resolved real path."""
    real = os.path.realpath(os.fspath(path))
    try:
        st = os.stat(real)
        return ("inode", st.st_dev, st.st_ino)
    except OSError:
        return ("path", os.path.normcase(real))


def _named_paths(paths: dict) -> list[tuple[str, str]]:
    """(flag, path) for every path given: a value may be None (flag not given) or a list of paths."""
    named = []
    for flag, value in paths.items():
        for p in (value if isinstance(value, (list, tuple)) else [value]):
            if p is not None and str(p) != "":
                named.append((flag, os.fspath(p)))
    return named


def check_outputs_distinct(inputs: dict, outputs: dict) -> None:
    """Refuse, before any work, an output that is one of the job's inputs or another of its outputs.

    ``inputs`` and ``outputs`` map a flag (``--questions``, ``-o``) to a path, a list of paths, or
    None. Names are compared by what they are, not how they are written: the same file through a
    symbolic or hard link, ``./x`` and ``x``, all match (see ``_identity``). An input that does not
    exist cannot be written over and is skipped (its own reader says it is missing). The error is one
    line naming both flags and both paths; nothing has been read or written yet."""
    seen: dict[tuple, tuple[str, str]] = {}
    for flag, path in _named_paths(inputs):
        if os.path.lexists(path):
            seen.setdefault(_identity(path), (flag, path))
    written: dict[tuple, tuple[str, str]] = {}
    for flag, path in _named_paths(outputs):
        key = _identity(path)
        if key in seen:
            in_flag, in_path = seen[key]
            raise MakdError(f"{flag} {path} is the input {in_flag} {in_path}: writing it would destroy the input; "
                            f"give {flag} another path (nothing was written)")
        if key in written and written[key][0] != flag:
            other_flag, other_path = written[key]
            raise MakdError(f"{other_flag} {other_path} and {flag} {path} are the same file; give each output its own path "
                            "(nothing was written)")
        written.setdefault(key, (flag, path))
