"""The stack's volumes mounted in this container at <root>/<volume>: the
compose bundle's `rumistack` tools service, which has no Docker engine.
Files are written into them directly, and the configuration is checked with
the nginx installed beside rumistack in that image.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

from .errors import StackError
from .files import remove_temporary, replace_atomically, sync_directory
from .layout import AUTH_TMPFS, CONF_DIR, NGINX_RUN_DIR, NGINX_TEST, USER_FILE
from .volumes import File, config_refused, user_file_name

# the environment variable that tells the CLI where the volumes are mounted
VOLUMES_DIR_ENV = "RUMISTACK_VOLUMES_DIR"


class MountedVolumes:
    """Volumes mounted at `root`/<volume>."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def exists(self, volume: str) -> bool:
        return (self.root / volume).is_dir()

    def check(self, files: dict[str, str], others: dict[str, File], test: tuple[str, ...] = NGINX_TEST) -> None:
        """`nginx -t` on the files, placed where nginx.conf includes them from (CONF_DIR in this container),
        with `others` (absolute paths: the certificate) in place."""
        nginx = shutil.which("nginx")
        if nginx is None:
            raise StackError("nginx is not installed here, so the configuration cannot be checked: "
                             "run this in the compose bundle's rumistack service")
        placed = {Path(CONF_DIR) / name: File(text.encode()) for name, text in files.items()}
        for path, file in {**placed, **{Path(p): f for p, f in others.items()}}.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            replace_atomically(path, file.data, file.mode)
        # nginx -t creates the cache and temporary directories inside the tmpfs the nginx container has
        Path(AUTH_TMPFS).mkdir(parents=True, exist_ok=True)
        Path(NGINX_RUN_DIR).mkdir(parents=True, exist_ok=True)
        result = subprocess.run([nginx, *test[1:]], capture_output=True, text=True)
        if result.returncode != 0:
            raise config_refused((result.stderr + result.stdout).strip())

    def _mounted(self, volume: str) -> Path:
        root = self.root / volume
        if not root.is_dir():
            raise StackError(f"the volume {volume} is not mounted at {root}")
        return root

    def read(self, wanted: dict[str, tuple[str, ...]]) -> dict[str, dict[str, bytes]]:
        return {volume: {path: (self.root / volume / path).read_bytes() for path in paths
                         if (self.root / volume / path).is_file()}
                for volume, paths in wanted.items() if self.exists(volume)}

    def nginx_version(self) -> None:
        """Unknown: the nginx that runs the config is another container's. (The one here, which checks
        it, is Debian's 1.22: the config must be in the form every version reads anyway.)"""
        return None

    def write(self, volumes: dict[str, dict[str, File]]) -> None:
        """Each file replaced atomically, with its mode and owner."""
        for volume, files in sorted(volumes.items()):
            root = self._mounted(volume)
            for name, file in sorted(files.items()):
                path = root / name
                path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                replace_atomically(path, file.data, file.mode, file.uid, file.gid)

    def sweep(self) -> int:
        """Remove the temporary files a killed command left in the volumes (run under the project lock)."""
        if self.root.is_dir():
            for directory in [self.root, *(p for p in self.root.rglob("*") if p.is_dir() and not p.is_symlink())]:
                remove_temporary(directory)
        return 0

    def publish_user_file(self, volume: str, file: File) -> None:
        """The same layout as EngineVolumes.publish_user_file: the content as
        htpasswd-<hash>, then the link `htpasswd` switched to it in one
        rename; the file before it stays, older ones go."""
        root = self._mounted(volume)
        name = user_file_name(file.data)
        replace_atomically(root / name, file.data, file.mode, file.uid, file.gid)
        link = root / USER_FILE
        previous = os.readlink(link) if link.is_symlink() else None
        staged = root / f".{USER_FILE}.{secrets.token_hex(4)}"
        os.symlink(name, staged)
        os.replace(staged, link)
        for old in root.glob(f"{USER_FILE}-*"):
            if old.name not in (name, previous):
                old.unlink()
        sync_directory(root)
