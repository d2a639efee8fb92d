"""verdicts: the cross-method part of the quality checks, light (no torch): each line's pass/fail threshold
calibrated by the controls, every method's verdict (the controls' included: a model-free explainer must be
distrusted, the oracle trusted), how each verdict moves when a threshold moves, the pointing game per label, the
meta-evaluation of the checks against the ground truth, which published findings reproduce, and the agreement
between methods. It reads what the quality@<method> stages wrote, so a change to one method re-scores that method
and then only this."""

import logging
from pathlib import Path

from mnist_xai import params, stage, tracking
from mnist_xai.files import atomic_write_json, read_json, read_npz

log = logging.getLogger("verdicts")

METRICS = Path("metrics/quality.json")
VERDICTS = Path("quality/verdicts.json")
CURVES = Path("plots/quality/curves.json")
RANDOMISATION = Path("plots/quality/randomisation.json")
AGREEMENT = Path("plots/quality/agreement.json")


def main() -> None:
    p = params.load("base", "explain", "quality", "tracking")
    methods = list(params.configured_methods())
    import numpy as np

    from mnist_xai.decoy import CUE_TYPES
    from mnist_xai.explanation import load_explanations
    from mnist_xai.quality.stats import centred_ranks, rank_correlation, rounded
    from mnist_xai.quality.verdict import DECISION_CONFIDENCE, SCORED_KEYS, findings, judge_scores

    arrays = {m: read_npz(Path("quality/scores") / f"{m}.npz", f"quality@{m}", keys=SCORED_KEYS) for m in methods}
    summaries = {m: read_json(Path("metrics/quality") / f"{m}.json", f"quality@{m}") for m in methods}
    decoy = read_json("metrics/decoy.json", "train_decoy")
    truth = read_npz("ground_truth/decoy.npz", "train_decoy", keys=tuple(f"{cue}_labels" for cue in CUE_TYPES))
    fit = read_json("metrics/train_random_labels.json", "train_random_labels")["train_accuracy_on_permuted_labels"]
    explanations = load_explanations("explanations", methods)

    with tracking.stage_run("verdicts", p.tracking.experiment) as run:
        with stage.work():
            judge = judge_scores(arrays, constant_share={m: summaries[m]["constant_share"] for m in methods},
                                 random_label_fit=fit, resamples=p.quality.bootstrap_resamples, seed=p.base.seed)
            ranked = judge.verdicts()
            verdicts = [{"method": v.method, "verdict": v.settled, "reason": v.reason, "rank": rank,
                         "reported": v.reported, "pooled": v.verdict, "stable": v.stable, "support": v.support,
                         "replicates": judge.replicates, "leave_one_out": v.leave_one_out,
                         "control": v.control, "threshold_sensitive": v.sensitive_to,
                         "rerun_agreement": round(v.rerun, 3), "flagged": v.flagged,
                         "evidence": [vars(e) for e in v.evidence]} for rank, v in enumerate(ranked, 1)]
            details = {"verdicts": verdicts, "calibration": judge.calibration(), "neighbours": judge.neighbours(ranked),
                       "meta_evaluation": judge.meta_evaluation(), "findings": findings(judge, ranked),
                       "per_label": judge.per_label({cue: truth[f"{cue}_labels"] for cue in CUE_TYPES}),
                       "chance": decoy["chance"], "pointing_chance": decoy["pointing_chance"],
                       "pointing_tolerance": decoy["pointing_tolerance"], "random_label_fit": fit,
                       "replicates": judge.replicates, "decision_confidence": DECISION_CONFIDENCE}
            n = min(p.quality.n_images, len(next(iter(explanations.values())).maps))
            ranks = {m: centred_ranks(np.abs(e.maps[:n])) for m, e in explanations.items()}
            agreement = {(a, b): round(float(rank_correlation(ranks[a], ranks[b]).mean()), 6)
                         for i, a in enumerate(methods) for b in methods[i + 1:]}
        by_method = {v.method: v for v in ranked}
        atomic_write_json(METRICS, {"chance": decoy["chance"], "pointing_chance": decoy["pointing_chance"], "methods": {
            m: {**summaries[m]["metrics"], "constant_share": summaries[m]["constant_share"],
                "degenerate": int(summaries[m]["degenerate"]), **by_method[m].summary()}
            for m in methods}})
        atomic_write_json(VERDICTS, details)
        atomic_write_json(CURVES, [
            {"method": m, "curve": name, "fraction": round(float(f), 6), "mean": round(float(mean), 6),
             "std": round(float(std), 6)}
            for m in methods for name in ("deletion", "insertion")
            for f, mean, std in zip(arrays[m]["curve_fractions"], arrays[m][f"curve_{name}"].mean(0),
                                    arrays[m][f"curve_{name}"].std(0), strict=True)])
        atomic_write_json(RANDOMISATION, [
            {"method": m, "step": step, "randomised": "+".join(str(layer) for layer in arrays[m]["mprt_layers"][:step])
             or "none", "rho": rounded(rho), "constant_maps": round(float(constant), 6)}
            for m in methods
            for step, (rho, constant) in enumerate(zip(arrays[m]["mprt_curve"], arrays[m]["mprt_constant"],
                                                       strict=True))])
        atomic_write_json(AGREEMENT, [{"a": a, "b": b, "rho": 1.0 if a == b else agreement.get((a, b),
                                                                                             agreement.get((b, a)))}
                                      for a in methods for b in methods])
        run.log_metrics({f"{v['method']}.verdict_rank": v["rank"] for v in verdicts})
        run.set_tags({f"verdict.{v['method']}": v["verdict"] for v in verdicts}
                     | {"output_md5": tracking.file_md5(METRICS)})
    for v in verdicts:
        log.info("%-22s %-22s %s%s; a re-run agrees %.0f %%", v["method"] + (" (control)" if v["control"] else ""),
                 v["reported"], v["reason"], f" [threshold-sensitive: {len(v['threshold_sensitive'])} moves change it]"
                 if v["threshold_sensitive"] else "", 100 * v["rerun_agreement"])


if __name__ == "__main__":
    stage.run(main)
