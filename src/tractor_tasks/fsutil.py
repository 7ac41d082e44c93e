"""Files the tool writes and the artifacts it reads, done safely in one place.

- atomic_write(): a temp file in the destination's own dir renamed over it, so a reader
  never sees half a file. The temp name is random and made with O_EXCL|O_NOFOLLOW, so a
  planted link or file of that name is never written through. A destination that
  exists and is not a regular file (a symlink, a FIFO, a device, a dir) is refused,
  never replaced; for the run's own files (`replace_link`) a planted link or FIFO is
  replaced by the rename (the link itself, never what it points at). Every file the
  tool writes goes through this module (tests/test_rundirs.py fails on a write_text,
  json.dump, open-for-writing (a Path's too), touch, os.open with a writing flag or
  shutil copy/move anywhere else in src/, but for its ALLOWED_WRITES, each with why:
  the history's SQLite file, which sqlite writes, among them): no fixed-name temp files.
- open_lock(), append_text(): a lock file (never through a planted link), and the one
  append to a file of someone else's ($GITHUB_STEP_SUMMARY).
- read_bounded(): an artifact (outcome.json, junit.xml, a durations file) read without
  blocking (a FIFO) or reading forever (/dev/zero): only a regular file, at most
  MAX_ARTIFACT bytes, its own name never followed when it is a symlink. A refusal is an
  OSError whose strerror says why, so callers' `except OSError` handles it.
- xml_text(), shown(): text made safe for XML 1.0 and for a terminal.
"""
from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

from .errors import TaskError

MAX_ARTIFACT = 16 * 1024 * 1024  # bytes: far past any real outcome.json/junit.xml


def _kind(mode: int) -> str:
    return ("a symlink" if stat.S_ISLNK(mode) else "a directory" if stat.S_ISDIR(mode)
            else "a FIFO" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
            else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "not a regular file")


def check_destination(path: Path, code: int = 2) -> None:
    """Refuse (TaskError) a destination that exists and is not a regular file."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as err:
        raise TaskError(f"error: cannot write {path} ({err.strerror or err}); give another "
                        "path", code) from None
    if not stat.S_ISREG(st.st_mode):
        what = _kind(st.st_mode)
        hint = " (links are not followed)" if stat.S_ISLNK(st.st_mode) else ""
        raise TaskError(f"error: {path} is {what}{hint}, not a regular file; it was left as "
                        "it is: give the path of a regular file (or a new one)", code)


def atomic_write(path: Path | str, data: bytes | str, *, code: int = 2,
                 replace_link: bool = False) -> None:
    """Write `data` to `path` whole or not at all. A destination that is not a regular
    file is refused (TaskError, `code`), unless `replace_link` (a file of the run's own,
    in a dir a test can reach): then a link or FIFO there is replaced, never followed; a
    failed write raises OSError, the temp file removed."""
    path = Path(path)
    if not replace_link:
        check_destination(path, code)
    if isinstance(data, str):
        data = data.encode("utf-8")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{os.urandom(3).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if not replace_link:
            check_destination(path, code)  # nothing was swapped in meanwhile
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def open_own(path: Path | str, *, append: bool = True) -> int:
    """An fd to write one of the run's own files (a log) in a dir a test can reach,
    never through what was planted there: opened with O_NOFOLLOW|O_NONBLOCK (a FIFO never
    blocks the open); a link, FIFO or anything but a regular file in its place is
    removed and the file made anew (O_EXCL); when even that fails, /dev/null, so the
    caller (a pipe that must be drained) goes on."""
    flags = (os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
             | getattr(os, "O_CLOEXEC", 0) | (os.O_APPEND if append else os.O_TRUNC))
    try:
        fd = os.open(path, flags, 0o644)
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.set_blocking(fd, True)
            return fd
        os.close(fd)
    except OSError:
        pass
    try:
        if os.path.lexists(path) and not os.path.isdir(path) or os.path.islink(path):
            os.unlink(path)
        fd = os.open(path, flags | os.O_EXCL, 0o644)
        os.set_blocking(fd, True)
        return fd
    except OSError:
        return os.open(os.devnull, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))


def open_lock(path: Path | str):
    """A lock file (for flock) opened for writing: O_NOFOLLOW, no truncation, so a link
    planted there is refused (OSError), never written through."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW
                             | getattr(os, "O_CLOEXEC", 0), 0o644), "w")


def append_text(path: Path | str, text: str) -> None:
    """Append to a file that is not ours and is appended to by others
    ($GITHUB_STEP_SUMMARY): one write in append mode, never a replace."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK
                 | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:   # a FIFO or a device there is refused, never waited on
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegular(path, _kind(os.fstat(fd).st_mode))
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)


class NotRegular(OSError):
    """An artifact that is not a regular file, a symlink, or too big: not read."""

    def __init__(self, path, why: str, code: int = errno.EINVAL):
        super().__init__(code, why, str(path))

    def __str__(self) -> str:
        return f"{self.filename} is {self.strerror}"


def write_json(path: Path | str, data) -> None:
    """A JSON file of ours (run.json, outcome.json, select.json, stop.json), written
    whole through atomic_write. Each is in a run or pass dir a test can reach (it knows
    its probe dir): what a test planted at the name is replaced, never followed."""
    import json
    atomic_write(path, json.dumps(data, indent=1), replace_link=True)


def read_bounded(path: Path | str, limit: int = MAX_ARTIFACT, *, follow: bool = False) -> bytes:
    """The bytes of a regular file of at most `limit` bytes. Refused with NotRegular (an
    OSError): a symlink (unless `follow`), a FIFO, a device, a dir, a bigger file. Never
    blocks: opened with O_NONBLOCK, and a non-regular file is not even opened."""
    path = Path(path)
    st = os.stat(path) if follow else os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise NotRegular(path, "a symlink (artifacts' links are not followed)", errno.ELOOP)
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "a directory", str(path))
    if not stat.S_ISREG(st.st_mode):
        raise NotRegular(path, _kind(st.st_mode) + ", not a regular file")
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise NotRegular(path, "a symlink (artifacts' links are not followed)",
                             errno.ELOOP) from None
        raise
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):  # swapped since the lstat
            raise NotRegular(path, _kind(st.st_mode) + ", not a regular file")
        if st.st_size > limit:
            raise NotRegular(path, f"{st.st_size} bytes, over the {limit >> 20} MiB an "
                             "artifact may have", errno.EFBIG)
        data = f.read(limit + 1)
    if len(data) > limit:
        raise NotRegular(path, f"over the {limit >> 20} MiB an artifact may have", errno.EFBIG)
    return data


def read_text_bounded(path: Path | str, limit: int = MAX_ARTIFACT, *,
                      follow: bool = False) -> str:
    """read_bounded() as UTF-8 text (UnicodeDecodeError, a ValueError, when it is not)."""
    return read_bounded(path, limit, follow=follow).decode("utf-8")


def inside(path: Path, base: Path) -> bool:
    """Whether `path`, every link resolved, is within `base` (resolved too)."""
    try:
        return Path(path).resolve().is_relative_to(Path(base).resolve())
    except (OSError, RuntimeError):
        return False


# -- text ---------------------------------------------------------------------------

# XML 1.0 allows #x9 #xA #xD, #x20-#xD7FF, #xE000-#xFFFD, #x10000-#x10FFFF
_XML_BAD = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# what a terminal acts on: C0 (but tab/newline), DEL, C1, and the bidi controls
_TERM_BAD = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e"
                       "\u2066-\u2069]")


def _escape(ch: str) -> str:
    n = ord(ch)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}"


def xml_text(text: str) -> str:
    """`text` with what XML 1.0 forbids (C0 controls but tab/CR/LF, lone surrogates,
    U+FFFE/U+FFFF) written as visible escapes (ESC -> "\\x1b"): the file stays
    well-formed and the character is still readable."""
    return _XML_BAD.sub(lambda m: _escape(m.group()), text) if text else text


def xml_clean(element) -> None:
    """xml_text() over every attribute, text and tail of an ElementTree element and its
    children, in place: what it then writes is well-formed XML 1.0."""
    for el in element.iter():
        for key, value in el.attrib.items():
            el.set(key, xml_text(value))
        el.text = xml_text(el.text) if el.text else el.text
        el.tail = xml_text(el.tail) if el.tail else el.tail


def shown(text: str, *, one_line: bool = False) -> str:
    """`text` for a terminal: control characters (ESC, BEL, ...), and the bidi overrides
    that reorder a line (U+202E), as visible escapes; tab and newline kept, unless
    `one_line` (an error line stays one line, whatever it quotes: newline as "\\n")."""
    if not text:
        return text
    text = _TERM_BAD.sub(lambda m: _escape(m.group()), text)
    return text.replace("\n", "\\n") if one_line else text


def what_is(path: Path | str) -> str:
    """What stands at `path` (links followed), for an error line that refuses it:
    "no such file", "is a directory", "is a FIFO", ... ("is a regular file" for one)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "no such file"
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    return "is a regular file" if stat.S_ISREG(st.st_mode) else f"is {_kind(st.st_mode)}"
