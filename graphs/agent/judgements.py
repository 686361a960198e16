"""The model judgements of plan, analyze and refine, as schemas the model is constrained to.

The bounds are what keeps a judgement short: with constrained decoding the model cannot write more
queries, longer queries or a longer "missing" than these allow, so a judgement costs a few dozen
tokens, and a model that wanders still stops at the closing brace.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

Query = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=80)]


class PlanJudgement(BaseModel):
    """The latest question rewritten to stand alone, and one to three search queries for it."""

    question: str = Field(max_length=300, description="The latest question, rewritten to stand alone.")
    queries: list[Query] = Field(min_length=1, max_length=3, description="Short search queries.")


class AnalyzeJudgement(BaseModel):
    """Which numbered excerpts help answer the question, whether they suffice, what is missing."""

    relevant: list[Annotated[int, Field(ge=1, le=99)]] = Field(max_length=12, description="Excerpt numbers.")
    sufficient: bool = Field(description="Whether the relevant excerpts are enough to answer.")
    missing: str = Field(default="", max_length=160, description="What is still needed, if anything.")


class RefineJudgement(BaseModel):
    """New search queries for what is still missing."""

    queries: list[Query] = Field(min_length=1, max_length=3, description="New, different search queries.")
