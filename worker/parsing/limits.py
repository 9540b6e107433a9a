"""Bounds on the work one request may cost the parser."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ParseLimits(BaseModel):
    """Inputs past these bounds are refused with a `ParseError` instead of being read."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_bytes: int = Field(default=25 * 1024 * 1024, gt=0, description="Whole input.")
    max_header_bytes: int = Field(default=256 * 1024, gt=0, description="Email header block.")
    max_parts: int = Field(default=200, gt=0, description="MIME parts in one email.")
    max_text_chars: int = Field(default=200_000, gt=0, description="Readable text kept.")
    max_form_bytes: int = Field(default=1024 * 1024, gt=0, description="Whole e-form JSON.")
