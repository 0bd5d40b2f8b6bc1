"""The input of an experiment read-out: one arm's totals."""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator


class ArmInput(BaseModel):
    """One arm's totals since the experiment began.

    ``revenue_sq`` is the sum over entrants of each entrant's revenue squared; with it the revenue intervals use
    the observed spread of revenue, without it they assume every conversion was worth the arm's mean (which
    ignores the spread of order values and so gives narrower intervals).
    """

    name: str = Field(min_length=1)
    entered: int = Field(ge=0)
    converted: int = Field(ge=0)
    revenue: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    revenue_sq: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    holdout: bool = False

    @model_validator(mode="after")
    def _converted_within_entered(self) -> ArmInput:
        if self.converted > self.entered:
            raise ValueError("converted cannot exceed entered")
        return self
