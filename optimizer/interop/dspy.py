"""A DSPy module that retrieves its demos per call from an `ExampleSelector`, and saves and loads with them.

Unlike `dspy.KNNFewShot`, whose neighbours are recomputed at compile time and lost on save, `SimilarDemos` keeps
the selector (examples, embeddings, config) next to the DSPy state, so a loaded program selects exactly as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dspy

from ..select import ExampleSelector

STATE_FILE = "program.json"
SELECTOR_DIR = "selector"


class SimilarDemos(dspy.Module):
    """`dspy.Predict(signature)` with the `selector.k` most similar examples as its demos on every call."""

    def __init__(self, signature: Any, selector: ExampleSelector) -> None:
        super().__init__()
        self.predict = dspy.Predict(signature)
        self.selector = selector

    def demos(self, inputs: dict[str, Any]) -> list[dspy.Example]:
        input_keys = list(self.predict.signature.input_fields)
        return [
            dspy.Example(**{key: value for key, value in example.items() if key != "id"}).with_inputs(*input_keys)
            for example in self.selector.select(inputs)
        ]

    def forward(self, **inputs: Any) -> dspy.Prediction:
        return self.predict(demos=self.demos(inputs), **inputs)

    def save(self, path: str | Path, **kwargs: Any) -> None:  # type: ignore[override]
        """Write the DSPy state and the selector into the folder `path`."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        super().save(str(folder / STATE_FILE), **kwargs)
        self.selector.save(folder / SELECTOR_DIR)

    def load(self, path: str | Path, **kwargs: Any) -> SimilarDemos:  # type: ignore[override]
        """Read what `save` wrote; the selector's pool is not embedded again."""
        folder = Path(path)
        super().load(str(folder / STATE_FILE), **kwargs)
        self.selector = ExampleSelector.load(folder / SELECTOR_DIR)
        return self
