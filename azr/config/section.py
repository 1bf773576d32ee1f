"""The base class of every section of the config tree.

Invariants every section keeps: an unknown key is an error (never silently ignored), each field's
docstring is its description (so the tree documents itself), and assignments are validated too.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, docstrings are descriptions."""

    model_config = ConfigDict(
        extra="forbid", use_attribute_docstrings=True, validate_assignment=True
    )
