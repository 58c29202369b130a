"""Issue 22, Blendowski et al. 2019 re-run: the three self-supervised descriptors pretrained with the paper's optimiser
settings (Adam, learning rate 5e-5, batches of 8: the tasks' `paper` preset) for as many steps as the machine allows, the two
untrained baselines and the position of a point, judged by kNN label transfer from 1…9 atlases with two votes: the paper's
plain majority and the class-prior-corrected vote (`knn.AtlasIndex`). Two folds of the 40 test subjects (the same 40 that
`fixed_split` holds out; the other 90 subjects, labels stripped, are the pretraining pool).

Resumable: encoders go to blendowski/encoders/ (an existing file is reused; a run checkpoint is kept while it trains), and
every method's Dice rows are appended to blendowski/transfer.csv once all of them are computed; a method already in the file
is skipped.

    SSL3D_DATA=... python nbs/reproductions/results/blendowski_study.py [--steps planar-heatmap=4000,planar-reg2d=4000,doersch=1500]
                                                                       [--out blendowski-long]

`--out NAME` writes to results/NAME/ instead of results/blendowski/: a longer pretraining beside the first, not over it.
"""
import argparse, os, time
from pathlib import Path
import pandas as pd
from ssl3d_nb.io import load_decathlon
from ssl3d_nb.external import get_dataset
from ssl3d_nb.preprocess import Preprocess
from ssl3d_nb.data import load_scans
from ssl3d_nb.experiments import fixed_split, pretrain_encoder
from ssl3d_nb.knn import descriptor, dense_descriptors, few_shot_dice, VOTES

HERE = Path(__file__).resolve().parent
OUT = Path(os.environ.get('SSL3D_STUDY_DIR', HERE))/'blendowski'
STEPS = {'planar-heatmap': 4000, 'planar-reg2d': 4000, 'doersch': 1500}
NAMES = {'planar-heatmap': 'HEATMAP', 'planar-reg2d': 'REG2D', 'doersch': 'DOERSCH'}
ATLASES = range(1, 10)

def pretrain(pool, steps:dict, preset='paper')->dict:
    "Each trainable descriptor's encoder on `pool` (scans resized to 48³, z-scored, as the notebook's first run)."
    out = {}
    for task, n in steps.items():
        path, ck = OUT/'encoders'/f'{task}.pth', OUT/'encoders'/f'{task}.ckpt'
        t = time.time()
        out[NAMES[task]] = pretrain_encoder(task, pool, path, steps=n, preset=preset, pre=Preprocess(size=48, norm='zscore'),
                                            steps_per_epoch=50, checkpoint=ck, resume=True)
        ck.unlink(missing_ok=True)
        print(f"{task}: {n} steps, {time.time() - t:.0f} s", flush=True)
    return out

def transfer(name, describe, evals, csv):
    "Dice of every test scan for 1…9 atlases, both votes, both folds -> rows appended to `csv`."
    t = time.time()
    feats = [dense_descriptors(describe, s.x) for s in evals]
    t_feat = time.time() - t
    labels = [s.label for s in evals]
    half = len(evals) // 2
    folds = (list(range(half)), list(range(half, len(evals))))
    rows = []
    for vote in VOTES:
        for n in ATLASES:
            for f, (a, b) in enumerate((folds, folds[::-1])):
                d = few_shot_dice(feats, labels, a[:n], b, 3, k=21, vote=vote)
                rows += [{'method': name, 'vote': vote, 'atlases': n, 'fold': f, 'subject': evals[i].subject,
                          'dice_anterior': float(r[0]), 'dice_posterior': float(r[1])} for i, r in zip(b, d)]
    df = pd.DataFrame(rows).assign(features_s_per_scan=round(t_feat / len(evals), 3))
    df.to_csv(csv, mode='a', header=not csv.exists(), index=False)
    print(f"{name}: descriptors {t_feat:.0f} s, transfers {time.time() - t - t_feat:.0f} s; 9 atlases: "
          + ', '.join(f"{v} {100 * df[(df.vote == v) & (df.atlases == 9)][['dice_anterior', 'dice_posterior']].mean(axis=1).mean():.1f}" for v in VOTES), flush=True)

def main(steps):
    items = load_decathlon(get_dataset('hippocampus'))
    split = fixed_split(items, split='hippocampus')
    pool = [items[i] for i in split['pretrain']]
    evals = load_scans([items[i] for i in sorted(split['test'])], Preprocess(norm='zscore'))
    encs = pretrain(pool, steps)
    csv = OUT/'transfer.csv'
    done = set(pd.read_csv(csv)['method']) if csv.exists() else set()
    methods = {**{n: lambda p=p: descriptor(p) for n, p in encs.items()}, 'GVDIFF': lambda: descriptor('gvdiff', seed=0),
               'XAVIER': lambda: descriptor('xavier', seed=0), 'POSITION': lambda: (lambda x, p: p)}
    for name, make in methods.items():
        if name not in done: transfer(name, make(), evals, csv)

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--steps', default=None, help='task=steps,… (default: ' + ','.join(f'{k}={v}' for k, v in STEPS.items()) + ')')
    ap.add_argument('--out', default='blendowski', help='the results folder beside this script (default: blendowski)')
    a = ap.parse_args()
    OUT = OUT.parent/a.out
    steps = {**STEPS, **({k: int(v) for k, v in (kv.split('=') for kv in a.steps.split(','))} if a.steps else {})}
    main(steps)
