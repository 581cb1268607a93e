"""The dict round trip shared by the sub-configurations that ``EnelConfig`` nests (embedding, objective,
aggregation): unknown keys are refused with the list of known ones, and every config is validated on load."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import ClassVar, TypeVar

from ..errors import ConfigError

__all__ = ["SubConfig"]

T = TypeVar("T", bound="SubConfig")


class SubConfig:
    """Mixin for a ``@dataclass`` config. Subclasses set ``kind`` (used in error messages) and ``validate()``."""

    kind: ClassVar[str] = "config"

    @classmethod
    def from_dict(cls: type[T], data: dict | None) -> T:
        """Build and validate from a plain dict (``None`` → the defaults); unknown keys raise ``ConfigError``."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown {cls.kind} field(s) {unknown}; known fields: {sorted(known)}")
        cfg = cls(**data)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:  # pragma: no cover - every subclass overrides it
        """Raise ``ConfigError`` naming the bad field and its allowed values."""
