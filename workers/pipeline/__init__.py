"""The enrichment pipeline: Envelope -> rows to store (a pageview or event, a crawler hit) | Drop
(see pipeline.py for the steps)."""

from workers.pipeline.pipeline import Pipeline, StepFailed, build_pipeline

__all__ = ["Pipeline", "StepFailed", "build_pipeline"]
