"""Why the gate withholds a slice: the reasons in words, and the short kind a series summary counts. No numpy."""

from __future__ import annotations

BLANK_REASON = "blank or nearly empty slice"
OUT_OF_DOMAIN_REASON = "unlike the brain MRI slices the model was trained on"
LABEL_MAP_REASON = "a label map or mask ({levels} grey levels), not an MR image"
LABEL_MAP_SERIES = "a label map or mask, not an MR image"  # a series whose withheld slices say it is one
HEAD_EDGE_REASON = ("at the edge of the head: head section {share:.0%} of the series' largest, "
                    "under the {fraction:.0%} the model was trained on")

BLANK, LABEL_MAP, HEAD_EDGE, UNLIKE_TRAINING, OTHER = (
    "blank", "a label map or mask", "at the edge of the head", "unlike the training slices", "other")
KINDS = (BLANK, LABEL_MAP, HEAD_EDGE, UNLIKE_TRAINING, OTHER)  # the order a summary lists them in


def reason_kind(reason: str) -> str:
    """Return the short kind of a gate reason: blank, a label map or mask, at the edge of the head, unlike the
    training slices, or other."""
    for kind, full in ((BLANK, BLANK_REASON), (LABEL_MAP, LABEL_MAP_REASON), (HEAD_EDGE, HEAD_EDGE_REASON),
                       (UNLIKE_TRAINING, OUT_OF_DOMAIN_REASON)):
        if reason.startswith(full.split("{")[0]):
            return kind
    return OTHER
