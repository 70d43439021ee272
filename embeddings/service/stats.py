"""What a piece of embedding work cost and how it went, passed back as a value."""

from collections import Counter
from dataclasses import dataclass, field, fields


@dataclass
class EmbeddingStats:
    requests: int = 0
    inputs: int = 0
    tokens: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    shared: int = 0  # cache misses another call of this process was already sending
    retries: int = 0
    rate_limited: int = 0
    truncated: int = 0
    rate_wait_seconds: float = 0.0
    failures: Counter[str] = field(default_factory=Counter)

    def add(self, other: "EmbeddingStats") -> None:
        for f in fields(self):
            if f.name == "failures":
                self.failures.update(other.failures)
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["failures"] = dict(self.failures)
        data["rate_wait_seconds"] = round(self.rate_wait_seconds, 3)
        return data
