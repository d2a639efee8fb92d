"""Which explanation to trust: a verdict per method, calibrated by the controls and validated by the ground truth.

Every line of evidence is an interval test against a control, never a bare threshold on one number:

1. Ground truth (the strongest evidence): on the decoy model, which provably decides by a planted patch on
   these images, does the method's largest attribution point at the patch for most images? Pass when the
   pointing game's 95 % interval lies above 50 %, fail when it lies below.
2. False alarms: on the normal model, which never saw the patch, does the method put more positive mass on it
   than a map without information would (the patch's share of the image)? Fail when the interval lies above
   chance.
3. Faithfulness: are the deletion and insertion AUCs better than the `random` control's, image by image
   (paired bootstrap of the difference)?
4. Sanity checks, repaired and calibrated (Hedström et al. 2023; Adebayo et al. 2018's edge-detector control):
   Smooth MPRT's rho must lie below the edge-map control's (the randomised model's maps resemble the trained
   ones less than a model-free edge detector does); Efficient MPRT's entropy rise must lie above 0; where the
   permuted-label model memorised its labels, the data-randomisation rho must lie below the edge-map control's.

Validated by the ground truth: the sanity checks are contested (Binder et al. 2023), so each counts against a
method only when, in this run, it ranks the methods as the ground truth does (its meta-evaluation interval lies
above 0). The others are shown, marked as not counted.

The verdict: "do not trust" when the maps are degenerate, when the method misses the cue the model provably
uses, or when it is no more faithful than noise; "trust" when it finds the cue and no counted check fails;
"use with care" when a counted check fails; "too weak to call" when the ground truth cannot be called and
nothing counted fails.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mnist_xai.quality.metrics import GROUND_TRUTH, METRICS
from mnist_xai.quality.stats import CONFIDENCE, average_ranks, bootstrap_means, interval, paired_interval

CONTROL = "random"
PASS, FAIL, UNCLEAR = "pass", "fail", "inconclusive"
POINTING_MAJORITY = 0.5
MEMORISED = 0.95  # the permuted-label model must fit this share of its labels (Adebayo et al. trained to fit them)
VERDICT_ORDER = ("trust", "use with care", "too weak to call", "do not trust")


@dataclass
class Evidence:
    check: str
    outcome: str  # pass | fail | inconclusive | not run
    detail: str
    counted: bool = True  # whether the verdict uses it


@dataclass
class Verdict:
    method: str
    verdict: str
    reason: str
    evidence: list[Evidence] = field(default_factory=list)


def _test(low: float, high: float, bound: float, better: str) -> str:
    """Outcome of 'the value is better than `bound`' from its interval."""
    if better == "lower":
        return PASS if high < bound else FAIL if low > bound else UNCLEAR
    return PASS if low > bound else FAIL if high < bound else UNCLEAR


def _fmt(estimate: tuple[float, float, float], digits: int = 3, percent: bool = False) -> str:
    scale, unit = (100, " %") if percent else (1, "")
    value, low, high = (scale * v for v in estimate)
    d = 1 if percent else digits
    return f"{value:.{d}f}{unit} [{low:.{d}f}, {high:.{d}f}]"


def _combine(*outcomes: str) -> str:
    """Pass when every part passes, fail when one fails."""
    if all(o == PASS for o in outcomes):
        return PASS
    if FAIL in outcomes:
        return FAIL
    return UNCLEAR


SANITY = {"Smooth MPRT": "smprt_vs_edge", "Efficient MPRT": "emprt_rise", "data randomisation": "data_vs_edge"}
"""The sanity lines of the verdict and the metric whose meta-evaluation decides whether each counts."""


class Judge:
    """Verdicts for every method from their per-image metric values ({method: {key: values}})."""

    def __init__(self, values: dict[str, dict[str, np.ndarray]], *, constant_share: dict[str, float],
                 degenerate: dict[str, bool], chance: float, random_label_fit: float, resamples: int, seed: int):
        if CONTROL not in values:
            raise ValueError("the verdicts need the random control's scores")
        self.values = values
        self.constant_share = constant_share
        self.degenerate = degenerate
        self.chance = chance
        self.random_label_fit = random_label_fit
        self.resamples = resamples
        self.seed = seed
        self.meta = self._meta_evaluation()
        agreeing = {row["key"] for row in self.meta if row["outcome"] == "agrees"}
        self.validated = {check: key in agreeing for check, key in SANITY.items()}

    def interval(self, method: str, key: str) -> tuple[float, float, float]:
        return interval(self.values[method][key], self.resamples, self.seed)

    def versus_control(self, method: str, key: str) -> tuple[float, float, float]:
        return paired_interval(self.values[method][key], self.values[CONTROL][key], self.resamples, self.seed)

    def _sanity(self, check: str, outcome: str, detail: str) -> Evidence:
        if self.validated[check]:
            return Evidence(check, outcome, detail)
        return Evidence(check, outcome, f"{detail}; not counted: this check does not agree with the ground truth "
                                        "here (see the meta-evaluation)", counted=False)

    def evidence(self, method: str) -> list[Evidence]:
        lines = []
        pointing = self.interval(method, "gt_pointing")
        mass = self.interval(method, "gt_mass")
        lines.append(Evidence("ground truth", _test(pointing[1], pointing[2], POINTING_MAJORITY, "higher"),
                              f"points at the planted cue in {_fmt(pointing, percent=True)} of images (needs more "
                              f"than 50 %); mass on it {_fmt(mass)} against chance {self.chance:.3f}"))
        alarm = self.interval(method, "fam_mass")
        lines.append(Evidence("false alarms", _test(alarm[1], alarm[2], self.chance, "lower"),
                              f"mass on a cue the normal model never saw {_fmt(alarm)} against chance "
                              f"{self.chance:.3f}"))
        deletion = self.versus_control(method, "deletion_auc")
        insertion = self.versus_control(method, "insertion_auc")
        lines.append(Evidence("faithfulness", _combine(_test(*deletion[1:], 0.0, "lower"),
                                                       _test(*insertion[1:], 0.0, "higher")),
                              f"deletion AUC minus random's {_fmt(deletion)} (below 0 is better), insertion AUC "
                              f"minus random's {_fmt(insertion)} (above 0 is better)"))
        smooth = self.interval(method, "smprt_vs_edge")
        lines.append(self._sanity("Smooth MPRT", _test(*smooth[1:], 0.0, "lower"),
                                  f"Smooth MPRT ρ minus edge-map ρ {_fmt(smooth)} (below 0 passes)"))
        rise = self.interval(method, "emprt_rise")
        lines.append(self._sanity("Efficient MPRT", _test(*rise[1:], 0.0, "higher"),
                                  f"entropy rise {_fmt(rise)} (above 0 passes)"))
        if self.random_label_fit < MEMORISED:
            lines.append(Evidence("data randomisation", "not run",
                                  f"the permuted-label model fitted only {100 * self.random_label_fit:.0f} % of its "
                                  f"labels (needs {100 * MEMORISED:.0f} %): an under-trained model tests nothing",
                                  counted=False))
        else:
            data = self.interval(method, "data_vs_edge")
            lines.append(self._sanity("data randomisation", _test(*data[1:], 0.0, "lower"),
                                      f"permuted-label ρ minus edge-map ρ {_fmt(data)} (below 0 passes)"))
        return lines

    def verdict(self, method: str) -> Verdict:
        lines = self.evidence(method)
        outcome = {line.check: line.outcome for line in lines}
        failed = [line.check for line in lines if line.outcome == FAIL and line.counted]
        if self.degenerate[method]:
            verdict, reason = "do not trust", (f"degenerate: {100 * self.constant_share[method]:.0f} % of its maps "
                                               "are constant, and a constant map passes every randomisation test")
        elif outcome["ground truth"] == FAIL:
            verdict, reason = "do not trust", "it misses the planted cue that the model provably uses"
        elif outcome["faithfulness"] == FAIL:
            verdict, reason = "do not trust", "its maps are no more faithful than random noise"
        elif outcome["ground truth"] == PASS and not failed:
            verdict, reason = "trust", "it finds the planted cue, and no counted check fails"
        elif failed:
            verdict, reason = "use with care", f"{' and '.join(failed)} fail{'s' if len(failed) == 1 else ''}"
        else:
            verdict, reason = "too weak to call", "the evidence on the planted cue is too weak to call either way"
        return Verdict(method, verdict, reason, lines)

    def verdicts(self) -> list[Verdict]:
        """Every method but the control, best first: by verdict, then by ground-truth mass."""
        found = [self.verdict(m) for m in self.values if m != CONTROL]
        mass = {m: float(np.mean(self.values[m]["gt_mass"])) for m in self.values}
        return sorted(found, key=lambda v: (VERDICT_ORDER.index(v.verdict), -mass[v.method], v.method))

    def neighbours(self, ranked: list[Verdict]) -> list[dict]:
        """Each method against the next one down on ground-truth mass: a paired bootstrap of the difference;
        'indistinguishable' where the interval covers 0."""
        rows = []
        for first, second in zip(ranked, ranked[1:], strict=False):
            difference = paired_interval(self.values[first.method]["gt_mass"], self.values[second.method]["gt_mass"],
                                         self.resamples, self.seed)
            rows.append({"a": first.method, "b": second.method, "difference": list(difference),
                         "indistinguishable": difference[1] <= 0 <= difference[2]})
        return rows

    def _meta_evaluation(self) -> list[dict]:
        """Does each check rank the methods as the ground truth does? Spearman rho across methods (the control
        aside) between the check's mean, oriented so that higher is better, and the ground-truth mass accuracy,
        with a 95 % interval from resampling the images of both (seeded)."""
        methods = [m for m in self.values if m != CONTROL]
        if len(methods) < 3:
            return []
        truth = bootstrap_means(np.stack([self.values[m]["gt_mass"] for m in methods]), self.resamples, self.seed)
        truth_point = np.array([np.mean(self.values[m]["gt_mass"]) for m in methods])
        rows = []
        for metric in METRICS:
            if not metric.better or (metric.group == GROUND_TRUTH and metric.key != "fam_mass"):
                continue
            sign = 1.0 if metric.better == "higher" else -1.0
            check = sign * bootstrap_means(np.stack([self.values[m][metric.key] for m in methods]), self.resamples,
                                           self.seed + 1)
            point = sign * np.array([np.mean(self.values[m][metric.key]) for m in methods])
            rho = _spearman_columns(check, truth)
            low, high = np.quantile(rho, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
            estimate = float(_spearman_columns(point[:, None], truth_point[:, None])[0])
            rows.append({"key": metric.key, "label": metric.label, "rho": round(estimate, 6),
                         "low": round(float(low), 6), "high": round(float(high), 6),
                         "outcome": "agrees" if low > 0 else "disagrees" if high < 0 else "too weak to call"})
        return rows


def _spearman_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rho between matching columns of a and b [methods, k] (average ranks for ties)."""
    ra, rb = average_ranks(np.asarray(a).T).T, average_ranks(np.asarray(b).T).T
    ra, rb = ra - ra.mean(axis=0), rb - rb.mean(axis=0)
    denominator = np.sqrt((ra ** 2).sum(axis=0) * (rb ** 2).sum(axis=0))
    return np.divide((ra * rb).sum(axis=0), denominator, out=np.zeros(ra.shape[1]), where=denominator > 0)


def findings(judge: Judge, verdicts: list[Verdict], decoy: dict) -> list[dict]:
    """Which published findings reproduce here, each with the numbers and intervals behind it."""
    rows = []
    have = set(judge.values)
    if {"guided_backprop", "saliency", "gradcam"} <= have:
        first = paired_interval(judge.values["guided_backprop"]["mprt_rho"], judge.values["saliency"]["mprt_rho"],
                                judge.resamples, judge.seed)
        second = paired_interval(judge.values["saliency"]["mprt_rho"], judge.values["gradcam"]["mprt_rho"],
                                 judge.resamples, judge.seed)
        outcome = ("reproduces" if first[1] > 0 and second[1] > 0 else
                   "does not reproduce" if first[2] < 0 or second[2] < 0 else "too weak to call")
        rows.append({"finding": "Adebayo et al. 2018: after full model randomisation, Guided Backprop's maps stay "
                                "more similar to the trained model's than Saliency's, and Saliency's more than "
                                "GradCAM's (original MPRT)",
                     "outcome": outcome,
                     "evidence": f"ρ(Guided Backprop) − ρ(Saliency) = {_fmt(first)}; ρ(Saliency) − ρ(GradCAM) = "
                                 f"{_fmt(second)}"})
    if decoy:
        gap, accuracy = decoy["consistent_minus_shuffled"], decoy["accuracy"]
        rows.append({"finding": "Ross et al. 2017: a model trained on Decoy MNIST relies on the planted patch",
                     "outcome": "reproduces" if gap["low"] > 0 else "does not reproduce" if gap["high"] < 0
                     else "too weak to call",
                     "evidence": f"test accuracy with the patch consistent {100 * accuracy['consistent']['value']:.1f}"
                                 f" %, shuffled {100 * accuracy['shuffled']['value']:.1f} %, absent "
                                 f"{100 * accuracy['none']['value']:.1f} %; consistent − shuffled "
                                 f"{_fmt((gap['value'], gap['low'], gap['high']), percent=True)}"})
    lines = {v.method: {e.check: e.outcome for e in v.evidence} for v in verdicts}
    missed = sorted(m for m, checks in lines.items() if checks["ground truth"] == FAIL)
    unclear = sorted(m for m, checks in lines.items() if checks["ground truth"] == UNCLEAR)
    alarms = sorted(m for m, checks in lines.items() if checks["false alarms"] == FAIL)
    total = len(lines)
    if total:
        rows.append({"finding": "Adebayo et al. 2022: attributions often miss a spurious signal the model relies on",
                     "outcome": "reproduces" if len(missed) * 2 >= total else
                     ("does not reproduce" if not missed and not unclear else "partly: for some methods"),
                     "evidence": f"{len(missed)} of {total} methods miss the visible patch (pointing game below 50 %)"
                                 + (f": {', '.join(missed)}" if missed else "")
                                 + (f"; too weak to call for {', '.join(unclear)}" if unclear else "")})
        rows.append({"finding": "Adebayo et al. 2022: attributions raise false alarms on a signal the model does "
                                "not use",
                     "outcome": "reproduces" if alarms else "does not reproduce",
                     "evidence": (f"{len(alarms)} of {total} methods put more than chance mass on a patch the normal "
                                  "model never saw" + (f": {', '.join(alarms)}" if alarms else ""))})
    return rows
