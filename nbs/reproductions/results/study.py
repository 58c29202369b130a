"""Issue 22, the powered study on the hippocampus scans, in resumable stages. Every run appends a row to a CSV beside this
file (and its per-epoch validation history next to it); a run already in the file is skipped, so the study goes on where
it stopped, on any machine. `--minutes M` starts no new run after M minutes (for a lent GPU's short sessions).

    SSL3D_DATA=... python nbs/reproductions/results/study.py STAGE [--minutes M] [--steps N] [--tasks rpl,mim,...]

stages
  pretrain    each task's encoder on the 90 non-test subjects (labels stripped), at its CPU preset for --steps steps
              -> encoders/TASK.pth, and encoders/random-ARCH.pth: an untrained encoder of each architecture
  protocols   every method × candidate schedule, one labelled subject, seeds 0-2, scored on the validation subjects
              -> protocols.csv; the schedule with the best mean validation Dice (over seeds) is each method's protocol
  efficiency  every method with its protocol, and scratch with the schedule chosen in scratch_baseline.csv,
              at 1, 2 and 5 labelled subjects and seeds 0-4 (more at 1 and 2 with --seeds) -> efficiency.csv
  frozen      each encoder frozen, only the U-Net decoder trained, against a random encoder of its architecture -> frozen.csv
"""
import argparse, os, sys, time
from pathlib import Path
import torch, pandas as pd
from ssl3d_nb.io import load_decathlon
from ssl3d_nb.external import get_dataset
from ssl3d_nb.preprocess import Preprocess
from ssl3d_nb.data import load_scans, unlabeled
from ssl3d_nb.models import load_encoder, build_encoder, save_encoder
from ssl3d_nb.experiments import fixed_split, pretrain_encoder, data_efficiency, history_path

HERE = Path(__file__).resolve().parent
OUT = Path(os.environ.get('SSL3D_STUDY_DIR', HERE))      # where results go (a test points it elsewhere)
TASKS = ('rpl', 'jigsaw', 'rotation', 'cpc', 'exemplar', 'rubik', 'rubik-order', 'mim')
# candidate fine-tuning schedules (all at the same budget of steps): the library's default, the paper's (Taleb et al.'s
# appendix: encoder frozen for a warm-up, low rate), and the anchors' (the whole network from the first step, one-cycle warm-up)
PROTOCOLS = {
    'warm-up 2 epochs, encoder lr/10': dict(mode='warmup', warmup=2, lr_mult=10, lr=3e-3),
    'paper: warm-up 25 %, lr 1e-4':    dict(mode='warmup', warmup=4, lr_mult=1, lr=1e-4),
    'whole network, lr 3e-3':          dict(mode='unfrozen', lr=3e-3),
    'whole network, lr 1e-3':          dict(mode='unfrozen', lr=1e-3),
}
COMMON = dict(n_classes=3, class_names=['anterior', 'posterior'], verbose=True)

def setup():
    items = load_decathlon(get_dataset('hippocampus'))
    split = fixed_split(items)
    return items, split, load_scans(items, Preprocess(norm='zscore'))

def encoders(tasks):
    return {t: OUT/'encoders'/f'{t}.pth' for t in tasks if (OUT/'encoders'/f'{t}.pth').exists()}

class Clock:
    def __init__(self, minutes): self.end = time.time() + 60 * minutes if minutes else None
    def out(self): return self.end is not None and time.time() > self.end

def runs(methods, scans, split, budgets, seeds, csv, clock, **kw):
    "data_efficiency one (seed, budget) at a time, so that a time limit stops between runs."
    gpu = torch.cuda.is_available()
    for seed in seeds:
        for b in budgets:
            if clock.out(): return print('time is up; run again to go on', flush=True)
            data_efficiency(methods, scans, split, budgets=(b,), seeds=(seed,), csv=csv, precision='bf16' if gpu else 'fp32', **COMMON, **kw)

def best_protocol(csv)->dict:
    "Each method's schedule with the best validation Dice, averaged over seeds (never the test column)."
    h = pd.read_csv(history_path(csv))
    v = h.groupby(['method', 'seed'])['mean_dice'].max().groupby('method').mean()
    df = pd.DataFrame({'method': [m.split(' · ')[0] for m in v.index], 'protocol': [m.split(' · ')[1] for m in v.index], 'valid': v.values})
    return df.loc[df.groupby('method')['valid'].idxmax()].set_index('method')['protocol'].to_dict()

def scratch_config()->dict:
    "The scratch schedule with the best mean validation Dice in scratch_baseline.csv."
    from scratch_baseline import CONFIGS, CSV
    h = pd.read_csv(history_path(CSV))
    v = h.groupby(['method', 'seed'])['mean_dice'].max().groupby('method').mean()
    return CONFIGS[v.idxmax().split(' · ')[1]]

def main(a):
    clock = Clock(a.minutes)
    items, split, scans = setup()
    tasks = a.tasks.split(',') if a.tasks else TASKS
    if a.stage == 'pretrain':
        pool = unlabeled([items[i] for i in split['pretrain']])
        for t in tasks:
            if clock.out(): break
            p = pretrain_encoder(t, pool, OUT/'encoders'/f'{t}.pth', steps=a.steps, checkpoint=OUT/'encoders'/f'{t}.ckpt', resume=True,
                                 precision='bf16' if torch.cuda.is_available() else 'fp32')
            (OUT/'encoders'/f'{t}.ckpt').unlink(missing_ok=True)          # the encoder is written: its run checkpoint is spent
            net, meta = load_encoder(p)
            arch = net.config['arch']
            rnd = OUT/'encoders'/f"random-{arch}.pth"
            if not rnd.exists(): save_encoder(build_encoder(net.config), rnd, task='random', preprocessing=meta.get('preprocessing'))
            print(t, 'done', flush=True)
    elif a.stage == 'protocols':
        for name, kw in PROTOCOLS.items():
            methods = {f'{t} · {name}': str(p) for t, p in encoders(tasks).items()}
            runs(methods, scans, split, (1,), (0, 1, 2), OUT/'protocols.csv', clock, steps=a.steps, **kw)
    elif a.stage == 'efficiency':
        chosen = best_protocol(OUT/'protocols.csv')
        runs({'scratch': None}, scans, split, (1, 2, 5), range(a.seeds), OUT/'efficiency.csv', clock, **scratch_config())
        for t, p in encoders(tasks).items():
            if t in chosen: runs({t: str(p)}, scans, split, (1, 2, 5), range(a.seeds), OUT/'efficiency.csv', clock, steps=a.steps, **PROTOCOLS[chosen[t]])
    elif a.stage == 'frozen':
        for t, p in encoders(tasks).items():
            rnd = OUT/'encoders'/f"random-{load_encoder(p)[0].config['arch']}.pth"
            runs({t: str(p), f'random ({t} architecture)': str(rnd)}, scans, split, (2,), range(a.seeds), OUT/'frozen.csv', clock,
                 steps=a.steps, mode='frozen', lr=3e-3)

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('stage', choices=('pretrain', 'protocols', 'efficiency', 'frozen'))
    ap.add_argument('--minutes', type=float, default=None, help='start no new run after this many minutes')
    ap.add_argument('--steps', type=int, default=None, help='pretraining steps (pretrain: default 3000) or fine-tuning steps (default 800)')
    ap.add_argument('--seeds', type=int, default=5, help='seeds 0 … N-1 (efficiency, frozen)')
    ap.add_argument('--tasks', default=None, help='comma-separated tasks (default: all)')
    a = ap.parse_args()
    a.steps = a.steps or (3000 if a.stage == 'pretrain' else 800)
    sys.path.insert(0, str(HERE))
    main(a)
