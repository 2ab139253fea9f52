"""What a long command reports while it works: the CLI shows it, tests ignore it."""

from __future__ import annotations


class Progress:
    """Silent; the CLI's subclass prints each report."""

    def step(self, message: str) -> None:
        """One step begins or ends: a line of its own."""

    def layer(self, image: str, layer: str, status: str, current: int | None, total: int | None) -> None:
        """A layer of an image being pulled: its status and, while downloading, bytes so far."""

    def waiting(self, states: dict[str, str], elapsed: float) -> None:
        """Services not healthy yet: {service: its health}, `elapsed` seconds into the wait."""

    def transfer(self, name: str, done: int) -> None:
        """`done` bytes of `name` (a part of a backup) written so far; its total is not known before."""
