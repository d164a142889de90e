"""Prices per token (LiteLLM's price table, user overrides) and the break-even of a fine-tune: the number of calls
at which its fixed training cost is paid back by a cheaper call (a shorter prompt, possibly at a higher price)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

# LiteLLM's table has serving prices of fine-tuned OpenAI models (`ft:<base>-<date>`) but no training prices;
# OpenAI's training price has been about 20x the base model's input price (gpt-4o-mini: $3 vs $0.15 per 1M).
TRAIN_PRICE_FACTOR = 20.0
FT_SERVING_FACTOR = 2.0  # fine-tuned serving vs base price where the table has no `ft:` entry
EPOCHS = 3


@dataclass(frozen=True)
class Prices:
    """Dollars per token. `source` says where they come from (the price table, a default factor, the user)."""

    input: float
    output: float
    ft_input: float
    ft_output: float
    ft_train: float
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "per_million": {key: value * 1e6 for key, value in asdict(self).items()
                                                if isinstance(value, float)}}


def model_prices(model: str, *, ft_input: float | None = None, ft_output: float | None = None,
                 ft_train: float | None = None) -> Prices:
    """Prices for `model` from LiteLLM's table (0 for local models); `ft_*` override, in dollars per 1M tokens."""
    base = _entry(model)
    price_in = float(base.get("input_cost_per_token") or 0.0)
    price_out = float(base.get("output_cost_per_token") or 0.0)
    tuned = _ft_entry(model)
    source = "LiteLLM price table" if base else "no price known (local or unlisted model): $0"
    prices = Prices(
        input=price_in, output=price_out,
        ft_input=float(tuned.get("input_cost_per_token") or FT_SERVING_FACTOR * price_in),
        ft_output=float(tuned.get("output_cost_per_token") or FT_SERVING_FACTOR * price_out),
        ft_train=TRAIN_PRICE_FACTOR * price_in, source=source,
    )
    overrides = {"ft_input": ft_input, "ft_output": ft_output, "ft_train": ft_train}
    given = {key: value / 1e6 for key, value in overrides.items() if value is not None}
    if given:
        prices = Prices(**{**asdict(prices), **given, "source": prices.source + "; user-set " + ", ".join(given)})
    return prices


def _entry(model: str) -> dict[str, Any]:
    import litellm

    name = model.split("/", 1)[1] if model.startswith(("openai/", "anthropic/", "gemini/")) else model
    return dict(litellm.model_cost.get(model) or litellm.model_cost.get(name) or {})


def _ft_entry(model: str) -> dict[str, Any]:
    """The table's `ft:` serving prices of `model`: `ft:<name>` or its latest dated snapshot `ft:<name>-<date>`
    (never another model sharing the prefix: `ft:gpt-4o-mini-...` is not gpt-4o)."""
    import litellm

    name = model.split("/")[-1]
    snapshot = re.compile(rf"ft:{re.escape(name)}(-\d{{4}}(-\d\d-\d\d)?)?")
    matches = sorted(key for key in litellm.model_cost if snapshot.fullmatch(key))
    return dict(litellm.model_cost[matches[-1]]) if matches else {}


@dataclass(frozen=True)
class BreakEven:
    """Per-call cost now (prompt-only) and after a fine-tune, the training cost, and the calls that repay it."""

    cost_per_call_now: float
    cost_per_call_tuned: float
    training_cost: float
    calls_to_break_even: float | None

    def monthly(self, months: float) -> float | None:
        """Calls per month that repay the training within `months`."""
        return None if self.calls_to_break_even is None else self.calls_to_break_even / months

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def break_even(prices: Prices, *, prompt_tokens_now: float, prompt_tokens_tuned: float, completion_tokens: float,
               training_tokens: float, epochs: int = EPOCHS) -> BreakEven:
    """None calls to break even when the tuned call is not cheaper (it never pays back in dollars)."""
    now = prompt_tokens_now * prices.input + completion_tokens * prices.output
    tuned = prompt_tokens_tuned * prices.ft_input + completion_tokens * prices.ft_output
    training = training_tokens * epochs * prices.ft_train
    saving = now - tuned
    calls = training / saving if saving > 0 else None
    return BreakEven(now, tuned, training, calls)
