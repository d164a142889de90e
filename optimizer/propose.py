"""Candidate prompts from error groups: rule-based instruction patches (no model needed), demo settings,
constrained output, and, when a proposer model is set, LLM rewrites (`critique_groups` has the proposer explain the
largest groups; `llm_rewrites` has it edit the instruction to fix each).
"""

from __future__ import annotations

import random
import re
import textwrap
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

from .analyze import Analysis, ErrorGroup
from .errors import PromptTooLong
from .lm import LM, LMRequest
from .prompt import Prompt, field_title, output_constraint, render_gold
from .select import fixed_draw
from .task import Example, Task

LEAK_MIN_CHARS = 20
CRITIQUED_GROUPS = 2
FIXED_K = 16  # demos in a fixed set: DSPy's max_labeled_demos
FIXED_DRAWS = 2  # fixed sets proposed after the first round (the first races more; see SearchConfig.demo_sets)


@dataclass(frozen=True)
class Proposal:
    """A candidate prompt and where it came from (`rule:<kind>`, `demos:<strategy>-<k>[#draw]`, `constrain`,
    `llm:<kind>`)."""

    prompt: Prompt
    origin: str


def propose(task: Task, incumbent: Prompt, analysis: Analysis, pool: Sequence[Example], *, backend: str,
            proposer: LM | None = None, heldout: Collection[str] = (), seed: int = 0,
            tried: Collection[str] = (), draws: int = FIXED_DRAWS) -> list[Proposal]:
    """Every new candidate for this round, best-first, without duplicates or prompts already tried (by key);
    `draws` fixed demo sets among them."""
    rules = rule_patches(task, incumbent, analysis, pool, seed, heldout)
    rewrites = llm_rewrites(task, incumbent, analysis, proposer, heldout) if proposer is not None else []
    constrain = []
    if output_constraint(task, backend) is not None and not incumbent.constrain:
        constrain = [Proposal(replace(incumbent, constrain=True), "constrain")]
    # Best-first, one of each family before the rest: a small budget races only the head of this list.
    proposals = stacked(incumbent, rules, constrain, len(pool)) + rules[:1] + rewrites + constrain
    proposals += demo_settings(task, incumbent, pool, seed, draws) + rules[1:]
    seen = {incumbent.key(), *tried}
    unique = []
    for proposal in proposals:
        if proposal.prompt.key() not in seen:
            seen.add(proposal.prompt.key())
            unique.append(proposal)
    return unique


def stacked(incumbent: Prompt, rules: Sequence[Proposal], constrain: Sequence[Proposal],
            pool_size: int) -> list[Proposal]:
    """Every independent fix at once: all rule patches, constrained output, and 8 knn demos (fewer in a smaller
    pool) if none are used yet."""
    prompt = rules[0].prompt if rules else incumbent
    prompt = replace(prompt, constrain=prompt.constrain or bool(constrain))
    if not incumbent.k and pool_size:
        prompt = replace(prompt, k=min(8, pool_size), strategy="knn")
    return [Proposal(prompt, "stacked")] if prompt != incumbent and (rules or constrain) else []


# --- rule-based patches ----------------------------------------------------------------------------------------


def rule_patches(task: Task, incumbent: Prompt, analysis: Analysis, pool: Sequence[Example],
                 seed: int, heldout: Collection[str] = ()) -> list[Proposal]:
    """One candidate with every patch at once, then one per group whose kind has a rule."""
    patches: dict[str, str] = {}
    for group in analysis.groups:
        patch = patch_for(task, group, pool, seed, heldout)
        if patch and patch not in incumbent.instruction and patch not in patches.values():
            same = sum(origin.split("#")[0] == f"rule:{group.kind}" for origin in patches)
            patches[f"rule:{group.kind}" + (f"#{same + 1}" if same else "")] = patch
    proposals = [Proposal(_with(incumbent, patch), origin) for origin, patch in patches.items()]
    if len(patches) > 1:
        proposals.insert(0, Proposal(_with(incumbent, *patches.values()), "rule:all"))
    return proposals


def _with(prompt: Prompt, *patches: str) -> Prompt:
    return replace(prompt, instruction="\n".join([prompt.instruction.rstrip(), *patches]))


def patch_for(task: Task, group: ErrorGroup, pool: Sequence[Example], seed: int,
              heldout: Collection[str] = ()) -> str | None:
    """The instruction sentence(s) that address a group, or None where no rule applies (fact errors)."""
    if group.kind == "too_long":
        return None  # no instruction shortens the prompt; the demo settings do
    if group.family == "form":
        return form_rule(task)
    if group.kind == "content" and task.output_type == "label" and group.confusions:
        gold, predicted, _ = group.confusions[0]
        if gold in task.labels and predicted in task.labels:  # one rule per pair, whichever way it was confused
            return contrast_rule(task, *sorted((gold, predicted), key=task.labels.index), pool, seed, heldout)
        return form_rule(task)
    if group.kind == "content" and task.output_type == "text":
        return "Answer with the answer itself only: a name, number, date or a few words, not a sentence."
    return None


def form_rule(task: Task) -> str:
    """How the answer must look, stated exactly."""
    answer = field_title(task.output).lower()
    if task.output_type == "label":
        return f"Reply with exactly one {answer} from this list and nothing else: {label_list(task.labels)}."
    if task.output_type == "json":
        keys = ", ".join(f"{key} ({_type_text(kind)})" for key, kind in (task.output_schema or {}).items())
        keys_text = f" with exactly these keys: {keys}" if keys else ""
        return f"Reply with one JSON object{keys_text}. Use null for a value the text does not give. No other text."
    if task.output_type == "sql":
        return "Reply with a single SQLite SELECT statement and nothing else: no explanation, no code fence."
    return f"Reply with the {answer} only, no explanation."


def label_list(labels: Sequence[str]) -> str:
    """The labels separated by commas, each in quotes where one of them holds a comma."""
    if any("," in label for label in labels):
        return ", ".join(f'"{label}"' for label in labels)
    return ", ".join(labels)


def _type_text(kind: str) -> str:
    return f"{kind.rstrip('?')} or null" if kind.endswith("?") else kind


def contrast_rule(task: Task, gold: str, predicted: str, pool: Sequence[Example], seed: int,
                  heldout: Collection[str] = ()) -> str:
    """A disambiguation rule for a confused label pair, with one training example of each side (never one whose
    input is a dev or test input, see `leaks`)."""
    rule = f"Do not confuse {gold} with {predicted}."
    for label in (gold, predicted):
        texts = [" ".join(example.inputs.values()) for example in pool if example.gold == label]
        if texts:
            text = random.Random(f"{seed}-{label}").choice(texts)
            if leaks(text, heldout):
                text = next((other for other in texts if not leaks(other, heldout)), "")
            if text.strip():
                rule += f' "{_quote(text)}" is {label}.'
    return rule


def _quote(text: str, width: int = 160) -> str:
    """`text` on one line, cut between words to `width` characters (mid-word where its first word is longer)."""
    short = textwrap.shorten(text, width, placeholder=" ...")
    return short if short != "..." else _flat(text)[: width - 4] + " ..."


# --- demo settings ---------------------------------------------------------------------------------------------


def demo_settings(task: Task, incumbent: Prompt, pool: Sequence[Example], seed: int,
                  draws: int = FIXED_DRAWS) -> list[Proposal]:
    """Demo count and selection strategy as search dimensions: knn with k in 4, 8, 16 first (what helps most in
    docs/benchmarks.md), then `draws` fixed sets of 16 (`fixed_size`) drawn from the pool (the same demos for every
    input: what DSPy's BootstrapFewShotWithRandomSearch searches over, and a prompt prefix a local server can reuse),
    then 8 demos by mmr, random and (label tasks) label quota; no setting asks for more demos than the pool holds."""
    if not pool:
        return []
    settings = [(f"knn-{k}", replace(incumbent, k=k, strategy="knn", demo_ids=())) for k in (4, 8, 16)
                if k <= len(pool)]
    k = fixed_size(len(pool))
    settings += [(f"fixed-{k}#{draw + 1}", replace(incumbent, k=k, strategy="fixed",
                                                     demo_ids=fixed_draw(pool, k, f"{seed}-{draw}")))
                 for draw in range(draws)]
    strategies = ("mmr", "random", "label_quota") if task.output_type == "label" else ("mmr", "random")
    k = min(8, len(pool))
    settings += [(f"{strategy}-{k}", replace(incumbent, k=k, strategy=strategy, demo_ids=()))
                 for strategy in strategies]
    return [Proposal(prompt, f"demos:{name}") for name, prompt in settings if prompt != incumbent]


def fixed_size(pool_size: int) -> int:
    """Demos in a fixed set: FIXED_K, or half a pool too small to give different sets of FIXED_K (all of a pool of
    16 in other orders are one set)."""
    return FIXED_K if pool_size > FIXED_K else max(1, pool_size // 2)


# --- LLM rewrites ----------------------------------------------------------------------------------------------

CRITIQUE = """You improve instructions for a language model.
Task: {description}
Current instruction:
<<<
{instruction}
>>>
The model failed on these training examples ({summary}):
{examples}
In two or three sentences: what does the model get wrong, and what general rule in the instruction would fix it?"""

EDIT = """Current instruction:
<<<
{instruction}
>>>
Critique: {critique}
Rewrite the instruction so that it fixes this, keeping everything that already works. State general rules; do not
quote the examples. Reply with the new instruction only."""


def critique_groups(task: Task, incumbent: Prompt, analysis: Analysis, proposer: LM,
                    groups: int = CRITIQUED_GROUPS) -> Analysis:
    """The analysis with the largest rewritable groups' template summaries replaced by the proposer's critique."""
    chosen = rewritable(analysis)[:groups]
    return replace(analysis, groups=tuple(
        replace(group, summary=_ask(proposer, CRITIQUE.format(
            description=task.description, instruction=incumbent.instruction, summary=group.summary,
            examples=_examples_text(task, group))).strip() or group.summary) if group in chosen else group
        for group in analysis.groups))


def llm_rewrites(task: Task, incumbent: Prompt, analysis: Analysis, proposer: LM,
                 heldout: Collection[str], groups: int = CRITIQUED_GROUPS) -> list[Proposal]:
    """For each of the largest (critiqued, see `critique_groups`) groups: the proposer edits the instruction to
    fix it. Edits that quote a dev or test input are dropped."""
    proposals = []
    for group in rewritable(analysis)[:groups]:
        instruction = _ask(proposer, EDIT.format(instruction=incumbent.instruction, critique=group.summary))
        instruction = _DELIMITERS.sub("", instruction).strip()
        if instruction and not leaks(instruction, heldout):
            proposals.append(Proposal(replace(incumbent, instruction=instruction), f"llm:{group.kind}"))
    return proposals


# the <<< >>> the EDIT prompt puts around an instruction, when a reply echoes them (not an instruction's own <tags>)
_DELIMITERS = re.compile(r"^\s*<{3,}|>{3,}\s*$")


def rewritable(analysis: Analysis) -> list[ErrorGroup]:
    """The groups an instruction edit may fix, largest first: all but prompts too long for the context window."""
    return [group for group in analysis.groups if group.kind != "too_long"]


def _ask(proposer: LM, text: str) -> str:
    """The proposer's answer, or "" when the question does not fit its context window."""
    try:
        return proposer(LMRequest(messages=({"role": "user", "content": text},), max_tokens=400)).text
    except PromptTooLong:
        return ""


def _examples_text(task: Task, group: ErrorGroup) -> str:
    return "\n".join(
        f"- input: {' | '.join(example['inputs'].values())}\n  output: {example['output'][:200]}\n"
        f"  expected: {render_gold(task, example['gold'])}"
        for example in group.examples
    )


def leaks(instruction: str, heldout: Collection[str]) -> bool:
    """True if the instruction quotes any dev or test input (inputs of 20 characters or more), whitespace aside."""
    flat = _flat(instruction)
    return any(len(text) >= LEAK_MIN_CHARS and text in flat for text in map(_flat, heldout))


def _flat(text: str) -> str:
    return " ".join(text.split())
