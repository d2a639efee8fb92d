"""The `mnist-xai` console command (installed by `pip install -e .`; also `python -m mnist_xai.cli`).

    mnist-xai explain IMAGE... [--model PATH] [--methods a,b,... | --all] [--out FILE] [--root DIR]

Each subcommand is one entry in COMMANDS: a function that adds its arguments and one that runs it.
Every user error is one line `error: ...` on stderr and exit status 2, as in the pipeline's stages.
Unlike the library, this module knows the pipeline's layout (params.yaml, models/, metrics/, data/).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

from mnist_xai.errors import UserError

log = logging.getLogger("mnist_xai.cli")

SEED_METHODS = ("saliency", "smoothgrad", "gradcam", "scorecam")
"""The seed notebook's four methods: what `explain` runs when there is no params.yaml."""
OOD_TRAIN_IMAGES = 20_000  # the first 20,000 training images are the neighbours searched ...
OOD_REFERENCE_IMAGES = 500  # ... and 500 test images (seeded) the yardstick: ~0.2 s in all
ONE_THREAD_BELOW = 32
"""Fewer images than this are explained on one thread: too little work to share, and on a busy machine
two OpenMP threads waiting for each other made one image's four methods 15x slower (0.5 s, not 0.03 s)."""


class Parser(argparse.ArgumentParser):
    """argparse, with its usage errors as one line `error: ...` and exit status 2."""

    def error(self, message: str):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


# ---------------------------------------------------------------------------------------------------------
# explain


def add_explain_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="PNG, JPEG, BMP or GIF files: a photo or a drawing of a digit, any size, grey or colour")
    parser.add_argument("--root", type=Path, default=Path("."),
                        help="the pipeline's folder, holding params.yaml, models/, data/, metrics/ (default: .)")
    parser.add_argument("--model", type=Path, help="the model's state_dict (default: ROOT/models/model.pt)")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--methods", help="comma-separated methods, e.g. gradcam,scorecam (default: the methods "
                        "under explain.methods in params.yaml, with their params there)")
    choice.add_argument("--all", action="store_true", help="every method mnist-xai has")
    parser.add_argument("--out", type=Path, help="the HTML page to write (default: ROOT/reports/explain-<name>.html)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each step and its wall time")


def run_explain(args: argparse.Namespace) -> None:
    clock = Stopwatch()
    from mnist_xai.user_image import load_and_prepare  # no torch yet: a bad file fails in a fraction of a second

    prepared = [load_and_prepare(name) for name in args.images]
    root = args.root
    params_file = root / "params.yaml"
    out = args.out or root / "reports" / f"explain-{page_name(args.images)}.html"
    if out.is_dir():
        raise UserError(f"--out {out} is a folder: give a file name, e.g. {out / 'explain.html'}")
    dataset = _dataset(params_file)
    clock.lap(f"read and prepared {len(prepared)} image(s)")
    methods, params_source = chosen_methods(args, params_file)
    clock.lap("imported torch and the methods")

    import numpy as np
    import torch

    from mnist_xai import data
    from mnist_xai.attribution import attribute
    from mnist_xai.explain_page import ImageResult, PageInputs, build_page
    from mnist_xai.model import load_model
    from mnist_xai.tracking import file_md5

    if len(prepared) < ONE_THREAD_BELOW:
        torch.set_num_threads(1)
    model_path = args.model or root / "models" / "model.pt"
    model = load_model(model_path)
    images = np.stack([p.image for p in prepared])
    x = data.normalize(images)
    with torch.inference_mode():
        probabilities = torch.softmax(model(x).float(), dim=1).numpy()
    predicted = torch.as_tensor(probabilities.argmax(axis=1))
    clock.lap("loaded the model and predicted")
    maps, seconds = {}, {}
    backgrounds = _backgrounds(methods, root, dataset)
    for method, method_params in methods.items():
        lap = time.perf_counter()
        maps[method] = attribute(method, model, x, predicted, **method_params, **backgrounds.get(method, {})).numpy()
        seconds[method] = (time.perf_counter() - lap) / len(images)
    clock.lap(f"explained with {len(methods)} method(s)")
    scores, nearest, ood_note = _ood(images, root, dataset)
    clock.lap("scored how unlike the training data")

    results = [ImageResult(name=name, prepared=p, probabilities=probabilities[i],
                           maps={method: maps[method][i] for method in methods}, seconds=seconds,
                           ood=scores[i], nearest_image=nearest[i][0], nearest_label=nearest[i][1])
               for i, (name, p) in enumerate(zip(args.images, prepared, strict=True))]
    model_md5 = file_md5(model_path)
    verdicts = pipeline_verdicts(root)
    pipeline_model = root / "models" / "model.pt"
    pipeline_md5 = file_md5(pipeline_model) if pipeline_model.is_file() else f"unknown ({pipeline_model} is missing)"
    quality_file = root / "metrics" / "quality.json"
    page = build_page(PageInputs(
        results=results, class_names=list(data.get_dataset(dataset).class_names), dataset=dataset,
        model_path=str(model_path), model_md5=model_md5, method_params=methods, params_source=params_source,
        verdicts=verdicts, verdicts_model_md5=pipeline_md5,
        verdicts_source=f"{quality_file} from the last pipeline run" if verdicts is not None else
        f"{quality_file} does not exist: run the pipeline (dvc repro) for each method's verdict",
        ood_note=ood_note))
    _write(out, page)
    clock.lap(f"wrote {out}")

    for result in results:
        ood = f"OOD percentile {result.ood.percentile:.0f}" if result.ood else "no OOD score"
        print(f"{result.name}: predicted {result.predicted} ({100 * result.probabilities.max():.1f} %), {ood}")
    if verdicts is not None and pipeline_md5 != model_md5:
        print(f"warning: the pipeline's verdicts are for model {pipeline_md5}, not {model_path} ({model_md5})",
              file=sys.stderr)
    print(f"wrote {out} ({len(page.encode()) / 1024:.0f} kB) in {clock.total():.1f} s")


class Stopwatch:
    """Logs the wall time of each step (shown with --verbose)."""

    def __init__(self):
        self.started = self.last = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        log.info("%s: %.3f s", step, now - self.last)
        self.last = now

    def total(self) -> float:
        return time.perf_counter() - self.started


def page_name(images: list[str]) -> str:
    """The page's name: the first image's file name without its suffix (only letters, digits, . _ -),
    and how many more images the page holds."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(images[0]).stem).strip("._") or "image"
    return stem if len(images) == 1 else f"{stem}-and-{len(images) - 1}-more"


def _dataset(params_file: Path) -> str:
    from mnist_xai import params

    return params.load("base", path=params_file).base.dataset if params_file.is_file() else "mnist"


def chosen_methods(args: argparse.Namespace, params_file: Path) -> tuple[dict[str, dict], str]:
    """{method: params} to run, and where the params came from. A method configured in params.yaml runs
    with its params there; any other with its defaults. An unknown name is a ParamError."""
    from mnist_xai import params
    from mnist_xai.attribution import METHODS, get_method

    configured = params.configured_methods(params_file) if params_file.is_file() else {}
    if args.all:
        names = list(METHODS)
    elif args.methods is not None:
        names = list(dict.fromkeys(name.strip() for name in args.methods.split(",") if name.strip()))
        if not names:
            raise UserError("--methods is empty: give comma-separated names, e.g. --methods gradcam,scorecam")
    else:
        names = list(configured or SEED_METHODS)
    chosen = {}
    for name in names:
        method = get_method(name)
        chosen[name] = params.method_params(name, params_file) if name in configured else method.resolve({})
    source = (f"params from {params_file} where configured, defaults otherwise" if configured
              else f"default params ({params_file} not found)")
    return chosen, source


def pipeline_verdicts(root: Path) -> dict[str, dict] | None:
    """Each method's verdict and key quality scores from the pipeline's last verdicts stage, or None when
    there is none: {method: {"verdict": str, "reported": str, "scores": {label: (value, low, high)}}}, "reported"
    being the verdict with its replicate support, or "unstable (k/R)"."""
    from mnist_xai.files import read_json
    from mnist_xai.quality.metrics import BY_KEY, KEY_SCORES

    path = root / "metrics" / "quality.json"
    if not path.is_file():
        return None
    quality = read_json(path, "verdicts")
    try:
        return {method: {"verdict": values["verdict"], "reported": values.get("reported", values["verdict"]),
                         "scores": {f"{BY_KEY[key].label} {'↑' if BY_KEY[key].better == 'higher' else '↓'}":
                                    (values[key]["value"], values[key]["low"], values[key]["high"])
                                    for key in KEY_SCORES if key in values}}
                for method, values in quality["methods"].items()}
    except (KeyError, TypeError) as error:
        raise UserError(f"{path} is not the verdicts stage's output (no {error}); re-make it with "
                        "`dvc repro verdicts`") from None


def _ood(images, root: Path, dataset: str):
    """Each image's OOD score and (nearest training image, its label), or Nones and the reason."""
    import numpy as np

    from mnist_xai.user_image import ood_scores

    loaded, note = _training_images(root, dataset)
    if loaded is None:
        return [None] * len(images), [(None, None)] * len(images), note
    train_images, train_labels, test_images = loaded
    reference = test_images[np.random.default_rng(0).choice(len(test_images), OOD_REFERENCE_IMAGES, replace=False)]
    scores = ood_scores(images, train_images[:OOD_TRAIN_IMAGES], reference)
    return scores, [(train_images[s.nearest], int(train_labels[s.nearest])) for s in scores], ""


def _backgrounds(methods: dict, root: Path, dataset: str) -> dict:
    """Per method that takes a baseline distribution, its background of training images (seed 0, as the
    pipeline's default base.seed)."""
    from mnist_xai.attribution.registry import get_method
    from mnist_xai.explanation import background_for

    needing = [method for method in methods if get_method(method).background]
    if not needing:
        return {}
    loaded, note = _training_images(root, dataset)
    if loaded is None:
        raise UserError(f"{', '.join(needing)} take(s) training images as a baseline distribution, and {note}")
    return {method: background_for(method, methods[method], lambda: loaded[0], seed=0) for method in needing}


def _training_images(root: Path, dataset: str):
    """(train images, train labels, test images) for the OOD score: the pipeline's data/<dataset>, else a
    local copy the download stage knows (for MNIST the committed archives); or None and the reason."""
    from mnist_xai import data

    folder = root / "data" / dataset
    try:
        return (*data.load_split(folder, "train"), data.load_split(folder, "test")[0]), ""
    except data.DataError:
        pass
    spec = data.get_dataset(dataset)
    local = [mirror for mirror in [str(root / "archives" / dataset), *data.mirrors_for(spec)] if Path(mirror).is_dir()]
    if not local:
        return None, f"no {dataset} images in {folder}: run `dvc repro download`"
    try:
        train, labels, test = (data.parse_idx(data.fetch_verified(spec, name, local), name) for name in
                               ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"))
    except data.DataError as error:
        return None, f"no usable {dataset} images ({error})"
    return (train, labels, test), ""


def _write(out: Path, page: str) -> None:
    from mnist_xai.files import atomic_write_text  # the one place this module writes a file

    try:
        atomic_write_text(out, page)
    except OSError as error:
        raise UserError(f"cannot write {out}: {error.strerror or error}") from None


# ---------------------------------------------------------------------------------------------------------
# study


def add_repository_arguments(parser: argparse.ArgumentParser, out: str) -> None:
    """--root, --out (`out` says what it writes and where by default) and -v, as the grid commands share them."""
    parser.add_argument("--root", type=Path, default=Path("."), help="the DVC repository (default: .)")
    parser.add_argument("--out", type=Path, help=out)
    parser.add_argument("-v", "--verbose", action="store_true", help="log each step")


def repository(args: argparse.Namespace) -> Path:
    """--root, resolved, refused in one line when it is not this pipeline's repository."""
    root = args.root.resolve()
    if not (root / "dvc.yaml").is_file():
        raise UserError(f"{root} is not this pipeline's repository (no dvc.yaml): pass --root")
    return root


def add_study_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiments", nargs="*", metavar="EXPERIMENT",
                        help="DVC experiment names (default: every experiment `dvc exp show` lists)")
    add_repository_arguments(parser, "the page (default: ROOT/reports/study.html)")


def run_study(args: argparse.Namespace) -> None:
    from mnist_xai.study import study

    root = repository(args)
    out = args.out or root / "reports" / "study.html"
    started = time.perf_counter()
    result = study(root, args.experiments, out)
    flips = [row["method"] for row in result["transfer"] if not row["holds"]]
    cells = [label if len(seeds) == 1 else f"{label} (seeds {', '.join(map(str, seeds))})"
             for label, seeds in ((label, result["seeds"][label]) for label in result["cells"])]
    print(f"wrote {out}: {len(result['cells'])} cells ({', '.join(cells)}); "
          f"{len(result['transfer']) - len(flips)} verdicts hold, {len(flips)} flip"
          f"{': ' + ', '.join(flips) if flips else ''} ({time.perf_counter() - started:.1f} s)")


# ---------------------------------------------------------------------------------------------------------
# stability


def seed_list(text: str) -> list[int]:
    """'0-4' or '0,1,2' (or both: '0-4,10')."""
    seeds = []
    try:
        for part in text.split(","):
            first, _, last = part.strip().partition("-")
            seeds += list(range(int(first), int(last) + 1)) if last else [int(first)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: give whole numbers such as 0-4 or 0,1,2") from None
    if len(set(seeds)) < 2 or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: give at least two different seeds, none negative")
    return sorted(set(seeds))


def add_stability_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", type=seed_list, default=seed_list("0-4"),
                        help="the base.seed values, each a full default run: 0-4 (default), 0,1,2, 0-9")
    parser.add_argument("--jobs", type=int, default=1, help="experiments run at a time (default 1)")
    parser.add_argument("--no-run", action="store_true", help="only analyse the seed-S experiments already run")
    parser.add_argument("--redecide", action="store_true",
                        help="decide each seed's verdicts again from its stored scores with this code's rule (to "
                             "check a change of the rule over a stored study without re-running it)")
    add_repository_arguments(parser, "the results (default: ROOT/reports/stability.json)")


def run_stability(args: argparse.Namespace) -> None:
    from mnist_xai import stability
    from mnist_xai.files import atomic_write_json

    root = repository(args)
    if args.jobs < 1:
        raise UserError(f"--jobs {args.jobs}: run at least one experiment at a time")
    if not args.no_run:
        stability.run_seeds(root, args.seeds, args.jobs)
    result = stability.analyse(stability.collect(root, args.seeds, decide_again=args.redecide))
    out = args.out or root / "reports" / "stability.json"
    try:
        atomic_write_json(out, result)
    except OSError as error:
        raise UserError(f"cannot write {out}: {error.strerror or error}") from None
    print("\n".join(stability.summary_lines(result)))
    print(f"wrote {out}")


# ---------------------------------------------------------------------------------------------------------
# cell and grid


def add_cell_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo", required=True, help="the git remote to clone and push to (URL or path)")
    parser.add_argument("--rev", required=True, help="the commit to run (on that remote)")
    parser.add_argument("--name", required=True, help="the experiment's name, unique in the grid")
    parser.add_argument("-S", "--set-param", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="a param for this cell, as dvc exp run -S takes it (repeatable)")
    parser.add_argument("--cpus", type=int, help="torch threads for its stages (default: every core)")
    parser.add_argument("--workdir", type=Path, help="where the temporary clone goes (default: the system's)")
    parser.add_argument("--die-with-parent", action="store_true",
                        help="stop the cell, dvc and its stages when the process that started it dies (Ray uses it)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each step")


def run_cell(args: argparse.Namespace) -> None:
    from mnist_xai.grid import cell

    if args.cpus is not None and args.cpus < 1:
        raise UserError(f"--cpus {args.cpus}: give at least 1")
    outcome = cell(args.repo, args.rev, args.name, args.settings, cpus=args.cpus, workdir=args.workdir,
                   die_with_parent=args.die_with_parent)
    print(f"cell {args.name}: {outcome}")


def add_grid_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-S", "--set-param", dest="settings", action="append", default=[], metavar="KEY=A,B",
                        help="a param and its values; one cell per combination (repeatable)")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local: DVC's queue in this repository (default); ray: one Ray task per cell")
    parser.add_argument("--jobs", type=int, default=2, help="local engine: experiments at a time (default 2)")
    parser.add_argument("--address", help="ray engine: the cluster to join, HOST:PORT (default: a cluster of this "
                                          "machine alone, on 127.0.0.1)")
    parser.add_argument("--cpus-per-cell", type=int, default=1,
                        help="ray engine: CPUs reserved per cell, which decide how many cells a node runs at once; "
                             "their stages share the node's cores, as the local queue's do (default 1)")
    parser.add_argument("--fixed-threads", action="store_true",
                        help="ray engine: exactly --cpus-per-cell torch threads per cell, never the node's idle "
                             "cores: outputs repeat byte for byte, and a node shared with other work gets no more")
    parser.add_argument("--prefix", default="cell", help="the cells' names start with it (default: cell)")
    parser.add_argument("--list", action="store_true",
                        help="only print the cells, one per line (NAME -S KEY=VALUE ...), for another scheduler: "
                             "see deploy/")
    add_repository_arguments(parser, "the study page (default: ROOT/reports/study.html)")


def run_grid(args: argparse.Namespace) -> None:
    from mnist_xai import grid
    from mnist_xai.params import read_yaml
    from mnist_xai.study import list_experiments, study

    root = repository(args)
    if not args.settings:
        raise UserError("give the grid's params, e.g. -S base.dataset=mnist,fashion-mnist -S train.arch=cnn,resnet")
    if args.jobs < 1 or args.cpus_per_cell < 1:
        raise UserError("--jobs and --cpus-per-cell must be at least 1")
    cells = grid.expand(args.settings, args.prefix)
    if args.list:  # longest first too: an array job starts its tasks in index order
        for name in grid.longest_first(cells, read_yaml(root / "params.yaml")):
            print(" ".join([name, *(f"-S {setting}" for setting in cells[name])]))
        return
    print(f"{len(cells)} cells: {', '.join(cells)}")
    if args.engine == "ray":
        outcome = grid.run_ray(root, cells, args.address, args.cpus_per_cell, fixed_threads=args.fixed_threads)
        for name, result in outcome.items():
            print(f"cell {name}: {result}")
    else:
        grid.run_queue(root, cells, args.jobs, desc="cells")
    experiments = list_experiments(root)
    done = {e["name"] for e in experiments if not e.get("error")}
    failed = [name for name in cells if name not in done]
    if len(failed) < len(cells):
        out = args.out or root / "reports" / "study.html"
        result = study(root, list(cells), out, allow_missing=True, experiments=experiments)
        print(f"wrote {out}: {len(result['cells'])} cells, {len(result['left_out'])} left out")
    if failed:  # a scheduler, or a script, must see that the grid is not complete
        where = "the lines above" if args.engine == "ray" else "`dvc queue logs NAME`"
        others = "; the study page shows the others" if len(failed) < len(cells) else ""
        raise UserError(f"{len(failed)} of {len(cells)} cells failed: {', '.join(failed)} (see {where}){others}. "
                        "Fix the cause and run the grid again: finished cells are skipped")


# ---------------------------------------------------------------------------------------------------------
# The command line

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], None]]] = {
    "explain": ("explain your own images: prediction, every method's map, verdicts, an OOD score",
                add_explain_arguments, run_explain),
    "study": ("a page comparing a grid of DVC experiments (dataset x architecture): which verdicts transfer",
              add_study_arguments, run_study),
    "stability": ("re-run the default pipeline with several base.seed values: do the verdicts and intervals hold?",
                  add_stability_arguments, run_stability),
    "cell": ("run one experiment of a grid on this machine: clone at a commit, dvc exp run, dvc exp push",
             add_cell_arguments, run_cell),
    "grid": ("run a grid of experiments (locally through DVC's queue, or on a Ray cluster), then the study page",
             add_grid_arguments, run_grid),
}


def build_parser() -> Parser:
    parser = Parser(prog="mnist-xai", description="An interpretability workbench for MNIST classifiers.")
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for name, (summary, add_arguments, run) in COMMANDS.items():
        subparser = subcommands.add_parser(name, help=summary, description=summary)
        add_arguments(subparser)
        subparser.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        args.run(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
