"""ImageNet images from an ImageFolder of synset folders, preprocessed as the classifier expects.

``<data_dir>/<synset>/<file>.JPEG`` (e.g. ``n01440764/...``). Each synset maps to its
ImageNet-1k class index (timm's table; the concepts paper's 11 classes are built in), so the
concept importance is measured for the right class. Preprocessing comes from timm's data
config for the model (``nf_resnet50``: resize 272 bicubic, centre crop 256, ImageNet
mean/std). Batches are ``(x, y, index)``; :attr:`image_paths` and :meth:`display_image`
give the original file and the un-normalised crop for figures.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from clustercam.data.image_files import (
    SkippedInput,
    check_image_files,
    check_on_bad_file,
    read_image,
)
from clustercam.exceptions import MissingFileError, UserError

log = logging.getLogger(__name__)


class ImageFolderMissingError(MissingFileError):
    """The image folder of a concept run is not given or does not exist."""

EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp")

# the concepts paper's 11 classes (synset -> (ImageNet-1k index, name))
PAPER_CLASSES: dict[str, tuple[int, str]] = {
    "n01440764": (0, "tench"),
    "n02102040": (217, "English springer"),
    "n02325366": (330, "wood rabbit"),
    "n02979186": (482, "cassette player"),
    "n03000684": (491, "chain saw"),
    "n03028079": (497, "church"),
    "n03394916": (566, "French horn"),
    "n03417042": (569, "garbage truck"),
    "n03425413": (571, "gas pump"),
    "n03445777": (574, "golf ball"),
    "n03888257": (701, "parachute"),
}


def synset_class(synset: str, class_map: Mapping[str, int] | None = None) -> tuple[int, str]:
    """(ImageNet-1k index, short name) of a synset folder; a clear error if unknown."""
    if class_map and synset in class_map:
        return int(class_map[synset]), synset
    if synset in PAPER_CLASSES:
        return PAPER_CLASSES[synset]
    try:
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        names = info.label_names()
        if synset in names:
            idx = names.index(synset)
            return idx, info.index_to_description(idx).split(",")[0]
    except ImportError:  # pragma: no cover
        pass
    raise UserError(
        f"folder {synset!r} is not an ImageNet-1k synset (like n01440764); rename it, or map it "
        f"to a class index with data.class_map={{{synset}: <index>}}"
    )


def data_config(model_name: str, pretrained_tag: str | None = None) -> dict[str, Any]:
    """timm's eval preprocessing for a model name (input size, interpolation, crop, mean/std)."""
    from timm.data import resolve_data_config

    from clustercam.models.timm_weights import check_model_name, pretrained_cfg

    arch, _, tag = model_name.partition(".")
    check_model_name(arch)
    tag = pretrained_tag or tag
    cfg = pretrained_cfg(f"{arch}.{tag}" if tag else arch)
    if cfg is None:
        cfg = pretrained_cfg(arch)
    return resolve_data_config(pretrained_cfg=cfg.to_dict() if cfg is not None else {})


class ImageFileDataset(Dataset):
    """(x, y, index) from image files; ``transform`` maps a PIL image to a tensor."""

    def __init__(self, paths: list[Path], targets: list[int], transform: Any) -> None:
        self.paths, self.targets, self.transform = paths, targets, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Tensor, int, int]:
        return self.transform(read_image(self.paths[i])), self.targets[i], i


class ImageNetSubsetDataModule(LightningDataModule):
    """A few ImageNet classes from synset folders, for a frozen ImageNet classifier.

    ``data=imagenet_subset``. The same images serve test and predict (there is nothing to
    train); they are preprocessed with timm's data config for the model (nf_resnet50:
    resize 272 bicubic, centre crop 256, ImageNet mean / std).

    Args:
        data_dir: a folder of synset folders (``<data_dir>/n01440764/*.JPEG``, ...; any
            ImageFolder layout works with ``class_map``). Required.
        model_name: the timm model whose preprocessing is used (``arch`` or ``arch.tag``).
        pretrained_tag: a tag that wins over the name's.
        batch_size: images per batch (>= 1).
        num_workers: DataLoader worker processes.
        max_images: cap on the number of images (None: all).
        class_map: extra folder name -> ImageNet class index, for folders that are not
            synsets.
        pin_memory: the DataLoaders' ``pin_memory``.
        preprocessing: overrides of timm's data config entries (``input_size``, ``mean``,
            ``std``, ``crop_pct``, ...), e.g. for a classifier trained here on 64 px images.
        on_bad_file: ``skip`` leaves files that cannot be read out (listed in
            :attr:`skipped_inputs`), ``error`` stops at the first
            (:mod:`clustercam.data.image_files`).

    Raises:
        ImageFolderMissingError: no ``data_dir``, or one that does not exist.
        UserError: a batch_size or max_images < 1, an unknown ``on_bad_file``, no readable
            image, a folder name that is not a synset and not in ``class_map``, an unknown
            model name.
    """

    def __init__(
        self,
        data_dir: str | Path | None,
        model_name: str = "nf_resnet50",
        pretrained_tag: str | None = None,
        batch_size: int = 16,
        num_workers: int = 0,
        max_images: int | None = None,
        class_map: Mapping[str, int] | None = None,
        pin_memory: bool = False,
        preprocessing: Mapping[str, Any] | None = None,
        on_bad_file: str = "skip",
    ) -> None:
        super().__init__()
        self.on_bad_file = check_on_bad_file(on_bad_file)
        self.skipped_inputs: list[SkippedInput] = []
        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {batch_size}")
        if max_images is not None and max_images < 1:
            raise UserError(f"max_images must be >= 1 or null, got {max_images}")
        if data_dir is None:
            raise ImageFolderMissingError(
                "no image folder given: set data.data_dir=<folder of synset sub-folders> "
                "(<data_dir>/n01440764/*.JPEG, ...; any ImageFolder layout works, with "
                "data.class_map={<folder>: <ImageNet index>} for folders that are not synsets)")
        self.data_dir = Path(data_dir).expanduser()
        self.model_name = model_name
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.max_images = max_images
        self.class_map = dict(class_map or {})
        self.pin_memory = pin_memory
        # timm's data config for the model, with any entry overridden (e.g. a classifier
        # trained here on 64 px images in [0, 1]: input_size, mean, std, crop_pct)
        self.config = {**data_config(model_name, pretrained_tag),
                       **{k: tuple(v) if isinstance(v, Sequence) and not isinstance(v, str) else v
                          for k, v in dict(preprocessing or {}).items()}}
        self.image_paths, self.targets, self.class_names = self._scan()
        log.info("%d images of %d classes from %s", len(self.image_paths),
                 len(set(self.targets)), self.data_dir)

    def _scan(self) -> tuple[list[Path], list[int], list[str]]:
        if not self.data_dir.is_dir():
            raise ImageFolderMissingError(
                f"image folder {str(self.data_dir)!r} does not exist; set data.data_dir to a "
                "folder of synset sub-folders (<data_dir>/n01440764/*.JPEG, ...)"
            )
        paths: list[Path] = []
        targets: list[int] = []
        names: list[str] = []
        folders = sorted(p for p in self.data_dir.iterdir() if p.is_dir())
        for folder in folders:
            files = sorted(f for f in folder.iterdir() if f.suffix.lower() in EXTENSIONS)
            if not files:
                continue
            idx, name = synset_class(folder.name, self.class_map)
            paths += files
            targets += [idx] * len(files)
            names += [name] * len(files)
        if not paths:
            raise UserError(
                f"no images found in {str(self.data_dir)!r}: expected synset sub-folders "
                f"(n01440764/, ...) holding {'/'.join(EXTENSIONS)} files; found "
                f"{len(folders)} sub-folders"
            )
        # unreadable files (empty, not images, cut off) out now, before any batch
        kept, self.skipped_inputs = check_image_files(paths, self.on_bad_file, self.max_images)
        if not kept:
            raise UserError(f"none of the {len(paths)} image files in {str(self.data_dir)!r} "
                            "can be read (see the warnings above)")
        return [paths[i] for i in kept], [targets[i] for i in kept], [names[i] for i in kept]

    # -- transforms ---------------------------------------------------------------------
    @property
    def transform(self) -> Any:
        from timm.data import create_transform

        return create_transform(**self.config, is_training=False)

    @property
    def display_transform(self) -> Any:
        """The same resize + crop without normalisation: what the model sees, in [0, 1]."""
        from torchvision import transforms as T

        steps = [t for t in self.transform.transforms if not isinstance(t, T.Normalize)]
        return T.Compose(steps)

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.config["input_size"][-2:])  # type: ignore[return-value]

    def display_image(self, index: int) -> Tensor:
        """3 x H x W in [0, 1]: image ``index`` resized and cropped as for the model."""
        return self.display_transform(read_image(self.image_paths[index]))

    @property
    def num_classes(self) -> int:
        return 1000

    # -- loaders ------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        self._agree_across_ranks()
        self.dataset = ImageFileDataset(self.image_paths, self.targets, self.transform)

    def _agree_across_ranks(self) -> None:
        """Under DDP every rank uses rank 0's file list: the check gives the same list on
        each (it depends on the files only), unless a file changed or a read failed on one
        rank in between; then ranks would split different datasets and the gather would hang."""
        trainer = getattr(self, "trainer", None)
        if trainer is None or trainer.world_size < 2:
            return
        mine = (self.image_paths, self.targets, self.class_names, self.skipped_inputs)
        ours = trainer.strategy.broadcast(mine, src=0)
        if [str(p) for p in ours[0]] != [str(p) for p in mine[0]]:
            log.warning("rank %d found other unreadable files than rank 0; using rank 0's list",
                        trainer.global_rank)
        self.image_paths, self.targets, self.class_names, self.skipped_inputs = ours

    def _loader(self) -> DataLoader:
        if not hasattr(self, "dataset"):
            self.setup()
        return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=False,
                          num_workers=self.num_workers, pin_memory=self.pin_memory,
                          persistent_workers=self.num_workers > 0)

    def test_dataloader(self) -> DataLoader:
        return self._loader()

    def predict_dataloader(self) -> DataLoader:
        return self._loader()

    def image_name(self, index: int) -> str:
        """The file name without extension; ``<folder>_<name>`` when two class folders hold
        files of the same name (``cats/1.jpg``, ``dogs/1.jpg``), so rows and figures differ."""
        path = self.image_paths[index]
        if getattr(self, "_stems_of", None) is not self.image_paths:  # the list was replaced
            counts = Counter(p.stem for p in self.image_paths)
            self._shared_stems = {stem for stem, n in counts.items() if n > 1}
            self._stems_of = self.image_paths
        return f"{path.parent.name}_{path.stem}" if path.stem in self._shared_stems else path.stem

    def describe(self) -> dict[str, Any]:
        return {"dataset": "imagenet_subset", "data_dir": str(self.data_dir),
                "n_images": len(self.image_paths), "classes": sorted(set(self.targets)),
                "preprocessing": {k: (list(v) if isinstance(v, tuple) else v)
                                  for k, v in self.config.items()}}
