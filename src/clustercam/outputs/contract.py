"""The run-folder contract: every file name and every CSV / JSON column set, defined once.

Writers (the callbacks, ``clustercam.train``, the studies) and readers (the studies, tests,
notebooks) import these names, so renaming a file or a column is one edit here and every
aggregation follows it. Paths are relative to a run folder (``paths.output_dir``) or, for the
study files, to a study's ``--out`` folder. The metric and score names inside the columns are
the methods' own (:mod:`clustercam.explain.concepts.vocabulary`).
"""

from __future__ import annotations

from collections.abc import Sequence

from clustercam.explain.concepts.vocabulary import (
    CLASS_TRUTH_SCORES,
    CONCEPT_METRIC_NAMES,
    TRUTH_SCORES,
    ConceptConfig,
)

# -- every run ----------------------------------------------------------------------------------
CONFIG = "config.yaml"  # the resolved Hydra config
METRICS = "metrics.json"  # run-level numbers, merged by every callback
FIGURES = "figures"
STATUS = "status.json"  # running / finished / failed / diverged / interrupted (runtime.status)
SKIPPED_INPUTS = "skipped_inputs.csv"  # inputs left out as unreadable (data.on_bad_file=skip)
SKIPPED_INPUT_COLUMNS = ("file", "reason")

# -- Grad-CeAM runs (callbacks.cluster_explain) ---------------------------------------------------
CARDINALITY = "cardinality.csv"
CARDINALITY_COLUMNS = ("cluster", "before", "after", "ratio")
CARDINALITY_SUMMARY = "cardinality_summary.json"
CARDINALITY_STATS = ("median", "mean", "min", "max")  # its keys, over clusters (paper eq. 12)
CARDINALITY_BY_MODE = "cardinality_by_mode.csv"  # one row per Grad-CeAM target
CARDINALITY_BY_MODE_KEY = "mode"  # the column naming the target
CARDINALITY_BY_MODE_COLUMNS = (CARDINALITY_BY_MODE_KEY, *CARDINALITY_STATS, "empty_clusters")
ASSIGNMENTS = "assignments.csv"
ASSIGNMENT_COLUMNS = ("index", "label", "cluster")
HEATMAPS = f"{FIGURES}/heatmaps.npz"  # the maps behind the figures
HEATMAP_MEMBERS = ("index", "heatmaps", "raw", "channel_weights", "cluster", "inputs", "label", "sizes")

# -- explanation scores (callbacks.explanation_scores; columns: explain.scores) ----------------
EXPLANATION_SCORES = "explanation_scores.csv"
LOCALISATION_SCORES = "localisation_scores.csv"  # data with masks
EXPLANATION_SCORES_FIGURE = f"{FIGURES}/deletion_insertion.png"

# -- concept runs (callbacks.concepts) ------------------------------------------------------------
_IMAGE = ("image", "class", *ConceptConfig._fields)  # per image and configuration
CONCEPTS = "concepts_per_image.csv"
CONCEPT_COLUMNS = (*_IMAGE, "concept", "channels", "importance", "rank", "index", "class_name",
                   "predicted", "p_target")
SUB_CONCEPTS = "sub_concepts_per_image.csv"
SUB_CONCEPT_COLUMNS = (*_IMAGE, "concept", "sub_concept", "channels", "importance", "parent_channels",
                       "parent_importance", "index", "class_name")
CONCEPT_METRICS = "concept_metrics.csv"
CONCEPT_METRIC_COLUMNS = (*_IMAGE, *CONCEPT_METRIC_NAMES, "index", "class_name", "kept_channels",
                          "backend")
CONCEPT_FIDELITY = "concept_fidelity.csv"  # with fidelity: per image, configuration and order
CONCEPT_FIDELITY_COLUMNS = (*_IMAGE, "order", "deletion_auc", "insertion_auc")
CONCEPT_TRUTH = "concept_truth.csv"  # data with part masks: per configuration and partition (vocabulary.PARTITIONS)
CONCEPT_TRUTH_COLUMNS = (*ConceptConfig._fields, "partition", *TRUTH_SCORES, "n_images")
CONCEPT_SUMMARY = "concept_summary.md"  # Tables 1-2, fidelity, truth, class concepts
CONCEPT_FIGURES = f"{FIGURES}/concepts"  # <image>_<method>_<algorithm>_n<n>[_sub].png
CONCEPT_FIDELITY_FIGURE = f"{FIGURES}/concept_fidelity.png"
# class-level concepts (callbacks.concepts.class_concepts=true)
CLASS_CONCEPTS = "class_concepts.csv"
CLASS_CONCEPT_COLUMNS = ("class", "class_name", "method", "algorithm", "concept", "channels",
                         "stability", "importance", "importance_std", "n_images")
CLASS_CONCEPTS_TRUTH = "class_concepts_truth.csv"  # data with part masks
CLASS_CONCEPTS_TRUTH_COLUMNS = ("class", "method", "algorithm", "source", *CLASS_TRUTH_SCORES)
CLASS_CONCEPT_CHANNELS = "class_concepts.npz"  # "classes" and one member per configuration and source
CLASS_CONCEPT_FIGURES = f"{FIGURES}/class_concepts"  # <class>_<method>.png, <class>_nmf-<method>.png
NMF_METHOD = "nmf"  # the method column of NMF rows; their algorithm column: <method>/<algorithm>
# per-image results of finished batches, for resume=true (callbacks.concept_shards)
SHARDS = "shards"  # rank<r>_i<first index>.pt: one batch's ConceptBatch tensors and figure maps
SHARD_MANIFEST = "manifest_rank{rank}.json"  # in SHARDS: {"key": ..., "shards": {file: [indices]}}


def concept_figure_path(image: str, config: ConceptConfig, sub: bool = False) -> str:
    """The path of one image's concept figure (``sub``: its sub-concepts)."""
    return f"{CONCEPT_FIGURES}/{image}_{ConceptConfig(*config).name}{'_sub' if sub else ''}.png"


def class_gallery_path(group: str, config: ConceptConfig, source: str,
                         configs: Sequence[ConceptConfig]) -> str:
    """The path of a class gallery: ``<class>_<method>`` (NMF: ``<class>_nmf-<method>``), with
    ``<method>_<algorithm>_n<n>`` for ``<method>`` where a method has several configurations."""
    config = ConceptConfig(*config)
    several = sum(c[0] == config.method for c in configs) > 1
    tag = config.name if several else config.method
    return f"{CLASS_CONCEPT_FIGURES}/{group}_{tag if source == 'coassociation' else f'{source}-{tag}'}.png"


def class_channels_member(config: ConceptConfig, source: str) -> str:
    """The :data:`CLASS_CONCEPT_CHANNELS` member of one configuration's and source's channel ids."""
    return f"{ConceptConfig(*config).name}_{source}"


# -- what else a run folder holds: Hydra's record, the checkpoints, the loggers' own stores and
# the run's web page (clustercam.reporting); NOT_RESULTS (these and the concept SHARDS, resume
# plumbing) are what the report and MLflow leave out ---------------------------------------------
HYDRA_OVERRIDES = ".hydra/overrides.yaml"  # the job's command-line overrides
CHECKPOINTS = "checkpoints"  # callbacks.model_checkpoint
CSV_LOGS = "csv"  # logger=csv: csv/version_<n>/metrics.csv
WANDB = "wandb"  # logger=wandb: wandb/offline-run-*
TENSORBOARD = "tensorboard"  # logger=tensorboard: tensorboard/<version>/
MLFLOW = "mlflow"
# logger=mlflow's default local store, under the outputs folder (paths.log_dir), not a run folder
MLFLOW_STORE = f"{MLFLOW}/mlflow.db"
MLRUNS = "mlruns"  # MLflow's plain file store, where a tracking_uri makes one
REPORT = "report"  # the web page of a run or multirun folder (report=true, clustercam-report)
REPORT_INDEX = f"{REPORT}/index.html"
REPORT_FILES = f"{REPORT}/files"  # the figures the page shows, copied: <path in the run folder>
NOT_RESULTS = frozenset({REPORT, CHECKPOINTS, WANDB, TENSORBOARD, MLFLOW, MLRUNS, CSV_LOGS, SHARDS})


# -- studies (clustercam-reproduce / -compare / -concept-summary), under --out -------------------
STUDY_RUNS = "runs"  # <out>/runs/<experiment>/seed<k>, <out>/runs/concepts
CONCEPT_STUDY_RUN = f"{STUDY_RUNS}/concepts"
TIMINGS = "timings.json"  # seconds per sweep
TABLE1 = "table1.md"
STUDY_FIGURES = "figures"
CAPTIONS = f"{STUDY_FIGURES}/captions.md"
COMPARISON = "explanation_comparison.md"
COMPARISON_TABLE = "explanation_comparison.csv"
COMPARISON_COLUMNS = ("dataset", "method", "score", "mean", "std", "n")
# clustercam.studies.deep_clustering: autoencoder + k-means against DCEC, per model family
DEEP_CLUSTERING = "deep_clustering.md"
DEEP_CLUSTERING_TABLE = "deep_clustering.csv"
DEEP_CLUSTERING_COLUMNS = ("dataset", "family", "method", "score", "mean", "std", "n")
