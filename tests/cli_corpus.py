"""Bad command lines for every job and tool: the corpus of ``test_hostile_cli``.

Each case is a command line with placeholders for the shared fixtures (``cli_places``) and a
pattern that the one-line refusal must contain: the flag or file it names, so a case cannot pass on
some other, earlier error. Categories follow the job. The expected outcome is the same for all:
exit status 2, one line on stderr, bounded memory, and no file written or changed anywhere in the
fixtures or the working folder.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class CliCase:
    id: str
    argv: tuple[str, ...]  # ("diffcorrupt", job, flags...) or ("tool", script, flags...), with {placeholders}
    names: str  # a regular expression the message must match: what it names


def _cases(prefix: str, head: tuple[str, ...], rows: list[tuple[str, list[str], str]]) -> list[CliCase]:
    return [CliCase(f"{prefix}-{name}", head + tuple(argv), names) for name, argv, names in rows]


RUN = "--workdir={run}"
CONFIG = "--config={config}"

SAMPLE = _cases("sample", ("diffcorrupt", "sample"), [
    ("workdir-missing", ["--workdir={missing}"], r"holds no checkpoints"),
    ("workdir-file", ["--workdir={file}"], r"--workdir"),
    ("steps-zero", [RUN, "--steps=0"], r"--steps"),
    ("steps-negative", [RUN, "--steps=-3"], r"--steps"),
    ("steps-too-many", [RUN, "--steps=5000"], r"--steps"),
    ("steps-text", [RUN, "--steps=ten"], r"--steps"),
    ("batch-zero", [RUN, "--batch_size=0"], r"--batch_size"),
    ("batch-negative", [RUN, "--batch_size=-8"], r"--batch_size"),
    ("num-samples-zero", [RUN, "--num_samples=0"], r"--num_samples"),
    ("num-samples-negative", [RUN, "--num_samples=-1"], r"--num_samples"),
    ("step-negative", [RUN, "--step=-1"], r"--step"),
    ("step-absent", [RUN, "--step=3"], r"step 3"),
    ("seed-negative", [RUN, "--seed=-1"], r"--seed"),
    ("cfg-text", [RUN, "--cfg_scale=abc"], r"--cfg_scale"),
    ("cfg-below-one", [RUN, "--cfg_scale=0.5"], r"--cfg_scale"),
    ("cfg-nan", [RUN, "--cfg_scale=nan"], r"--cfg_scale"),
    ("eta-out-of-range", [RUN, "--sampler=ddim", "--eta=2"], r"--eta"),
    ("sampler-unknown", [RUN, "--sampler=euler"], r"--sampler"),
    ("mesh-two-axes", [RUN, "--mesh=1,2"], r"--mesh"),
    ("mesh-zero", [RUN, "--mesh=0,1,1"], r"mesh"),
    ("mesh-not-dividing", [RUN, "--mesh=3,1,1"], r"mesh"),
    ("out-is-file", [RUN, "--out={file}"], r"--out"),
    ("out-under-file", [RUN, "--out={file}/samples"], r"--out"),
    ("captions-missing", [RUN, "--captions={missing}"], r"--captions"),
    ("captions-not-text", [RUN, "--captions={garbage}"], r"UTF-8"),
    ("autoencoder-missing", [RUN, "--autoencoder={missing}"], r"--autoencoder"),
    ("damaged-checkpoint", ["--workdir={damaged}"], r"step 4.*--step=2"),
    ("unknown-flag", [RUN, "--temperature=2"], r"--temperature"),
    ("controls-not-personalized", [RUN, "--controls=dataset:test"], r"not personalized.*--controls"),
])

TRAIN = _cases("train", ("diffcorrupt", "train"), [
    ("config-missing", ["--config={missing}.py", "--workdir={new}"], r"config file"),
    ("preset-unknown", ["--config={repo}/configs/fmnist.py:huge", "--workdir={new}"], r"huge"),
    ("config-without-get-config", ["--config={file_py}", "--workdir={new}"], r"get_config"),
    ("lr-nan", [CONFIG, "--workdir={new}", "--config.train.lr=nan"], r"train\.lr"),
    ("key-unknown", [CONFIG, "--workdir={new}", "--config.train.batchsize=8"], r"batchsize"),
    ("value-text", [CONFIG, "--workdir={new}", "--config.train.lr=fast"], r"lr"),
    ("batch-zero", [CONFIG, "--workdir={new}", "--config.train.batch_size=0"], r"batch_size"),
    ("batch-negative", [CONFIG, "--workdir={new}", "--config.train.batch_size=-16"], r"batch_size"),
    ("steps-negative", [CONFIG, "--workdir={new}", "--config.train.num_steps=-1"], r"num_steps"),
    ("image-size-zero", [CONFIG, "--workdir={new}", "--config.data.image_size=0"], r"image_size"),
    ("every-steps-zero", [CONFIG, "--workdir={new}", "--config.checkpoint.every_steps=0"], r"every_steps"),
    ("ratio-above-one", [CONFIG, "--workdir={new}", "--config.data.corruption.ratio=1.5"], r"ratio"),
    ("workdir-file", [CONFIG, "--workdir={file}"], r"--workdir"),
    ("workdir-under-file", [CONFIG, "--workdir={file}/run"], r"--workdir"),
    ("config-changed", [CONFIG, RUN, "--config.model.name=DiT-T/4", "--config.data.image_size=16",
                        "--config.train.batch_size=16"], r"--allow_config_change"),
    ("no-workdir", [CONFIG], r"--workdir"),
    ("control-unknown", [CONFIG, "--workdir={new}", "--config.data.control=sobel"], r"data\.control.*sobel"),
    ("control-dir-missing", [CONFIG, "--workdir={new}", "--config.data.control=folder",
                             "--config.data.control_dir={missing}"], r"data\.control_dir"),
    ("base-without-control", [CONFIG, "--workdir={new}", "--config.personalize.base={run}"], r"data\.control"),
    ("base-missing", [CONFIG, "--workdir={new}", "--config.personalize.base={missing}", "--config.data.control=canny"],
     r"holds no checkpoints"),
])

EVALUATE = _cases("evaluate", ("diffcorrupt", "evaluate"), [
    ("samples-missing", ["--samples={missing}"], r"--samples|does not exist"),
    ("samples-text-file", ["--samples={file}"], r"somefile"),
    ("samples-random-bytes", ["--samples={garbage}"], r"garbage"),
    ("reference-count-zero", ["--samples={samples}", "--reference_count=0"], r"--reference_count"),
    ("reference-count-negative", ["--samples={samples}", "--reference_count=-5"], r"--reference_count"),
    ("features-unknown", ["--samples={samples}", "--features=clip"], r"clip"),
    ("inception-missing", ["--samples={samples}", "--features=inception", "--inception_weights={missing}"],
     r"Inception"),
    ("reference-missing", ["--samples={samples}", "--reference={missing}"], r"--reference|missing"),
    ("out-is-folder", ["--samples={samples}", "--out={folder}"], r"--out"),
    ("out-under-file", ["--samples={samples}", "--out={file}/metrics.json"], r"--out"),
    ("labels-out-of-range", ["--samples={bad_labels}", CONFIG, "--features=classifier", "--reference=dataset"],
     r"label"),
    ("config-missing", ["--samples={samples}", "--config={missing}.py"], r"config file"),
    ("images-wrong-size", ["--samples={samples}", CONFIG, "--features=classifier"], r"shape"),
])

REPORT = _cases("report", ("diffcorrupt", "report"), [
    ("workdirs-missing", ["--workdirs={missing}", "--out={new}"], r"--workdirs"),
    ("workdirs-empty", ["--workdirs=,", "--out={new}"], r"--workdirs"),
    ("workdir-not-a-run", ["--workdirs={folder}", "--out={new}"], r"checkpoints"),
    ("inception-missing", ["--workdirs={run}", "--out={new}", "--features=inception",
                           "--inception_weights={missing}"], r"Inception"),
    ("checkpoints-text", ["--workdirs={run}", "--out={new}", "--checkpoints=newest"], r"--checkpoints"),
    ("checkpoints-absent", ["--workdirs={run}", "--out={new}", "--checkpoints=7"], r"7"),
    ("num-samples-zero", ["--workdirs={run}", "--out={new}", "--num_samples=0"], r"--num_samples"),
    ("batch-negative", ["--workdirs={run}", "--out={new}", "--batch_size=-1"], r"--batch_size"),
    ("steps-zero", ["--workdirs={run}", "--out={new}", "--steps=0"], r"--steps"),
    ("seed-negative", ["--workdirs={run}", "--out={new}", "--seed=-2"], r"--seed"),
    ("cfg-text", ["--workdirs={run}", "--out={new}", "--cfg_scale=x"], r"--cfg_scale"),
    ("reference-count-zero", ["--workdirs={run}", "--out={new}", "--reference_count=0"], r"--reference_count"),
    ("out-is-file", ["--workdirs={run}", "--out={file}"], r"--out"),
    ("damaged-checkpoint", ["--workdirs={damaged}", "--out={new}"], r"step 4"),
])

DEMO = _cases("demo", ("diffcorrupt", "demo"), [
    ("out-is-file", ["--out={file}"], r"--out"),
    ("out-under-file", ["--quick", "--out={file}/demo"], r"--out"),
    ("out-not-a-demo", ["--quick", "--out={folder}"], r"--out"),
    ("unknown-flag", ["--fast"], r"--fast"),
])

AUTOENCODER = _cases("autoencoder", ("diffcorrupt", "autoencoder"), [
    ("steps-zero", [CONFIG, "--out={new}", "--steps=0"], r"--steps"),
    ("batch-negative", [CONFIG, "--out={new}", "--batch_size=-4"], r"--batch_size"),
    ("lr-zero", [CONFIG, "--out={new}", "--lr=0"], r"--lr"),
    ("preset-unknown", [CONFIG, "--out={new}", "--preset=kl-f99"], r"kl-f99"),
    ("out-is-file", [CONFIG, "--out={file}"], r"--out"),
    ("out-not-empty", [CONFIG, "--out={folder}"], r"--out"),
])

ENCODE = _cases("encode", ("diffcorrupt", "encode"), [
    ("autoencoder-missing", [CONFIG, "--autoencoder={missing}", "--out={new}"], r"--autoencoder|missing"),
    ("autoencoder-not-one", [CONFIG, "--autoencoder={folder}", "--out={new}"], r"autoencoder"),
    ("batch-zero", [CONFIG, "--autoencoder={folder}", "--out={new}", "--batch_size=0"], r"--batch_size"),
    ("shard-size-negative", [CONFIG, "--autoencoder={folder}", "--out={new}", "--shard_size=-1"], r"--shard_size"),
    ("out-is-file", [CONFIG, "--autoencoder={folder}", "--out={file}"], r"--out"),
])

CORRUPTION = _cases("corruption", ("diffcorrupt", "corruption"), [
    ("epoch-negative", [CONFIG, "--out={new}", "--epoch=-1"], r"--epoch"),
    ("out-is-file", [CONFIG, "--out={file}"], r"--out"),
    ("mode-unknown", [CONFIG, "--out={new}", "--config.data.corruption.mode=sometimes"], r"mode"),
    ("ratio-negative", [CONFIG, "--out={new}", "--config.data.corruption.ratio=-0.1"], r"ratio"),
])

BENCH = _cases("bench", ("diffcorrupt", "bench"), [
    ("kind-unknown", ["speed"], r"speed"),
    ("train-steps-zero", ["train", "--steps=0"], r"--steps"),
    ("model-classes-negative", ["model", "--num_classes=-1"], r"--num_classes"),
    ("data-batches-zero", ["data", "--num_batches=0"], r"--num_batches"),
    ("sample-steps-negative", ["sample", "--steps=-5"], r"--steps"),
    ("devices-zero", ["train", "--devices=0"], r"--devices"),
])

SWEEP = _cases("sweep", ("diffcorrupt", "sweep"), [
    ("grid-unknown", ["--grid=nope", "--dry_run"], r"nope"),
    ("grid-file-without-grid", ["--grid={file_py}", "--dry_run"], r"GRID"),
    ("launcher-unknown", ["--grid=fmnist_small", "--launcher=k8s"], r"--launcher"),
    ("only-matches-nothing", ["--grid=fmnist_small", "--dry_run", "--only=zzz"], r"zzz"),
    ("submit-locally", ["--grid=fmnist_small", "--submit"], r"--submit"),
    ("root-is-file", ["--grid=fmnist_small", "--dry_run", "--root={file}"], r"--root"),
])

THEORY = _cases("theory", ("diffcorrupt", "theory"), [
    ("draws-zero", ["--draws=0", "--out={new}"], r"--draws"),
    ("classes-zero", ["--classes=0", "--out={new}"], r"--classes"),
    ("gammas-text", ["--gammas=a,b", "--out={new}"], r"--gammas"),
    ("dims-zero", ["--dims=0", "--n_per_class=10", "--out={new}"], r"--dims"),
    ("out-is-file", ["--out={file}"], r"--out"),
])

TOOLS = _cases("tool", ("tool",), [
    ("convert-autoencoder-source-missing", ["convert_autoencoder.py", "--from={missing}", "--out={new}",
                                            "--preset=kl-f4-small"], r"missing"),
    ("convert-autoencoder-out-exists", ["convert_autoencoder.py", "--from={garbage}", "--out={folder}",
                                        "--preset=kl-f4-small"], r"--force"),
    ("convert-autoencoder-garbage", ["convert_autoencoder.py", "--from={garbage}", "--out={new}",
                                     "--preset=kl-f4-small"], r"garbage"),
    ("convert-autoencoder-preset-unknown", ["convert_autoencoder.py", "--from={garbage}", "--out={new}",
                                            "--preset=kl-f99"], r"kl-f99"),
    ("import-dit-garbage", ["import_dit.py", "--from={garbage}", "--workdir={new}"], r"garbage"),
    ("import-dit-missing", ["import_dit.py", "--from={missing}", "--workdir={new}"], r"missing"),
    ("import-dit-autoencoder-missing", ["import_dit.py", "--from={garbage}", "--workdir={new}",
                                        "--autoencoder={missing}"], r"--autoencoder"),
    ("import-dit-workdir-exists", ["import_dit.py", "--from={garbage}", "--workdir={run}"], r"--workdir|exists"),
    ("import-ldm-missing", ["import_ldm.py", "--from={missing}", "--workdir={new}"], r"missing"),
    ("import-control-missing", ["import_control.py", "--from={missing}", "--base={run}", "--workdir={new}"],
     r"missing.*config\.json"),
    ("import-control-workdir-exists", ["import_control.py", "--from={folder}", "--base={run}", "--workdir={run}"],
     r"--workdir.*already holds checkpoints"),
    ("import-control-control-unknown", ["import_control.py", "--from={folder}", "--base={run}", "--workdir={new}",
                                        "--control=depth"], r"--control"),
    ("convert-inception-garbage", ["convert_inception.py", "--from={garbage}", "--cache_dir={new}"], r"garbage"),
    ("convert-inception-cache-under-file", ["convert_inception.py", "--from={garbage}", "--cache_dir={file}"],
     r"--cache_dir"),
])

CASES: list[CliCase] = (SAMPLE + TRAIN + EVALUATE + REPORT + DEMO + AUTOENCODER + ENCODE + CORRUPTION + BENCH
                        + SWEEP + THEORY + TOOLS)


def counts() -> dict[str, int]:
    """Cases per job or tool."""
    out: dict[str, int] = {}
    for case in CASES:
        key = case.id.split("-")[0]
        out[key] = out.get(key, 0) + 1
    return out
