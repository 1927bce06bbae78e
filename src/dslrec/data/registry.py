"""Named datasets: where to download them, how to check them, where they live.

Each file has a public source URL (raw.githubusercontent.com), a sha256 and a
size; each dataset has the counts its files must give. Files live in
``<data dir>/<name>/<file>``:

* ``DSLREC_DATA_DIR`` if set, else the user's cache folder
  (``$XDG_CACHE_HOME/dslrec/data``, default ``~/.cache/dslrec/data``). A
  folder laid out like that (for example a shared read-only copy) serves
  directly: files already there with the right checksum are used as they are.
  A read-only ``DSLREC_DATA_DIR`` is only read; missing files then go to the
  user's cache folder.
* ``DSLREC_MIRROR`` replaces the public sources with ``<base>/<name>/<file>``,
  where base is a local folder, a ``file://`` or an ``http(s)://`` URL.

Downloads stream into a hidden temporary file beside the target, are checked
(size, sha256) and only then renamed into place, so an interrupted or corrupt
download never looks like a dataset.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dslrec import fileio
from dslrec.data.readers import TEST, InteractionLog, read
from dslrec.errors import DslrecError
from dslrec.progress import progress_bar

TIMEOUT_S = 60


@dataclass(frozen=True)
class RemoteFile:
    name: str  # file name inside the dataset folder
    url: str
    sha256: str | None  # None: not recorded; the dataset's counts are checked instead
    size: int | None = None  # bytes


@dataclass(frozen=True)
class Entry:
    name: str
    title: str
    format: str  # a readers.FORMATS value
    files: tuple[RemoteFile, ...]
    users: int
    items: int
    interactions: int
    train: int | None = None  # interactions in the training file(s) (given splits only)
    test: int | None = None
    split: str | None = None  # default split of unsplit data (None: the files' own split)
    note: str = ""

    def expected(self) -> dict[str, int]:
        out = {"users": self.users, "items": self.items, "interactions": self.interactions}
        if self.train is not None:
            out.update(train=self.train, test=self.test)
        return out


def _gh(repo: str, path: str) -> str:
    return f"https://raw.githubusercontent.com/{repo}/master/{path}"


def _lightgcn(name: str, counts: tuple[int, int, int, int], sha: tuple[str | None, str | None] = (None, None),
              size: tuple[int | None, int | None] = (None, None), repo: str = "kuandeng/LightGCN",
              folder: str | None = None, **kw) -> Entry:
    folder = folder or f"Data/{name}"
    users, items, train, test = counts
    files = tuple(
        RemoteFile(f, _gh(repo, f"{folder}/{f}"), h, s)
        for f, h, s in zip(("train.txt", "test.txt"), sha, size)
    )
    return Entry(name=name, format="lightgcn", files=files, users=users, items=items,
                 interactions=train + test, train=train, test=test, **kw)


_ENTRIES = (
    _lightgcn(
        "gowalla", (29_858, 40_981, 810_128, 217_242),
        sha=("7244696fdeb23911319cf7b689f2e15a3c4c92549c873a5677b44e3f13cc3e62",
             "099a2a73924e4b754dc6efd730d764f492321b53c38eb93298850c83acf57be3"),
        size=(4_633_414, 1_372_559),
        title="Gowalla check-ins, LightGCN split (DSL paper)",
    ),
    # yelp2018 / amazon-book: no copy was at hand to hash. The checksums stay
    # unrecorded and a download is verified by its counts (LightGCN paper:
    # users, items; LightGCN code's train/test totals) when first read.
    _lightgcn("yelp2018", (31_668, 38_048, 1_237_259, 324_147),
              title="Yelp2018, LightGCN split (DSL paper)"),
    _lightgcn("amazon-book", (52_643, 91_599, 2_380_730, 603_378),
              title="Amazon-Book, LightGCN split (DSL paper)"),
    _lightgcn(
        "amazon-book-kgat", (70_679, 24_915, 652_514, 193_920),
        sha=("4d10106bb06a77e11df660429903c0067aeb85b86431807836b0d8b7edc30c38",
             "f47eff9d35fb95c07d74251a991478a84095ce6c5969b0dafcb4afe99fc716ec"),
        size=(3_897_477, 1_478_039),
        repo="xiangwang1223/knowledge_graph_attention_network", folder="Data/amazon-book",
        title="Amazon-Book, KGAT split (not the LightGCN split)",
    ),
    _lightgcn(
        "ml-1m", (6_022, 3_043, 796_244, 99_455),
        sha=("f088986b22f14f17136f9c4ef6f1269201f83dfb9ce259f1fd4ed46d72a92599",
             "7ca364f7f9321417b521745833b12719a2feb13253bccece2c04d5afe9fc3e15"),
        size=(3_666_352, 488_643),
        repo="xue-pai/UltraGCN", folder="data/ml-1m",
        title="MovieLens-1M, UltraGCN split, ratings >= 4 (DSL paper)",
    ),
    Entry(
        name="ml-100k", format="inter",
        files=(RemoteFile("ml-100k.inter", _gh("RUCAIBox/RecBole", "dataset/ml-100k/ml-100k.inter"),
                          "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff", 1_979_230),),
        users=943, items=1_682, interactions=100_000, split="ratio",
        title="MovieLens-100K, all ratings with timestamps (RecBole)",
    ),
    Entry(
        name="citeulike-t", format="citeulike",
        files=(RemoteFile("users.dat", _gh("js05212/citeulike-t", "users.dat"),
                          "02d5d429b2c0362e0ed79f6ef204666b4092563d21493abf4dfb521e8a7078bf", 770_649),),
        users=7_947, items=25_584, interactions=134_860, split="ratio",
        title="CiteULike-t user libraries (DSL paper)",
        note="item ids run 0..25,974; 25,584 of them occur and are the items",
    ),
)
REGISTRY: dict[str, Entry] = {e.name: e for e in _ENTRIES}


def names() -> list[str]:
    return list(REGISTRY)


def entry(name: str) -> Entry:
    try:
        return REGISTRY[name.lower()]
    except KeyError:
        raise DslrecError(f"unknown dataset {name!r}; known: {', '.join(REGISTRY)}") from None


# ---------------------------------------------------------------- locations


def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "dslrec" / "data"


def data_dirs() -> list[Path]:
    """Folders searched for datasets, in order: DSLREC_DATA_DIR (if set), the user cache."""
    dirs = []
    if os.environ.get("DSLREC_DATA_DIR"):
        dirs.append(Path(os.environ["DSLREC_DATA_DIR"]).expanduser().resolve())
    cache = user_cache_dir().resolve()
    if cache not in dirs:
        dirs.append(cache)
    return dirs


def _writable(folder: Path) -> bool:
    p = folder
    while not p.exists():
        p = p.parent
    return p.is_dir() and os.access(p, os.W_OK)


def source_url(e: Entry, f: RemoteFile) -> str:
    """Where a file is downloaded from: DSLREC_MIRROR's ``<base>/<name>/<file>``, else its URL."""
    base = os.environ.get("DSLREC_MIRROR", "").strip()
    if not base:
        return f.url
    if "://" in base:
        return f"{base.rstrip('/')}/{e.name}/{f.name}"
    return (Path(base).expanduser().resolve() / e.name / f.name).as_uri()


# ---------------------------------------------------------------- checks


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, f: RemoteFile) -> None:
    """Raise unless ``path`` has the registry's size and sha256 (where recorded)."""
    size = path.stat().st_size
    if f.size is not None and size != f.size:
        raise DslrecError(
            f"{path} has {size} bytes, the registry expects {f.size}; it is a different or damaged "
            "copy: delete it and run `dslrec data get` again"
        )
    if f.sha256 is not None:
        got = sha256_file(path)
        if got != f.sha256:
            raise DslrecError(
                f"{path} has sha256 {got}, the registry expects {f.sha256}; it is a different or "
                "damaged copy: delete it and run `dslrec data get` again"
            )


def log_counts(log: InteractionLog) -> dict[str, int]:
    """The counts of a freshly read log, comparable with ``Entry.expected()``."""
    out = {"users": log.n_users, "items": log.n_items, "interactions": len(log)}
    if log.split is not None:
        test = int(np.count_nonzero(log.split == TEST))
        out.update(train=len(log) - test, test=test)
    return out


def check_counts(e: Entry, log: InteractionLog, folder: Path) -> None:
    """The files must give the registry's counts (this is what verifies files without a sha256)."""
    got, want = log_counts(log), e.expected()
    diff = {k: (got.get(k), v) for k, v in want.items() if got.get(k) != v}
    if diff:
        detail = ", ".join(f"{k} {g:,} (expected {w:,})" for k, (g, w) in diff.items())
        raise DslrecError(
            f"dataset {e.name!r} in {folder} does not match the registry: {detail}; the files are a "
            f"different version: delete {folder} and run `dslrec data get {e.name}`"
        )


# ---------------------------------------------------------------- download


def download(url: str, dest: Path, sha256: str | None = None, size: int | None = None,
             progress: bool = True) -> None:
    """Stream ``url`` to ``dest`` atomically, checking size and sha256 before the rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = fileio.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)  # 0666 & ~umask
    tmp = Path(tmp_name)
    try:
        h, n = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
                    announced = int(resp.headers.get("Content-Length") or 0) or None
                    total = announced or size
                    with progress_bar(enabled=progress, total=total, unit="B", unit_scale=True,
                                      unit_divisor=1024, desc=dest.name, leave=False) as bar:
                        while chunk := resp.read(1 << 20):
                            out.write(chunk)
                            h.update(chunk)
                            n += len(chunk)
                            bar.update(len(chunk))
            except (OSError, ValueError, http.client.HTTPException) as e:
                reason = getattr(e, "reason", None) or e.__class__.__name__ + (f": {e}" if str(e) else "")
                raise DslrecError(
                    f"download of {url} failed ({reason}); nothing was saved: check the network, "
                    "or set DSLREC_MIRROR to a copy (<base>/<name>/<file>)"
                ) from None
            out.flush()
            os.fsync(out.fileno())
        for expected in (announced, size):
            if expected is not None and n != expected:
                raise DslrecError(
                    f"download of {url} was cut short or changed: {n:,} bytes, expected {expected:,}; "
                    "nothing was saved: run the command again"
                )
        got = h.hexdigest()
        if sha256 is not None and got != sha256:
            raise DslrecError(
                f"download of {url} has sha256 {got}, expected {sha256}; nothing was saved: the source "
                "holds a different or damaged file (retry later, or check DSLREC_MIRROR)"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def locate(e: Entry) -> Path | None:
    """The first data folder holding all of a dataset's files with the right sizes (no hashing)."""
    for d in data_dirs():
        folder = d / e.name
        paths = [folder / f.name for f in e.files]
        if all(p.is_file() and (f.size is None or p.stat().st_size == f.size) for p, f in zip(paths, e.files)):
            return folder
    return None


def get(name: str | Entry, *, download_missing: bool = True, progress: bool = True) -> Path:
    """The folder holding a dataset's verified files, downloading what is missing."""
    e = name if isinstance(name, Entry) else entry(name)
    dirs = data_dirs()
    for d in dirs:
        folder = d / e.name
        if all((folder / f.name).is_file() for f in e.files):
            for f in e.files:
                verify(folder / f.name, f)
            return folder
    if not download_missing:
        raise DslrecError(
            f"dataset {e.name!r} is not in {' or '.join(map(str, dirs))}; run `dslrec data get {e.name}`"
        )
    target = next((d for d in dirs if _writable(d)), None)
    if target is None:
        raise DslrecError(
            f"cannot download {e.name!r}: none of {', '.join(map(str, dirs))} is writable; "
            "set DSLREC_DATA_DIR to a writable folder"
        )
    folder = target / e.name
    existing = folder
    while not existing.exists():  # folders created here are removed again if nothing lands in them
        existing = existing.parent
    fetched = []
    try:
        for f in e.files:
            dest = folder / f.name
            if dest.is_file():
                verify(dest, f)
            else:
                download(source_url(e, f), dest, f.sha256, f.size, progress)
                if f.sha256 is None:
                    fetched.append(dest)
        if any(f.sha256 is None for f in e.files):
            check_counts(e, read(folder, e.format), folder)  # no checksum recorded: verify by content
    except BaseException:
        for p in fetched:  # unverified files must not stay behind looking like the dataset
            p.unlink(missing_ok=True)
        raise
    finally:
        p = folder
        while p != existing and p.is_dir() and not any(p.iterdir()):
            p.rmdir()  # leave no empty folders behind a failed download
            p = p.parent
    return folder
