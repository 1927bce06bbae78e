"""Readers: dataset files on disk -> an ``InteractionLog`` (flat, vectorised).

Formats:

``lightgcn``  a folder with ``train.txt``, ``test.txt`` and optionally
              ``valid.txt``; each line is ``user item item ...`` (integer ids).
              The log comes with a per-interaction ``split`` label.
``lines``     one file in that ``user item item ...`` format, unsplit.
``inter``     RecBole atomic ``.inter``: tab separated, typed header
              (``user_id:token item_id:token rating:float timestamp:float``).
``csv``       CSV/TSV with a header naming user, item[, rating][, timestamp].
``citeulike`` ``users.dat``: line n is user n, ``count item item ...``.

Whitespace-separated integer files are parsed with numpy, a block of whole
lines (``BLOCK_BYTES``) at a time: no Python loop over lines or ids, and no
temporary array the size of the file, so a 2,000,000-user LightGCN folder
(12M interactions, 110 MB of text) loads in seconds within a few hundred MB
(README, "Big data on one machine"). Ids are mapped to dense 0-based
indices (int32 when they fit), ordered numerically when every raw id is an
integer; ``user_ids`` / ``item_ids`` keep the raw ids as strings. Only users
and items that occur in the files get an index (plus users that have a line
of their own in a ``lightgcn`` file).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dslrec.errors import DslrecError, warn

if TYPE_CHECKING:  # pandas is imported only when a table is read
    import pandas as pd

TRAIN, VALID, TEST = 0, 1, 2  # values of InteractionLog.split
FORMATS = ("lightgcn", "lines", "inter", "csv", "citeulike")

# Accepted header names per role (compared case-insensitively), first match wins.
COLUMN_ALIASES = {
    "user": ("user", "user_id", "userid", "uid", "user id"),
    "item": ("item", "item_id", "itemid", "iid", "movie_id", "movieid", "item id"),
    "rating": ("rating", "ratings", "score"),
    "timestamp": ("timestamp", "time", "ts", "datetime", "date"),
}
_MAX_DIGITS = 18  # int64 holds every 18-digit number
BLOCK_BYTES = 1 << 21  # bytes of text parsed at a time (whole lines; a longer line is one block)
# Byte classes of integer-only files: 0 not allowed, 1 digit, 2 whitespace.
_BYTE_KIND = np.zeros(256, dtype=np.uint8)
_BYTE_KIND[ord("0") : ord("9") + 1] = 1
_BYTE_KIND[[ord(" "), ord("\t"), ord("\n"), ord("\r")]] = 2


@dataclass
class InteractionLog:
    """Interactions as parallel arrays; ``users``/``items`` index ``user_ids``/``item_ids``."""

    users: np.ndarray  # dense user index per interaction (int32 when it fits, else int64)
    items: np.ndarray  # dense item index per interaction (int32 when it fits, else int64)
    user_ids: np.ndarray  # raw id (str) of each user index
    item_ids: np.ndarray  # raw id (str) of each item index
    ratings: np.ndarray | None = None  # float64 per interaction
    timestamps: np.ndarray | None = None  # float64 per interaction
    split: np.ndarray | None = None  # int8 TRAIN/VALID/TEST when the files come split
    source: str = ""

    def __len__(self) -> int:
        return len(self.users)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def select(self, mask: np.ndarray) -> "InteractionLog":
        """The interactions where ``mask`` holds (index maps unchanged)."""
        pick = lambda a: None if a is None else a[mask]  # noqa: E731
        return replace(
            self,
            users=self.users[mask],
            items=self.items[mask],
            ratings=pick(self.ratings),
            timestamps=pick(self.timestamps),
            split=pick(self.split),
        )


# ---------------------------------------------------------------- helpers


def _check_file(path: Path) -> None:
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise DslrecError(f"{path} {what}; check the dataset path")


def _line_of(data: bytes, pos: int) -> tuple[int, bytes]:
    """1-based line number of byte ``pos`` and the whitespace-separated token there."""
    start = data.rfind(b"\n", 0, pos) + 1
    end = data.find(b"\n", pos)
    line = data[start : end if end >= 0 else len(data)]
    token = b""
    for m in re.finditer(rb"\S+", line):
        if m.start() <= pos - start < m.end():
            token = m.group()
    return data.count(b"\n", 0, pos) + 1, token


def _blocks(path: Path):
    """(bytes, number of lines before them) of ``path``, in blocks of whole lines of about
    ``BLOCK_BYTES`` (a line longer than that is a block of its own)."""
    with path.open("rb") as f:
        carry, line = b"", 0
        while True:
            chunk = f.read(BLOCK_BYTES)
            if not chunk:
                if carry:
                    yield carry, line
                return
            data = carry + chunk if carry else chunk
            cut = data.rfind(b"\n") + 1
            if cut == 0:  # no line ends in it yet: read on
                carry = data
                continue
            block, carry = data[:cut], data[cut:]
            yield block, line
            line += block.count(b"\n")


def _scan_block(data: bytes, path: Path, fmt: str, line0: int,
                lines: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(values, first token of its line?, with ``lines`` the 0-based line of each first token)
    of the integer tokens of one block of whole lines.

    Validates the bytes first (digits and whitespace only) so that a bad token is reported
    with its line instead of silently ending the parse.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    digit = (buf - np.uint8(48)) < 10  # (wraps below '0')
    newline = buf == 10
    ok = digit | newline | (buf == 32)
    if not ok.all() and not (ok | (buf == 9) | (buf == 13)).all():  # tabs and CRs are rare: checked last
        line, token = _line_of(data, int(np.argmin(_BYTE_KIND[buf])))
        raise DslrecError(
            f"{path}:{line0 + line}: {token.decode(errors='replace')!r} is not an integer id; "
            f"{fmt} files hold non-negative integer ids separated by spaces"
        )
    # the edges of the digit runs, in order: start, end, start, end, ...
    edges = np.flatnonzero(np.diff(digit.view(np.int8), prepend=np.int8(0), append=np.int8(0)))
    starts = edges[0::2]  # first digit of each token
    too_long = np.flatnonzero(edges[1::2] - starts > _MAX_DIGITS)
    if len(too_long):
        line, token = _line_of(data, int(starts[too_long[0]]))
        raise DslrecError(f"{path}:{line0 + line}: id {token.decode()[:30]}... has too many digits "
                          f"(at most {_MAX_DIGITS})")
    if len(starts) == 0:  # blank lines only (np.fromstring would read them as a 0)
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int64)
    values = np.fromstring(data, dtype=np.int64, sep=" ")  # C parser; the bytes are checked above
    if len(values) != len(starts):  # cannot happen after validation; guards numpy parser changes
        raise DslrecError(f"{path}: could not parse the integer ids; check the file format ({fmt})")
    # a token is the first of its line when a newline lies between it and the token before;
    # the block starts at the start of a line
    newlines = np.flatnonzero(newline)
    head = np.zeros(len(starts) + 1, dtype=bool)
    head[0] = True
    head[np.searchsorted(starts, newlines)] = True  # the token after each newline
    head = head[:-1]
    head_lines = np.searchsorted(newlines, starts[head]) + line0 if lines else None
    return values, head, head_lines


def _int_blocks(path: Path, fmt: str, lines: bool = False):
    """(values, heads, head lines) per block of a whitespace-separated integer file (see
    ``_scan_block``); an empty or whitespace-only file is an error."""
    _check_file(path)
    empty = True
    for data, line0 in _blocks(path):
        values, head, head_lines = _scan_block(data, path, fmt, line0, lines)
        if len(values):
            empty = False
            yield values, head, head_lines
    if empty:
        raise DslrecError(f"{path} is empty; it holds no interactions (re-download or fix the file)")


def _smallest_int(values: np.ndarray) -> np.ndarray:
    """``values`` (non-negative) as int32 when they fit, else int64."""
    if len(values) and values.max() >= 2**31:
        return values.astype(np.int64, copy=False)
    return values.astype(np.int32)


def int_strings(values: np.ndarray) -> np.ndarray:
    """Sorted non-negative integers as a numpy string array (``<U{digits}``), built with numpy:
    no Python object per value (``astype(str)`` makes one each, and a ``<U21`` array)."""
    values = np.asarray(values, dtype=np.int64)
    if len(values) == 0:
        return np.zeros(0, dtype="<U1")
    width = len(str(int(values.max())))
    if len(values) > 1 and (values[1:] < values[:-1]).any():  # not sorted: the slow way
        return values.astype(f"<U{width}")
    codes = np.zeros((len(values), width), dtype=np.uint32)  # UCS-4, left aligned, NUL padded
    # sorted values: those of d digits are one run
    bounds = np.searchsorted(values, 10 ** np.arange(1, width, dtype=np.int64))
    for d, (lo, hi) in enumerate(zip(np.r_[0, bounds], np.r_[bounds, len(values)]), start=1):
        run = values[lo:hi]
        for c in range(d):
            codes[lo:hi, c] = 48 + run // 10 ** (d - 1 - c) % 10
    return codes.view(f"<U{width}").reshape(-1)


def _int_ids(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense codes of non-negative integer ids (numeric order; int32 when they fit) and the raw
    ids as strings."""
    if len(values) and values.max() < 4 * len(values) + 1_000_000:
        # Ids are near-dense (the usual case): a presence table is O(n), no sort.
        present = np.zeros(int(values.max()) + 1, dtype=bool)
        present[values] = True
        rank = np.cumsum(present, dtype=np.int64) - 1
        return _smallest_int(rank)[values], int_strings(np.flatnonzero(present))
    uniq = np.sort(values, kind="stable")  # (np.unique is slow on big arrays in numpy 2.x)
    keep = np.ones(len(uniq), dtype=bool)
    keep[1:] = uniq[1:] != uniq[:-1]
    uniq = uniq[keep]
    return _smallest_int(np.searchsorted(uniq, values)), int_strings(uniq)


def _str_ids(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense codes of string ids; numeric order when every id is an integer."""
    import pandas as pd  # (imported when needed: loading integer files does without it)

    codes, uniq = pd.factorize(pd.Series(values, dtype=object), sort=False)
    uniq = np.asarray(uniq, dtype=str)
    as_int = None
    if len(uniq) and np.char.isdigit(uniq).all() and np.char.str_len(uniq).max() <= _MAX_DIGITS:
        as_int = uniq.astype(np.int64)
    order = np.argsort(as_int, kind="stable") if as_int is not None else np.argsort(uniq, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank[codes], uniq[order]


# ---------------------------------------------------------------- integer line formats


def _read_user_lines(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(raw user of each line, items listed per line, raw items) of a ``user item ...`` file.

    Parsed a block at a time; the raw items are kept as int32 when they fit.
    """
    heads, counts, items = [], [], []
    for values, head, _ in _int_blocks(path, "LightGCN text"):
        first = np.flatnonzero(head)
        heads.append(values[head])
        counts.append(np.diff(np.r_[first, len(values)]) - 1)
        items.append(_smallest_int(values[~head]))
    return np.concatenate(heads), np.concatenate(counts), np.concatenate(items)


def read_lightgcn(folder: str | Path) -> InteractionLog:
    """A LightGCN split folder: ``train.txt``, ``test.txt`` and optional ``valid.txt``."""
    folder = Path(folder)
    parts = []
    for label, fname in ((TRAIN, "train.txt"), (VALID, "valid.txt"), (TEST, "test.txt")):
        path = folder / fname
        if label == VALID and not path.exists():
            continue
        if not path.exists():
            raise DslrecError(
                f"{path} does not exist; a LightGCN dataset folder needs train.txt and test.txt"
            )
        line_users, per_line, items = _read_user_lines(path)
        if len(items) == 0:
            raise DslrecError(f"{path}: the {fname[:-4]} split is empty (no line lists an item)")
        parts.append((label, line_users, per_line, items))
    # Every user with a line of their own counts, even one without items in any split.
    line_codes, user_ids = _int_ids(np.concatenate([p[1] for p in parts]))
    users = np.repeat(line_codes, np.concatenate([p[2] for p in parts]))
    split = np.repeat(np.array([p[0] for p in parts], dtype=np.int8), [len(p[3]) for p in parts])
    raw_items = np.concatenate([p[3] for p in parts])
    del parts  # the per-file copies
    items, item_ids = _int_ids(raw_items)
    names = ", ".join(f for f in ("train.txt", "valid.txt", "test.txt") if (folder / f).exists())
    return InteractionLog(
        users=users,
        items=items,
        user_ids=user_ids,
        item_ids=item_ids,
        split=split,
        source=f"{folder} (LightGCN text: {names})",
    )


def read_lines(path: str | Path) -> InteractionLog:
    """One unsplit file of ``user item item ...`` lines."""
    path = Path(path)
    line_users, per_line, items = _read_user_lines(path)
    if len(items) == 0:
        raise DslrecError(f"{path}: no line lists an item; each line is `user item item ...`")
    line_codes, user_ids = _int_ids(line_users)
    items, item_ids = _int_ids(items)
    return InteractionLog(
        users=np.repeat(line_codes, per_line),
        items=items,
        user_ids=user_ids,
        item_ids=item_ids,
        source=f"{path} (user item item ... lines)",
    )


def read_citeulike(path: str | Path) -> InteractionLog:
    """CiteULike ``users.dat``: line n (0-based) is user n, ``count item item ...``."""
    path = Path(path)
    parts = list(_int_blocks(path, "users.dat", lines=True))
    values = np.concatenate([p[0] for p in parts])
    head = np.concatenate([p[1] for p in parts])
    head_lines = np.concatenate([p[2] for p in parts])
    n_lines = int(head_lines[-1]) + 1
    per_line = np.zeros(n_lines, dtype=np.int64)  # tokens per line
    per_line[head_lines] = np.diff(np.r_[np.flatnonzero(head), len(values)])
    blank = np.flatnonzero(per_line == 0)
    if len(blank):
        raise DslrecError(
            f"{path}:{blank[0] + 1}: empty line; line n of users.dat holds user n's "
            "`count item item ...` (write 0 for a user without items)"
        )
    counts, n_listed = values[head], per_line - 1
    wrong = np.flatnonzero(counts != n_listed)
    if len(wrong):
        k = wrong[0]
        raise DslrecError(
            f"{path}:{k + 1}: the count says {counts[k]} items but the line lists {n_listed[k]}; "
            "fix the count or the item list (each line is `count item item ...`)"
        )
    if n_listed.sum() == 0:
        raise DslrecError(f"{path}: no user has any item; the file holds no interactions")
    items, item_ids = _int_ids(values[~head])
    return InteractionLog(
        users=np.repeat(np.arange(n_lines, dtype=np.int64), n_listed),
        items=items,
        user_ids=np.arange(n_lines).astype(str),
        item_ids=item_ids,
        source=f"{path} (CiteULike users.dat)",
    )


# ---------------------------------------------------------------- tabular formats


def _sep_hint(header: list[str]) -> str:
    """When the header is one column holding another separator, the suggestion to pass it."""
    if len(header) == 1:
        other = next((c for c in ";|\t," if c in header[0]), None)
        if other is not None:
            return f"; the header holds {other!r}: is that the separator? pass --sep {other!r}"
    return ""


def _resolve_columns(path: Path, header: list[str], columns: dict[str, str] | None) -> dict[str, str]:
    """Map roles (user, item, rating, timestamp) to header names present in the file."""
    given = dict(columns or {})
    unknown = set(given) - set(COLUMN_ALIASES)
    if unknown:
        raise DslrecError(f"unknown column role(s) {sorted(unknown)}; use {', '.join(COLUMN_ALIASES)}")
    lower = {h.lower(): h for h in header}
    found: dict[str, str] = {}
    for role, aliases in COLUMN_ALIASES.items():
        if role in given:
            if given[role] not in header:
                raise DslrecError(
                    f"{path}: no column {given[role]!r} (for {role}) in the header; "
                    f"columns are: {', '.join(header)}{_sep_hint(header)}"
                )
            found[role] = given[role]
        else:
            hit = next((lower[a] for a in aliases if a in lower), None)
            if hit is not None:
                found[role] = hit
    for role in ("user", "item"):
        if role not in found:
            raise DslrecError(
                f"{path}: no {role} column in the header ({', '.join(header)}); name it "
                f"{COLUMN_ALIASES[role][0]!r} or map it: --columns {role}=NAME "
                f"(Python: dslrec.data.load(path, columns={{'{role}': NAME}})){_sep_hint(header)}"
            )
    return found


def _numeric(path: Path, frame: pd.DataFrame, col: str, what: str, dates: bool) -> np.ndarray:
    """A column as float64; ISO dates allowed for timestamps; bad values name their line."""
    import pandas as pd

    raw = frame[col]
    if raw.dtype.kind == "f":
        return raw.to_numpy(dtype=np.float64)
    vals = pd.to_numeric(raw, errors="coerce")
    bad = vals.isna().to_numpy()
    if bad.any() and dates:  # ISO dates are accepted as timestamps (seconds since the epoch)
        parsed = pd.to_datetime(raw, errors="coerce", utc=True, format="ISO8601")
        if not parsed.isna().any():
            return (parsed - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(dtype=np.float64)
    if bad.any():
        row = int(np.argmax(bad))
        raise DslrecError(
            f"{path}:{int(frame.index[row]) + 2}: {what} {raw.iloc[row]!r} in column {col!r} is not a number"
        )
    return vals.to_numpy(dtype=np.float64)


def _parse_table(path: Path, sep: str, names: list[str], roles: dict[str, str], typed: bool,
                 encoding: str = "utf-8") -> pd.DataFrame:
    import pandas as pd

    # Ids stay strings; rating/timestamp parse as floats in the C parser (fast path).
    # Any value the fast path rejects makes the caller re-read as strings to name the line.
    dtype = {c: str for c in roles.values()}
    if typed:
        dtype.update({roles[r]: np.float64 for r in ("rating", "timestamp") if r in roles})
    try:
        return pd.read_csv(
            path, sep=sep, header=0, names=names, dtype=dtype, na_filter=False,
            skip_blank_lines=False, skipinitialspace=True, engine="c", encoding=encoding,
        )  # no usecols: it would silently accept rows with too many fields
    except pd.errors.ParserError as e:
        m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(e))
        if m:
            raise DslrecError(
                f"{path}:{m.group(2)}: expected {m.group(1)} fields, found {m.group(3)}; "
                f"every row needs the header's columns separated by {sep!r}"
            ) from None
        raise DslrecError(f"{path}: cannot parse ({str(e).strip()}); check the file format") from None


def _read_table(path: Path, sep: str, names: list[str], columns: dict | None, kind: str) -> InteractionLog:
    """Shared body of the CSV and ``.inter`` readers (header already parsed into ``names``).

    A file that is not UTF-8 is read as latin-1, with a warning: latin-1 maps every byte to
    one character, so the file always reads and distinct raw ids stay distinct (only their
    printed form can differ from what the file's real encoding would give).
    """
    try:
        return _read_table_encoded(path, sep, names, columns, kind, "utf-8")
    except UnicodeDecodeError:
        warn(f"{path} is not UTF-8; read it as latin-1 (ids stay distinct); "
                      "re-save it as UTF-8 if raw ids must print correctly")
        return _read_table_encoded(path, sep, names, columns, kind, "latin-1")


def _read_table_encoded(path: Path, sep: str, names: list[str], columns: dict | None, kind: str,
                        encoding: str) -> InteractionLog:
    roles = _resolve_columns(path, names, columns)
    try:
        frame = _parse_table(path, sep, names, roles, typed=True, encoding=encoding)
        clean = not ((frame[roles["user"]] == "") | (frame[roles["item"]] == "")).any()
    except ValueError:  # a rating/timestamp that is no float, or a blank line
        clean = False
    if not clean:  # slow path: everything as strings, so that problems can name their line
        frame = _parse_table(path, sep, names, roles, typed=False, encoding=encoding)
        # Rows of nothing but separators are blank lines; line number = index + 2 (header is line 1).
        frame = frame[~(frame == "").all(axis=1).to_numpy()]
    if len(frame) == 0:
        raise DslrecError(f"{path}: no interactions below the header; the file is empty")
    ids = {}
    for role in ("user", "item"):
        col = frame[roles[role]]
        empty = (col == "").to_numpy()
        if empty.any():
            line = int(frame.index[int(np.argmax(empty))]) + 2
            raise DslrecError(f"{path}:{line}: missing {role} id (column {roles[role]!r}); the row is incomplete")
        ids[role] = _str_ids(col.to_numpy(dtype=str))
    ratings = _numeric(path, frame, roles["rating"], "rating", False) if "rating" in roles else None
    times = _numeric(path, frame, roles["timestamp"], "timestamp", True) if "timestamp" in roles else None
    return InteractionLog(
        users=ids["user"][0], items=ids["item"][0], user_ids=ids["user"][1], item_ids=ids["item"][1],
        ratings=ratings, timestamps=times, source=f"{path} ({kind})",
    )


def _first_line(path: Path) -> str:
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise DslrecError(f"{path} {what}; check the dataset path")
    with path.open("rb") as f:
        raw = f.readline(1 << 20)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:  # decoded as the rows will be (_read_table)
        text = raw.decode("latin-1")
    line = re.split(r"\r\n|\r|\n", text, maxsplit=1)[0]
    if not line.strip():
        raise DslrecError(f"{path} is empty or starts with a blank line; the first line must be the header")
    return line.rstrip("\r\n")


def read_inter(path: str | Path, columns: dict[str, str] | None = None) -> InteractionLog:
    """RecBole atomic ``.inter`` file (tab separated, header ``name:type``)."""
    path = Path(path)
    names = [h.split(":", 1)[0].strip() for h in _first_line(path).split("\t")]
    return _read_table(path, "\t", names, columns, "RecBole .inter")


def read_csv(path: str | Path, columns: dict[str, str] | None = None, sep: str | None = None) -> InteractionLog:
    """CSV/TSV with a header; the delimiter comes from the extension or is sniffed."""
    path = Path(path)
    header = _first_line(path)
    if sep is None:
        sep = {".csv": ",", ".tsv": "\t"}.get(path.suffix.lower())
    if sep is None:
        try:
            sep = csv.Sniffer().sniff(header, delimiters=",\t;| ").delimiter
        except csv.Error:
            raise DslrecError(
                f"{path}:1: cannot tell the delimiter from the header {header[:60]!r}; "
                "name the file .csv or .tsv, or pass sep"
            ) from None
    names = [h.strip().strip('"') for h in next(csv.reader([header], delimiter=sep))]
    return _read_table(path, sep, names, columns, "CSV" if sep == "," else f"delimited ({sep!r})")


# ---------------------------------------------------------------- detection


def _file_format(path: Path) -> str | None:
    """Format of one file by name, or None when the name says nothing."""
    name, suffix = path.name.lower(), path.suffix.lower()
    if suffix == ".inter":
        return "inter"
    if name == "users.dat":
        return "citeulike"
    if suffix in (".csv", ".tsv"):
        return "csv"
    return None


def detect(path: str | Path) -> tuple[str, Path]:
    """(format, path to read) for a dataset folder or file."""
    path = Path(path)
    if not path.exists():
        raise DslrecError(f"{path} does not exist; give a dataset folder or file, or a registry name")
    if path.is_dir():
        if (path / "train.txt").exists():
            return "lightgcn", path
        found = [
            (fmt, p)
            for p in sorted(path.iterdir())
            if p.is_file() and not p.name.startswith(".") and (fmt := _file_format(p))
        ]
        if len(found) == 1:
            return found[0]
        if not found:
            raise DslrecError(
                f"{path}: no dataset file found; expected train.txt + test.txt, one *.inter, "
                "users.dat or one *.csv/*.tsv"
            )
        raise DslrecError(
            f"{path}: several dataset files ({', '.join(p.name for _, p in found)}); give the path of one"
        )
    if path.name in ("train.txt", "test.txt", "valid.txt"):
        return "lightgcn", path.parent
    fmt = _file_format(path)
    if fmt:
        return fmt, path
    # Unknown name: look at the first line.
    head = _first_line(path)
    if re.fullmatch(r"[\d\s]+", head):
        return "lines", path
    if re.search(r":(token|float|token_seq)\b", head):
        return "inter", path
    return "csv", path


def read(path: str | Path, fmt: str | None = None, columns: dict[str, str] | None = None,
         sep: str | None = None) -> InteractionLog:
    """Read a dataset folder or file, detecting its format unless ``fmt`` is given.

    ``columns`` (role -> header name) applies to CSV/TSV and ``.inter`` files,
    ``sep`` (default: from the extension, else sniffed) to CSV/TSV files.
    """
    path = Path(path)
    if fmt is None:
        fmt, path = detect(path)
    elif fmt not in FORMATS:
        raise DslrecError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    elif fmt == "lightgcn" and path.is_file():
        path = path.parent
    check_table_options(f"{path} ({fmt} format)", fmt, columns, sep)
    if fmt == "lightgcn":
        return read_lightgcn(path)
    if fmt == "lines":
        return read_lines(path)
    if fmt == "citeulike":
        return read_citeulike(path / "users.dat" if path.is_dir() else path)
    if path.is_dir():
        path = detect(path)[1]
    if fmt == "inter":
        return read_inter(path, columns)
    return read_csv(path, columns, sep)


# ---------------------------------------------------------------- column and separator settings

_SEP_NAMES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|", "space": " "}


def parse_columns(value, setting: str = "setting columns") -> dict[str, str] | None:
    """Column names per role from a mapping or ``"user=uid,item=iid,..."``; None stays None.

    Roles are those of ``COLUMN_ALIASES``; a bad form or role is a one-line error naming ``setting``.
    """
    if value is None or value == "" or value == {}:
        return None
    example = "user=uid,item=iid,rating=r,timestamp=ts"
    if isinstance(value, str):
        pairs = {}
        for part in (p.strip() for p in value.split(",")):
            role, eq, name = part.partition("=")
            if not eq or not role.strip() or not name.strip():
                raise DslrecError(f"{setting}: {part!r} is not ROLE=COLUMN; write e.g. {example}")
            if role.strip() in pairs:
                raise DslrecError(f"{setting}: role {role.strip()!r} is given twice in {value!r}")
            pairs[role.strip()] = name.strip()
        value = pairs
    if not isinstance(value, dict) or not all(isinstance(v, str) and v for v in value.values()):
        raise DslrecError(f"{setting} must map roles to column names, e.g. {example}; got {value!r}")
    unknown = sorted(set(map(str, value)) - set(COLUMN_ALIASES))
    if unknown:
        raise DslrecError(f"{setting}: unknown column role(s) {unknown}; use {', '.join(COLUMN_ALIASES)}")
    return {str(k): v for k, v in value.items()}


def parse_sep(value, setting: str = "setting sep") -> str | None:
    """A one-character field separator; ``tab``/``\\t``, ``comma``, ``semicolon``, ``pipe``, ``space`` by name."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise DslrecError(f"{setting} must be one character such as ';' or tab, got {value!r}")
    value = _SEP_NAMES.get(value.lower() if len(value) > 1 else value, value)
    if len(value) != 1 or value in "\"\r\n":
        raise DslrecError(f"{setting} must be one character such as ';', ',', '|' or tab "
                          f"(names: {', '.join(_SEP_NAMES)}), got {value!r}")
    return value


def check_table_options(what: str, fmt: str, columns, sep) -> None:
    """``columns``/``sep`` only mean something for CSV/TSV (and ``columns`` for .inter) files."""
    if columns and fmt not in ("csv", "inter"):
        raise DslrecError(f"columns apply to CSV/TSV and .inter files, but {what} has none; drop --columns")
    if sep is not None and fmt != "csv":
        kind = "is tab separated by definition" if fmt == "inter" else "has no separator setting"
        raise DslrecError(f"sep applies to CSV/TSV files, but {what} {kind}; drop --sep")
