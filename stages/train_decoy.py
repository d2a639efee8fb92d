"""train_decoy: the planted ground truth. Two twins of the network are trained on the same cued images (a 4x4
patch in a random corner codes a label, as an intensity-neutral pattern or as Ross et al.'s grey level; in a share
of the images the label is independent of the digit): the decoy twin, whose cue codes the label, and the
no-reliance twin, whose cue codes a random label. Then, on the test images: proof by intervention that the decoy
twin relies on each cue type and the no-reliance twin does not, and per cue type the images on which the cue
dominates the decoy twin's decision (removing it lowers the explained logit more than removing any other 4x4
window that does not overlap it), from which every method is scored (see decoy.py). All of it is drawn
quality.replicates times with independent seeds (replicates.py): models/decoy/ holds each replicate's twins, the
ground truth's arrays carry each image's replicate."""

import logging
from pathlib import Path

from mnist_xai import data, params, stage, tracking
from mnist_xai.errors import UserError
from mnist_xai.files import atomic_write_json, atomic_write_npz

log = logging.getLogger("train_decoy")

METRICS = Path("metrics/decoy.json")
GROUND_TRUTH = Path("ground_truth/decoy.npz")
MIN_GROUND_TRUTH = 10
INTERVENTION_IMAGES = 2000  # test images of the accuracy-under-intervention table: +-2.2 points at worst


def main() -> None:
    p = params.load("base", "train", "quality", "decoy", "tracking")
    # imported after the params are checked, so a bad value fails in a fraction of a second
    import numpy as np
    import torch

    from mnist_xai import decoy, replicates
    from mnist_xai.attribution.perturbation import window_drops
    from mnist_xai.evaluation import predict
    from mnist_xai.model import build_model, commuted, save_model
    from mnist_xai.quality.localisation import POINTING_TOLERANCE, pointing_chance
    from mnist_xai.quality.stats import hierarchical_interval, paired_proportion_difference, proportion_interval
    from mnist_xai.training import resolve_device, train

    device = resolve_device(p.base.device)
    data_dir = Path("data") / p.base.dataset
    all_images, all_labels = data.load_split(data_dir, "train")
    test_images, test_labels = data.load_split(data_dir, "test")
    wanted = {"pattern": p.decoy.n_ground_truth, "grey": p.decoy.n_ground_truth_grey}

    def replicate(r: int, on_epoch=None) -> dict:
        """One draw of the twins and of the ground truth: its own training subset, cue draws, initialisation,
        order, intervention images and ground-truth pool."""
        seed = replicates.seed(p.base.seed, "decoy", r)
        images, labels = all_images, all_labels
        if p.decoy.n_images and p.decoy.n_images < len(images):
            subset = np.sort(np.random.default_rng(seed).choice(len(images), p.decoy.n_images, replace=False))
            images, labels = images[subset], labels[subset]

        def fit(relies: bool, on_epoch=None):
            cued = decoy.twin_training_set(images, labels, seed=seed, uninformative_share=p.decoy.uninformative_share,
                                           relies=relies)
            torch.manual_seed(seed)
            model = build_model({**vars(p.train), "batch_size": p.decoy.batch_size})
            result = train(model, cued.images, cued.labels, cued.images[:1000], cued.labels[:1000],  # a glance
                           epochs=p.decoy.epochs, batch_size=p.decoy.batch_size, lr=p.decoy.lr,
                           weight_decay=p.train.weight_decay, seed=seed, device=device, on_epoch=on_epoch)
            return model, result.history[-1]["train_accuracy"]

        model, decoy_fit = fit(relies=True, on_epoch=on_epoch)
        twin, twin_fit = fit(relies=False)
        shown = np.random.default_rng(seed + 1).choice(len(test_images), min(INTERVENTION_IMAGES, len(test_images)),
                                                       replace=False)
        interventions = {name: decoy.intervene(lambda batch, m=m: predict(m, batch, device), test_images[shown],
                                               test_labels[shown], seed=seed + 1)
                         for name, m in (("decoy", model), ("no_reliance", twin))}
        fast = commuted(model.eval())

        def drops(cued: np.ndarray) -> np.ndarray:
            x = data.normalize(cued).to(device)
            targets = torch.as_tensor(predict(model, cued, device), device=device)
            return window_drops(fast, x, targets, window=decoy.CUE_SIZE, stride=1, fill=data.BLACK,
                                score="logit").cpu().numpy()

        truths = {cue: decoy.ground_truth(drops, test_images, test_labels, cue, n_pool=p.decoy.n_pool, n=wanted[cue],
                                          seed=seed + 3 + k)
                  for k, cue in enumerate(decoy.CUE_TYPES)}
        if len(truths["pattern"].chosen) < MIN_GROUND_TRUTH:
            raise UserError(f"in replicate {r}, the pattern cue dominates the decoy model's decision on only "
                            f"{len(truths['pattern'].chosen)} of {len(truths['pattern'].pool)} test images (at least "
                            f"{MIN_GROUND_TRUTH} are needed to score the methods): raise decoy.uninformative_share, "
                            "decoy.epochs or decoy.n_pool")
        return {"model": model, "twin": twin, "fit": {"decoy": decoy_fit, "no_reliance": twin_fit},
                "interventions": interventions, "truths": truths, "n_train_images": int(len(images))}

    count = p.quality.replicates
    with tracking.stage_run("train_decoy", p.tracking.experiment,
                            params={"decoy": vars(p.decoy), "train": vars(p.train), "replicates": count},
                            tags={"data_md5": tracking.dir_md5(data_dir)}) as run:
        with stage.work():
            drawn = []
            for r in range(count):
                log.info("replicate %d of %d: training the twins, sweeping the ground truth", r + 1, count)
                drawn.append(replicate(r, on_epoch=run.log_epoch if r == 0 else None))

        arrays: dict[str, list] = {}
        for r, one in enumerate(drawn):
            for cue, truth in one["truths"].items():
                chosen = truth.pool[truth.chosen]
                cued = decoy.with_cue(test_images[chosen], truth.corners[truth.chosen], test_labels[chosen], cue)
                for field, array in {"indices": chosen, "corners": truth.corners[truth.chosen],
                                     "labels": test_labels[chosen],
                                     "decoy_targets": predict(one["model"], cued, device),
                                     "twin_targets": predict(one["twin"], cued, device),
                                     "margin": truth.margin[truth.chosen], "replicate": np.full(len(chosen), r),
                                     "pool_labels": test_labels[truth.pool], "pool_dominated": truth.dominated,
                                     "pool_replicate": np.full(len(truth.pool), r)}.items():
                    arrays.setdefault(f"{cue}_{field}", []).append(array)
        for r, one in enumerate(drawn):  # every output written only now, when all of them can be
            save_model(one["model"], replicates.decoy_model(r))
            save_model(one["twin"], replicates.no_reliance_model(r))
        atomic_write_npz(GROUND_TRUTH, **{key: np.concatenate(parts) for key, parts in arrays.items()})

        def cue_metrics(cue: str, group: list[dict]) -> dict:
            """A cue's figures over the given replicates, their images pooled; with more than one replicate, each
            interval hierarchical (replicates, then images), as every interval of the verdict."""
            def pooled(per_replicate: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
                return (np.concatenate(per_replicate),
                        np.concatenate([np.full(len(a), r) for r, a in enumerate(per_replicate)]))

            def share(per_replicate: list[np.ndarray], rows=None) -> dict:
                hits, ids = pooled(per_replicate)
                if rows is not None:
                    hits, ids = hits[rows], ids[rows]
                return summary(hierarchical_interval(hits.astype(float), ids, proportion_interval(hits),
                                                     p.quality.bootstrap_resamples, p.base.seed))

            def correct(name, condition) -> list[np.ndarray]:
                return [one["interventions"][name][cue].correct[condition] for one in group]

            def reliance(name: str) -> dict:
                consistent, ids = pooled(correct(name, "consistent"))
                shuffled, _ = pooled(correct(name, "shuffled"))
                exact = paired_proportion_difference(consistent, shuffled)
                return summary(hierarchical_interval(consistent.astype(float) - shuffled, ids, exact,
                                                     p.quality.bootstrap_resamples, p.base.seed))

            conditions = group[0]["interventions"]["decoy"][cue].correct
            dominated = [one["truths"][cue].dominated for one in group]
            pool_labels = np.concatenate([test_labels[one["truths"][cue].pool] for one in group])
            scored = np.concatenate([test_labels[one["truths"][cue].pool[one["truths"][cue].chosen]] for one in group])
            return {
                "accuracy": {name: {condition: share(correct(name, condition)) for condition in conditions}
                             for name in ("decoy", "no_reliance")},
                "reliance": {name: reliance(name) for name in ("decoy", "no_reliance")},
                "dominated": share(dominated),
                "dominated_per_label": {str(label): share(dominated, pool_labels == label)
                                        for label in np.unique(pool_labels)},
                "n_pool": int(len(pool_labels)),
                "n_dominated": int(sum(d.sum() for d in dominated)),
                "n_ground_truth": int(len(scored)),
                "ground_truth_labels": {str(label): int(n) for label, n in zip(*np.unique(scored, return_counts=True),
                                                                               strict=True)},
            }

        metrics = {
            "cues": {cue: cue_metrics(cue, drawn) for cue in decoy.CUE_TYPES},
            "replicates": [{"cues": {cue: {key: value for key, value in cue_metrics(cue, [one]).items()
                                           if key in ("reliance", "dominated", "n_dominated", "n_ground_truth")}
                                     for cue in decoy.CUE_TYPES},
                            "train_accuracy": one["fit"]} for one in drawn],
            "n_replicates": count,
            "chance": decoy.CUE_SIZE ** 2 / test_images[0].size,
            "pointing_tolerance": POINTING_TOLERANCE,
            "pointing_chance": round(pointing_chance(POINTING_TOLERANCE), 6),
            "train_accuracy": {name: round(float(np.mean([one["fit"][name] for one in drawn])), 6)
                               for name in ("decoy", "no_reliance")},
            "uninformative_share": p.decoy.uninformative_share,
            "epochs": p.decoy.epochs,
            "n_train_images": drawn[0]["n_train_images"],
            "n_intervention": min(INTERVENTION_IMAGES, int(len(test_labels))),
        }
        atomic_write_json(METRICS, metrics)
        run.log_metrics({f"{cue}.{name}.reliance": metrics["cues"][cue]["reliance"][name]["value"]
                         for cue in decoy.CUE_TYPES for name in ("decoy", "no_reliance")}
                        | {f"{cue}.n_ground_truth": metrics["cues"][cue]["n_ground_truth"] for cue in decoy.CUE_TYPES})
        run.set_tags({"output_md5": tracking.file_md5(replicates.decoy_model(0))})
    for cue in decoy.CUE_TYPES:
        m = metrics["cues"][cue]
        log.info("%s cue, %d replicates pooled: the decoy model is %.1f %% accurate with it consistent, %.1f %% "
                 "shuffled (reliance %.1f points; the no-reliance twin %.1f); it dominates %d of %d pool images, %d "
                 "scored", cue, count, 100 * m["accuracy"]["decoy"]["consistent"]["value"],
                 100 * m["accuracy"]["decoy"]["shuffled"]["value"], 100 * m["reliance"]["decoy"]["value"],
                 100 * m["reliance"]["no_reliance"]["value"], m["n_dominated"], m["n_pool"], m["n_ground_truth"])


def summary(estimate: tuple[float, float, float]) -> dict:
    value, low, high = estimate
    return {"value": round(value, 6), "low": round(low, 6), "high": round(high, 6)}


if __name__ == "__main__":
    stage.run(main)
