"""Mix several RefSegRS-layout datasets into one folder that ``rrsis-geo train`` reads.

Used to fine-tune the shipped model on generated chips plus real chips made by ``rrsis-geo
dataset build`` (recipe in ``sample_data/demo_model/MODEL_CARD.md``). Files are symlinked, not
copied. Each ``--part`` names a dataset folder, the split to read, the split to write, how many
times each of its records is repeated (to set the mixing ratio), and optionally classes known to
be absent from that imagery ("building;car" for a forest orthophoto): every chip then also gets
one sentence naming one of them (in turn) with an empty mask, so that the model learns to paint
nothing for a class that is not there.

    python scripts/mix_datasets.py OUT \\
        --part data/synth train train 1 - \\
        --part data/neon_ds train train 2 "building;car;road"
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image


def link(src: Path, dst: Path) -> None:
    if not dst.exists():
        os.symlink(src.resolve(), dst)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--part", nargs=5, action="append", required=True,
                    metavar=("DIR", "SPLIT_IN", "SPLIT_OUT", "REPEAT", "ABSENT"))
    args = ap.parse_args()
    out = Path(args.out)
    for sub in ("images", "masks", "union_masks"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    phrases: dict[str, list[str]] = {}
    meta_out = []
    counts: dict[str, int] = {}
    for k, (src, split_in, split_out, repeat, absent) in enumerate(args.part):
        src_dir, repeat = Path(src), int(repeat)
        absent_classes = [] if absent == "-" else [c.strip() for c in absent.split(";") if c]
        meta = {}
        mpath = src_dir / "metadata.jsonl"
        if mpath.is_file():
            for line in mpath.read_text(encoding="utf-8").splitlines():
                rec = json.loads(line)
                meta[rec["id"]] = rec
        lines = (src_dir / f"output_phrase_{split_in}.txt").read_text(encoding="utf-8").splitlines()
        prefix = f"p{k}_{src_dir.name}"
        chips_done: set[str] = set()
        n_absent = 0
        records = []
        for line in lines:
            rid, expr = line.split(" ", 1)
            records.append((rid, expr, meta.get(rid, {}), None))
            chip = meta.get(rid, {}).get("chip")
            if absent_classes and chip and chip not in chips_done:
                chips_done.add(chip)
                cls = absent_classes[n_absent % len(absent_classes)]
                n_absent += 1
                records.append((rid, f"the {cls}", meta.get(rid, {}), cls))
        for rid, expr, rec, absent_cls in records:
            for r in range(repeat):
                nid = f"{prefix}_{rid}"
                if absent_cls:
                    nid += "_a" + absent_cls.replace(" ", "-")
                if repeat > 1:
                    nid += f"_r{r}"
                img = next((src_dir / "images").glob(rid + ".*"))
                link(img, out / "images" / (nid + img.suffix))
                if absent_cls:
                    empty = np.zeros(Image.open(img).size[::-1], np.uint8)
                    for sub in ("masks", "union_masks"):
                        Image.fromarray(empty).save(out / sub / (nid + ".tif"))
                    new = {"id": nid, "split": split_out, "expression": expr,
                           "category": absent_cls, "type": "absent",
                           "needs_disambiguation": False}
                else:
                    link(next((src_dir / "masks").glob(rid + ".*")),
                         out / "masks" / (nid + ".tif"))
                    um = list((src_dir / "union_masks").glob(rid + ".*"))
                    if um:
                        link(um[0], out / "union_masks" / (nid + ".tif"))
                    new = dict(rec, id=nid, split=split_out)
                    for key in ("image", "mask", "union_mask"):
                        new.pop(key, None)
                meta_out.append(new)
                phrases.setdefault(split_out, []).append(f"{nid} {expr}")
                key = f"{split_out} {src_dir.name}"
                counts[key] = counts.get(key, 0) + 1
    for split, rows in phrases.items():
        (out / f"output_phrase_{split}.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
    with open(out / "metadata.jsonl", "w", encoding="utf-8") as fh:
        for rec in meta_out:
            fh.write(json.dumps(rec) + "\n")
    (out / "mix.json").write_text(json.dumps({"parts": args.part, "records": counts}, indent=2))
    for key, n in sorted(counts.items()):
        print(f"{key}: {n}")


if __name__ == "__main__":
    main()
