"""Reading a diffusers ``LDMTextToImagePipeline`` folder as our U-Net, text encoder, tokenizer,
noise schedule and autoencoder.

The layout (``LDMTextToImagePipeline.save_pretrained``, as of the released text-to-image LDMs):
``unet/`` (``UNet2DConditionModel``), ``bert/`` (``LDMBertModel``), ``tokenizer/`` (BERT
WordPiece ``vocab.txt``), ``scheduler/`` (DDIM, PNDM or LMS: only its betas are read) and
``vqvae/`` (``AutoencoderKL`` or ``VQModel``). Everything the pipeline computes is mapped onto our
modules, and everything it computes that ours do not is refused by name in one sentence, before
any weights are read where the configs already tell:
- the U-Net geometry comes from ``unet_settings`` and becomes a ``model.unet`` override over the
  ``LDM-txt256`` preset; a class-conditional U-Net (``class_embed_type``) or a folder without
  ``bert/`` (the class-conditional and unconditional LDMs) is not this pipeline and is refused;
- the text encoder is the ``ldm-bert`` preset when ``bert/config.json`` has LDMBert's default
  geometry, else a JSON ``EncoderShape`` of its own; it is fed 77 tokens without a mask, as the
  pipeline feeds it, and its output is the U-Net's context, so ``cross_attention_dim`` must be
  its width;
- the scheduler's betas must be one of our schedules (``diffusion.schedules``): ``linear`` from
  1e-4 to 0.02, ``scaled_linear`` from 0.0015 to 0.0195 (our ``ldm_linear``) or 0.00085 to 0.012 (``ldm_txt_linear``) or
  ``squaredcos_cap_v2`` (our ``cosine``). Sampler-only settings (``clip_sample``,
  ``steps_offset``, ``set_alpha_to_one``, ...) are ours to choose and are not read.

Weights: ``.safetensors`` when present, else the PyTorch ``.bin`` through
``weights.torch_pickle``, which runs nothing from the file.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import ml_collections

from diffcorrupt.autoencoders.convert import import_diffusers
from diffcorrupt.autoencoders.presets import AutoencoderConfig
from diffcorrupt.checkpoint_import.dit_names import Rule, Tensors, expected_source_shapes, first_misfit, to_flax
from diffcorrupt.checkpoint_import.ldm_bert_names import UNUSED, ldm_bert_rules
from diffcorrupt.checkpoint_import.unet_names import diffusers_unet_rules, unet_settings
from diffcorrupt.config.schema import base_config
from diffcorrupt.config.validate import validate
from diffcorrupt.errors import UserError
from diffcorrupt.models.registry import example_inputs, model_from_config
from diffcorrupt.models.text_encoder import ACTIVATIONS, TEXT_ENCODERS, EncoderShape
from diffcorrupt.models.tokenizer import make_tokenizer
from diffcorrupt.models.unet import OVERRIDABLE
from diffcorrupt.weights.json_settings import read_json_object
from diffcorrupt.weights.safetensors_file import read_safetensors
from diffcorrupt.weights.torch_pickle import load_state_dict

PIPELINE = "LDMTextToImagePipeline"
SUBFOLDERS = ("unet", "bert", "tokenizer", "scheduler", "vqvae")
UNET_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
BERT_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = ("vocab.txt", "tokenizer_config.json")  # the second is optional
SCHEDULERS = ("DDIMScheduler", "PNDMScheduler", "LMSDiscreteScheduler")  # the ones the pipeline takes
TEXT_LENGTH = 77  # the pipeline tokenizes with padding="max_length", max_length=77
BASE_PRESET = "LDM-txt256"  # every geometry field is overridden; the preset only names the family
# diffusers beta_schedule -> our schedules of that shape, each with the (beta_start, beta_end) it computes
# (None: the ends are not read)
BETAS = {"linear": (("linear", (1e-4, 0.02)),),
         "scaled_linear": (("ldm_linear", (0.0015, 0.0195)), ("ldm_txt_linear", (0.00085, 0.012))),
         "squaredcos_cap_v2": (("cosine", None),)}
PREDICTIONS = {"epsilon": "eps", "v_prediction": "v"}


@dataclasses.dataclass(frozen=True)
class ImportedLDM:
    """A pipeline folder as a run: its config (``model.tokenizer`` is the folder's vocab.txt),
    the U-Net params with the text encoder's inside (``cond_stage_model/encoder``), and the
    autoencoder that decodes its latents."""

    config: ml_collections.ConfigDict
    params: dict
    input_shape: tuple[int, int, int]
    autoencoder: AutoencoderConfig
    autoencoder_params: dict
    tokenizer_files: tuple[Path, ...]  # to copy beside the run


def read_ldm(folder: str | Path) -> ImportedLDM:
    """The pipeline folder ``folder`` as our run; a ``UserError`` names what does not fit."""
    folder = Path(folder)
    _check_layout(folder)
    unet_config = _json(folder / "unet" / "config.json")
    if unet_config.get("class_embed_type") or unet_config.get("num_class_embeds"):
        raise UserError(f"{folder / 'unet'} is class-conditional (class_embed_type / num_class_embeds); only "
                        f"text-to-image {PIPELINE} folders can be imported")
    settings = unet_settings(unet_config, str(folder / "unet" / "config.json"))
    size = unet_config.get("sample_size", 64)
    if not isinstance(size, int):
        raise UserError(f"{folder / 'unet' / 'config.json'} has sample_size {size}; only square latents (one "
                        "integer) can be imported")
    if settings["out_channels"] != settings["in_channels"]:
        raise UserError(f"{folder / 'unet'} outputs {settings['out_channels']} channels for "
                        f"{settings['in_channels']}; the pipeline's schedulers read a prediction of the input's shape")
    vocab = _vocab(folder / "tokenizer")
    shape = _bert_shape(folder / "bert", make_tokenizer(str(vocab), TEXT_LENGTH).vocab_size)
    if shape.width != settings["context_dim"]:
        raise UserError(f"{folder / 'unet'} cross-attends to {settings['context_dim']} features but bert/ outputs "
                        f"{shape.width}; the pipeline feeds bert's output to the U-Net, so they must agree")
    schedule = _schedule(folder / "scheduler")
    autoencoder, autoencoder_params = import_diffusers(folder / "vqvae")
    if autoencoder.latent_channels != settings["in_channels"]:
        raise UserError(f"{folder / 'vqvae'} makes {autoencoder.latent_channels}-channel latents but the U-Net takes "
                        f"{settings['in_channels']}; the folder mixes models")
    input_shape = (size, size, settings["in_channels"])
    config = run_config(settings, shape, vocab, schedule, size * autoencoder.downsampling_factor,
                        autoencoder.in_channels)
    params = _params(folder, config, input_shape, settings, shape.depth)
    files = tuple(folder / "tokenizer" / name for name in TOKENIZER_FILES if (folder / "tokenizer" / name).is_file())
    return ImportedLDM(config, params, input_shape, autoencoder, autoencoder_params, files)


def run_config(settings: dict[str, Any], shape: EncoderShape, vocab: Path, schedule: tuple[str, int, str],
               image_size: int, image_channels: int) -> ml_collections.ConfigDict:
    """The config of a run that would have trained this pipeline's model, sampled by default as the
    pipeline samples (50 DDIM steps, eta 0, guidance 1)."""
    config = base_config()
    config.model.name = BASE_PRESET
    config.model.unet = json.dumps({name: list(value) if isinstance(value, tuple) else value
                                    for name, value in settings.items() if name in OVERRIDABLE})
    ldm_bert = TEXT_ENCODERS["ldm-bert"]
    config.model.text_encoder = "ldm-bert" if shape == ldm_bert else json.dumps(dataclasses.asdict(shape))
    config.model.tokenizer = str(vocab)
    config.model.text_max_length = TEXT_LENGTH
    config.diffusion.schedule, config.diffusion.num_steps, config.diffusion.prediction = schedule
    config.data.name = "latent_records"
    config.data.image_size = image_size
    config.data.channels = image_channels
    config.data.corruption.kind = "swap"
    config.sample.sampler = "ddim"
    config.sample.steps = min(50, config.diffusion.num_steps)
    config.sample.eta = 0.0
    config.sample.cfg_scale = 1.0
    validate(config, check_data=False)
    return config


def _check_layout(folder: Path) -> None:
    if not folder.is_dir():
        raise UserError(f"--from={folder} is not a folder; give an {PIPELINE} folder (unet/, bert/, tokenizer/, ...)")
    index = folder / "model_index.json"
    kind = _json(index).get("_class_name") if index.is_file() else PIPELINE
    if kind != PIPELINE:
        raise UserError(f"{index} describes a {kind}, not an {PIPELINE}; only text-to-image LDM folders can be "
                        "imported (the class-conditional LDM's layout is not diffusers')")
    for name in SUBFOLDERS:
        if not (folder / name).is_dir():
            raise UserError(f"{folder} has no {name}/ subfolder; an {PIPELINE} folder has "
                            f"{', '.join(n + '/' for n in SUBFOLDERS)} (class-conditional LDMs have no bert/ and "
                            "cannot be imported)")


def _json(path: Path) -> dict[str, Any]:
    return read_json_object(path, "the download is incomplete or damaged: download the pipeline again")


def _vocab(folder: Path) -> Path:
    """The absolute path of the WordPiece vocabulary, checked to be BERT's tokenizer's."""
    vocab, settings = folder / "vocab.txt", folder / "tokenizer_config.json"
    if not vocab.is_file():
        raise UserError(f"{folder} has no vocab.txt, which BERT's WordPiece tokenizer reads (a tokenizer.json alone, "
                        "as transformers 5 saves it, is not read); copy the released vocab.txt there")
    kind = _json(settings).get("tokenizer_class", "BertTokenizer") if settings.is_file() else "BertTokenizer"
    if kind not in ("BertTokenizer", "BertTokenizerFast"):
        raise UserError(f"{settings} names a {kind}; only BERT's WordPiece tokenizer is computed")
    return vocab.absolute()


def _bert_shape(folder: Path, vocab_size: int) -> EncoderShape:
    """Our encoder geometry of ``bert/config.json``; LDMBertConfig's defaults fill missing keys."""
    path, default = folder / "config.json", TEXT_ENCODERS["ldm-bert"]
    config = _json(path)
    if config.get("model_type") != "ldmbert" and "LDMBertModel" not in config.get("architectures", []):
        raise UserError(f"{path} describes a {config.get('model_type') or 'model of no model_type'}, not an "
                        "LDMBertModel; only the LDM pipeline's text encoder can be imported")
    required = {"scale_embedding": (False, "our encoder does not scale its embeddings"),
                "max_position_embeddings": (TEXT_LENGTH, "the pipeline feeds 77 tokens"),
                "vocab_size": (vocab_size, "tokenizer/vocab.txt has that many lines")}
    for key, (value, why) in required.items():
        if config.get(key, value) != value:
            raise UserError(f"{path} sets '{key}' to {config[key]!r} where we need {value!r}: {why}")
    activation = config.get("activation_function", default.activation)
    if activation not in ACTIVATIONS:
        raise UserError(f"{path} sets 'activation_function' to {activation!r}; we compute {', '.join(ACTIVATIONS)}")
    return dataclasses.replace(
        default, width=int(config.get("d_model", default.width)), depth=int(config.get("encoder_layers", default.depth)),
        num_heads=int(config.get("encoder_attention_heads", default.num_heads)),
        head_dim=int(config.get("head_dim", default.head_dim)),
        ffn_dim=int(config.get("encoder_ffn_dim", default.ffn_dim)), activation=activation)


def _schedule(folder: Path) -> tuple[str, int, str]:
    """(our schedule name, training steps, prediction) of the scheduler's config."""
    path = folder / "scheduler_config.json"
    config = _json(path)
    if config.get("_class_name") not in SCHEDULERS:
        raise UserError(f"{path} describes a {config.get('_class_name')}; the pipeline takes {', '.join(SCHEDULERS)}")
    for key, value in (("trained_betas", None), ("rescale_betas_zero_snr", False)):
        if config.get(key, value) != value:
            raise UserError(f"{path} sets '{key}'; our schedules compute only {value!r} there")
    kind = config.get("beta_schedule", "linear")
    if kind not in BETAS:
        raise UserError(f"{path} sets 'beta_schedule' to {kind!r}; we compute {', '.join(BETAS)}")
    ends = tuple(float(config.get(key, default)) for key, default in (("beta_start", 1e-4), ("beta_end", 0.02)))
    ours = next((name for name, want in BETAS[kind]
                 if want is None or all(math.isclose(g, w, rel_tol=1e-6) for g, w in zip(ends, want))), None)
    if ours is None:
        known = "; ".join(f"{name} ({want[0]:g} to {want[1]:g})" for name, want in BETAS[kind])
        raise UserError(f"{path} sets a {kind} schedule from {ends[0]:g} to {ends[1]:g}; we compute only {known}")
    prediction = config.get("prediction_type", "epsilon")
    if prediction not in PREDICTIONS:
        raise UserError(f"{path} sets 'prediction_type' to {prediction!r}; we compute {', '.join(PREDICTIONS)}")
    steps = int(config.get("num_train_timesteps", 1000))
    if steps < 2:
        raise UserError(f"{path} sets 'num_train_timesteps' to {steps}; a schedule needs at least 2")
    return ours, steps, PREDICTIONS[prediction]


def _weights(folder: Path, names: tuple[str, ...]) -> Tensors:
    for name in names:
        path = folder / name
        if path.is_file():
            return read_safetensors(path) if name.endswith(".safetensors") else load_state_dict(path)
    raise UserError(f"{folder} holds none of {', '.join(names)}; the download is incomplete")


def _params(folder: Path, config: ml_collections.ConfigDict, input_shape: tuple[int, int, int],
            settings: dict[str, Any], depth: int) -> dict:
    """The U-Net's params from unet/, with its text encoder's from bert/."""
    model = model_from_config(config, input_shape, 0)
    abstract = nn.meta.unbox(jax.eval_shape(
        lambda: model.init({"params": jax.random.key(0)}, *example_inputs(model, input_shape))["params"]))
    params = _convert(_weights(folder / "unet", UNET_WEIGHTS), diffusers_unet_rules(**settings), abstract,
                      folder / "unet", ())
    bert = _convert(_weights(folder / "bert", BERT_WEIGHTS), ldm_bert_rules(depth, ("cond_stage_model", "encoder")),
                    abstract, folder / "bert", UNUSED)
    params["cond_stage_model"] = bert["cond_stage_model"]
    return params


def _convert(tensors: Tensors, rules: list[Rule], abstract: Any, where: Path, unused: tuple[str, ...]) -> dict:
    """``to_flax``, after naming the first tensor that is missing, misshapen, or has no place in
    our model (dropping one would change what the model computes)."""
    expected = expected_source_shapes(rules, abstract)
    misfit = first_misfit(tensors, expected)
    if misfit:
        raise UserError(f"{where}: {misfit} by its config.json; the weights do not fit their config")
    extra = sorted(set(tensors) - set(expected) - set(unused))
    if extra:
        raise UserError(f"{where}: tensor '{extra[0]}' has no place in our model; its config describes a network we "
                        "do not compute")
    return to_flax(tensors, rules, abstract, where=str(where), model_name=BASE_PRESET)
