"""Audio classification: one label per clip (keywords, sound events, speakers, languages).

Audio is decoded with ``soundfile`` (libsndfile ships in its wheel: wav, flac, ogg/opus, mp3,
aiff), mixed down to mono, resampled to the feature extractor's rate and cut to
``max_seconds``; ``datasets.Audio`` columns are read as raw bytes/paths, so torchcodec is not
needed. Every file is checked (its header) when the split is read, so a bad file stops the run
before anything trains or is written.
"""
from __future__ import annotations

import hashlib
import io
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data import FORMATS, read_files, replace_column
from ..errors import HFTransferError
from ..models import processor_location
from ..registry import register_task
from .base import ClassificationTask, check_columns

logger = logging.getLogger("hftransfer")

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif")
"""What an audio folder's label subfolders may hold (libsndfile decodes these)."""
MAX_SAMPLE_RATE = 384_000


def _soundfile():
    try:
        import soundfile
    except ImportError:
        raise HFTransferError(
            "audio-classification needs the package soundfile: pip install soundfile"
        ) from None
    except OSError as exc:  # the wheel's libsndfile failed to load
        raise HFTransferError(f"soundfile cannot load libsndfile: {exc}") from None
    return soundfile


def _reason(exc: Exception) -> str:
    text = getattr(exc, "error_string", None) or (str(exc).splitlines() or [""])[0]
    return (text.strip() or type(exc).__name__).rstrip(".")


class AudioRef:
    """One clip: a file path, or in-memory bytes (``datasets.Audio`` data), with a name for
    error messages."""

    def __init__(self, source: "str | bytes", name: str):
        self.source = source
        self.name = name

    def open(self):
        return io.BytesIO(self.source) if isinstance(self.source, bytes) else self.source

    def check(self, where: str) -> None:
        """Read the header: a clear error unless it is decodable, non-empty, sensibly sampled audio."""
        sf = _soundfile()
        if isinstance(self.source, str) and not os.path.isfile(self.source):
            what = "is not a file" if os.path.exists(self.source) else "does not exist"
            raise HFTransferError(f"{where}: audio file {self.name!r} {what}")
        try:
            info = sf.info(self.open())
        except Exception as exc:  # libsndfile reports unknown formats, bad headers, ... alike
            raise HFTransferError(
                f"{where}: {self.name!r} is not a readable audio file ({_reason(exc)})"
            ) from None
        _check_rate(info.samplerate, self.name, where)
        if info.frames <= 0 or info.channels < 1:
            raise HFTransferError(f"{where}: {self.name!r} holds no audio samples (empty signal)")

    def load(self, sampling_rate: int, max_seconds: float, where: str) -> np.ndarray:
        """Mono float32 samples at ``sampling_rate``, at most ``max_seconds`` long."""
        sf = _soundfile()
        try:
            with sf.SoundFile(self.open()) as f:
                rate = f.samplerate
                _check_rate(rate, self.name, where)
                data = f.read(frames=int(math.ceil(max_seconds * rate)), dtype="float32",
                              always_2d=True)
        except HFTransferError:
            raise
        except Exception as exc:
            raise HFTransferError(
                f"{where}: {self.name!r} is not a readable audio file ({_reason(exc)})"
            ) from None
        if data.size == 0:
            raise HFTransferError(f"{where}: {self.name!r} holds no audio samples (empty signal)")
        signal = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
        if not np.isfinite(signal).all():
            raise HFTransferError(f"{where}: {self.name!r} holds NaN or infinite samples")
        if rate != sampling_rate:
            signal = resample(signal, rate, sampling_rate)
        return np.ascontiguousarray(signal[: int(max_seconds * sampling_rate)], dtype=np.float32)


def _check_rate(rate: int, name: str, where: str) -> None:
    if not 0 < rate <= MAX_SAMPLE_RATE:
        raise HFTransferError(
            f"{where}: {name!r} declares an impossible sample rate of {rate} Hz "
            f"(expected 1 to {MAX_SAMPLE_RATE} Hz); the file is damaged"
        )


def resample(signal: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase resampling (anti-aliased) from ``rate`` to ``target`` Hz."""
    from scipy.signal import resample_poly

    g = math.gcd(int(rate), int(target))
    return resample_poly(signal, target // g, rate // g).astype(np.float32)


def _min_samples(config: Any) -> int:
    """The shortest input a wav2vec2-style model accepts: one frame out of its convolutional
    feature encoder, or ``mask_time_length`` frames when SpecAugment masks time in training."""
    kernels, strides = getattr(config, "conv_kernel", None), getattr(config, "conv_stride", None)
    if not kernels or not strides:
        return 1
    frames = 1
    if getattr(config, "apply_spec_augment", False) and (getattr(config, "mask_time_prob", 0) or 0) > 0:
        frames = max(frames, int(getattr(config, "mask_time_length", 1) or 1))
    samples = frames
    for kernel, stride in reversed(list(zip(kernels, strides))):
        samples = (samples - 1) * stride + kernel
    return samples


class AudioCollator:
    """Pads a batch with the feature extractor (its padding value; an attention mask when the
    extractor returns one) and stacks the labels; other columns (``length``) are dropped."""

    def __init__(self, processor: Any):
        self.processor = processor
        self.keys = [k for k in processor.model_input_names if k != "attention_mask"]

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        inputs = [{k: f[k] for k in self.keys if k in f} for f in features]
        batch = self.processor.pad(inputs, padding=True, return_tensors="pt")
        if "labels" in features[0]:
            batch["labels"] = torch.tensor([int(f["labels"]) for f in features], dtype=torch.long)
        return dict(batch)


@register_task("audio-classification")
class AudioClassification(ClassificationTask):
    """Classify audio clips (a folder per label, or a table of file paths) into labels."""

    auto_class_name = "AutoModelForAudioClassification"
    pipeline_tag = "audio-classification"
    peft_task_type = None
    head_prefixes = ("projector", "classifier", "score")
    input_kind = "audio files"
    processor_auto_class = "AutoFeatureExtractor"
    pipeline_processor_arg = "feature_extractor"
    # The collator drops what the model does not take; keeping `length` lets the Trainer group
    # batches by it instead of measuring every decoded clip.
    training_defaults = {"remove_unused_columns": False}

    @dataclass
    class Options:
        audio_column: str = "audio"
        """Column of audio file paths (relative to the data file's folder) or ``datasets.Audio`` data."""
        label_column: str = "label"
        max_seconds: float = 10.0
        """Clips longer than this are cut (from the start)."""

        def __post_init__(self) -> None:
            if not self.max_seconds > 0 or not math.isfinite(self.max_seconds):
                raise HFTransferError(f"task.max_seconds must be > 0 (e.g. 10), got {self.max_seconds}")
            check_columns(self, "audio_column", "label_column")

    def __init__(self, options: Any):
        super().__init__(options)
        self.min_samples = 1  # set by load_processor from the model's config

    # --- data -------------------------------------------------------------------------------
    def read_split(self, entry, where, declared_format):
        """An audio folder (one subfolder per label) or csv/json/jsonl/parquet files with an
        audio column; relative paths in a file resolve against that file's folder."""
        path = Path(os.path.expanduser(entry))
        if path.is_dir() and not any(p.is_file() and p.suffix.lower() in FORMATS for p in path.iterdir()):
            if any(p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS for p in path.rglob("*")):
                return self.check_split(self._read_audio_folder(path, entry, where), where, numbered=False)
            if not any(p.is_file() and p.suffix.lower() in FORMATS for p in path.rglob("*")):
                raise HFTransferError(
                    f"{where}: folder {entry!r} holds neither audio in label subfolders "
                    f"({entry}/<label>/*.wav) nor data files (.csv, .json, .jsonl, .parquet)"
                )
        # Relative audio paths in a data file resolve against that file's folder.
        return read_files(entry, where, declared_format,
                          check=lambda ds, w, file: self.check_split(ds, w, base=file.parent))

    def read_inputs(self, entry, where, declared_format):
        """A folder of clips at any depth (its subfolders are not read as labels), or data files
        with the audio column."""
        import datasets

        path = Path(os.path.expanduser(entry))
        if declared_format is None and path.is_dir() and not any(
                p.is_file() and p.suffix.lower() in FORMATS for p in path.rglob("*")):
            clips = sorted(str(p.resolve()) for p in path.rglob("*") if p.is_file()
                           and p.suffix.lower() in AUDIO_EXTENSIONS
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not clips:
                raise HFTransferError(f"{where}: folder {entry!r} holds no audio files "
                                      f"({', '.join(AUDIO_EXTENSIONS)})")
            ds = datasets.Dataset.from_dict({self.options.audio_column: clips})
            return self.check_split(ds, where, labelled=False, numbered=False)
        return read_files(entry, where, declared_format,
                          check=lambda ds, w, file: self.check_split(ds, w, base=file.parent, labelled=False))

    def _read_audio_folder(self, root: Path, entry: str, where: str):
        import datasets

        loose = sorted(p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
        if loose:
            raise HFTransferError(
                f"{where}: {entry!r} holds audio files directly ({loose[0]}"
                f"{', ...' if len(loose) > 1 else ''}); put them in one subfolder per label "
                f"({entry}/<label>/{loose[0]})"
            )
        paths, labels = [], []
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            files = sorted(p for p in folder.rglob("*")
                           if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
                           and not any(part.startswith(".") for part in p.relative_to(folder).parts))
            if not files:
                raise HFTransferError(
                    f"{where}: label folder {str(folder)!r} holds no audio files "
                    f"({', '.join(AUDIO_EXTENSIONS)}); add clips or remove the folder"
                )
            paths += [str(p.resolve()) for p in files]
            labels += [folder.name] * len(files)
        return datasets.Dataset.from_dict({self.options.audio_column: paths,
                                           self.options.label_column: labels})

    def check_split(self, ds, where, base: Path | None = None, labelled: bool = True,
                    numbered: bool = True):
        """Columns, labels and every clip's header; paths become absolute (relative ones resolve
        against ``base``, the data file's folder, or the current directory). Errors name the
        file, and its row when ``numbered`` (not for audio folders, where rows are files)."""
        import datasets

        column = self.require_column(ds, "audio_column", where)
        if labelled:
            self.check_label_column(ds, where)
        if len(ds) == 0:
            raise HFTransferError(f"{where}: no rows")
        feature = ds.features[column]
        if isinstance(feature, datasets.Audio):
            if feature.decode:  # datasets would decode with torchcodec; we read the bytes ourselves
                ds = ds.cast_column(column, datasets.Audio(decode=False))
        elif not (feature == datasets.Value("string") or feature == datasets.Value("large_string")
                  or isinstance(feature, dict) and ("bytes" in feature or "path" in feature)):
            raise HFTransferError(
                f"{where}: column {column!r} must hold audio file paths or datasets.Audio data, "
                f"not {feature}"
            )
        root = Path(base) if base is not None else Path.cwd()
        rewrite = False  # relative paths become absolute, so the split can be used from anywhere
        row = 0
        for batch in ds.select_columns([column]).iter(batch_size=256):
            for value in batch[column]:
                row += 1
                at = f"{where}: row {row}" if numbered else where
                ref = self._ref(value, root, at)
                ref.check(at)
                if isinstance(ref.source, str):
                    given = value if isinstance(value, str) else value.get("path")
                    rewrite |= ref.source != given
        if rewrite:
            values = []
            for batch in ds.select_columns([column]).iter(batch_size=256):
                for value in batch[column]:
                    ref = self._ref(value, root, where)
                    if isinstance(value, dict):
                        value = {"bytes": value.get("bytes"), "path": value.get("path")} \
                            if isinstance(ref.source, bytes) else {"bytes": None, "path": ref.source}
                    else:
                        value = ref.source
                    values.append(value)
            ds = replace_column(ds, column, values)
        return ds

    @staticmethod
    def _ref(value: Any, root: Path, where: str) -> AudioRef:
        """The clip a cell refers to: a path (str, or {"path"} without bytes) or {"bytes"}."""
        if isinstance(value, dict):
            data, path = value.get("bytes"), value.get("path")
            if data:
                return AudioRef(bytes(data), str(path or "<audio bytes>"))
            value = path
        if isinstance(value, str) and value.strip():
            full = Path(os.path.expanduser(value.strip()))
            if not full.is_absolute():
                full = root / full
            return AudioRef(str(full), value.strip())
        if value is None or isinstance(value, str):
            raise HFTransferError(f"{where} has no audio (empty cell); fill it in or remove the row")
        raise HFTransferError(f"{where}: {value!r} is not an audio file path")

    # --- model inputs -----------------------------------------------------------------------
    def load_processor(self, location, spec, config):
        self.min_samples = _min_samples(config)
        if location is None and not spec.processor:
            return default_feature_extractor(config)
        where = processor_location(location, spec)
        name = spec.processor or spec.name_or_path
        if Path(where).is_dir() and not (Path(where) / "preprocessor_config.json").is_file():
            raise HFTransferError(
                f"model {name!r} has no feature extractor (preprocessor_config.json); save it next "
                "to the weights (feature_extractor.save_pretrained(DIR)) or set model.processor"
            )
        from transformers import AutoFeatureExtractor

        try:
            processor = AutoFeatureExtractor.from_pretrained(
                where, revision=None if spec.processor else spec.revision,
                trust_remote_code=spec.trust_remote_code,
            )
        except (OSError, ValueError, KeyError) as exc:
            raise HFTransferError(
                f"model {name!r} has no usable feature extractor: {str(exc).splitlines()[0]}"
            ) from None
        if not getattr(processor, "sampling_rate", None) or not hasattr(processor, "pad"):
            raise HFTransferError(
                f"model {name!r}: {type(processor).__name__} is not an audio feature extractor "
                "(it has no sampling_rate); set model.processor to an audio model's directory"
            )
        return processor

    def _encode(self, processor, signals: list[np.ndarray]) -> dict[str, list]:
        short = sum(len(s) < self.min_samples for s in signals)
        if short:
            signals = [np.pad(s, (0, max(0, self.min_samples - len(s))),
                              constant_values=getattr(processor, "padding_value", 0.0)) for s in signals]
        enc = processor(signals, sampling_rate=processor.sampling_rate)
        out = {k: list(v) for k, v in enc.items() if k != "attention_mask"}
        out["length"] = [len(s) for s in signals]
        return out

    def preprocess(self, ds, processor, labels, training=False):
        import datasets

        column, rate, seconds = self.options.audio_column, processor.sampling_rate, self.options.max_seconds
        feature = ds.features.get(column)
        if isinstance(feature, datasets.Audio) and feature.decode:
            ds = ds.cast_column(column, datasets.Audio(decode=False))
        root = Path.cwd()
        padded = [0]

        def encode(batch):
            signals = []
            for value in batch[column]:
                ref = self._ref(value, root, "decoding audio")
                signals.append(ref.load(rate, seconds, "decoding audio"))
            padded[0] += sum(len(s) < self.min_samples for s in signals)
            return self._encode(processor, signals)

        label_ids = self.label_ids(ds, labels)
        fingerprint = hashlib.sha256(
            f"{ds._fingerprint}|{processor.to_json_string()}|{self.options}|{self.min_samples}".encode()
        ).hexdigest()[:16]
        out = ds.map(encode, batched=True, batch_size=64, remove_columns=ds.column_names,
                     desc="Decoding audio", new_fingerprint=fingerprint)
        if padded[0]:
            logger.warning("%d clips are shorter than the model's minimum of %d samples (%.3f s) "
                           "and were padded with silence", padded[0], self.min_samples,
                           self.min_samples / rate)
        if label_ids is not None:
            out = out.add_column("labels", label_ids)
        # Decoded clips as numpy arrays: several times faster to batch than Python lists.
        inputs = [k for k in out.column_names if k not in ("length", "labels")]
        return out.with_format("numpy", columns=inputs, output_all_columns=True)

    def collator(self, processor):
        return AudioCollator(processor)

    # --- inference --------------------------------------------------------------------------
    def logits(self, model, processor, inputs, batch_size=32):
        """Inputs are audio file paths (or ``{"array", "sampling_rate"}`` dicts). Returns the
        logits [inputs, labels] in input order."""
        import torch

        if not inputs:
            return torch.zeros(0, model.config.num_labels)
        rate = processor.sampling_rate
        signals = []
        for i, item in enumerate(inputs):
            where = f"predict: input {i + 1}"
            if isinstance(item, dict) and ("array" in item or "raw" in item):
                signal = np.asarray(item.get("array", item.get("raw")), dtype=np.float32)
                if signal.ndim == 2:
                    signal = signal.mean(axis=0 if signal.shape[0] < signal.shape[1] else 1)
                source_rate = int(item.get("sampling_rate") or 0)
                _check_rate(source_rate, f"input {i + 1}", "predict")
                if signal.size == 0:
                    raise HFTransferError(f"{where} holds no audio samples (empty signal)")
                if source_rate != rate:
                    signal = resample(signal, source_rate, rate)
                signals.append(signal[: int(self.options.max_seconds * rate)])
                continue
            if not isinstance(item, (str, os.PathLike)):
                raise HFTransferError(f"{where}: give audio file paths, not {type(item).__name__}")
            ref = AudioRef(os.path.expanduser(os.fspath(item)), os.fspath(item))
            ref.check("predict")
            signals.append(ref.load(rate, self.options.max_seconds, "predict"))
        encoded = self._encode(processor, signals)
        keys = [k for k in encoded if k != "length"]
        features = [{k: encoded[k][i] for k in keys} for i in range(len(signals))]
        lengths = encoded["length"]
        collate = AudioCollator(processor)
        # Padding changes what a model without an attention mask sees (group-normalised
        # wav2vec2), so such a model only gets batches of equal lengths: the same result as
        # one clip at a time, as the transformers pipeline runs it.
        masked = bool(getattr(processor, "return_attention_mask", False))
        order = sorted(range(len(signals)), key=lambda i: lengths[i])
        batches: list[list[int]] = []
        for i in order:
            if batches and len(batches[-1]) < batch_size and (masked or lengths[batches[-1][0]] == lengths[i]):
                batches[-1].append(i)
            else:
                batches.append([i])
        device = next(model.parameters()).device
        model.eval()
        rows: list[Any] = [None] * len(signals)
        for idx in batches:
            batch = collate([features[i] for i in idx])
            with torch.no_grad():
                logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu()
            for i, row in zip(idx, logits):
                rows[i] = row
        return torch.stack(rows)


def default_feature_extractor(config: Any):
    """The stock feature extractor of ``config.model_type`` (e.g. wav2vec2: 16 kHz, normalised
    input, an attention mask when the model's feature encoder uses layer norm)."""
    import transformers
    from transformers.models.auto.feature_extraction_auto import FEATURE_EXTRACTOR_MAPPING_NAMES

    name = FEATURE_EXTRACTOR_MAPPING_NAMES.get(config.model_type)
    cls = getattr(transformers, name, None) if name else None
    if cls is None:
        raise HFTransferError(
            f"model.config: model type {config.model_type!r} has no stock feature extractor; set "
            "model.processor to a directory that holds one (preprocessor_config.json)"
        )
    kwargs = {}
    if hasattr(config, "feat_extract_norm"):
        # wav2vec2 convention: group-norm feature encoders take zero-padded input with no mask.
        kwargs["return_attention_mask"] = config.feat_extract_norm == "layer"
    try:
        return cls(**kwargs)
    except Exception as exc:
        raise HFTransferError(f"model.config: cannot build {name}: {str(exc).splitlines()[0]}") from None
