"""``skin``: one subcommand per task; each parses its options and calls one function.

Heavy imports (Ray, torch) happen inside the subcommand that needs them, so
``skin info`` answers in a second.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Callable, Sequence

from skin_core.data.isic import DatasetError, load_isic
from skin_core.data.summary import format_summary, summarize
from skin_core.partitioning.clusters import PartitionError
from skin_core.publish import PublishError

logger = logging.getLogger("skin")

MODEL_HELP = ("a trained student: folder, s3:// URI, or models:/NAME@ALIAS from the MLflow registry "
              "(MLFLOW_TRACKING_URI says which)")


def cmd_info(args: argparse.Namespace) -> int:
    manifest = load_isic(args.data, check_images=not args.no_images)
    summary = summarize(manifest)
    print(json.dumps(summary.to_dict(), indent=2) if args.json else format_summary(summary))
    for reject in manifest.rejects[: args.show_rejects]:
        print(f"rejected {reject.image_id}: {reject.reason} ({reject.uri})", file=sys.stderr)
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from skin_core.synth import generate_dataset

    report = generate_dataset(args.out, n=args.n, size=args.size, seed=args.seed)
    print(f"wrote {report.n_images} synthetic images of {report.n_lesions} lesions to {report.out_dir}")
    print("per class:  " + "  ".join(f"{k} {v}" for k, v in report.class_counts.items()))
    print("per origin: " + "  ".join(f"{k} {v}" for k, v in report.origin_counts.items()))
    return 0


def cmd_preprocess(args: argparse.Namespace) -> int:
    from raytasks.preprocess import format_result, run_preprocess
    from raytasks.runtime import init_ray
    from raytasks.settings import config_from_args

    config = config_from_args(args, [f"preprocess.size={args.size}"] if args.size else [])
    init_ray()
    print(format_result(run_preprocess(args.data, args.out, config.preprocess)))
    return 0


def cmd_teacher(args: argparse.Namespace) -> int:
    from raytasks.preprocess import PreprocessSummary
    from raytasks.runtime import init_ray
    from raytasks.settings import config_from_args
    from raytasks.stages import load_output, run_stage
    from raytasks.teacher import format_teacher, teacher_stage
    from raytasks.tracking import TrackedRun

    config = config_from_args(args)
    init_ray()
    stage = teacher_stage(load_output(args.data, PreprocessSummary, "preprocess"), config)
    print(format_teacher(run_stage(stage, args.out, TrackedRun())))
    return 0


def cmd_partition(args: argparse.Namespace) -> int:
    from raytasks.partition import format_partition, partition_stage
    from raytasks.settings import config_from_args
    from raytasks.stages import load_output, run_stage
    from raytasks.teacher import TeacherSummary
    from raytasks.tracking import TrackedRun

    stage = partition_stage(load_output(args.teacher, TeacherSummary, "teacher"), config_from_args(args).partition)
    print(format_partition(run_stage(stage, args.out, TrackedRun())))
    return 0


def cmd_student(args: argparse.Namespace) -> int:
    from raytasks.partition import PartitionSummary
    from raytasks.preprocess import PreprocessSummary
    from raytasks.runtime import init_ray
    from raytasks.settings import config_from_args
    from raytasks.stages import load_output
    from raytasks.student import train_students
    from raytasks.teacher import TeacherSummary
    from raytasks.tracking import TrackedRun

    config = config_from_args(args)
    init_ray()
    (result,) = train_students(load_output(args.data, PreprocessSummary, "preprocess"),
                               load_output(args.teacher, TeacherSummary, "teacher"),
                               load_output(args.partition, PartitionSummary, "partition"), config, [args.variant],
                               TrackedRun(), folders=[args.out])
    print(f"{result.summary.variant} student at {result.folder}: {result.summary}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from raytasks.evaluation import evaluate_external
    from raytasks.runtime import init_ray
    from skin_core.metrics.classification import comparison_table

    from raytasks.registry import resolve_model

    init_ray()
    reports = evaluate_external(resolve_model(args.model), args.data, args.out)
    print(comparison_table(reports).round(3).to_string())
    print(f"tables and figures in {args.out}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from raytasks.registry import resolve_model
    from skin_core.inference import predict_uris
    from skin_core.models.bundle import load_bundle

    model, card = load_bundle(resolve_model(args.model))
    results = predict_uris(model, card, args.images)
    for result in results:
        if result.error:
            print(f"{result.uri}: error: {result.error}", file=sys.stderr)
        else:
            print(f"{result.uri}: " + "  ".join(f"{name} {p:.3f}" for name, p in result.top(args.top)))
    return 1 if any(r.error for r in results) else 0


def cmd_attention(args: argparse.Namespace) -> int:
    from raytasks.attention import attention_panels

    for panel in attention_panels(args.model, args.teacher, args.images, args.out, args.baseline):
        distances = "; ".join(f"{model}: " + " ".join(f"{k} {v:.2e}" for k, v in layers.items())
                              for model, layers in panel.distances.items())
        print(f"{panel.uri}  AT distance to the teacher: {distances}")
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    from raytasks.pipeline import run_pipeline
    from raytasks.runtime import init_ray
    from raytasks.settings import config_from_args

    shortcuts = [f"data.path={args.data}"] if args.data else []
    shortcuts += [f"out={args.out}"] if args.out else []
    config = config_from_args(args, shortcuts)
    init_ray(dashboard=args.dashboard)
    print(run_pipeline(config).report)
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from raytasks.runtime import init_ray
    from raytasks.settings import config_from_args
    from raytasks.tune import SweepFailed, run_tune

    shortcuts = [f"data.path={args.data}"] if args.data else []
    shortcuts += [f"out={args.out}"] if args.out else []
    init_ray(dashboard=args.dashboard)
    try:
        result = run_tune(config_from_args(args, shortcuts))
    except SweepFailed as err:  # the trials' own errors are in their folders; the sweep's end is one line
        print(f"skin tune: {err}", file=sys.stderr)
        return 1
    print(result.table.round(4).to_string(index=False))
    print(f"best student: {result.best_folder}" + (f"; registered as {result.registered}" if result.registered else ""))
    print(result.note)
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    from raytasks.experiment import run_experiment, write_results
    from raytasks.settings import config_from_args

    shortcuts = [f"data.path={args.data}"] if args.data else []
    shortcuts += [f"out={args.out}"] if args.out else []
    shortcuts += [f"experiment.seeds=[{args.seeds}]"] if args.seeds else []
    shortcuts += ["experiment.fixed_partition=true"] if args.fixed_partition else []
    shortcuts += [f"experiment.external_data={args.external}"] if args.external else []
    config = config_from_args(args, shortcuts)
    result = run_experiment(config)
    print(result.markdown)
    print(f"comparison in {result.comparison.folder}; {result.wall_s / 60:.1f} min")
    if args.results:
        write_results(args.results, config, result)
        print(f"results written to {args.results}")
    return 0


def cmd_report_node_types(args: argparse.Namespace) -> int:
    from pathlib import Path

    from raytasks.capacity import UNBOUNDED, report_launcher_config

    for t in report_launcher_config(Path(args.config), args.address):
        most = "unbounded" if t.max_count == UNBOUNDED else t.max_count
        print(f"{t.name}: {dict(t.resources)}, {t.min_count} to {most} node(s)")
    return 0


def add_dashboard_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dashboard", action="store_true",
                        help="start the Ray dashboard with a local Ray (its address is logged); a submitted job "
                             "uses its cluster's")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skin", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="summarise a dataset in the ISIC 2019 layout")
    info.add_argument("--data", required=True, help="folder or s3://bucket/prefix")
    info.add_argument("--no-images", action="store_true", help="read the tables only; skip the image listing")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.add_argument("--show-rejects", type=int, default=20, metavar="N", help="list the first N rejects")
    info.set_defaults(func=cmd_info)

    synth = sub.add_parser("synth", help="write a synthetic dermoscopy dataset in the ISIC 2019 layout")
    synth.add_argument("--out", required=True)
    synth.add_argument("--n", type=int, default=600)
    synth.add_argument("--size", type=int, default=256)
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(func=cmd_synth)

    from raytasks.settings import add_config_args

    preprocess = sub.add_parser("preprocess", help="resize and remove black edges on Ray Data, into Parquet shards")
    add_config_args(preprocess)
    preprocess.add_argument("--data", required=True, help="dataset folder or s3:// URI in the ISIC 2019 layout")
    preprocess.add_argument("--out", required=True, help="output folder or s3:// URI")
    preprocess.add_argument("--size", type=int, help="side of the square output images (profile default otherwise)")
    preprocess.set_defaults(func=cmd_preprocess)

    teacher = sub.add_parser("teacher", help="train the metric teacher (DeepCluster + MS loss) on Ray Train")
    add_config_args(teacher)
    teacher.add_argument("--data", required=True, help="preprocessed output (skin preprocess --out)")
    teacher.add_argument("--out", required=True, help="output folder or s3:// URI")
    teacher.set_defaults(func=cmd_teacher)

    partition = sub.add_parser("partition", help="cluster-aware train/val/test split from a teacher's clusters")
    add_config_args(partition)
    partition.add_argument("--teacher", required=True, help="teacher output (skin teacher --out)")
    partition.add_argument("--out", required=True, help="output folder or s3:// URI")
    partition.set_defaults(func=cmd_partition)

    student = sub.add_parser("student", help="train one student variant (baseline or AT layers) on Ray Train")
    add_config_args(student)
    student.add_argument("--data", required=True, help="preprocessed output")
    student.add_argument("--teacher", required=True, help="teacher output")
    student.add_argument("--partition", required=True, help="partition output")
    student.add_argument("--out", required=True)
    student.add_argument("--variant", default="layer3+layer4", help="baseline, or layers joined by + (layer3+layer4)")
    student.set_defaults(func=cmd_student)

    evaluate = sub.add_parser("evaluate", help="evaluate a trained model on a dataset in the ISIC 2019 layout")
    evaluate.add_argument("--model", required=True, help=MODEL_HELP)
    evaluate.add_argument("--data", required=True, help="dataset folder or s3:// URI in the ISIC 2019 layout")
    evaluate.add_argument("--out", required=True, help="where the tables and figures go")
    evaluate.set_defaults(func=cmd_evaluate)

    predict = sub.add_parser("predict", help="top classes with probabilities for each image")
    predict.add_argument("images", nargs="+", help="image files or s3:// URIs")
    predict.add_argument("--model", required=True, help=MODEL_HELP)
    predict.add_argument("--top", type=int, default=3)
    predict.set_defaults(func=cmd_predict)

    attention = sub.add_parser("attention", help="per image, the teacher's and the students' attention maps per layer")
    attention.add_argument("images", nargs="+", help="image files or s3:// URIs")
    attention.add_argument("--model", required=True, help=MODEL_HELP)
    attention.add_argument("--teacher", required=True, help="teacher output (skin teacher --out, or the pipeline's)")
    attention.add_argument("--baseline", help="a second student to compare, usually the baseline (same forms as --model)")
    attention.add_argument("--out", required=True, help="folder or s3:// URI for the panels (PNG, numbers as JSON)")
    attention.set_defaults(func=cmd_attention)

    pipeline = sub.add_parser("pipeline", help="run the whole pipeline (what `make demo` runs)")
    add_config_args(pipeline)
    pipeline.add_argument("--data", help="dataset folder or s3:// URI (default: the synthetic set)")
    pipeline.add_argument("--out", help="output folder or s3:// URI")
    add_dashboard_arg(pipeline)
    pipeline.set_defaults(func=cmd_pipeline)

    tune = sub.add_parser("tune", help="Ray Tune search over MS-loss margins, K, transfer layers, β and lr")
    add_config_args(tune)
    tune.add_argument("--data", help="dataset folder or s3:// URI (default: the synthetic set)")
    tune.add_argument("--out", help="output folder or s3:// URI")
    add_dashboard_arg(tune)
    tune.set_defaults(func=cmd_tune)

    experiment = sub.add_parser("experiment", help="the pipeline once per seed, then AT against the baseline with "
                                                   "confidence intervals")
    add_config_args(experiment)
    experiment.add_argument("--data", help="dataset folder or s3:// URI")
    experiment.add_argument("--out", help="output folder or s3:// URI")
    experiment.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2 (experiment.seeds)")
    experiment.add_argument("--fixed-partition", action="store_true",
                            help="keep the first seed's teacher and partition; only the students' seed moves")
    experiment.add_argument("--external", help="a dataset from other acquisitions to evaluate every kept model on")
    experiment.add_argument("--results", help="write the results document here (e.g. docs/results.md)")
    experiment.set_defaults(func=cmd_experiment)
    types = sub.add_parser("report-node-types", help="tell a Ray head which node types its autoscaler may launch "
                           "(run on the head after `ray start --head`; resource checks then plan against them)")
    types.add_argument("config", help="the cluster-launcher config the autoscaler runs (~/ray_bootstrap_config.yaml)")
    types.add_argument("--address", default="auto", help="the head's GCS address HOST:PORT (default: the local head)")
    types.set_defaults(func=cmd_report_node_types)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # which SIMD build it tried, in 8 INFO lines
    handler: Callable[[argparse.Namespace], int] = args.func
    try:
        return handler(args)
    except (DatasetError, PublishError, PartitionError, ValueError, FileNotFoundError,
            ConnectionError) as err:  # ConnectionError: raytasks.tracking.TrackingError (server down)
        if isinstance(err, OSError) and err.filename is None and not isinstance(err, ConnectionError):
            raise  # an OSError naming no file (a deleted working directory, say) is a fault: keep the traceback
        # Input problems are the user's to fix: one clear line, no traceback.
        print(f"skin {args.command}: error: {err}", file=sys.stderr)
        return 2
