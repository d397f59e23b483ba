"""Shapes of billing code strings. A malformed code is a hold (INVALID_CHARGE), not a rejection.

The checks run on every line and code vocabularies are small, hence the caches.
"""

from __future__ import annotations

import re
from functools import lru_cache

# CPT Category I (5 digits), II (4 digits + F), III (+T), PLA (+U); HCPCS Level II (letter + 4).
_PROCEDURE = re.compile(r"(?:\d{4}[0-9FTU]|[A-V]\d{4})")
_MODIFIER = re.compile(r"[0-9A-Z]{2}")
# ICD-10-CM: letter, digit, alphanumeric category, then up to four characters after the dot.
# Every letter is a chapter, U included (codes for special purposes: U07.1, U09.9).
_ICD10 = re.compile(r"[A-Z]\d[0-9A-Z](?:\.[0-9A-Z]{1,4})?")


@lru_cache(maxsize=65536)
def is_procedure_code(code: str) -> bool:
    return _PROCEDURE.fullmatch(code) is not None


@lru_cache(maxsize=65536)
def is_modifier(modifier: str) -> bool:
    return _MODIFIER.fullmatch(modifier) is not None


@lru_cache(maxsize=65536)
def normalize_icd10(code: str) -> str:
    """Upper-case with the dot after the category ("m5416" -> "M54.16"), as claims omit it."""
    code = code.strip().upper()
    if len(code) > 3 and "." not in code:
        return f"{code[:3]}.{code[3:]}"
    return code


@lru_cache(maxsize=65536)
def is_icd10(code: str) -> bool:
    return _ICD10.fullmatch(normalize_icd10(code)) is not None
