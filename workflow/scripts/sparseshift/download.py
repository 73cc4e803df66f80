"""Resumable, verified HTTP download of large public files (standard library only).

Protocol of :func:`download`:

1. If ``dest`` exists it is trusted after a cheap size check (no network access;
   its md5 is checked only with ``verify_existing_md5=True``).
2. Otherwise bytes are streamed to ``<dest>.part`` beside ``dest``. If that file exists
   (an earlier call was interrupted) the request carries ``Range: bytes=<n>-``: a
   ``206`` reply is appended, a ``200`` reply (server ignored Range) restarts from
   zero, a ``416`` reply means the partial file is already complete.
3. A connection dropped mid-stream is retried up to ``retries`` times, each time
   resuming from the partial file; after that :class:`DownloadError` is raised and the
   partial file is kept, so the next call resumes it.
4. When complete the size and md5 (whichever are given) are checked; the md5 is computed
   while writing. On mismatch the partial file is deleted (a corrupt copy must not be
   resumed) and :class:`DownloadError` is raised. On success the partial file is renamed
   to ``dest`` atomically, so ``dest`` only ever holds a complete, verified file.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

from .io import CONSOLE

log = logging.getLogger(__name__)


class DownloadError(RuntimeError):
    """A download or local copy that failed: names the URL, the path, the problem and the remedy."""

    def __init__(self, dest, problem: str, url: str | None = None, size=None, md5=None):
        expected = f"expected {size if size is not None else 'unknown number of'} bytes, md5 {md5 or 'unknown'}"
        if url:
            msg = f"{url} -> {dest}: {problem}. Download {url} yourself ({expected}) and place it at {dest}"
        else:
            msg = f"{dest}: {problem}. Place the correct file ({expected}) at {dest}"
        super().__init__(msg)


class _Retry(Exception):
    """The stream ended early; resume from the partial file."""


class _Fatal(Exception):
    """The server's reply cannot be the expected file; do not retry."""


_RETRIABLE = (_Retry, http.client.HTTPException, ConnectionError, TimeoutError, urllib.error.URLError)


def md5sum(path, chunk_bytes: int = 8 * 2**20) -> str:
    """The hex md5 of a file, read in chunks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()


def verify(path, size: int | None = None, md5: str | None = None) -> Path:
    """Check that ``path`` exists with the given size and md5; raise :class:`DownloadError` if not."""
    return _check(path, size, md5, None)


def _check(path, size, md5, url) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DownloadError(path, "file not found", url, size, md5)
    found = path.stat().st_size
    if size is not None and found != size:
        raise DownloadError(path, f"field 'size' — expected {size} bytes, found {found} bytes", url, size, md5)
    if md5 is not None and (digest := md5sum(path)) != md5.lower():
        raise DownloadError(path, f"field 'md5' — expected {md5}, found {digest}", url, size, md5)
    return path


class _Hasher:
    """An md5 that tracks how many bytes of the partial file it covers."""

    def __init__(self, enabled: bool):
        self.h, self.n, self.enabled = hashlib.md5(), 0, enabled

    def sync(self, part: Path, resume: bool, chunk_bytes: int) -> None:
        if not resume:
            self.h, self.n = hashlib.md5(), 0
        elif self.enabled and self.n != part.stat().st_size:  # hash the existing partial bytes first
            self.h, self.n = hashlib.md5(), 0
            with open(part, "rb") as f:
                while chunk := f.read(chunk_bytes):
                    self.update(chunk)

    def update(self, chunk: bytes) -> None:
        if self.enabled:
            self.h.update(chunk)
            self.n += len(chunk)


def download(url: str, dest, size: int | None = None, md5: str | None = None, *,
             chunk_bytes: int = 8 * 2**20, timeout: float = 60, retries: int = 3,
             progress_every: float = 0.05, verify_existing_md5: bool = False, backoff: float = 1.0) -> Path:
    """Download ``url`` to ``dest`` (resuming ``<dest>.part``), verify ``size``/``md5`` and return ``dest``.

    ``backoff`` seconds times the attempt number are waited before each retry.
    """
    dest = Path(dest)
    if dest.exists():
        _check(dest, size, md5 if verify_existing_md5 else None, url)
        log.info("%s already present; not downloading %s", dest, url)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    hasher = _Hasher(md5 is not None)
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * attempt)
            log.warning("retry %d of %d for %s", attempt, retries, url)
        try:
            _attempt(url, part, size, md5, hasher, chunk_bytes, timeout, progress_every)
            break
        except _Fatal as e:
            raise DownloadError(dest, str(e), url, size, md5) from None
        except urllib.error.HTTPError as e:
            if e.code < 500 or attempt == retries:
                raise DownloadError(dest, f"HTTP error {e.code} {e.reason}", url, size, md5) from e
            last = e
        except _RETRIABLE as e:
            last = e
            log.warning("download of %s interrupted: %s", url, e)
    else:
        kept = f"; the partial file {part} is kept and the next run resumes it" if part.exists() else ""
        raise DownloadError(dest, f"failed after {retries + 1} attempt(s) ({last}){kept}", url, size, md5)
    found = part.stat().st_size
    if size is not None and found != size:
        part.unlink()
        raise DownloadError(dest, f"downloaded file has the wrong size — expected {size} bytes, found {found}",
                            url, size, md5)
    if md5 is not None:
        hasher.sync(part, True, chunk_bytes)
        if (digest := hasher.h.hexdigest()) != md5.lower():
            part.unlink()
            raise DownloadError(dest, f"md5 mismatch — expected {md5}, found {digest}", url, size, md5)
    os.replace(part, dest)
    log.info("downloaded %s -> %s (%d bytes%s)", url, dest, found, ", md5 verified" if md5 else "", extra=CONSOLE)
    return dest


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """``bytes a-b/N`` or ``bytes */N`` -> (a, N); None for missing parts."""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", header or "")
    if not m:
        return None, None
    return (int(m[1]) if m[1] else None), (int(m[2]) if m[2] != "*" else None)


def _attempt(url, part: Path, size, md5, hasher: _Hasher, chunk_bytes, timeout, progress_every) -> None:
    """One request: write (or append) the reply to ``part``; raise ``_Retry`` if it ended early."""
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:
        part.unlink()
        offset = 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code != 416 or not offset:
            raise
        total = _content_range(e.headers.get("Content-Range"))[1]
        e.close()
        if offset in (size, total):
            log.info("%s is already complete (%d bytes)", part, offset)
            return
        part.unlink()  # the server cannot resume this partial file: start over
        return _attempt(url, part, size, md5, hasher, chunk_bytes, timeout, progress_every)
    with resp:
        length = resp.headers.get("Content-Length")
        length = int(length) if length else None
        if resp.status == 206:
            start, total = _content_range(resp.headers.get("Content-Range"))
            if start != offset:
                part.unlink()
                raise _Retry(f"server resumed at byte {start}, not {offset}")
        else:
            if offset:
                log.info("server ignored the Range request; restarting %s from zero", url)
            offset, total = 0, length
        if total is not None and size is not None and total != size:
            part.unlink(missing_ok=True)
            raise _Fatal(f"the server reports {total} bytes — expected size {size} bytes")
        total = total if total is not None else size
        if length is None and total is not None:
            length = total - offset
        hasher.sync(part, offset > 0, chunk_bytes)
        step = int(progress_every * total) if total and progress_every > 0 else 0
        mark, got, t0 = offset + step, 0, time.monotonic()
        log.info("downloading %s -> %s%s", url, part, f" (resuming at byte {offset})" if offset else "",
                 extra=CONSOLE)
        with open(part, "ab" if offset else "wb") as f:
            while chunk := resp.read(chunk_bytes):
                f.write(chunk)
                hasher.update(chunk)
                got += len(chunk)
                if step and offset + got >= mark:
                    mark = (offset + got) // step * step + step
                    rate = got / 2**20 / max(time.monotonic() - t0, 1e-9)
                    log.info("%.1f / %.1f MB (%.0f%%) at %.1f MB/s", (offset + got) / 2**20, total / 2**20,
                             100 * (offset + got) / total, rate, extra=CONSOLE)
        if length is not None and got < length:
            raise _Retry(f"connection closed after {offset + got} of {offset + length} bytes")
