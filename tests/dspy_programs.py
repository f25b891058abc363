"""Small real DSPy programs the tests run (with DummyLM or dspy.LM(mock_response=...))."""

from __future__ import annotations

import dspy


class Pipeline(dspy.Module):
    """A nested custom module: draft with one predictor, then refine with a CoT."""

    def __init__(self) -> None:
        super().__init__()
        self.draft = dspy.Predict("question -> answer")
        self.refine = dspy.ChainOfThought("question, draft -> answer")

    def forward(self, question: str) -> dspy.Prediction:
        return self.refine(question=question, draft=self.draft(question=question).answer)
