"""Kept for existing imports: finding cases now lives in `liverctl.sources` (one module per layout)."""

from liverctl.sources import (  # noqa: F401
    NIFTI_SUFFIXES,
    CaseFiles,
    DataLayout,
    case_id_from_name,
    find_cases,
    find_source,
    is_nifti_name,
)
