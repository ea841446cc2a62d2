"""Run a `convnest` command with the classifier reading each slice as the mean logits of the slice and of copies
with its pixels curved by the gammas in $GAMMAS (comma-separated), e.g. GAMMAS=0.7,1.4 (exploratory, not in the app)."""

import os
import sys

from convnest_viewer.inference import classifier

GAMMAS = [float(g) for g in os.environ["GAMMAS"].split(",")]
plain_reading = classifier.Classifier._with_mirror


def gamma_reading(self, logits, batch):
    """Return the mean of the slice's logits and those of its gamma-curved copies (pixels in [0, 1], blank stays 0)."""
    mean, std = self.spec.mean[0], self.spec.std[0]
    pixels = (batch.float() * std + mean).clamp(0, 1)
    outputs = [plain_reading(self, logits, batch)]
    for gamma in GAMMAS:
        curved = (pixels ** gamma - mean) / std
        outputs.append(plain_reading(self, self._plain_logits(curved), curved))
    return sum(outputs) / len(outputs)


classifier.Classifier._with_mirror = gamma_reading

if __name__ == "__main__":
    from convnest_viewer.cli import main

    sys.exit(main())
