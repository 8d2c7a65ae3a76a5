"""The base of every recipe section: unknown keys are errors, assignments are validated."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """A pydantic model that rejects unknown keys (a typo must not fall back to a default silently)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
