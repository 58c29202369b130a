"""Issue 22, the scratch baseline: how long, how strongly augmented, at what learning rate must the network trained from
scratch be fine-tuned before its *validation* Dice stops rising? Every run appends one row to scratch_baseline.csv (and its
per-epoch validation history to scratch_baseline_history.csv) beside this file; a run already in the file is skipped, so the
script resumes on any machine (CPU or GPU). Settings are chosen on the validation subjects only; the test column is kept for
the report, never for the choice.

    SSL3D_DATA=... python nbs/reproductions/results/scratch_baseline.py [budgets] [seeds] [configs]
    e.g.  ... scratch_baseline.py 1,2 0,1,2 light-400,nnunet-1600
"""
import os, sys, time
from pathlib import Path
import torch
from ssl3d_nb.io import load_decathlon
from ssl3d_nb.external import get_dataset
from ssl3d_nb.preprocess import Preprocess
from ssl3d_nb.data import load_scans
from ssl3d_nb.experiments import fixed_split, data_efficiency

HERE = Path(__file__).resolve().parent
CSV = HERE/'scratch_baseline.csv'
# name → finetune_run settings: augmentation · fine-tuning steps (one-cycle over the whole run) · peak learning rate
CONFIGS = {f'{aug}-{steps}' + ('' if lr == 3e-3 else f'-lr{lr:g}'): dict(augment=aug, steps=steps, lr=lr)
           for aug in ('light', 'nnunet', 'nnunet-elastic') for steps in (400, 800, 1600, 3200) for lr in (3e-3, 1e-3, 1e-2)}

def main(budgets=(1,), seeds=(0, 1, 2), names=('light-400', 'light-1600', 'nnunet-400', 'nnunet-1600')):
    items = load_decathlon(get_dataset('hippocampus'))
    split = fixed_split(items, split='hippocampus')                                        # 40 test, 10 validation, 80 training subjects
    scans = load_scans(items, Preprocess(norm='zscore'))
    for name in names:
        t0 = time.time()
        data_efficiency({f'scratch · {name}': None}, scans, split, budgets=budgets, seeds=seeds, csv=CSV, n_classes=3,
                        class_names=['anterior', 'posterior'], precision='bf16' if torch.cuda.is_available() else 'fp32', **CONFIGS[name])
        print(f"{name}: {time.time() - t0:.0f} s", flush=True)

if __name__ == '__main__':
    a = sys.argv[1:] + [None] * 3
    ints = lambda s: tuple(int(x) for x in s.split(','))
    main(ints(a[0]) if a[0] else (1,), ints(a[1]) if a[1] else (0, 1, 2),
         tuple(a[2].split(',')) if a[2] else ('light-400', 'nnunet-400', 'light-1600', 'nnunet-1600'))
