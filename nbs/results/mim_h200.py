"Issue 20 on a GPU: masked image modelling of the whole U-Net on the hippocampus scans, then one labelled subject: scratch vs encoder vs encoder+decoder."
import os, sys, time, json
from pathlib import Path
import torch, pandas as pd
out = Path(os.environ['OUT'])
log = open(out/'gpu20.log', 'a')
def say(*a):
    print(*a, file=log, flush=True); print(*a, flush=True)
from ssl3d_nb.io import load_decathlon
from ssl3d_nb.preprocess import Preprocess, resize
from ssl3d_nb.data import load_scans, labeled_subset, unlabeled
from ssl3d_nb.experiments import fixed_split, pretrain_setup, pretrain_fit, finetune_run
from ssl3d_nb.tasks.mim import block_mask, masked_mse, visible_mean_mse
from ssl3d_nb.core import get_generator
items = load_decathlon(Path(os.environ['SSL3D_DATA'])/'Task04_Hippocampus')
split = fixed_split(items, split='hippocampus')
say(torch.cuda.get_device_name(), len(items), 'scans;', {k: len(v) for k, v in split.items()})
steps = int(os.environ.get('MIM_STEPS', 2000))
learn, p = pretrain_setup('mim', unlabeled([items[i] for i in split['pretrain']]), 'cpu', seed=0, steps_per_epoch=100, bs=32, crop=32)
torch.cuda.synchronize(); t0 = time.time()
enc = pretrain_fit(learn, out/'mim.pth', steps // 100)
torch.cuda.synchronize(); sec = time.time() - t0
h = learn.recorder.values
say(f"pretrained {steps} steps of 32 crops of 32³ in {sec:.1f} s ({1000 * sec / steps:.1f} ms/step); last epoch train/valid masked MSE {h[-1][0]:.3f}/{h[-1][1]:.3f}, visible-mean {h[-1][2]:.3f}")
scans = load_scans(items, Preprocess(norm='zscore'))
va = [scans[i] for i in split['valid']]
xv = torch.stack([resize(s.x, (32, 32, 32)) for s in va]).cuda()
mv = block_mask((len(xv), 32, 32, 32), 4, 0.6, get_generator(123, device='cuda'))
learn.model.eval()
with torch.no_grad(): r = learn.model(xv, mv)
say(f"validation subjects' whole scans at 32³, 60 % hidden: masked MSE model {masked_mse(r, xv, mv):.3f}, visible mean {visible_mean_mse(None, xv, mv):.3f}, zero {masked_mse(torch.zeros_like(xv), xv, mv):.3f}")
pool = [scans[i] for i in split['train']]
valid, test = [scans[i] for i in split['valid']], [scans[i] for i in split['test']]
methods = {'scratch': dict(encoder=None), 'encoder': dict(encoder=str(enc)),
           'encoder+decoder, warm-up': dict(encoder=str(enc), decoder_weights='from-encoder', mode='warmup', warmup=4),
           'encoder+decoder, unfrozen': dict(encoder=str(enc), decoder_weights='from-encoder', mode='unfrozen')}
rows = []
for seed in range(int(os.environ.get('SEEDS', 3))):
    train = [pool[i] for i in labeled_subset(pool, n=1, seed=seed)]
    for name, kw in methods.items():
        kw = {'mode': 'unfrozen', **kw}
        t0 = time.time()
        row, hist = finetune_run(kw.pop('encoder'), train, valid, test, 3, steps=400, steps_per_epoch=25, seed=seed, **kw)
        row = {'method': name, 'seed': seed, 'valid_best': float(hist['mean_dice'].max()), **row, 'wall': round(time.time() - t0, 1)}
        rows.append(row); pd.DataFrame(rows).to_csv(out/'gpu20.csv', index=False)
        say(f"seed {seed} {name:>28}: valid {row['valid_best']:.3f} test {row['mean_dice']:.3f} ({row['wall']} s)")
df = pd.DataFrame(rows)
say(df.groupby('method')[['valid_best', 'mean_dice']].mean().round(4).to_string())
