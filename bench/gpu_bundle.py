"""Build what an offline GPU machine needs to run bench/gpu_acceptance.py, in parts that fit a
transfer limit (the device tool carries 64 MiB a call, the repo included).

The machine has torch, transformers, peft and accelerate but none of Ray, MLflow, Optuna,
datasets, bitsandbytes or Gradio, and no package index. So, here (where PyPI answers):

1. ``pip download`` the project's stack for the machine's Python (cp312 manylinux wheels, with
   their dependencies), less every package the machine already has (``--have``: one name per
   line, e.g. from ``python3 -m pip list --format=freeze`` there) and the CUDA/torch wheels;
2. install them into a staging folder (``pip install --target``, no dependency resolution);
3. drop what a headless run never loads: Ray's Java jars, RLlib and tests, the dashboard's and
   MLflow's web UIs, Gradio's server-side-rendering bundle and demo media, bitsandbytes' builds
   for other CUDA/ROCm/XPU versions than ``--cuda``;
4. pack it as ``.gpu/<part>/site.tar.xz`` parts of at most ``--part-mib`` each (by top-level
   package), the first with the decoder tokenizer (``tok/``) and the emotion tweets (``emotion/``).

On the machine, each part unpacks into ``.gpu/site`` (kept between calls while the machine is
warm), then ``PYTHONPATH=.gpu/site`` runs the acceptance. The commands are printed at the end
and in bench/README.md ("GPU acceptance").

    python bench/gpu_bundle.py --have device_packages.txt [--python 3.12] [--cuda 130] [--part-mib 58]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / ".gpu"
DATA = ROOT / ".." / "shared" / "data" / "emotion"
# The stack, pinned as constraints.txt pins it (rouge-score ships no wheel: instruction-tuning
# metrics only, which the acceptance does not run).
PACKAGES = ["ray[default,tune,train]==2.60.0", "mlflow==3.17.2", "optuna==5.0.0", "datasets==5.2.0", "bitsandbytes==0.50.2", "gradio==6.31.0"]
NEVER = re.compile(r"^(nvidia-.*|torch|triton)$")  # the machine's own CUDA torch stays
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"]
# Never imported by a headless sweep, predict, export or serve (paths under the site folder).
DROP = ["ray/jars", "ray/rllib", "ray/llm", "ray/dashboard/client/build", "mlflow/server/js", "gradio/templates/node", "gradio/media_assets"]


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.strip().lower())


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def stage(have: set[str], python: str, cuda: str, work: Path) -> Path:
    """The wheels the machine lacks, installed into ``work/site`` and slimmed."""
    wheels = work / "wheels"
    platform = [a for p in PLATFORMS for a in ("--platform", p)]
    target = ["--only-binary=:all:", "--python-version", python, "--implementation", "cp", *platform]
    pip("download", "-q", *target, "-d", str(wheels), *PACKAGES)
    needed = [w for w in sorted(wheels.glob("*.whl")) if norm(w.name.split("-")[0]) not in have and not NEVER.match(norm(w.name.split("-")[0]))]
    site = work / "site"
    pip("install", "-q", "--no-deps", "--no-compile", "--target", str(site), *target, *map(str, needed))
    for rel in DROP:
        shutil.rmtree(site / rel, ignore_errors=True)
    for lib in (site / "bitsandbytes").glob("libbitsandbytes_*.so"):
        if lib.stem not in (f"libbitsandbytes_cuda{cuda}", "libbitsandbytes_cpu"):
            lib.unlink()
    for cache in list(site.rglob("__pycache__")) + [p for p in site.glob("ray/**/tests") if p.is_dir()]:
        shutil.rmtree(cache, ignore_errors=True)
    return site


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def pack(site: Path, part_mib: float, extras: dict[str, Path]) -> list[Path]:
    """Top-level entries into xz parts, largest first, each under ``part_mib`` (estimated from a
    compression ratio measured on the first part, then checked on the written file)."""
    entries = sorted(site.iterdir(), key=size, reverse=True)
    ratio, parts, groups = 0.25, [], [[]]
    budget = part_mib * 2**20
    for entry in entries:
        current = groups[-1]
        if current and (sum(size(e) for e in current) + size(entry)) * ratio > budget * 0.9:
            groups.append([])
        groups[-1].append(entry)
    for i, group in enumerate(groups):
        folder = OUT / f"part{i + 1}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        with tarfile.open(folder / "site.tar.xz", "w:xz", preset=6) as tar:
            for entry in group:
                tar.add(entry, arcname=entry.name)
        if i == 0:
            for name, src in extras.items():
                shutil.copytree(src, folder / name) if src.is_dir() else shutil.copy(src, folder / name)
        mib = size(folder) / 2**20
        print(f"{folder.relative_to(ROOT)}: {mib:.1f} MiB ({', '.join(e.name for e in group[:6])}{', ...' if len(group) > 6 else ''})")
        if mib > part_mib:
            raise SystemExit(f"error: {folder.relative_to(ROOT)} is {mib:.1f} MiB, over --part-mib {part_mib:g} (fix: a smaller --part-mib makes more, smaller parts)")
        parts.append(folder)
    return parts


def extras(work: Path) -> dict[str, Path]:
    """The decoder tokenizer (from the packaged MiniLM) and the emotion tweets."""
    sys.path.insert(0, str(ROOT))
    from transformers import AutoTokenizer

    from trainables.model.load import resolve
    from trainables.model.tiny import as_decoder_tokenizer

    tok = work / "tok"
    as_decoder_tokenizer(AutoTokenizer.from_pretrained(resolve("packaged:all-minilm-l6-v2"))).save_pretrained(tok)
    emotion = work / "emotion"
    emotion.mkdir()
    for name in ("train.txt", "val.txt"):
        shutil.copy(DATA / name, emotion / name)
    return {"tok": tok, "emotion": emotion}


def main() -> int:
    p = argparse.ArgumentParser(prog="python bench/gpu_bundle.py", description=__doc__.splitlines()[0])
    p.add_argument("--have", required=True, help="file: the packages the GPU machine already has, one name per line (pip list --format=freeze works)")
    p.add_argument("--python", default="3.12", help="the machine's Python (default 3.12)")
    p.add_argument("--cuda", default="130", help="the machine's CUDA for bitsandbytes' library, e.g. 130 for 13.0 (default)")
    p.add_argument("--part-mib", type=float, default=58, help="most MiB per part (default 58: a 64 MiB transfer less the repo)")
    args = p.parse_args()
    have = {norm(line.split("==")[0]) for line in Path(args.have).read_text().splitlines() if line.strip() and not line.startswith("#")}
    if not (DATA / "train.txt").is_file():
        print(f"error: no emotion data at {DATA} (fix: run from a checkout beside ../shared/data)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        site = stage(have, args.python, args.cuda, work)
        print(f"staged {size(site) / 2**20:.0f} MiB of packages the machine lacks")
        parts = pack(site, args.part_mib, extras(work))
    first = parts[0].relative_to(ROOT)
    print("\nOn the GPU machine, one call per part, back to back while it stays warm (carry the part's folder):")
    for i, part in enumerate(parts):
        unpack = f"mkdir -p .gpu/site && tar -xJf {part.relative_to(ROOT)}/site.tar.xz -C .gpu/site"
        if i < len(parts) - 1:
            print(f"  carry [{part.relative_to(ROOT)}]:  {unpack}")
        else:
            print(f"  carry [{part.relative_to(ROOT)}]:  {unpack} && PYTHONPATH=$PWD/.gpu/site PYTHONUNBUFFERED=1 python3 bench/gpu_acceptance.py "
                  f"--tokenizer {first}/tok --data {first}/emotion --out $OUT/gpu_acceptance.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
