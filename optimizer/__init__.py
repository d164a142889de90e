"""formfit's library: `import optimizer`.

Tasks, models, evaluation, the few-shot selector, the optimizer and saved programs are the public API; the CLI
(`formfit`) is a thin shell on it.
"""

from .cache import Cache
from .errors import (
    BudgetExhausted,
    ConfigError,
    DataError,
    FormfitError,
    LMCallError,
    ModelError,
    TaskError,
)
from .evaluate import EvalResult, EvalRow, evaluate
from .lm import LM, Budget, LMRequest, LMResponse, Usage
from .embed import MiniLMEmbedder, TfidfEmbedder, make_embedder
from .program import Program, load_program
from .prompt import Prompt, parse_output
from .search import OptimizeResult, SearchConfig, optimize
from .select import ExampleSelector, FixedDemos, RandomDemos, demo_source, prompt_demos
from .task import Example, Task, load_task

__all__ = [
    "LM",
    "Budget",
    "BudgetExhausted",
    "Cache",
    "ConfigError",
    "DataError",
    "EvalResult",
    "EvalRow",
    "ExampleSelector",
    "Example",
    "FixedDemos",
    "FormfitError",
    "LMCallError",
    "LMRequest",
    "LMResponse",
    "MiniLMEmbedder",
    "ModelError",
    "OptimizeResult",
    "Program",
    "Prompt",
    "RandomDemos",
    "SearchConfig",
    "Task",
    "TaskError",
    "TfidfEmbedder",
    "Usage",
    "demo_source",
    "evaluate",
    "load_program",
    "load_task",
    "make_embedder",
    "optimize",
    "parse_output",
    "prompt_demos",
]
