"""Inference core: model cards, the model factory, preprocessing, the classifier, explanations (no Qt)."""
