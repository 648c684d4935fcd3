"""Evaluation: metrics (:mod:`eval.metrics`) and the base/fine-tuned/RAG comparison (``python -m eval.compare``)."""
