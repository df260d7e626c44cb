"""Stage the Hugging Face weights a grid names into the shared model cache.

    stage_weights.py list  --grid GRID    print the grid's Hub models, one `repo[@revision]` a line
    stage_weights.py stage --grid GRID    download them into $HF_HOME/hub, then write the marker
    stage_weights.py wait                 block until the marker exists (a worker's init container)

Only the files the worker loads are fetched (config and tokenizer JSON,
safetensors shards), not the GGUF or PyTorch duplicates some repositories
also carry. The cache layout is the Hub's own ($HF_HOME/hub/models--org--name),
which is what the worker's --model-cache reads. Downloads take file locks, so
two stagers never fetch the same file twice.
"""

import argparse
import json
import os
import sys
import time
import tomllib

# Written into $HF_HOME once every model of the grid is in the cache.
MARKER = ".concept-depth-staged.json"
PATTERNS = ["*.json", "*.safetensors", "tokenizer.model"]


def hub_models(grid_path):
    """The distinct (repo, revision) pairs of the grid's `kind = "hub"` models."""
    try:
        with open(grid_path, "rb") as f:
            grid = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        sys.exit(f"{grid_path}: cannot read the grid: {e}")
    seen = []
    for i, model in enumerate(grid.get("models", [])):
        source = model.get("source", {})
        if source.get("kind") != "hub":
            continue
        repo = source.get("repo")
        if not isinstance(repo, str) or "/" not in repo or "${" in repo:
            sys.exit(f"{grid_path}: models[{i}].source.repo: expected a literal `org/name`, got {repo!r}")
        entry = (repo, source.get("revision"))
        if entry not in seen:
            seen.append(entry)
    return seen


def label(repo, revision):
    return f"{repo}@{revision}" if revision else repo


def hf_home():
    home = os.environ.get("HF_HOME")
    if not home:
        sys.exit("HF_HOME is not set: it must point at the model cache volume")
    return home


def stage(grid_path):
    from huggingface_hub import snapshot_download  # installed by the staging Job only

    models = hub_models(grid_path)
    for n, (repo, revision) in enumerate(models, 1):
        print(f"[{n}/{len(models)}] {label(repo, revision)}", flush=True)
        snapshot_download(repo_id=repo, revision=revision, allow_patterns=PATTERNS)
    marker = os.path.join(hf_home(), MARKER)
    with open(marker + ".part", "w") as f:
        json.dump({"models": [label(r, v) for r, v in models], "staged_at": time.time()}, f)
    os.replace(marker + ".part", marker)
    print(f"staged {len(models)} models; wrote {marker}", flush=True)


def wait():
    marker = os.path.join(hf_home(), MARKER)
    start = time.monotonic()
    next_report = start
    while not os.path.isfile(marker):
        now = time.monotonic()
        if now >= next_report:
            print(f"waiting for the weights to be staged ({marker}), {int(now - start)}s so far", flush=True)
            next_report = now + 60
        time.sleep(5)
    print(f"weights staged: {marker}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["list", "stage", "wait"])
    p.add_argument("--grid", help="grid TOML (list, stage)")
    args = p.parse_args()
    if args.command in ("list", "stage") and not args.grid:
        p.error(f"{args.command} needs --grid")
    if args.command == "list":
        for repo, revision in hub_models(args.grid):
            print(label(repo, revision))
    elif args.command == "stage":
        stage(args.grid)
    else:
        wait()


if __name__ == "__main__":
    main()
