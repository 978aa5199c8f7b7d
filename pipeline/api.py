"""The public API, in the spirit of TF-MOT's ``api`` modules: a thin re-export of what users and the
benchmarks call, so nobody reaches into the runner's internals.

    from pipeline import api as tp
    state = tp.run_pipeline(tp.load_config("my.yaml", {"epochs": 3}), "runs/mine")
    tp.seed_run("runs/mine", config, {"float": "trained.h5"})  # start a run from existing artifacts
"""
from pipeline.core.data import ImageSet, load_dataset, load_image, split
from pipeline.core.describe import inspect_model, weight_sparsity
from pipeline.core.errors import PipelineError
from pipeline.core.labels import read_labels
from pipeline.core.litert import Classifier, benchmark, correct_mask, evaluate
from pipeline.core.target_report import OpPlacement, TargetReport
from pipeline.core.tflite_file import read_model
from pipeline.runner.config import RunConfig, load_config
from pipeline.runner.report import summary_rows
from pipeline.runner.run import STAGES, run_pipeline, seed_run
from pipeline.stages.artifacts import ARTIFACTS, DEPLOYABLE, TFLITE_FILES
from pipeline.stages.binarize import BINARY_FIT, binarize
from pipeline.stages.cluster import cluster
from pipeline.stages.convert import convert, load_keras_model
from pipeline.stages.metadata import write_metadata
from pipeline.stages.options import CONVERSION_MODES
from pipeline.stages.prune import prune
from pipeline.stages.qat import qat
from pipeline.stages.quant_debug import layer_errors, selective_quantize
from pipeline.stages.train import Distillation, FitSettings, fit, keras_accuracy
from pipeline.targets import TARGETS

__all__ = [
    "ARTIFACTS", "BINARY_FIT", "CONVERSION_MODES", "Classifier", "DEPLOYABLE", "Distillation", "FitSettings", "ImageSet",
    "OpPlacement", "PipelineError", "RunConfig", "STAGES", "TARGETS", "TFLITE_FILES", "TargetReport", "benchmark", "binarize", "cluster",
    "convert", "correct_mask", "evaluate", "fit", "inspect_model", "keras_accuracy", "layer_errors", "load_config", "load_dataset", "load_image",
    "load_keras_model", "prune", "qat", "read_labels", "read_model", "run_pipeline", "seed_run",
    "selective_quantize", "split", "summary_rows", "weight_sparsity", "write_metadata",
]
