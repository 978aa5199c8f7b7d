"""The one shape every deployment-target checker returns: where each op runs, and why not on the accelerator.

The Edge TPU predictor (``edgetpu.check``) and the NNAPI checker (``pipeline.targets.nnapi``) both
answer ``check(model) -> TargetReport``; what only one of them knows (the parameter cache, the API
level) lives in ``details``. ``to_dict`` keeps the keys each verb's ``--json`` has always printed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

CPU = "cpu"


@dataclass(frozen=True)
class Issue:
    """Why an op stays on the CPU, and what would move it to the accelerator."""

    reason: str
    fix: str = ""


@dataclass(frozen=True)
class OpPlacement:
    index: int
    name: str
    device: str  # the target's accelerator ("edgetpu", "nnapi") or "cpu"
    reason: str = ""
    fix: str = ""

    @property
    def accelerated(self) -> bool:
        return self.device != CPU


@dataclass
class TargetReport:
    target: str
    model: str
    placements: list[OpPlacement]
    model_errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)

    @property
    def total_ops(self) -> int:
        return len(self.placements)

    @property
    def accelerated_ops(self) -> int:
        return sum(p.accelerated for p in self.placements)

    @property
    def cpu_ops(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for p in self.placements:
            if not p.accelerated:
                counts[p.name] = counts.get(p.name, 0) + 1
        return counts

    @property
    def reasons(self) -> list[str]:
        """One line per distinct (op, reason) left on the CPU, in graph order."""
        lines: list[str] = []
        for p in self.placements:
            if not p.accelerated:
                line = f"{p.name}: {p.reason}" + (f" -> {p.fix}" if p.fix else "")
                if line not in lines:
                    lines.append(line)
        return lines

    @property
    def fully_mapped(self) -> bool:
        return not self.model_errors and self.accelerated_ops == self.total_ops

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "model": self.model,
            "total_ops": self.total_ops,
            "accelerated_ops": self.accelerated_ops,
            "fully_mapped": self.fully_mapped,
            "cpu_ops": self.cpu_ops,
            "reasons": self.reasons,
            "model_errors": list(self.model_errors),
            "warnings": list(self.warnings),
            "notes": list(self.notes),
            "placements": [asdict(p) for p in self.placements],
            **self.details,
        }
