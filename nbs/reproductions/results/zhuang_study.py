"""Issue 22, Zhuang et al. 2019 re-run on the fixed tasks (cubes resized rather than padded, each cube standardised, the turn
term summed as in the paper's Eq. 2): the Rubik's cube and its ordering-only ablation pretrain the 3D VGG (×0.25 widths) on the
90 non-test subjects, labels stripped; scratch, cube ordering and Rubik's cube then fine-tune with the U-Net decoder and with
the DUC head at two labelled subjects, with the study's budget (the steps and augmentation of the best scratch schedule in
scratch_baseline.csv, as `study.py` gives every method) and the whole network trained from the first step.

Resumable: encoders go to zhuang/encoders/ (an existing file is reused; a run checkpoint is kept while one trains), fine-tuning
rows to zhuang/DECODER-BUDGET.csv (a run already there is skipped); `--minutes M` starts nothing new after M minutes.

    SSL3D_DATA=... python nbs/reproductions/results/zhuang_study.py [--steps 2000] [--seeds 3] [--decoders unet,duc] [--minutes M]
"""
import argparse, sys
from pathlib import Path
from ssl3d_nb.models import VGG3d
from ssl3d_nb.data import unlabeled
from ssl3d_nb.experiments import pretrain_encoder

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import study

OUT = study.OUT/'zhuang'
TASKS = {'cube ordering': 'rubik-order', "Rubik's cube": 'rubik'}
WIDTH = 0.25                    # the VGG's width multiplier: 16 … 128 filters

def methods(encs:dict)->dict:
    "Scratch (a fresh VGG: `finetune_run` builds it at its default width, which must be WIDTH) and each pretrained VGG."
    return {'scratch': {'encoder': None, 'arch': 'vgg'}, **{n: str(p) for n, p in encs.items()}}

def pretrain(pool, steps:int, clock)->dict:
    "Each task's VGG encoder (reused where its file exists) -> {name: path}; stops between tasks when the clock is out."
    out = {}
    for name, task in TASKS.items():
        path, ck = OUT/'encoders'/f'{task}-vgg.pth', OUT/'encoders'/f'{task}-vgg.ckpt'
        if not path.exists() and clock.out(): break
        out[name] = pretrain_encoder(task, unlabeled(pool), path, steps=steps, encoder=VGG3d(1, width_mult=WIDTH), checkpoint=ck, resume=True,
                                     precision=study.PRECISION)
        ck.unlink(missing_ok=True)
        print(f"{task}: encoder ready", flush=True)
    return out

def main(a):
    clock = study.Clock(a.minutes)
    items, split, scans = study.setup()
    encs = pretrain([items[i] for i in split['pretrain']], a.steps, clock)
    if len(encs) < len(TASKS): return print('time is up; run again to go on', flush=True)
    name, base = study.budget()
    for dec in a.decoders.split(','):
        study.runs(methods(encs), scans, split, (2,), range(a.seeds), OUT/f'{dec}-{name}.csv', clock, **base, decoder=dec, mode='unfrozen', lr=3e-3)

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--steps', type=int, default=2000, help='pretraining steps of each task')
    ap.add_argument('--seeds', type=int, default=3, help='seeds 0 … N-1')
    ap.add_argument('--decoders', default='unet,duc')
    ap.add_argument('--minutes', type=float, default=None, help='start no new run after this many minutes')
    main(ap.parse_args())
