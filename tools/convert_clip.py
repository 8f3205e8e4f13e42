"""Convert your CLIP checkpoint to the project's .npz, once per machine, so that `diffcorrupt evaluate`
measures in CLIP features (CLIP score, and every other metric in the CLIP space).

    python tools/convert_clip.py --from=PATH [--tokenizer=PATH] [--activation=gelu] [--cache_dir=DIR] [--force]

--from is a Hugging Face CLIP folder (``openai/clip-vit-base-patch16``: config.json, model.safetensors
or pytorch_model.bin, merges.txt) or an OpenAI / open_clip ``.pt``; nothing in a PyTorch file is
executed. A ``.pt`` carries no tokenizer: --tokenizer names its BPE file, and without it the
``open_clip_torch`` wheel is fetched from PyPI with ``pip download`` (only the package registry is
contacted) for its ``bpe_simple_vocab_16e6.txt.gz``. --activation=gelu is for open_clip's own
(non-OpenAI) ViT weights, trained with exact GELU; OpenAI's use quick-GELU, the default.
Prints one JSON line: path, sha256 of the .npz, source, geometry.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
import tempfile

from diffcorrupt import jobs
from diffcorrupt.evaluation.clip_weights import WEIGHTS_FILENAME, default_weights_path, import_clip, load_clip, save_clip_npz
from diffcorrupt.output_paths import output_file
from diffcorrupt.weights.wheels import download_wheel, extract_member

OPEN_CLIP_BPE = "open_clip/bpe_simple_vocab_16e6.txt.gz"  # inside every open_clip_torch wheel


def convert(output: pathlib.Path, source: pathlib.Path, tokenizer: pathlib.Path | None, activation: str | None) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        scratch = pathlib.Path(scratch)
        if tokenizer is None and not source.is_dir():
            tokenizer = extract_member(download_wheel("open_clip_torch", scratch), OPEN_CLIP_BPE, scratch)
        save_clip_npz(import_clip(source, tokenizer, activation), output)
    saved = load_clip(output)  # read back: the cache must load exactly as it will be used
    return {"path": str(output), "sha256": saved.sha256, "source": saved.source, "shape": dataclasses.asdict(saved.shape)}


def main(argv: list[str] | None = None) -> int:
    return jobs.run("convert_clip", _main, argv, prog="tools/convert_clip.py")


def _main(argv: list[str]) -> int:
    parser = jobs.JobParser("convert_clip", __doc__.split("\n\n")[0], config=False, prog="tools/convert_clip.py")
    parser.add_argument("--from", dest="source", type=pathlib.Path, required=True,
                        help="a Hugging Face CLIP folder or an OpenAI/open_clip .pt")
    parser.add_argument("--tokenizer", type=pathlib.Path, help="the BPE file of a .pt (default: from the open_clip_torch wheel)")
    parser.add_argument("--activation", choices=("quick_gelu", "gelu"), help="override the MLP activation (default: "
                        "the folder's config.json, else quick_gelu)")
    parser.add_argument("--cache_dir", type=pathlib.Path, help="write <DIR>/clip/" + WEIGHTS_FILENAME)
    parser.add_argument("--force", action="store_true", help="convert again even if the output exists")
    args = parser.parse_args(argv)
    output = output_file(args.cache_dir / "clip" / WEIGHTS_FILENAME if args.cache_dir else default_weights_path(),
                         "--cache_dir")
    if output.exists() and not args.force:
        print(f"{output} already exists; pass --force to convert again", file=sys.stderr)
        return 0
    print(json.dumps(convert(output, args.source.expanduser(), args.tokenizer, args.activation)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
