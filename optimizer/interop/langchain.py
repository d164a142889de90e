"""`ExampleSelector` as a LangChain example selector (for `FewShotPromptTemplate(example_selector=...)`).

It subclasses `langchain_core`'s `BaseExampleSelector` when the `langchain` extra is installed, and offers the
same two methods without it.
"""

from __future__ import annotations

from typing import Any

from ..select import ExampleSelector

try:
    from langchain_core.example_selectors import BaseExampleSelector as _Base
except ImportError:  # the extra is optional
    _Base = object  # type: ignore[assignment,misc]


class LangChainExampleSelector(_Base):  # type: ignore[misc,valid-type]
    """LangChain's example-selector interface over a fitted (or loaded) `ExampleSelector`."""

    def __init__(self, selector: ExampleSelector) -> None:
        self.selector = selector

    def add_example(self, example: dict[str, str]) -> Any:
        self.selector.add(example)

    def select_examples(self, input_variables: dict[str, str]) -> list[dict[str, Any]]:
        return self.selector.select(input_variables)
