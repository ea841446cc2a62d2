"""Guess an MR series' contrast (T1, T1c, T2, FLAIR, PD, DWI, EPI) from its description, sequence name or file name.

The guess is a reading of names, not of pixels: "" when the names say nothing. Post-contrast T1 is recognised
from words such as "post", "gd", "+c" or "t1c", and from a contrast agent recorded in the DICOM header.
"""

from __future__ import annotations

import re

CONTRAST_NAMES = {"t1": "T1", "t1c": "T1c", "t2": "T2", "flair": "FLAIR", "pd": "PD", "dwi": "DWI", "epi": "EPI"}

_DIFFUSION = {"dwi", "diff", "diffusion", "adc", "trace", "dti", "tensor", "fa"}
_FUNCTIONAL = {"epi", "bold", "fmri", "rest", "resting", "perfusion", "perf", "dsc", "asl", "pcasl"}
_T1 = {"t1", "t1w", "mprage", "mp2rage", "spgr", "fspgr", "bravo", "tfl", "vibe", "tfe", "t1flair", "t1se"}
_T1_POST = {"t1c", "t1ce", "t1gd", "t1post", "t1wce"}
_CONTRAST_WORDS = {"post", "postcontrast", "gd", "gad", "gado", "gadolinium", "contrast", "ce", "kontrast", "km"}
_FLAIR = {"flair", "tirm", "darkfluid", "dark", "t2flair"}
_PD = {"pd", "pdw", "proton"}
_T2 = {"t2", "t2w", "t2tse", "t2star", "swi", "hemo"}
_SEQUENCE_NAMES = (("*ep_b", "dwi"), ("*epfid", "epi"), ("*epse", "epi"), ("*tfl3d", "t1"), ("*tir2d", "flair"))


def guess_contrast(*names: str, sequence_name: str = "", contrast_agent: bool = False) -> str:
    """Return the contrast the names suggest ("t1", "t1c", "t2", "flair", "pd", "dwi", "epi"), or "" if none."""
    text = " ".join(name for name in names if name).lower()
    tokens = set(re.findall(r"[a-z0-9]+", text))
    tokens |= {token.replace("_", "") for token in re.findall(r"[a-z0-9_]+", text)}
    post = contrast_agent or bool(tokens & _CONTRAST_WORDS) or bool(re.search(r"\+\s*c\b|\bc\+|\+gd|\+contrast", text))
    if tokens & _DIFFUSION:
        return "dwi"
    if tokens & _FUNCTIONAL:
        return "epi"
    if tokens & _T1_POST or (tokens & _T1 and post):
        return "t1c"
    if tokens & _T1:
        return "t1"
    if tokens & _FLAIR:
        return "flair"
    if tokens & _PD:
        return "pd"
    if tokens & _T2:
        return "t2"
    lowered = sequence_name.lower()
    for prefix, contrast in _SEQUENCE_NAMES:
        if lowered.startswith(prefix):
            return "t1c" if contrast == "t1" and post else contrast
    return ""


def contrast_name(contrast: str) -> str:
    """Return a contrast's display name ("T1c"), or "" for an unknown one."""
    return CONTRAST_NAMES.get(contrast, "")
