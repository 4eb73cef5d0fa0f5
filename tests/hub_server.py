"""A local, in-memory Hugging Face Hub for tests.

The real ``huggingface_hub`` client (``HfApi``, ``hf_hub_download``, ``snapshot_download``...) talks to it
unchanged when given ``endpoint=server.url`` and run with ``HF_HUB_DISABLE_XET=1`` (uploads then use the
legacy LFS protocol, downloads the plain ``/resolve`` route). Stdlib only.

Covered: whoami, repo create/delete/info, preupload, LFS batch + basic PUT upload, NDJSON commits (atomic,
``parentCommit`` checked), tree listing, refs, tags, HEAD/GET ``/resolve`` with the headers ``hf_hub_download``
needs, README YAML validation. Model and dataset repos; no orgs, no pull requests, no Xet.

Auth follows the Hub: an unknown/revoked token is 401 everywhere, private repos are invisible (404
RepoNotFound) to anyone but their owner, writes need the owner's token with role "write" (403 otherwise),
gated repos answer downloads with 403 GatedRepo to anyone but the owner.

Faults (``server.faults``, mutable at runtime) simulate a flaky Hub: 5xx errors, dropped connections,
latency, bandwidth limits, commits that are applied but answered with a 500, and stalled connections (a
request read and never answered, the socket left open).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import http.server
import itertools
import json
import random
import re
import secrets
import socket
import sys
import threading
import time
import traceback
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

# The Hub stores big or binary files through LFS; smaller text files go inline in the commit.
LFS_THRESHOLD = 10 * 1024 * 1024
_REPO_TYPES = {"models": "model", "datasets": "dataset", None: "model"}
_URL_PREFIX = {"model": "", "dataset": "datasets/"}


@dataclasses.dataclass
class Faults:
    """Fault injection settings; every field can be changed while the server runs.

    All faults only hit requests whose URL path matches ``paths`` (``re.search``; None = every request).
    Random draws come from ``random.Random(seed)``, reseeded when ``server.faults`` is assigned.
    """

    error_rate: float = 0.0  # fraction of requests answered with `error_status` before being handled
    error_status: int = 503  # 503: the one status every client version retries
    retry_after_s: float | None = None  # sent as Retry-After with the injected errors (429: rate limited)
    latency_s: float = 0.0  # sleep before answering
    bandwidth_bps: float | None = None  # bytes/s cap on request-body reads and response writes
    drop_rate: float = 0.0  # fraction of requests whose connection is closed without any response
    commit_500_after_apply: int = 0  # next N commits are applied, then answered 500 (True == once)
    stall_next: int = 0  # next N requests are read and never answered (a black hole), until the server stops
    paths: str | None = None
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class _Blob:
    data: bytes
    lfs: bool
    sha256: str
    oid: str  # git blob id: of the content, or of the LFS pointer for LFS files
    pointer_size: int

    @classmethod
    def make(cls, data: bytes, lfs: bool) -> _Blob:
        sha = hashlib.sha256(data).hexdigest()
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(data)}\n".encode()
        stored = pointer if lfs else data
        oid = hashlib.sha1(b"blob %d\0" % len(stored) + stored).hexdigest()
        return cls(data, lfs, sha, oid, len(stored) if lfs else 0)

    @property
    def upload_oid(self) -> str:
        # What the client compares against to skip unchanged files (`CommitOperationAdd._local_oid`).
        return self.sha256 if self.lfs else self.oid


@dataclasses.dataclass
class _Commit:
    oid: str
    message: str
    tree: dict[str, _Blob]
    added: list[str]
    deleted: list[str]
    date: str


@dataclasses.dataclass
class _Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    gated: bool = False
    commits: list[_Commit] = dataclasses.field(default_factory=list)
    branches: dict[str, str] = dataclasses.field(default_factory=dict)
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    lfs: dict[str, bytes] = dataclasses.field(default_factory=dict)  # sha256 -> content

    @property
    def owner(self) -> str:
        return self.repo_id.split("/")[0]

    def commit(self, oid: str) -> _Commit:
        return next(c for c in self.commits if c.oid == oid)

    def resolve(self, revision: str) -> _Commit | None:
        oid = self.branches.get(revision) or self.tags.get(revision)
        if oid is None and re.fullmatch(r"[0-9a-f]{40}", revision):
            oid = revision
        return next((c for c in self.commits if c.oid == oid), None)


class _HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class HubServer:
    """In-memory Hub on 127.0.0.1. ``tokens`` maps token -> {"user": name, "role": "write" | "read"}.

    ``port=0`` picks a free port. A fixed port lets HF_ENDPOINT be set before huggingface_hub is imported,
    which clients 1.0-1.3 need to commit to a custom endpoint (their CommitInfo parses commitUrl against it).
    """

    def __init__(self, tokens: dict[str, dict], port: int = 0):
        self._tokens = {token: dict(info) for token, info in tokens.items()}
        self._lock = threading.RLock()
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._uploads: dict[str, tuple[tuple[str, str], str, int]] = {}  # ticket -> (repo key, sha256, size)
        self._log: list[tuple[str, str, int]] = []
        self._offered: list[list[str]] = []  # the paths of each preupload request (what a client hashed to commit)
        self._counter = itertools.count()
        self._faults = Faults()
        self._rng = random.Random(0)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()  # releases stalled requests
        self._port = port

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> HubServer:
        """Serve in a daemon thread. After a stop() it rebinds the same port, keeping all state."""
        if self._httpd is None:
            self._stopped.clear()
            self._httpd = _Server(("127.0.0.1", self._port), _Handler, self)
            self._port = self._httpd.server_address[1]
            self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut open connections: clients get "connection refused" until start()."""
        httpd, self._httpd = self._httpd, None
        self._stopped.set()
        if httpd is not None:
            httpd.shutdown()
            httpd.close_connections()
            httpd.server_close()
            self._thread.join(timeout=5)

    # The Hub going down and coming back: same port, same repos.
    down = stop
    up = start

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if not self._port:
            raise RuntimeError("server not started")
        return f"http://127.0.0.1:{self._port}"

    # ------------------------------------------------------------- test controls

    @property
    def faults(self) -> Faults:
        return self._faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        with self._lock:
            self._faults, self._rng = faults, random.Random(faults.seed)

    def revoke(self, token: str) -> None:
        with self._lock:
            self._tokens.pop(token, None)

    def make_gated(self, repo_id: str, repo_type: str = "model") -> None:
        with self._lock:
            self._repo(repo_type, repo_id).gated = True

    def create_repo(
        self, repo_id: str, owner_token: str | None = None, private: bool = False, repo_type: str = "model"
    ) -> str:
        """Create a repo directly (no HTTP). If given, ``owner_token`` must belong to the namespace's user."""
        if owner_token is not None and self._tokens[owner_token]["user"] != repo_id.split("/")[0]:
            raise ValueError(f"token of {self._tokens[owner_token]['user']!r} does not own {repo_id!r}")
        with self._lock:
            if (repo_type, repo_id) in self._repos:
                raise ValueError(f"{repo_type} repo {repo_id} already exists")
            self._new_repo(repo_type, repo_id, private)
        return self._repo_url(repo_type, repo_id)

    def store_lfs(self, repo_id: str, data: bytes, repo_type: str = "model") -> str:
        """Stores ``data`` as an LFS object of the repo without HTTP, as the Hub's Xet storage does for the bytes
        hf_xet uploads; returns its sha256, which a commit then names."""
        sha = hashlib.sha256(data).hexdigest()
        with self._lock:
            self._repo(repo_type, repo_id).lfs[sha] = data
        return sha

    # ---------------------------------------------------------------- inspection

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        with self._lock:
            commit = self._repo(repo_type, repo_id).resolve(revision)
            if commit is None:
                raise KeyError(f"unknown revision {revision!r} of {repo_id}")
            return {path: blob.data for path, blob in commit.tree.items()}

    def commits(self, repo_id: str, repo_type: str = "model") -> list[dict]:
        """All commits, oldest first; the first one is the empty "initial commit" made at creation."""
        with self._lock:
            return [
                {"oid": c.oid, "message": c.message, "files_added": list(c.added), "files_deleted": list(c.deleted)}
                for c in self._repo(repo_type, repo_id).commits
            ]

    def is_private(self, repo_id: str, repo_type: str = "model") -> bool:
        with self._lock:
            return self._repo(repo_type, repo_id).private

    @property
    def request_log(self) -> list[tuple[str, str, int]]:
        """(method, url path, status) per request, in order; status 0 means the connection was dropped, -1 that the
        request was stalled."""
        with self._lock:
            return list(self._log)

    @property
    def offered(self) -> list[list[str]]:
        """The file paths each preupload request offered, in order: what a client hashed and meant to send for a
        commit (huggingface_hub drops unchanged files only after this, so a re-offered file cost the client a
        read of its bytes)."""
        with self._lock:
            return [list(paths) for paths in self._offered]

    # ------------------------------------------------------------------ internals

    def _repo(self, repo_type: str, repo_id: str) -> _Repo:
        try:
            return self._repos[(repo_type, repo_id)]
        except KeyError:
            raise KeyError(f"no {repo_type} repo {repo_id}") from None

    def _repo_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.url}/{_URL_PREFIX[repo_type]}{repo_id}"

    def _new_repo(self, repo_type: str, repo_id: str, private: bool) -> None:
        repo = _Repo(repo_type, repo_id, private, _now())
        self._repos[(repo_type, repo_id)] = repo
        # A fresh Hub repo already has a commit, so `main` resolves and repo_info has a sha.
        self._append_commit(repo, "initial commit", {}, [], [])

    def _append_commit(
        self,
        repo: _Repo,
        message: str,
        tree: dict[str, _Blob],
        added: list[str],
        deleted: list[str],
        branch: str = "main",
    ) -> _Commit:
        parent = repo.branches.get(branch, "")
        listing = "".join(f"{path}\0{blob.oid}\n" for path, blob in sorted(tree.items()))
        seed = f"{parent}\n{message}\n{listing}\n{next(self._counter)}"
        commit = _Commit(hashlib.sha1(seed.encode()).hexdigest(), message, tree, added, deleted, _now())
        repo.commits.append(commit)
        repo.branches[branch] = commit.oid
        return commit

    def _user(self, authorization: str | None) -> dict | None:
        """Token info of the caller, None if anonymous; 401 for a token the Hub does not know."""
        if not authorization:
            return None
        token = authorization.removeprefix("Bearer ").strip()
        with self._lock:
            info = self._tokens.get(token)
        if info is None:
            raise _HubError(401, "Invalid credentials in Authorization header")
        return info

    def _readable(self, user: dict | None, repo_type: str, repo_id: str) -> _Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None or (repo.private and (user is None or user["user"] != repo.owner)):
            # Like the Hub: a private repo is indistinguishable from a missing one.
            raise _HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _writable(self, user: dict | None, repo_type: str, repo_id: str) -> _Repo:
        repo = self._readable(user, repo_type, repo_id)
        if user is None or user["user"] != repo.owner or user["role"] != "write":
            who = "anonymous user" if user is None else f"{user['role']} token of {user['user']!r}"
            raise _HubError(403, f"You don't have the rights to write to {repo_id} ({who})")
        return repo

    def _fault_draw(self, path: str) -> tuple[Faults | None, bool, bool]:
        """(faults if they apply to `path`, drop?, error?). Always two draws so a seed replays identically."""
        with self._lock:
            faults = self._faults
            if faults.paths is not None and not re.search(faults.paths, path):
                return None, False, False
            drop, error = self._rng.random(), self._rng.random()
        return faults, drop < faults.drop_rate, error < faults.error_rate

    def _take(self, faults: Faults | None, countdown: str) -> bool:
        """Takes one of the requests ``faults.<countdown>`` has left to hit (False when none is left)."""
        with self._lock:
            if faults is None or getattr(faults, countdown) <= 0:
                return False
            setattr(faults, countdown, getattr(faults, countdown) - 1)
            return True

    def _record(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self._log.append((method, path, status))


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, handler, hub: HubServer):
        self.hub = hub
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, handler)

    # Track sockets so stop() can cut keep-alive connections whose handler threads would otherwise linger.
    def process_request(self, request, client_address):
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address):
        # Peers vanishing (client timeouts, stop() cutting sockets) are expected; anything else is a bug.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


_API = r"/api/(?P<t>models|datasets)/(?P<repo>[^/]+/[^/]+)"
_GIT = r"/(?:(?P<t>datasets)/)?(?P<repo>[^/]+/[^/]+?)"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response carries Content-Length
    timeout = 60  # idle keep-alive connections release their thread eventually
    server: _Server

    ROUTES = [
        (method, re.compile(pattern), name)
        for method, pattern, name in [
            ("GET", r"/api/whoami-v2", "whoami"),
            ("POST", r"/api/repos/create", "create_repo"),
            ("DELETE", r"/api/repos/delete", "delete_repo"),
            ("POST", r"/api/validate-yaml", "validate_yaml"),
            ("GET", _API + r"(?:/revision/(?P<rev>[^/]+))?", "repo_info"),
            ("POST", _API + r"/preupload/(?P<rev>[^/]+)", "preupload"),
            ("POST", _API + r"/commit/(?P<rev>[^/]+)", "commit"),
            ("GET", _API + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?", "tree"),
            ("GET", _API + r"/refs", "refs"),
            ("POST", _API + r"/tag/(?P<rev>[^/]+)", "tag"),
            ("POST", _API + r"/branch/(?P<rev>[^/]+)", "branch"),
            ("POST", _GIT + r"\.git/info/lfs/objects/batch", "lfs_batch"),
            ("PUT", r"/lfs-upload/(?P<ticket>[0-9a-f]+)", "lfs_put"),
            ("GET", _GIT + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
            ("HEAD", _GIT + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
        ]
    ]

    def log_message(self, format, *args):
        pass  # no per-request lines on stderr

    def do_GET(self):
        self._handle()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    # ------------------------------------------------------------ request flow

    def _handle(self) -> None:
        hub = self.server.hub
        url = urlsplit(self.path)
        self.url_path, self.query = url.path, parse_qs(url.query)
        faults, drop, error = hub._fault_draw(self.url_path)
        self.faults = faults
        self.bandwidth = faults.bandwidth_bps if faults else None
        # Read the whole body first, whatever the answer: leftovers would corrupt the next keep-alive request.
        self.body = self._read_body()
        if faults and faults.latency_s:
            time.sleep(faults.latency_s)
        if drop:
            self.close_connection = True  # the socket closes with no response at all
            hub._record(self.command, self.url_path, 0)
            return
        if hub._take(faults, "stall_next"):
            hub._record(self.command, self.url_path, -1)
            hub._stopped.wait()  # no byte, no close: what a proxy that swallows a connection does
            self.close_connection = True
            return
        try:
            if error:
                after = {"Retry-After": f"{faults.retry_after_s:g}"} if faults.retry_after_s is not None else None
                raise _HubError(faults.error_status, "Injected server error", headers=after)
            self._dispatch()
        except _HubError as e:
            self._error(e)
        except OSError:
            raise  # the client went away mid-response: nothing left to answer
        except Exception:
            traceback.print_exc()
            self._error(_HubError(500, "Internal server error"))

    def _dispatch(self) -> None:
        for method, pattern, name in self.ROUTES:
            match = pattern.fullmatch(self.url_path)
            if method == self.command and match:
                params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None and k != "t"}
                self.repo_type = _REPO_TYPES[match.groupdict().get("t")]
                self.user = self.server.hub._user(self.headers.get("Authorization"))
                getattr(self, f"_{name}")(**params)
                return
        raise _HubError(404, f"No route for {self.command} {self.url_path}")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                parts.append(self._read_exact(size))
                self.rfile.readline()  # CRLF after each chunk
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(parts)
        return self._read_exact(int(self.headers.get("Content-Length") or 0))

    def _read_exact(self, n: int) -> bytes:
        if not self.bandwidth:
            return self.rfile.read(n)
        parts, got, start = [], 0, time.monotonic()
        while got < n:
            part = self.rfile.read(min(self._chunk(), n - got))
            if not part:
                break
            parts.append(part)
            got += len(part)
            self._throttle(start, got)
        return b"".join(parts)

    def _chunk(self) -> int:
        return max(1024, int(self.bandwidth / 20))

    def _throttle(self, start: float, nbytes: int) -> None:
        time.sleep(max(0.0, start + nbytes / self.bandwidth - time.monotonic()))

    def _send(
        self, status: int, body: bytes = b"", headers: dict | None = None, content_type: str = "application/json"
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))  # also for HEAD: the size GET would send
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.server.hub._record(self.command, self.url_path, status)
        if self.command == "HEAD":
            return
        if not self.bandwidth:
            self.wfile.write(body)
            return
        start = time.monotonic()
        for offset in range(0, len(body), self._chunk()):
            self.wfile.write(body[offset : offset + self._chunk()])
            self._throttle(start, min(len(body), offset + self._chunk()))

    def _json(self, payload: Any, status: int = 200, content_type: str = "application/json") -> None:
        self._send(status, json.dumps(payload).encode(), content_type=content_type)

    def _error(self, e: _HubError) -> None:
        # hf_raise_for_status maps X-Error-Code to RepositoryNotFoundError, GatedRepoError, ...
        headers = {"X-Error-Message": e.message, **e.headers}
        if e.code:
            headers["X-Error-Code"] = e.code
        self._send(e.status, json.dumps({"error": e.message}).encode(), headers)

    def _payload(self) -> dict:
        try:
            return json.loads(self.body or b"{}")
        except ValueError:
            raise _HubError(400, "Body is not valid JSON") from None

    def _resolve_or_404(self, repo: _Repo, rev: str) -> _Commit:
        commit = repo.resolve(rev)
        if commit is None:
            raise _HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return commit

    # ---------------------------------------------------------------- endpoints

    def _whoami(self) -> None:
        if self.user is None:
            raise _HubError(401, "Invalid credentials in Authorization header")
        name, role = self.user["user"], self.user["role"]
        self._json(
            {
                "type": "user",
                "id": name,
                "name": name,
                "fullname": name,
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": role}},
            }
        )

    def _create_repo(self) -> None:
        payload = self._payload()
        namespace = payload.get("organization") or (self.user or {}).get("user")
        repo_type = payload.get("type") or "model"
        if repo_type not in _URL_PREFIX:
            raise _HubError(400, f"Repo type {repo_type!r} not supported by the test hub")
        if self.user is None or self.user["user"] != namespace or self.user["role"] != "write":
            raise _HubError(403, f"You don't have the rights to create a repo under {namespace!r}")
        repo_id = f"{namespace}/{payload['name']}"
        hub = self.server.hub
        url = hub._repo_url(repo_type, repo_id)
        # huggingface_hub 1.x sends `private`, 2.x sends `visibility`.
        private = bool(payload.get("private")) or payload.get("visibility") == "private"
        with hub._lock:
            if (repo_type, repo_id) in hub._repos:
                self._json({"error": "You already created this repo", "url": url}, status=409)
                return
            hub._new_repo(repo_type, repo_id, private)
        self._json({"url": url, "name": repo_id, "id": repo_id})

    def _delete_repo(self) -> None:
        payload = self._payload()
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or (self.user or {}).get('user')}/{payload['name']}"
        hub = self.server.hub
        with hub._lock:
            hub._writable(self.user, repo_type, repo_id)
            del hub._repos[(repo_type, repo_id)]
        self._json({})

    def _validate_yaml(self) -> None:
        # Called by create_commit whenever README.md is part of the commit; we accept any metadata.
        self._json({"errors": [], "warnings": []})

    def _repo_info(self, repo: str, rev: str = "main") -> None:
        hub = self.server.hub
        with hub._lock:
            r = hub._readable(self.user, self.repo_type, repo)
            commit = self._resolve_or_404(r, rev)
            siblings = [
                {
                    "rfilename": path,
                    "size": len(blob.data),
                    "blobId": blob.oid,
                    **(
                        {"lfs": {"size": len(blob.data), "sha256": blob.sha256, "pointerSize": blob.pointer_size}}
                        if blob.lfs
                        else {}
                    ),
                }
                for path, blob in sorted(commit.tree.items())
            ]
            self._json(
                {
                    "_id": repo,
                    "id": repo,
                    "author": r.owner,
                    "sha": commit.oid,
                    "private": r.private,
                    "gated": "manual" if r.gated else False,
                    "disabled": False,
                    "lastModified": commit.date,
                    "createdAt": r.created_at,
                    "downloads": 0,
                    "likes": 0,
                    "tags": [],
                    "siblings": siblings,
                }
            )

    def _preupload(self, repo: str, rev: str) -> None:
        files = self._payload().get("files", [])
        hub = self.server.hub
        with hub._lock:
            tree = self._resolve_or_404(hub._writable(self.user, self.repo_type, repo), rev).tree
            hub._offered.append([f["path"] for f in files])
        answer = []
        for f in files:
            lfs = f["size"] >= LFS_THRESHOLD or b"\0" in base64.b64decode(f.get("sample", ""))
            existing = tree.get(f["path"])
            answer.append(
                {
                    "path": f["path"],
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    # Lets the client drop unchanged files, which is what makes a retried commit a no-op.
                    "oid": existing.upload_oid if existing else None,
                }
            )
        self._json({"files": answer})

    def _lfs_batch(self, repo: str) -> None:
        payload = self._payload()
        if payload.get("operation") != "upload":
            raise _HubError(400, "The test hub only implements LFS uploads")
        hub = self.server.hub
        objects = []
        with hub._lock:
            r = hub._writable(self.user, self.repo_type, repo)
            for obj in payload.get("objects", []):
                entry = {"oid": obj["oid"], "size": obj["size"]}
                if obj["oid"] not in r.lfs:  # stored objects get no action: the client skips them
                    ticket = secrets.token_hex(16)
                    hub._uploads[ticket] = ((r.repo_type, r.repo_id), obj["oid"], obj["size"])
                    # The client PUTs without auth headers (it expects a pre-signed URL): the ticket is the auth.
                    entry.update(authenticated=True, actions={"upload": {"href": f"{hub.url}/lfs-upload/{ticket}"}})
                objects.append(entry)
        self._json(
            {"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
            content_type="application/vnd.git-lfs+json",
        )

    def _lfs_put(self, ticket: str) -> None:
        hub = self.server.hub
        with hub._lock:
            upload = hub._uploads.get(ticket)
        if upload is None:
            raise _HubError(403, "Unknown or expired upload URL")
        key, oid, size = upload
        if len(self.body) != size or hashlib.sha256(self.body).hexdigest() != oid:
            raise _HubError(400, f"Uploaded content does not match oid {oid} / size {size}")
        with hub._lock:
            if key not in hub._repos:
                raise _HubError(404, "Repository not found", "RepoNotFound")
            hub._repos[key].lfs[oid] = self.body
        self._send(200)

    def _commit(self, repo: str, rev: str) -> None:
        if "create_pr" in self.query:
            raise _HubError(400, "The test hub does not implement pull requests")
        try:
            lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        except ValueError:
            raise _HubError(400, "Commit payload is not valid NDJSON") from None
        if not lines or lines[0].get("key") != "header":
            raise _HubError(400, "Commit payload must start with a header line")
        header, ops = lines[0]["value"], lines[1:]
        hub = self.server.hub
        with hub._lock:  # check + apply under one lock: a commit is all-or-nothing
            r = hub._writable(self.user, self.repo_type, repo)
            if rev not in r.branches:
                raise _HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            head = r.branches[rev]
            if header.get("parentCommit") not in (None, head):
                raise _HubError(412, "A commit has happened since. Please refresh and try again.")
            tree, added, deleted = self._apply_ops(r, dict(r.commit(head).tree), ops)
            message = header.get("summary", "")
            commit = hub._append_commit(r, message, tree, added, deleted, branch=rev)
        if hub._take(self.faults, "commit_500_after_apply"):
            raise _HubError(500, "Injected error after the commit was applied")
        self._json(
            {
                "success": True,
                "commitOid": commit.oid,
                "hookOutput": "",
                "pullRequestUrl": None,
                "commitUrl": f"{hub._repo_url(r.repo_type, r.repo_id)}/commit/{commit.oid}",
            }
        )

    @staticmethod
    def _apply_ops(repo: _Repo, tree: dict[str, _Blob], ops: list[dict]):
        """Apply commit operations in order to a copy of the tree; raising leaves the repo untouched."""
        added, deleted = [], []
        for op in ops:
            key, value = op.get("key"), op.get("value", {})
            path = value.get("path", "")
            if not path or path.startswith("/") or ".." in path.split("/"):
                raise _HubError(400, f"Invalid path {path!r}")
            if key == "file":
                tree[path] = _Blob.make(base64.b64decode(value["content"]), lfs=False)
                added.append(path)
            elif key == "lfsFile":
                data = repo.lfs.get(value["oid"])
                if data is None:
                    raise _HubError(400, f"LFS object {value['oid']} for {path} was never uploaded")
                tree[path] = _Blob.make(data, lfs=True)
                added.append(path)
            elif key == "deletedFile":
                if tree.pop(path, None) is None:
                    raise _HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                deleted.append(path)
            elif key == "deletedFolder":
                inside = [p for p in tree if p.startswith(path.rstrip("/") + "/")]
                if not inside:
                    raise _HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                for p in inside:
                    del tree[p]
                deleted.extend(inside)
            else:
                raise _HubError(400, f"Unknown commit operation {key!r}")
        return tree, added, deleted

    def _tree(self, repo: str, rev: str, path: str = "") -> None:
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        hub = self.server.hub
        with hub._lock:
            tree = self._resolve_or_404(hub._readable(self.user, self.repo_type, repo), rev).tree
        prefix = f"{path.strip('/')}/" if path.strip("/") else ""
        if prefix and not any(p.startswith(prefix) for p in tree):
            raise _HubError(404, f"{path} does not exist on {rev}", "EntryNotFound")
        folders, entries = set(), []
        for p, blob in sorted(tree.items()):
            if not p.startswith(prefix):
                continue
            parts = p[len(prefix) :].split("/")
            # Every folder between `prefix` and the file (only the first one when not recursive).
            for depth in range(1, len(parts) if recursive else min(2, len(parts))):
                folders.add(prefix + "/".join(parts[:depth]))
            if recursive or len(parts) == 1:
                entry = {"type": "file", "path": p, "size": len(blob.data), "oid": blob.oid}
                if blob.lfs:
                    entry["lfs"] = {"oid": blob.sha256, "size": len(blob.data), "pointerSize": blob.pointer_size}
                entries.append(entry)
        entries += [
            {"type": "directory", "path": f, "size": 0, "oid": hashlib.sha1(f.encode()).hexdigest()}
            for f in sorted(folders)
        ]
        self._json(entries)

    def _refs(self, repo: str) -> None:
        hub = self.server.hub
        with hub._lock:
            r = hub._readable(self.user, self.repo_type, repo)
            self._json(
                {
                    "branches": [
                        {"name": n, "ref": f"refs/heads/{n}", "targetCommit": o} for n, o in r.branches.items()
                    ],
                    "tags": [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": o} for n, o in r.tags.items()],
                    "converts": [],
                    "pullRequests": [],
                }
            )

    def _tag(self, repo: str, rev: str) -> None:
        tag = self._payload().get("tag")
        if not tag:
            raise _HubError(400, "Missing tag name")
        hub = self.server.hub
        with hub._lock:
            r = hub._writable(self.user, self.repo_type, repo)
            commit = self._resolve_or_404(r, rev)
            if tag in r.tags:
                raise _HubError(409, f"Tag {tag} already exists")
            r.tags[tag] = commit.oid
        self._json({"name": tag, "commit": commit.oid})

    def _branch(self, repo: str, rev: str) -> None:
        start = self._payload().get("startingPoint") or "main"
        hub = self.server.hub
        with hub._lock:
            r = hub._writable(self.user, self.repo_type, repo)
            if rev in r.branches:
                raise _HubError(409, f"Reference refs/heads/{rev} already exists")
            commit = self._resolve_or_404(r, start)
            r.branches[rev] = commit.oid
        self._json({"name": rev, "ref": f"refs/heads/{rev}", "targetCommit": commit.oid})

    def _resolve(self, repo: str, rev: str, path: str) -> None:
        hub = self.server.hub
        with hub._lock:
            r = hub._readable(self.user, self.repo_type, repo)
            commit = self._resolve_or_404(r, rev)
            if r.gated and (self.user is None or self.user["user"] != r.owner):
                raise _HubError(
                    403,
                    f"Access to {repo} is restricted: it is gated and you are not in the authorized list.",
                    "GatedRepo",
                )
        blob = commit.tree.get(path)
        if blob is None:
            # X-Repo-Commit lets the client cache the miss (.no_exist).
            raise _HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        headers = {
            "X-Repo-Commit": commit.oid,
            "ETag": f'"{blob.sha256 if blob.lfs else blob.oid}"',
            "Accept-Ranges": "bytes",
        }
        if blob.lfs:
            headers.update({"X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": str(len(blob.data))})
        body, status = blob.data, 200
        # Ranges let an interrupted download resume (http_get sends `bytes=N-`).
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match and int(match[1]) < len(blob.data):
            start = int(match[1])
            end = min(int(match[2]) if match[2] else len(blob.data) - 1, len(blob.data) - 1)
            body, status = blob.data[start : end + 1], 206
            headers["Content-Range"] = f"bytes {start}-{end}/{len(blob.data)}"
        self._send(status, body, headers, content_type="application/octet-stream")
