"""Registry: records, locations, downloads (local HTTP server / file mirror), the real copies."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dslrec.data import load, registry
from dslrec.data.registry import Entry, RemoteFile
from dslrec.errors import DslrecError

SHARED = Path(os.environ.get("DSLREC_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
needs_shared = pytest.mark.skipif(not (SHARED / "gowalla").is_dir(), reason=f"no dataset copies at {SHARED}")

# The counts the shared copies' README gives (users, items, train, test) / (users, items, interactions).
README_COUNTS = {
    "gowalla": (29_858, 40_981, 810_128, 217_242),
    "ml-1m": (6_022, 3_043, 796_244, 99_455),
    "amazon-book-kgat": (70_679, 24_915, 652_514, 193_920),
    "ml-100k": (943, 1_682, 100_000),
    "citeulike-t": (7_947, 25_584, 134_860),
}


@pytest.fixture
def env(tmp_path, monkeypatch):
    """An isolated data dir and user cache; no mirror."""
    monkeypatch.setenv("DSLREC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("DSLREC_MIRROR", raising=False)
    return tmp_path


def tree(folder: Path) -> list[str]:
    """Every path below ``folder`` (hidden temp files included)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


class Server:
    """ThreadingHTTPServer on 127.0.0.1 serving a folder; ``truncate`` cuts bodies in half."""

    def __init__(self, root: Path):
        self.hits, self.truncate = [], False
        outer = self

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                outer.hits.append(self.path)
                if not outer.truncate:
                    return super().do_GET()
                body = (root / self.path.lstrip("/")).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])  # then the connection closes early
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def ml100k_mirror(tmp_path):
    if not (SHARED / "ml-100k").is_dir():
        pytest.skip(f"no dataset copies at {SHARED}")
    root = tmp_path / "mirror"
    shutil.copytree(SHARED / "ml-100k", root / "ml-100k")
    server = Server(root)
    yield server, root / "ml-100k" / "ml-100k.inter"
    server.close()


def tiny_entry(sha: str | None, size: int | None, users=2, items=3, interactions=3) -> Entry:
    return Entry(name="tiny", title="test", format="citeulike", users=users, items=items,
                 interactions=interactions, split="ratio",
                 files=(RemoteFile("users.dat", "https://example.invalid/users.dat", sha, size),))


TINY = b"2 0 1\n1 2\n"


# ---------------------------------------------------------------- records and locations


def test_records_are_complete():
    for e in registry.REGISTRY.values():
        assert e.files and e.users > 0 and e.items > 0 and e.interactions > 0
        if e.train is not None:
            assert e.train + e.test == e.interactions
        for f in e.files:
            assert re.fullmatch(r"https://raw\.githubusercontent\.com/[\w.-]+/[\w.-]+/master/\S+", f.url)
            assert f.url.endswith("/" + f.name)
            assert f.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", f.sha256)
    assert {"gowalla", "yelp2018", "amazon-book", "amazon-book-kgat", "ml-1m", "ml-100k", "citeulike-t"} <= set(
        registry.names())
    with pytest.raises(DslrecError, match="unknown dataset 'nope'; known: gowalla"):
        registry.entry("nope")


def test_data_dirs_follow_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("DSLREC_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert registry.data_dirs() == [(tmp_path / "x" / "dslrec" / "data").resolve()]
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert registry.data_dirs() == [(Path.home() / ".cache" / "dslrec" / "data").resolve()]
    monkeypatch.setenv("DSLREC_DATA_DIR", str(tmp_path / "d"))
    assert registry.data_dirs()[0] == (tmp_path / "d").resolve()


def test_mirror_urls(monkeypatch, tmp_path):
    e, f = registry.entry("ml-100k"), registry.entry("ml-100k").files[0]
    monkeypatch.delenv("DSLREC_MIRROR", raising=False)
    assert registry.source_url(e, f) == f.url
    monkeypatch.setenv("DSLREC_MIRROR", "http://host:8/base/")
    assert registry.source_url(e, f) == "http://host:8/base/ml-100k/ml-100k.inter"
    monkeypatch.setenv("DSLREC_MIRROR", str(tmp_path))
    assert registry.source_url(e, f) == (tmp_path / "ml-100k" / "ml-100k.inter").resolve().as_uri()


# ---------------------------------------------------------------- the shared copies


@needs_shared
def test_shared_copies_match_the_registry_records():
    for name in README_COUNTS:
        for f in registry.entry(name).files:
            path = SHARED / name / f.name
            assert path.stat().st_size == f.size
            assert hashlib.sha256(path.read_bytes()).hexdigest() == f.sha256


@needs_shared
@pytest.mark.parametrize("name", list(README_COUNTS))
def test_shared_copies_give_readme_counts(name, monkeypatch):
    monkeypatch.setenv("DSLREC_DATA_DIR", str(SHARED))
    before = tree(SHARED)
    ds = load(name, download=False)
    counts = README_COUNTS[name]
    assert (ds.n_users, ds.n_items) == counts[:2]
    if len(counts) == 4:  # train.txt / test.txt; valid is carved from train.txt
        assert (ds.train.nnz + ds.valid.nnz, ds.test.nnz) == counts[2:]
        assert ds.valid.nnz > 0 and ds.protocol == "fixed"
    else:
        assert ds.train.nnz + ds.valid.nnz + ds.test.nnz == counts[2]
    assert tree(SHARED) == before  # a read-only data dir is only read


# ---------------------------------------------------------------- downloads


def test_download_through_http_mirror(env, ml100k_mirror, monkeypatch):
    server, original = ml100k_mirror
    monkeypatch.setenv("DSLREC_MIRROR", server.url)
    folder = registry.get("ml-100k", progress=False)
    assert folder == (env / "data" / "ml-100k").resolve()
    assert (folder / "ml-100k.inter").read_bytes() == original.read_bytes()
    assert tree(env / "data") == ["ml-100k", "ml-100k/ml-100k.inter"]
    assert server.hits == ["/ml-100k/ml-100k.inter"]
    ds = load("ml-100k")  # verified copy in the cache: no second download
    assert server.hits == ["/ml-100k/ml-100k.inter"] and ds.n_users == 943


def test_checksum_mismatch_saves_nothing(env, ml100k_mirror, monkeypatch):
    server, original = ml100k_mirror
    data = bytearray(original.read_bytes())
    data[-2] = ord("7") if data[-2] != ord("7") else ord("8")  # same size, different bytes
    original.write_bytes(bytes(data))
    monkeypatch.setenv("DSLREC_MIRROR", server.url)
    want = registry.entry("ml-100k").files[0].sha256
    got = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(DslrecError, match=f"sha256 {got}, expected {want}; nothing was saved"):
        registry.get("ml-100k", progress=False)
    assert not (env / "data").exists()  # no file, no temp file, no empty folder


def test_interrupted_download_saves_nothing(env, ml100k_mirror, monkeypatch):
    server, _ = ml100k_mirror
    server.truncate = True
    monkeypatch.setenv("DSLREC_MIRROR", server.url)
    with pytest.raises(DslrecError, match=r"download of http://127.0.0.1:.* was cut short or changed: 989,615 bytes, "
                       r"expected 1,979,230; nothing was saved"):
        registry.get("ml-100k", progress=False)
    assert not (env / "data").exists()
    with pytest.raises(DslrecError, match="not in .*run `dslrec data get ml-100k`"):
        load("ml-100k", download=False)


def test_unreachable_source_names_the_url(env, monkeypatch):
    monkeypatch.setenv("DSLREC_MIRROR", str(env / "no-such-mirror"))
    with pytest.raises(DslrecError, match=r"download of file://.*no-such-mirror/tiny/users\.dat failed"):
        registry.get(tiny_entry(None, None), progress=False)
    assert tree(env / "data") == []


def test_file_mirror_and_read_only_data_dir(env, monkeypatch):
    mirror = env / "mirror" / "tiny"
    mirror.mkdir(parents=True)
    (mirror / "users.dat").write_bytes(TINY)
    monkeypatch.setenv("DSLREC_MIRROR", (env / "mirror").as_uri())
    data_dir = (env / "data").resolve()
    # a data dir that cannot be written: downloads go to the user cache instead
    monkeypatch.setattr(registry, "_writable", lambda d: d != data_dir)
    e = tiny_entry(hashlib.sha256(TINY).hexdigest(), len(TINY))
    folder = registry.get(e, progress=False)
    assert folder == (env / "xdg" / "dslrec" / "data" / "tiny").resolve()
    assert tree(env / "data") == []


def test_files_without_checksum_are_verified_by_counts(env, monkeypatch):
    mirror = env / "mirror" / "tiny"
    mirror.mkdir(parents=True)
    (mirror / "users.dat").write_bytes(TINY)
    monkeypatch.setenv("DSLREC_MIRROR", str(env / "mirror"))
    with pytest.raises(DslrecError, match=r"does not match the registry: users 2 \(expected 5\)"):
        registry.get(tiny_entry(None, None, users=5), progress=False)
    assert tree(env / "data") == []  # the unverifiable download was removed
    assert registry.get(tiny_entry(None, None), progress=False).joinpath("users.dat").read_bytes() == TINY


def test_damaged_local_copy_is_an_error(env):
    folder = env / "data" / "tiny"
    folder.mkdir(parents=True)
    (folder / "users.dat").write_bytes(TINY.replace(b"2 0 1", b"2 0 2"))
    with pytest.raises(DslrecError, match="sha256 .* the registry expects .*delete it"):
        registry.get(tiny_entry(hashlib.sha256(TINY).hexdigest(), len(TINY)), progress=False)
