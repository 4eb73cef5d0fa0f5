"""hf_xet's upload session as huggingface_hub drives it, storing the bytes in the local Hub (which has no Xet
storage): the Python side of huggingface_hub's Xet upload path runs as in production, only the Rust transfer is
stood in. ``interrupt`` uploads raise KeyboardInterrupt, as hf_xet does when the process receives SIGINT."""

import contextlib
import dataclasses
import hashlib
from pathlib import Path


@dataclasses.dataclass
class _Uploaded:
    sha256: str

    def result(self):
        return self

    @property
    def xet_info(self):
        return self


class XetStandIn:
    def __init__(self, hub, repo_id: str, interrupt: int = 0):
        self.hub, self.repo_id, self.interrupt = hub, repo_id, interrupt
        self.uploads: list[str] = []  # token refresh URLs of the upload commits, one per upload

    @contextlib.contextmanager
    def new_upload_commit(self, token_refresh_url, token_refresh_headers, custom_headers, progress_callback):
        self.uploads.append(token_refresh_url)
        if self.interrupt:
            self.interrupt -= 1
            raise KeyboardInterrupt
        yield self

    def start_upload_file(self, path: str, sha256) -> _Uploaded:
        return self.start_upload_bytes(Path(path).read_bytes(), sha256)

    def start_upload_bytes(self, data: bytes, sha256) -> _Uploaded:
        stored = self.hub.store_lfs(self.repo_id, data)
        assert stored == hashlib.sha256(data).hexdigest()
        return _Uploaded(stored)
