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
from pipeline.latency.kernel_profile import profile as latency_profile
from pipeline.latency.measure import LocalMeasurer
from pipeline.latency.memory import measure_peak, memory_report, predict_runtime
from pipeline.latency.predict import predict_flatbuffer
from pipeline.latency.table import BuildPlan, build_table, load_table
from pipeline.runner.config import RunConfig, load_config
from pipeline.runner.report import summary_rows
from pipeline.runner.run import STAGES, run_pipeline, seed_run
from pipeline.search.distributed import fit_data_parallel
from pipeline.search.gradient import GradientSearch
from pipeline.search.options import SupernetSettings
from pipeline.search.space import Arch, SearchSpace
from pipeline.search.space import build as build_searched
from pipeline.search.study import SearchSettings
from pipeline.search.study import search as run_search
from pipeline.search.supernet import Supernet, SupernetScore, extract_subnet, load_supernet, train_supernet
from pipeline.stages.adapt import AdaptSettings, adapt, adapt_file
from pipeline.stages.artifacts import ARTIFACTS, DEPLOYABLE, TFLITE_FILES
from pipeline.stages.binarize import BINARY_FIT, binarize
from pipeline.stages.channel_prune import channel_groups, prune_by_ratio, prune_channels
from pipeline.stages.cluster import cluster
from pipeline.stages.convert import convert, load_keras_model
from pipeline.stages.latency import model_flatbuffer
from pipeline.stages.latency import predict as predict_latency
from pipeline.stages.metadata import write_metadata
from pipeline.stages.options import CONVERSION_MODES
from pipeline.stages.prune import prune
from pipeline.stages.qat import qat
from pipeline.stages.quant_debug import layer_errors, selective_quantize
from pipeline.stages.train import Distillation, FitSettings, fit, keras_accuracy
from pipeline.targets import TARGETS

__all__ = [
    "ARTIFACTS", "AdaptSettings", "Arch", "BINARY_FIT", "BuildPlan", "CONVERSION_MODES", "Classifier", "DEPLOYABLE",
    "Distillation", "FitSettings", "ImageSet", "LocalMeasurer", "OpPlacement", "PipelineError", "RunConfig", "STAGES",
    "SearchSettings", "SearchSpace", "Supernet", "SupernetScore", "SupernetSettings", "GradientSearch", "TARGETS", "TFLITE_FILES", "TargetReport", "adapt", "adapt_file", "benchmark",
    "binarize", "build_searched", "build_table", "channel_groups", "cluster", "convert", "correct_mask", "evaluate",
    "extract_subnet", "fit", "fit_data_parallel", "inspect_model", "keras_accuracy", "latency_profile", "layer_errors", "load_config", "load_dataset",
    "load_image", "load_keras_model", "load_supernet", "load_table", "measure_peak", "memory_report", "model_flatbuffer",
    "predict_flatbuffer", "predict_latency", "predict_runtime", "prune", "prune_by_ratio", "prune_channels", "qat",
    "read_labels", "read_model", "run_pipeline", "run_search", "seed_run", "selective_quantize", "split", "summary_rows",
    "train_supernet", "weight_sparsity", "write_metadata",
]
