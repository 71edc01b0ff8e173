"""What Udesk's two products' settings share."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from etl.core.config import RateBudget


class UdeskRateLimit(RateBudget):
    """Not in the seeds; the vendor's public docs give 60 requests per minute per account."""

    per_minute: Annotated[int, Field(gt=0)] = 60
