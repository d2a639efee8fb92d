"""train_decoy: the planted ground truth. Two twins of the network are trained on the same cued images (a 4x4
patch in a random corner codes a label, as an intensity-neutral pattern or as Ross et al.'s grey level; in a share
of the images the label is independent of the digit): the decoy twin, whose cue codes the label, and the
no-reliance twin, whose cue codes a random label. Then, on the test images: proof by intervention that the decoy
twin relies on each cue type and the no-reliance twin does not, and per cue type the images on which the cue
dominates the decoy twin's decision (removing it lowers the explained logit more than removing any other 4x4
window that does not overlap it), from which every method is scored (see decoy.py)."""

import logging
from pathlib import Path

from mnist_xai import data, params, stage, tracking
from mnist_xai.errors import UserError
from mnist_xai.files import atomic_write_json, atomic_write_npz

log = logging.getLogger("train_decoy")

DECOY_MODEL = Path("models/model_decoy.pt")
TWIN_MODEL = Path("models/model_no_reliance.pt")
METRICS = Path("metrics/decoy.json")
GROUND_TRUTH = Path("ground_truth/decoy.npz")
MIN_GROUND_TRUTH = 10
INTERVENTION_IMAGES = 2000  # test images of the accuracy-under-intervention table: +-2.2 points at worst


def main() -> None:
    p = params.load("base", "train", "decoy", "tracking")
    # imported after the params are checked, so a bad value fails in a fraction of a second
    import numpy as np
    import torch

    from mnist_xai import decoy
    from mnist_xai.attribution.perturbation import window_drops
    from mnist_xai.evaluation import predict
    from mnist_xai.model import build_model, commuted, save_model
    from mnist_xai.quality.localisation import POINTING_TOLERANCE, pointing_chance
    from mnist_xai.quality.stats import paired_proportion_difference, proportion_interval
    from mnist_xai.training import resolve_device, train

    device = resolve_device(p.base.device)
    data_dir = Path("data") / p.base.dataset
    images, labels = data.load_split(data_dir, "train")
    test_images, test_labels = data.load_split(data_dir, "test")
    seed = p.base.seed + 2
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

    with tracking.stage_run("train_decoy", p.tracking.experiment,
                            params={"decoy": vars(p.decoy), "train": vars(p.train)},
                            tags={"data_md5": tracking.dir_md5(data_dir)}) as run:
        with stage.work():
            model, decoy_fit = fit(relies=True, on_epoch=run.log_epoch)
            twin, twin_fit = fit(relies=False)
            interventions = {name: decoy.intervene(lambda batch, m=m: predict(m, batch, device),
                                                   test_images[:INTERVENTION_IMAGES],
                                                   test_labels[:INTERVENTION_IMAGES], seed=seed + 1)
                             for name, m in (("decoy", model), ("no_reliance", twin))}
            fast = commuted(model.eval())

            def drops(cued: np.ndarray) -> np.ndarray:
                x = data.normalize(cued).to(device)
                targets = torch.as_tensor(predict(model, cued, device), device=device)
                return window_drops(fast, x, targets, window=decoy.CUE_SIZE, stride=1, fill=data.BLACK,
                                    score="logit").cpu().numpy()

            wanted = {"pattern": p.decoy.n_ground_truth, "grey": p.decoy.n_ground_truth_grey}
            truths = {cue: decoy.ground_truth(drops, test_images, test_labels, cue, n_pool=p.decoy.n_pool,
                                              n=wanted[cue], seed=seed + 3 + k)
                      for k, cue in enumerate(decoy.CUE_TYPES)}
        if len(truths["pattern"].chosen) < MIN_GROUND_TRUTH:
            raise UserError(f"the pattern cue dominates the decoy model's decision on only "
                            f"{len(truths['pattern'].chosen)} of {len(truths['pattern'].pool)} test images (at least "
                            f"{MIN_GROUND_TRUTH} are needed to score the methods): raise decoy.uninformative_share, "
                            "decoy.epochs or decoy.n_pool")

        arrays = {}
        for cue, truth in truths.items():
            chosen = truth.pool[truth.chosen]
            cued = decoy.with_cue(test_images[chosen], truth.corners[truth.chosen], test_labels[chosen], cue)
            arrays |= {f"{cue}_indices": chosen, f"{cue}_corners": truth.corners[truth.chosen],
                       f"{cue}_labels": test_labels[chosen], f"{cue}_decoy_targets": predict(model, cued, device),
                       f"{cue}_twin_targets": predict(twin, cued, device), f"{cue}_margin": truth.margin[truth.chosen],
                       f"{cue}_pool_labels": test_labels[truth.pool], f"{cue}_pool_dominated": truth.dominated}
        save_model(model, DECOY_MODEL)  # every output written only now, when all of them can be
        save_model(twin, TWIN_MODEL)
        atomic_write_npz(GROUND_TRUTH, **arrays)

        def share(hits):
            return summary(proportion_interval(hits))

        def cue_metrics(cue: str) -> dict:
            truth = truths[cue]
            pool_labels = test_labels[truth.pool]
            return {
                "accuracy": {name: {condition: share(correct) for condition, correct
                                    in interventions[name][cue].correct.items()} for name in interventions},
                "reliance": {name: summary(paired_proportion_difference(
                    interventions[name][cue].correct["consistent"], interventions[name][cue].correct["shuffled"]))
                    for name in interventions},
                "dominated": share(truth.dominated),
                "dominated_per_label": {str(label): share(truth.dominated[pool_labels == label])
                                        for label in np.unique(pool_labels)},
                "n_pool": int(len(truth.pool)),
                "n_dominated": int(truth.dominated.sum()),
                "n_ground_truth": int(len(truth.chosen)),
                "ground_truth_labels": {str(label): int(count) for label, count
                                        in zip(*np.unique(test_labels[truth.pool[truth.chosen]], return_counts=True),
                                               strict=True)},
            }

        metrics = {
            "cues": {cue: cue_metrics(cue) for cue in decoy.CUE_TYPES},
            "chance": decoy.CUE_SIZE ** 2 / test_images[0].size,
            "pointing_tolerance": POINTING_TOLERANCE,
            "pointing_chance": round(pointing_chance(POINTING_TOLERANCE), 6),
            "train_accuracy": {"decoy": decoy_fit, "no_reliance": twin_fit},
            "uninformative_share": p.decoy.uninformative_share,
            "epochs": p.decoy.epochs,
            "n_train_images": int(len(images)),
            "n_intervention": min(INTERVENTION_IMAGES, int(len(test_labels))),
        }
        atomic_write_json(METRICS, metrics)
        run.log_metrics({f"{cue}.{name}.reliance": metrics["cues"][cue]["reliance"][name]["value"]
                         for cue in decoy.CUE_TYPES for name in interventions}
                        | {f"{cue}.n_ground_truth": metrics["cues"][cue]["n_ground_truth"] for cue in decoy.CUE_TYPES})
        run.set_tags({"output_md5": tracking.file_md5(DECOY_MODEL)})
    for cue in decoy.CUE_TYPES:
        m = metrics["cues"][cue]
        log.info("%s cue: the decoy model is %.1f %% accurate with it consistent, %.1f %% shuffled (reliance %.1f "
                 "points; the no-reliance twin %.1f); it dominates %d of %d pool images, %d scored", cue,
                 100 * m["accuracy"]["decoy"]["consistent"]["value"], 100 * m["accuracy"]["decoy"]["shuffled"]["value"],
                 100 * m["reliance"]["decoy"]["value"], 100 * m["reliance"]["no_reliance"]["value"], m["n_dominated"],
                 m["n_pool"], m["n_ground_truth"])


def summary(estimate: tuple[float, float, float]) -> dict:
    value, low, high = estimate
    return {"value": round(value, 6), "low": round(low, 6), "high": round(high, 6)}


if __name__ == "__main__":
    stage.run(main)
