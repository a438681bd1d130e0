"""Training that diverges stops, and a run that learned nothing says so.

``DivergenceGuard`` watches every step's loss and its named parts (CE and each method term): a
non-finite value, or a part grown ``DIVERGENCE_FACTOR`` times its first value, ends the run with one
line naming the part, its weight and the likely fix, instead of training on to a "best" checkpoint
of noise. ``chance_note`` marks a run whose validation top-1 stays at chance level after the first
epochs (``CHANCE_AFTER_EPOCHS``): the summary and the run record call it that, not a result.
"""

from __future__ import annotations

import math

from makd_cli.errors import MakdError

# A term 1000x its first value has left any sane range: the losses makd trains start at O(1)..O(100)
# (a weighted term included) and fall. The first value is floored at 1 so a term starting near zero
# (a KD term with a teacher close to the student) may grow to 1000 before it counts as diverged.
DIVERGENCE_FACTOR = 1000.0
DIVERGENCE_FLOOR = 1.0
CHANCE_AFTER_EPOCHS = 2  # epochs after which a validation top-1 at chance is reported as such
CHANCE_MIN_VAL_PER_CLASS = 5  # fewer validation images per class cannot tell chance from a weak run


class DivergenceGuard:
    """One per run: ``check(loss, parts, epoch)`` after every step's forward pass."""

    def __init__(self, weights: dict | None = None, hint: str = "lower --lr or --aux-weight"):
        self.weights = dict(weights or {})
        self.hint = hint
        self.first: dict[str, float] = {}
        self.steps = 0

    def _fix(self, name: str, first_step: bool) -> str:
        weight = self.weights.get(name)
        if name == "ce" or weight is None:
            fix = "lower --lr" if name == "ce" else self.hint
        else:
            fix = f"lower --aux-weight (now {weight:g}) or --lr"
        if first_step and name != "ce":
            fix += "; at the first step this usually means NaN or inf in the teacher's targets: check them with `makd inspect TARGETS --quality`"
        return fix

    def _term(self, name: str) -> str:
        weight = self.weights.get(name)
        return f"the {name} term" + (f" (weight {weight:g})" if weight is not None else "")

    def check(self, loss, parts: dict, epoch: int) -> None:
        total = float(loss.item() if hasattr(loss, "item") else loss)
        values = {name: float(v.item() if hasattr(v, "item") else v) for name, v in parts.items()}
        first_step = self.steps == 0
        self.steps += 1
        bad = [n for n, v in values.items() if not math.isfinite(v)]
        if bad or not math.isfinite(total):
            name = bad[0] if bad else max(values, key=lambda n: abs(values[n]), default=None)
            if name is None:
                raise MakdError(f"training diverged at epoch {epoch + 1}: the loss became {total}; {self.hint}")
            raise MakdError(f"training diverged at epoch {epoch + 1}: {self._term(name)} became {values[name]:.4g} "
                            f"(total loss {total:.4g}); {self._fix(name, first_step)}")
        growth = {}
        for name, value in values.items():
            first = self.first.setdefault(name, value)
            growth[name] = abs(value) / max(abs(first), DIVERGENCE_FLOOR)
        name = max(growth, key=growth.get, default=None)  # the term that grew most is the likely cause
        if name is not None and growth[name] > DIVERGENCE_FACTOR:
            raise MakdError(f"training diverged at epoch {epoch + 1}: {self._term(name)} reached {values[name]:.4g}, over "
                            f"{DIVERGENCE_FACTOR:g}x its first value {self.first[name]:.4g}; {self._fix(name, False)}")


def chance_note(history: list[dict], num_classes: int | None, val_images: int | None) -> dict:
    """``{"at_chance": True, ...}`` when, after ``CHANCE_AFTER_EPOCHS`` epochs, no validation top-1 so far
    is above chance (100 / classes) by more than two binomial standard errors of the validation split;
    else ``{}``. Runs without a validation split (or under ``CHANCE_MIN_VAL_PER_CLASS`` images per class)
    or class count say nothing."""
    scores = [r["val_top1"] for r in history if "val_top1" in r]
    if not num_classes or num_classes < 2 or not val_images or len(history) < CHANCE_AFTER_EPOCHS or not scores:
        return {}
    if val_images < CHANCE_MIN_VAL_PER_CLASS * num_classes:
        return {}
    chance = 100.0 / num_classes
    p = 1.0 / num_classes
    band = chance + 2 * 100.0 * math.sqrt(p * (1 - p) / val_images)
    best = max(scores)
    if best > band:
        return {}
    return {"at_chance": True, "chance_top1": round(chance, 4), "chance_band": round(band, 4),
            "warning": f"validation top-1 never rose above chance ({best:.2f}% vs {chance:.2f}% for {num_classes} classes, "
                       f"{val_images} validation images) after {len(history)} epochs: the run learned nothing; "
                       "check the loss terms (metrics.jsonl), --lr and --aux-weight"}
