"""A stand-in for the stack's volumes (rumistack.publish.Volumes) that keeps
what is written and records every call, for fast tests of what is decided
and written without a Docker engine."""

from __future__ import annotations

from rumistack.layout import NGINX_TEST
from rumistack.volumes import File


class RecordingVolumes:
    """Volumes that keep what is written, and a check that accepts everything.

    `existing`: the volumes there are; `contents`: {volume: {path: bytes}} they hold
    at the start; `version`: what nginx_version answers. `calls` names each call, in order."""

    def __init__(self, existing=("nginx-config", "nginx-auth"), contents=None, version=None):
        self.existing = set(existing) | set(contents or {})
        self.version = version
        self.calls, self.checked, self.writes, self.user_files = [], [], [], {}
        self.written = {volume: {path: File(data) for path, data in files.items()}
                        for volume, files in (contents or {}).items()}

    def exists(self, volume):
        self.calls.append("exists")
        return volume in self.existing

    def check(self, files, others, test=NGINX_TEST):
        self.calls.append("check")
        self.checked.append((files, others))

    def read(self, wanted):
        self.calls.append("read")
        return {volume: {path: self.written[volume][path].data for path in paths if path in self.written[volume]}
                for volume, paths in wanted.items() if volume in self.written}

    def nginx_version(self):
        self.calls.append("nginx_version")
        return self.version

    def write(self, volumes):
        self.calls.append("write")
        self.writes.append(sorted(volumes))
        for volume, files in volumes.items():
            self.written.setdefault(volume, {}).update(files)

    def publish_user_file(self, volume, file):
        self.calls.append("publish_user_file")
        self.user_files[volume] = file
