"""Which explanation to trust: a verdict per method, every line of it calibrated by controls with known answers.

The controls are explainers too, scored by every check like any method (attribution/controls.py, registry.py):
`random` noise, `edge` (Sobel) and `brightness` (|x|) ignore the model and must be distrusted; the `oracle`, the
model's own intervention map, points at the planted cue wherever the cue provably decides, and must be trusted.

Each line of the verdict is one statistic with a 95 % interval that fits it (metrics.py), and a pass/fail line set
where it separates the negative controls from the positive one: halfway between the oracle's value and the value
of the negative control nearest to it. The line is *validated* in this run when the controls' own intervals fall
on their sides of it (the oracle passes, every negative control fails); the margin is how far the nearest
interval edge lies from the line. A method passes a line when its whole interval lies on the oracle's side, fails
when it lies on the other side, and is inconclusive otherwise.

The lines, and what each may do to a verdict:

- ground truth (hard): does the method point at the intensity-neutral cue on the decoy model, more than on the
  no-reliance twin (same images)? Negative controls: random, edge, brightness (a model-free map is the same on both
  twins: exactly 0). Failing it means "do not trust"; a pass earns trust only when validated.
- ground truth, grey cue (caution): the same on Ross et al.'s grey-level cue.
- false alarms (caution): mass on the cue of the no-reliance twin, which never uses it. Negatives: edge,
  brightness.
- faithfulness (hard): deletion and insertion AUC on the trained model, drawn R times (replicates.py). Negative:
  random.
- model sensitivity: MPRT, Smooth MPRT and data randomisation (against a matched control). Negatives: edge and
  brightness, which do not change at all when the model does.

Efficient MPRT is scored, shown and meta-evaluated, but no line reads it: in the stability study its controls did
not validate its line in every seed, and methods whose rise sits near 0 passed, failed or split on it from seed to
seed (docs/stability.md has the figures).

The rule (decide()), monotone by construction: "do not trust" when the maps are degenerate or a hard line fails;
"too weak to call" when the ground truth does not pass a validated line (an inconclusive ground truth never yields
more); "trust" when, besides, at least one validated model-sensitivity line passes, no line fails and the maps are
not class-blind; otherwise "use with care". Class-blind, like degenerate, is a fact about the maps rather than a
calibrated line: on most images the map for another class is the same map (Random Logit SSIM 1), so it cannot say
why this class (EigenCAM, and every model-free control). A failing line counts whether or not it is validated, and
a validated pass is needed for trust, so neither a failed validation nor noisier evidence can upgrade a verdict.
Properties tested in tests/quality.

Replicates (replicates.py): the lines are decided on intervals over every replicate and its images. The verdict is
then decided again R times, each time without one replicate; it is reported with its support k/R when a strict
majority of those reach it. Where most of them find the evidence too weak to call instead, the call hinged on one
replicate's draw, and "too weak to call" is reported. Otherwise the verdict is "unstable". Leaving one out, not one
alone: a single replicate has 1/R of the images, so its verdicts disagree for want of power (measured: every
replicate of VarGrad alone "too weak to call" where all three together passed), while R - 1 replicates show whether
the call depends on one draw.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from mnist_xai.attribution.registry import CONTROLS
from mnist_xai.quality.metrics import (
    BY_KEY,
    CUE_PREFIX,
    DEGENERATE_SHARE,
    GROUND_TRUTH,
    METRICS,
    estimate,
    replicate_key,
)
from mnist_xai.quality.stats import (
    CONFIDENCE,
    Z,
    bootstrap_means,
    hierarchical_interval,
    interval,
    proportion_interval,
    rounded,
    z_score,
)

PASS, FAIL, UNCLEAR, NOT_RUN = "pass", "fail", "inconclusive", "not run"
WEAK, UNSTABLE = "too weak to call", "unstable"
VERDICT_ORDER = ("trust", "use with care", "too weak to call", "do not trust")
REPORTED_ORDER = ("trust", "use with care", "too weak to call", "unstable", "do not trust")
ORACLE = "oracle"
MEMORISED = 0.95  # the permuted-label model must fit this share of its labels (Adebayo et al. trained to fit them)
COLLAPSED = 0.5  # a randomisation check cannot be read for a method whose maps collapsed on more images than this
NEIGHBOUR_STEP = 0.1  # threshold sensitivity: each line moved by this share of the gap between its controls
DEGENERATE_NEIGHBOURS = (0.3, 0.7)
TOLERANCE_NEIGHBOURS = (0, 1)  # the pointing game also scored exactly and within 1 pixel
MODEL_FREE = ("random", "edge", "brightness")
CLASS_BLIND_SSIM = 0.9999  # Random Logit at or above it: the map for another class is the same map
RERUN_DRAWS = 400  # simulated re-runs per method: the agreement's Monte Carlo error is at most 0.025 (one sd)
RERUN_FLAG = 0.95  # below it a verdict is flagged: more than one re-run in 20 would report another verdict


@dataclass(frozen=True)
class Line:
    check: str
    keys: tuple[str, ...]  # the statistics it tests (faithfulness: two, both must pass)
    role: str  # hard | caution | sensitivity
    negatives: tuple[str, ...]  # controls that must fail it
    question: str


LINES = (
    Line("ground truth", ("gt_reliance",), "hard", MODEL_FREE,
         "points at the intensity-neutral cue where the decoy model provably uses it, more than on the no-reliance "
         "twin"),
    Line("ground truth, grey cue", ("grey_gt_reliance",), "caution", MODEL_FREE,
         "the same on Ross et al.'s grey-level cue"),
    Line("false alarms", ("fam_mass",), "caution", ("edge", "brightness"),
         "little mass on the cue when the model does not use it (the no-reliance twin)"),
    Line("faithfulness", ("deletion_auc", "insertion_auc"), "hard", ("random",),
         "deleting or inserting pixels in its order changes the prediction as the oracle's order does"),
    Line("MPRT", ("mprt_digit_rho",), "sensitivity", ("edge", "brightness"),
         "its maps change when every layer of the model is re-initialised"),
    Line("Smooth MPRT", ("smprt_rho",), "sensitivity", ("edge", "brightness"),
         "the same, maps denoised over noisy copies first"),
    Line("data randomisation", ("data_rho",), "sensitivity", ("edge", "brightness"),
         "its maps differ between a network trained on permuted labels and the same training on the true ones"),
)
BY_CHECK = {line.check: line for line in LINES}
# A verdict reads eight statistics at once, and one wrong call on any of them can change it. Each line is decided on
# an interval at 1 - 0.05 / 8 (Bonferroni), so that the chance a verdict rests on any wrong call is at most 5 %: at
# 95 % per line it would be up to 8 x 5 %. The report's tables keep 95 % intervals; the lines' own are these.
DECISION_CONFIDENCE = 1 - (1 - CONFIDENCE) / sum(len(line.keys) for line in LINES)
SENSITIVITY = tuple(line.check for line in LINES if line.role == "sensitivity")
HARD_REASONS = {"ground truth": "it misses the planted cue the model provably uses, or points at it as often on a "
                                "twin that ignores the cue",
                "faithfulness": "its maps are less faithful to the model than halfway from the oracle to noise"}


def decide(outcomes: dict[str, str], validated: dict[str, bool], degenerate: bool, class_blind: bool = False
           ) -> tuple[str, str]:
    """The verdict and its reason from each line's outcome and whether the line was validated. Monotone: one more
    failing line, or one validation fewer, never improves it; an inconclusive ground truth never gives more than
    "too weak to call"; class-blind maps never more than "use with care"."""
    if degenerate:
        return "do not trust", "degenerate: most of its maps are constant, and a constant map has no ranking to check"
    for check, reason in HARD_REASONS.items():
        if outcomes.get(check) == FAIL:
            return "do not trust", reason
    failed = [check for check, outcome in outcomes.items() if outcome == FAIL]
    also = f"; besides, {_listed(failed)} fail{'s' if len(failed) == 1 else ''}" if failed else ""
    if outcomes.get("ground truth") != PASS:
        return "too weak to call", "the evidence on the planted cue is too weak to call either way" + also
    if not validated.get("ground truth"):
        return "too weak to call", ("it points at the planted cue, but the controls do not validate that line in "
                                    "this run" + also)
    if failed:
        return "use with care", f"it finds the planted cue, but {_listed(failed)} fail" + "s" * (len(failed) == 1)
    if class_blind:
        return "use with care", ("it finds the planted cue, but its map is the same whatever class is explained "
                                 "(Random Logit): it shows what the model responds to, not why this class")
    support = [check for check in SENSITIVITY if outcomes.get(check) == PASS and validated.get(check)]
    if not support:
        return "use with care", "it finds the planted cue, but no validated check shows that its maps follow the model"
    verb = "shows" if len(support) == 1 else "show"
    return "trust", f"it finds the planted cue, {_listed(support)} {verb} that its maps follow the model, and no " \
                    "line fails"


def without_replicate(values: dict[str, np.ndarray], replicate: int) -> dict[str, np.ndarray]:
    """A method's per-image values without one replicate's: a replicated metric keeps the other replicates' images
    and their ids; a metric with one draw (measured on the pipeline's model alone) keeps all of its images."""
    kept = {}
    for key, array in values.items():
        base = key[:-len("_replicate")] if key.endswith("_replicate") else key
        if base.endswith("_distance"):  # the pointing distances go with their pointing game
            base = base.replace("_distance", "_pointing")
        ids = values.get(replicate_key(base))
        kept[key] = array if ids is None else np.asarray(array)[np.asarray(ids) != replicate]
    return kept


def _listed(names: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


@dataclass
class Threshold:
    """Where one statistic's pass/fail line lies, from the controls' estimates."""

    key: str
    better: str
    value: float
    oracle: tuple[float, float, float]
    negatives: dict[str, tuple[float, float, float]]
    nearest: str  # the negative control nearest the oracle
    validated: bool
    margin: float  # distance from the line to the nearest control interval edge (negative: they overlap)

    @property
    def gap(self) -> float:
        return abs(self.oracle[0] - self.negatives[self.nearest][0])

    def neighbours(self) -> tuple[float, float]:
        return self.value - NEIGHBOUR_STEP * self.gap, self.value + NEIGHBOUR_STEP * self.gap

    def outcome(self, estimate: tuple[float, float, float], line: float | None = None) -> str:
        line = self.value if line is None else line
        value, low, high = estimate
        if np.isnan(value) or np.isnan(line):
            return UNCLEAR
        if self.better == "higher":
            return PASS if low > line else FAIL if high < line else UNCLEAR
        return PASS if high < line else FAIL if low > line else UNCLEAR


def calibrate(key: str, estimates: dict[str, tuple[float, float, float]], negatives: tuple[str, ...]) -> Threshold:
    """The line halfway between the oracle and the negative control nearest to it; validated when the oracle's
    interval lies wholly on the passing side and every negative control's on the failing side."""
    better = BY_KEY[key].better
    sign = 1.0 if better == "higher" else -1.0
    oracle = estimates[ORACLE]
    controls = {name: estimates[name] for name in negatives}
    nearest = max(controls, key=lambda name: sign * _or(controls[name][0], -np.inf * sign))
    line = (oracle[0] + controls[nearest][0]) / 2
    if better == "higher":
        margins = [oracle[1] - line] + [line - high for _, _, high in controls.values()]
    else:
        margins = [line - oracle[2]] + [low - line for _, low, _ in controls.values()]
    margin = float(np.min(margins)) if not np.isnan(margins).any() else float("nan")
    validated = bool(margin > 0 and sign * (oracle[0] - controls[nearest][0]) > 0)
    return Threshold(key, better, float(line), oracle, controls, nearest, validated, margin)


def _or(value: float, fallback: float) -> float:
    return fallback if value is None or np.isnan(value) else value


@dataclass
class Evidence:
    check: str
    role: str
    outcome: str  # pass | fail | inconclusive | not run
    validated: bool
    detail: str


@dataclass
class Verdict:
    method: str
    verdict: str  # decided on the intervals over every replicate (what is reported is `settled`)
    reason: str
    evidence: list[Evidence] = field(default_factory=list)
    sensitive_to: list[str] = field(default_factory=list)  # threshold moves that change the verdict
    control: bool = False
    leave_one_out: list[str] = field(default_factory=list)  # the verdict without replicate 0, 1, ...
    rerun: float = float("nan")  # the estimated chance that a re-run with other seeds decides the same verdict

    @property
    def flagged(self) -> bool:
        """Whether the reader is told the verdict may not hold: "unstable", a support below all replicates, a
        neighbouring line that changes it, or a re-run that would likely decide otherwise."""
        return (self.settled == UNSTABLE or bool(self.sensitive_to) or self.rerun < RERUN_FLAG
                or (len(self.leave_one_out) > 1 and self.support < len(self.leave_one_out)))

    @property
    def support(self) -> int:
        """How many leave-one-replicate-out analyses reach the reported verdict."""
        return sum(v == self.settled for v in self.leave_one_out)

    @property
    def settled(self) -> str:
        """The verdict reported: the one decided on every replicate where most leave-one-replicate-out analyses
        reach it too; else, where most of them find the evidence too weak to call, that (the call hinged on one
        replicate's draw); else "unstable"."""
        count = len(self.leave_one_out)
        if count <= 1 or stable(self.leave_one_out.count(self.verdict), count):
            return self.verdict
        if stable(self.leave_one_out.count(WEAK), count):
            return WEAK
        return UNSTABLE

    @property
    def stable(self) -> bool:
        return self.settled != UNSTABLE

    @property
    def reported(self) -> str:
        """What the user is told: the settled verdict with its support k/R, or "unstable (k/R)"."""
        count = len(self.leave_one_out)
        if count <= 1:
            return self.verdict
        if self.stable:
            return f"{self.settled} ({self.support}/{count})"
        return f"{UNSTABLE} ({self.leave_one_out.count(self.verdict)}/{count})"

    def summary(self) -> dict[str, str | int]:
        """What metrics/quality.json keeps of it, per method (the verdicts stage writes it; the stability study's
        re-decision rewrites it)."""
        return {"verdict": self.settled, "reported": self.reported, "pooled": self.verdict, "stable": int(self.stable),
                "support": self.support, "control": int(self.control),
                "threshold_sensitive": int(bool(self.sensitive_to)), "rerun_agreement": round(self.rerun, 3),
                "flagged": int(self.flagged)}


def stable(support: int, replicates: int) -> bool:
    """The bar: a strict majority of the replicates reach the verdict on their own evidence. Each replicate is an
    independent draw of the twins, the ground-truth images and the randomised and permuted-label networks, so a
    verdict most of them reach is the one a re-run most likely reaches too; below a majority, a re-run is about as
    likely to say something else (2 of 3 at the default; 1 replicate: always stable, with no support to show)."""
    return replicates <= 1 or 2 * support > replicates


def class_blind_share(values: dict[str, np.ndarray]) -> float:
    """The share of images whose map for another class is the same map (no Random Logit scores: 0)."""
    ssim = np.asarray(values.get("random_logit", []), dtype=np.float64)
    return float(np.mean(ssim >= CLASS_BLIND_SSIM)) if ssim.size else 0.0


class Judge:
    """Verdicts for every method, the controls included, from their per-image metric values ({method: {key:
    values}}, with the pointing distances)."""

    def __init__(self, values: dict[str, dict[str, np.ndarray]], *, constant_share: dict[str, float],
                 random_label_fit: float, resamples: int, seed: int, thresholds: dict[str, Threshold] | None = None):
        missing = [control for control in CONTROLS if control not in values]
        if missing:
            raise ValueError(f"the verdicts need the controls' scores: {', '.join(missing)} missing")
        self.values = values
        self.constant_share = constant_share
        self.random_label_fit = random_label_fit
        self.resamples = resamples
        self.seed = seed
        self._estimates: dict[tuple[str, str], tuple[float, float, float]] = {}
        self.thresholds = thresholds or self._calibrate(self.values)
        ids = [np.unique(v[replicate_key("gt_reliance")]) for v in values.values() if replicate_key("gt_reliance") in v]
        self.replicates = len(ids[0]) if ids else 1
        self._leave_one_out: list[Judge] | None = None
        self._at_tolerance: dict[float, Judge] = {}

    def replicate_judges(self) -> list[Judge]:
        """One judge per replicate left out: the evidence of every other replicate (and what is measured on the
        pipeline's model alone, which every replicate shares), with hierarchical intervals over them, against the
        lines calibrated on all."""
        if self._leave_one_out is None:
            self._leave_one_out = [] if self.replicates <= 1 else [
                Judge({m: without_replicate(v, r) for m, v in self.values.items()},
                      constant_share=self.constant_share, random_label_fit=self.random_label_fit,
                      resamples=self.resamples, seed=self.seed, thresholds=self.thresholds)
                for r in range(self.replicates)]
        return self._leave_one_out

    # --- estimates and lines --------------------------------------------------------------------------------

    def estimate(self, method: str, key: str, values: dict | None = None) -> tuple[float, float, float]:
        """The value and its interval at the decision level, which the lines, the controls' validation and the
        verdict all read."""
        if values is not None:
            return estimate(values[method], key, self.resamples, self.seed, DECISION_CONFIDENCE)
        if (method, key) not in self._estimates:
            self._estimates[method, key] = estimate(self.values[method], key, self.resamples, self.seed,
                                                    DECISION_CONFIDENCE)
        return self._estimates[method, key]

    def _calibrate(self, values: dict, keys=None) -> dict[str, Threshold]:
        given = None if values is self.values else values
        return {key: calibrate(key, {name: self.estimate(name, key, given) for name in (ORACLE, *line.negatives)},
                               line.negatives)
                for line in LINES for key in line.keys if keys is None or key in keys}

    def _readable(self, method: str, key: str) -> float:
        """The share of images a rho could be computed for (the rest collapsed to a constant)."""
        return float(np.mean(~np.isnan(np.asarray(self.values[method][key], dtype=np.float64))))

    def line_outcome(self, method: str, line: Line, thresholds: dict[str, Threshold], values: dict | None = None,
                     moved: dict[str, float] | None = None) -> tuple[str, bool, str]:
        """(outcome, validated, detail) of one line for one method."""
        if line.check == "data randomisation" and self.random_label_fit < MEMORISED:
            return NOT_RUN, False, (f"the permuted-label model fitted only {100 * self.random_label_fit:.0f} % of its "
                                    f"labels (needs {100 * MEMORISED:.0f} %): an under-trained model tests nothing")
        outcomes, parts = [], []
        for key in line.keys:
            threshold = thresholds[key]
            value = self.estimate(method, key, values)
            line_value = (moved or {}).get(key, threshold.value)
            outcome = threshold.outcome(value, line_value)
            if key.endswith("_rho") and self._readable(method, key) < 1 - COLLAPSED:
                outcome = UNCLEAR
                parts.append(f"{BY_KEY[key].label}: its maps collapsed to a constant on "
                             f"{100 * (1 - self._readable(method, key)):.0f} % of images; the check cannot be read")
                outcomes.append(outcome)
                continue
            side = "above" if threshold.better == "higher" else "below"
            parts.append(f"{BY_KEY[key].label} {_fmt(value)}, needs {side} {line_value:.3f}")
            outcomes.append(outcome)
        outcome = PASS if all(o == PASS for o in outcomes) else FAIL if FAIL in outcomes else UNCLEAR
        validated = all(thresholds[key].validated for key in line.keys)
        return outcome, validated, "; ".join(parts)

    # --- verdicts ---------------------------------------------------------------------------------------------

    def evidence(self, method: str) -> list[Evidence]:
        lines = []
        for line in LINES:
            outcome, validated, detail = self.line_outcome(method, line, self.thresholds)
            if outcome != NOT_RUN and not validated:
                detail += "; the controls do not validate this line here, so a pass earns nothing"
            lines.append(Evidence(line.check, line.role, outcome, validated, detail))
        return lines

    def _decide(self, method: str, thresholds: dict[str, Threshold], values: dict | None = None,
                moved: dict[str, float] | None = None, degenerate_share: float = DEGENERATE_SHARE) -> tuple[str, str]:
        outcomes, validated = {}, {}
        for line in LINES:
            outcome, valid, _ = self.line_outcome(method, line, thresholds, values, moved)
            outcomes[line.check], validated[line.check] = outcome, valid
        return decide(outcomes, validated, self.constant_share[method] >= degenerate_share,
                      class_blind_share((values or self.values)[method]) >= DEGENERATE_SHARE)

    def verdict(self, method: str) -> Verdict:
        verdict, reason = self._decide(method, self.thresholds)
        if verdict == "do not trust" and reason.startswith("degenerate"):
            reason = (f"degenerate: {100 * self.constant_share[method]:.0f} % of its maps are constant, and a "
                      "constant map has no ranking to check")
        changes = [f"{move}: {moved}" for move, moved in self.threshold_moves(method).items() if moved != verdict]
        leave_one_out = [judge._decide(method, judge.thresholds)[0] for judge in self.replicate_judges()]
        return Verdict(method, verdict, reason, self.evidence(method), changes, control=method in CONTROLS,
                       leave_one_out=leave_one_out, rerun=self.rerun_agreement(method))

    def rerun_agreement(self, method: str, draws: int = RERUN_DRAWS) -> float:
        """The chance that a re-run with other seeds decides the same verdict, from this run's own intervals: in
        each simulated re-run every statistic's estimate (and interval) moves by a normal draw with twice its
        variance (the re-run's own draw and this run's), each line likewise by its controls' spread, and the verdict
        is decided again. The standard errors are read off the decision-level intervals (normal approximation).
        `mnist-xai stability` checks it against real re-runs (docs/stability.md)."""
        rng = np.random.default_rng([self.seed, zlib.crc32(method.encode())])  # the same draws in every run
        z = z_score(DECISION_CONFIDENCE)
        outcomes, validated = {}, {}
        for line in LINES:
            outcome, validated[line.check], _ = self.line_outcome(method, line, self.thresholds)
            if outcome == NOT_RUN:
                outcomes[line.check] = np.full(draws, NOT_RUN, dtype=object)
                continue
            per_key = []
            for key in line.keys:
                threshold = self.thresholds[key]
                value, low, high = self.estimate(method, key)
                line_spread = np.hypot(*(est[2] - est[1] for est in (threshold.oracle,
                                                                    threshold.negatives[threshold.nearest]))) / 2
                unreadable = key.endswith("_rho") and self._readable(method, key) < 1 - COLLAPSED
                if unreadable or np.isnan([value, low, high, threshold.value, line_spread]).any():
                    per_key.append(np.full(draws, threshold.outcome((value, low, high)), dtype=object))
                    continue
                shift = np.sqrt(2) * (high - low) / (2 * z) * rng.standard_normal(draws)
                moved = threshold.value + np.sqrt(2) * line_spread / (2 * z) * rng.standard_normal(draws)
                passes, fails = (low + shift > moved, high + shift < moved) if threshold.better == "higher" else \
                    (high + shift < moved, low + shift > moved)
                per_key.append(np.where(passes, PASS, np.where(fails, FAIL, UNCLEAR)).astype(object))
            stacked = np.stack(per_key)
            outcomes[line.check] = np.where((stacked == PASS).all(0), PASS,
                                            np.where((stacked == FAIL).any(0), FAIL, UNCLEAR))
        degenerate = self.constant_share[method] >= DEGENERATE_SHARE
        blind = class_blind_share(self.values[method]) >= DEGENERATE_SHARE
        verdict = self._decide(method, self.thresholds)[0]
        decided: dict[tuple, str] = {}
        same = 0
        for draw in range(draws):
            case = tuple(outcomes[line.check][draw] for line in LINES)
            if case not in decided:
                decided[case] = decide(dict(zip(outcomes, case, strict=True)), validated, degenerate, blind)[0]
            same += decided[case] == verdict
        return same / draws

    def threshold_moves(self, method: str) -> dict[str, str]:
        """The verdict with each threshold moved to its neighbours, one at a time: every calibrated line by a tenth
        of the gap between its controls either way, the pointing tolerance to 0 and 1 pixel (the lines
        recalibrated on the rescored statistic), and the degenerate share to 0.3 and 0.7."""
        moves = {}
        for key, threshold in self.thresholds.items():
            for line in threshold.neighbours():
                moves[f"{BY_KEY[key].label} line at {line:.3f}"] = self._decide(method, self.thresholds,
                                                                                moved={key: line})[0]
        for tolerance in TOLERANCE_NEIGHBOURS:
            judge = self.tolerance_judge(tolerance)
            moves[f"pointing tolerance {tolerance} px"] = judge._decide(method, judge.thresholds)[0]
        for share in DEGENERATE_NEIGHBOURS:
            moves[f"degenerate share {share:.0%}"] = self._decide(method, self.thresholds, degenerate_share=share)[0]
        return moves

    def tolerance_judge(self, tolerance: float) -> Judge:
        """A judge of every method's values with the pointing game rescored at another tolerance, its ground-truth
        lines recalibrated on them; built once per tolerance, so its estimates are computed once for all methods."""
        if tolerance not in self._at_tolerance:
            values = self.at_tolerance(tolerance)
            thresholds = {**self.thresholds, **self._calibrate(values, keys={"gt_reliance", "grey_gt_reliance"})}
            self._at_tolerance[tolerance] = Judge(values, constant_share=self.constant_share,
                                                  random_label_fit=self.random_label_fit, resamples=self.resamples,
                                                  seed=self.seed, thresholds=thresholds)
        return self._at_tolerance[tolerance]

    def at_tolerance(self, tolerance: float) -> dict[str, dict[str, np.ndarray]]:
        """Every method's values with the pointing game rescored at another tolerance (in pixels)."""
        rescored = {}
        for method, values in self.values.items():
            changed = dict(values)
            for prefix in CUE_PREFIX.values():
                changed[f"{prefix}gt_pointing"] = (values[f"{prefix}gt_distance"] <= tolerance).astype(float)
                changed[f"{prefix}fam_pointing"] = (values[f"{prefix}fam_distance"] <= tolerance).astype(float)
                changed[f"{prefix}gt_reliance"] = changed[f"{prefix}gt_pointing"] - changed[f"{prefix}fam_pointing"]
            rescored[method] = changed
        return rescored

    def verdicts(self) -> list[Verdict]:
        """Every method, controls included, best first: by verdict, then by the ground-truth statistic."""
        found = [self.verdict(m) for m in self.values]
        score = {m: self.estimate(m, "gt_reliance")[0] for m in self.values}
        return sorted(found, key=lambda v: (v.control, REPORTED_ORDER.index(v.settled), -score[v.method], v.method))

    def calibration(self) -> list[dict]:
        """Each line's threshold with the controls behind it, for the report."""
        rows = []
        for line in LINES:
            for key in line.keys:
                t = self.thresholds[key]
                rows.append({"check": line.check, "role": line.role, "key": key, "label": BY_KEY[key].label,
                             "better": t.better, "line": rounded(t.value),
                             "neighbours": [rounded(v) for v in t.neighbours()],
                             "oracle": [rounded(v) for v in t.oracle], "nearest": t.nearest,
                             "negatives": {name: [rounded(v) for v in e] for name, e in t.negatives.items()},
                             "validated": t.validated, "margin": rounded(t.margin), "question": line.question})
        return rows

    def neighbours(self, ranked: list[Verdict]) -> list[dict]:
        """Each method against the next one down on the ground-truth statistic (paired per image): 'indistinguishable'
        where the interval of the difference covers 0."""
        rows = []
        methods = [v for v in ranked if not v.control]
        for first, second in zip(methods, methods[1:], strict=False):
            difference = self.paired_difference(first.method, second.method, "gt_reliance")
            rows.append({"a": first.method, "b": second.method, "difference": [rounded(v) for v in difference],
                         "indistinguishable": difference[1] <= 0 <= difference[2]})
        return rows

    def paired_difference(self, a: str, b: str, key: str) -> tuple[float, float, float]:
        """Mean of a's values minus b's on the same images, with a 95 % interval over images and, where the key is
        replicated, over replicates too."""
        difference = np.asarray(self.values[a][key], dtype=np.float64) - np.asarray(self.values[b][key],
                                                                                   dtype=np.float64)
        exact = interval(difference, self.resamples, self.seed)
        ids = self.values[a].get(replicate_key(key))
        return exact if ids is None else hierarchical_interval(difference, ids, exact, self.resamples, self.seed)

    def per_label(self, labels: dict[str, np.ndarray]) -> dict[str, dict[str, dict[str, list]]]:
        """The pointing game on the decoy model per label and cue type, with Wilson intervals: {cue: {method:
        {label: [value, low, high, n]}}}."""
        table = {}
        for cue, prefix in CUE_PREFIX.items():
            cue_labels = labels[cue]
            table[cue] = {method: {str(label): [*(rounded(v) for v in proportion_interval(
                values[f"{prefix}gt_pointing"][cue_labels == label])), int(np.sum(cue_labels == label))]
                for label in np.unique(cue_labels)} for method, values in self.values.items()}
        return table

    # --- meta-evaluation --------------------------------------------------------------------------------------

    def meta_evaluation(self, permutations: int = 2000) -> list[dict]:
        """Does each check rank the methods (the controls aside) as the ground truth does? Spearman rho across
        methods between the check's mean, oriented so that higher is better, and the ground-truth statistic, with a
        permutation p-value over methods (Holm-corrected over the checks), a jackknife interval over methods, and an
        interval from resampling the images. Descriptive: no line of the verdict depends on it."""
        methods = [m for m in self.values if m not in CONTROLS]
        if len(methods) < 4:
            return []
        truth_key = "gt_reliance"
        truth = np.array([np.nanmean(self.values[m][truth_key]) for m in methods])
        truth_draws = bootstrap_means(np.stack([self.values[m][truth_key] for m in methods]), self.resamples, self.seed)
        rng = np.random.default_rng(self.seed)
        shuffles = np.stack([rng.permutation(len(methods)) for _ in range(permutations)])
        rows = []
        for metric in METRICS:
            if not metric.better or (metric.group == GROUND_TRUTH and metric.key != "fam_mass"):
                continue
            sign = 1.0 if metric.better == "higher" else -1.0
            point = sign * np.array([np.nanmean(self.values[m][metric.key]) for m in methods])
            if np.isnan(point).any():
                continue
            rho = float(_spearman(point[:, None], truth[:, None])[0])
            permuted = _spearman(np.repeat(point[:, None], permutations, axis=1), truth[shuffles].T)
            p_value = float((1 + np.sum(np.abs(permuted) >= abs(rho) - 1e-12)) / (1 + permutations))
            leave_one_out = np.array([_spearman(np.delete(point, i)[:, None], np.delete(truth, i)[:, None])[0]
                                      for i in range(len(methods))])
            k = len(methods)
            spread = np.sqrt((k - 1) / k * np.sum((leave_one_out - leave_one_out.mean()) ** 2))
            stacked = np.stack([_filled(self.values[m][metric.key]) for m in methods])
            draws = sign * bootstrap_means(stacked, self.resamples, self.seed + 1)
            image_rho = _spearman(draws, truth_draws)
            low, high = np.quantile(image_rho, [0.025, 0.975])
            rows.append({"key": metric.key, "label": metric.label, "rho": rounded(rho), "p": rounded(p_value),
                         "jackknife": [rounded(max(-1.0, rho - Z * spread)), rounded(min(1.0, rho + Z * spread))],
                         "leave_one_out": [rounded(leave_one_out.min()), rounded(leave_one_out.max())],
                         "images": [rounded(low), rounded(high)]})
        for row, adjusted in zip(rows, _holm([row["p"] for row in rows]), strict=True):
            row["p_holm"] = rounded(adjusted)
            row["outcome"] = ("agrees" if adjusted < 0.05 and row["rho"] > 0 else
                              "disagrees" if adjusted < 0.05 and row["rho"] < 0 else "not shown either way")
        return rows


SCORED_KEYS = tuple(metric.key for metric in METRICS) + tuple(
    f"{prefix}{name}_distance" for prefix in CUE_PREFIX.values() for name in ("gt", "fam"))
"""What a verdict reads of each method's stored scores (quality/scores/<method>.npz), besides the replicate ids."""


def judge_scores(scores: dict[str, dict[str, np.ndarray]], *, constant_share: dict[str, float],
                 random_label_fit: float, resamples: int, seed: int) -> Judge:
    """The verdicts stage's judge from every method's stored per-image scores: the metrics and pointing distances,
    with the replicate ids of those that have them."""
    wanted = SCORED_KEYS + tuple(replicate_key(key) for key in SCORED_KEYS)
    return Judge({method: {key: arrays[key] for key in wanted if key in arrays} for method, arrays in scores.items()},
                 constant_share=constant_share, random_label_fit=random_label_fit, resamples=resamples, seed=seed)


def _filled(values: np.ndarray) -> np.ndarray:
    """Per-image values with NaN (collapsed maps) replaced by the mean of the rest, for the image bootstrap."""
    values = np.asarray(values, dtype=np.float64)
    return np.where(np.isnan(values), np.nanmean(values) if not np.isnan(values).all() else 0.0, values)


def _holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment: the k-th smallest of m p-values times (m - k + 1), kept monotone."""
    order = np.argsort(p_values)
    m = len(p_values)
    adjusted, running = np.empty(m), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted.tolist()


def _spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rho between matching columns of a and b [methods, k] (average ranks for ties)."""
    from mnist_xai.quality.stats import average_ranks

    ra, rb = average_ranks(np.asarray(a).T).T, average_ranks(np.asarray(b).T).T
    ra, rb = ra - ra.mean(axis=0), rb - rb.mean(axis=0)
    denominator = np.sqrt((ra ** 2).sum(axis=0) * (rb ** 2).sum(axis=0))
    return np.divide((ra * rb).sum(axis=0), denominator, out=np.zeros(ra.shape[1]), where=denominator > 0)


def _fmt(estimate: tuple[float, float, float], digits: int = 3) -> str:
    value, low, high = estimate
    if np.isnan(value):
        return "n/a"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def findings(judge: Judge, verdicts: list[Verdict]) -> list[dict]:
    """Which published findings reproduce here, each with the numbers and intervals behind it."""
    rows = []
    have = set(judge.values)
    if {"guided_backprop", "saliency", "gradcam"} <= have:
        first = judge.paired_difference("guided_backprop", "saliency", "mprt_rho")
        second = judge.paired_difference("saliency", "gradcam", "mprt_rho")
        outcome = ("too weak to call" if np.isnan(first[0]) or np.isnan(second[0]) else
                   "reproduces" if first[1] > 0 and second[1] > 0 else
                   "does not reproduce" if first[2] < 0 or second[2] < 0 else "too weak to call")
        rows.append({"finding": "Adebayo et al. 2018: after full model randomisation, Guided Backprop's maps stay "
                                "more similar to the trained model's than Saliency's, and Saliency's more than "
                                "GradCAM's (original MPRT)",
                     "outcome": outcome,
                     "evidence": f"ρ(Guided Backprop) − ρ(Saliency) = {_fmt(first)}; ρ(Saliency) − ρ(GradCAM) = "
                                 f"{_fmt(second)}, over the images where neither map collapsed"})
    lines = {v.method: {e.check: e.outcome for e in v.evidence} for v in verdicts if not v.control}
    missed = sorted(m for m, checks in lines.items() if checks["ground truth"] == FAIL)
    unclear = sorted(m for m, checks in lines.items() if checks["ground truth"] == UNCLEAR)
    alarms = sorted(m for m, checks in lines.items() if checks["false alarms"] == FAIL)
    total = len(lines)
    if total:
        rows.append({"finding": "Adebayo et al. 2022: attributions often miss a spurious signal the model relies on",
                     "outcome": "reproduces" if len(missed) * 2 >= total else
                     ("does not reproduce" if not missed and not unclear else "partly: for some methods"),
                     "evidence": f"{len(missed)} of {total} methods miss the intensity-neutral cue (the ground-truth "
                                 "line fails)" + (f": {', '.join(missed)}" if missed else "")
                                 + (f"; too weak to call for {', '.join(unclear)}" if unclear else "")})
        rows.append({"finding": "Adebayo et al. 2022: attributions raise false alarms on a signal the model does "
                                "not use",
                     "outcome": "reproduces" if alarms else "does not reproduce",
                     "evidence": (f"{len(alarms)} of {total} methods put more mass on a cue the no-reliance twin "
                                  "never uses than the line the controls set" + (f": {', '.join(alarms)}"
                                                                                  if alarms else ""))})
    return rows

