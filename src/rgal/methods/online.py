"""The schedule every online method shares: how many student steps per generator step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..config import option


@dataclass
class OnlineSettings:
    """Settings of the online methods (DAFL, ZSKT, DFAD, DFQ)."""

    section: ClassVar[str] = "online"
    student_steps_per_g: int = option(5, "student steps per generator step", lo=1,
                                      hi=1_000_000)
