"""Issue 22, the powered study on the hippocampus scans, in resumable stages. Every run appends a row to a CSV beside this
file (and its per-epoch validation history next to it); a run already in the file is skipped, so the study goes on where
it stopped, on any machine. `--minutes M` starts no new run after M minutes (for a lent GPU's short sessions).

    SSL3D_DATA=... python nbs/reproductions/results/study.py STAGE [--minutes M] [--steps N] [--tasks rpl,mim,...]

stages
  pretrain    each task's encoder on the 90 non-test subjects (labels stripped), at its CPU preset for --steps steps
              -> encoders/TASK.pth, and encoders/random-ARCH.pth: an untrained encoder of each architecture
  protocols   every method × candidate schedule (--protocols 'A;B'; default the anchors', the paper's and, for an encoder saved
              with its decoder, the whole pretrained U-Net), one labelled subject,
              seeds 0-2, scored on the validation subjects -> protocols-BUDGET.csv (runs the efficiency stage already made are
              copied); the schedule with the best mean validation Dice (over seeds) is each method's protocol
  efficiency  every method with its protocol, and scratch with its own schedule, at --budgets labelled subjects (default
              1, 2, 5) and seeds 0 … --seeds − 1 -> efficiency-BUDGET.csv (the protocol stage's runs of that protocol are copied)
  frozen      each encoder frozen (group norm included: fastai's freeze leaves only batch norm trainable), only the U-Net
              decoder trained, against an untrained encoder of the same configuration (one per architecture), two labelled
              subjects -> frozen-BUDGET.csv
  brats       scratch and each encoder on the BraTS sample (FLAIR + T1c, the encoders' first layer copied onto both channels),
              three folds of six subjects (3 train / 1 valid / 2 test), seeds 0 … --seeds − 1 -> brats/foldK-BUDGET.csv
              (`--folds 0,2`: only those folds, so that two processes can share the work)

The 2D versions (`--tasks 2d`: rpl-2d, jigsaw-2d, …) go through the same stages: pretrain writes encoders/TASK-2d.pth, and
efficiency fine-tunes a 2D U-Net on axial slices — each task with its 3D version's protocol — beside 'scratch-2d', the same
2D U-Net from random weights with scratch's schedule -> efficiency2d-BUDGET.csv (the test scans are scored in 3D).

Every method gets the same fine-tuning budget: the steps and augmentation of the scratch schedule with the best validation
Dice in scratch_baseline.csv (BUDGET names it, e.g. light-3200); a different choice there starts new files rather than mixing.
That schedule's learning rate is scratch's own, as a protocol's is each method's: scratch trained at another rate than 3e-3
goes into the files under a name that says so ('scratch · lr 0.01'), so that runs at different rates never share a name.
"""
import argparse, os, sys, time
from pathlib import Path
import torch, pandas as pd
from ssl3d_nb.io import load_decathlon
from ssl3d_nb.external import get_dataset
from ssl3d_nb.preprocess import Preprocess
from ssl3d_nb.data import load_scans, unlabeled
from ssl3d_nb.models import load_encoder, build_encoder, save_encoder
from ssl3d_nb.experiments import fixed_split, pretrain_encoder, data_efficiency, history_path, with_validation, _append_csv

HERE = Path(__file__).resolve().parent
OUT = Path(os.environ.get('SSL3D_STUDY_DIR', HERE))      # where results go (a test points it elsewhere)
# Taleb et al.'s five 3D tasks and masked image modelling, all on the residual U-Net encoder that scratch trains. The Rubik's
# cube and its ordering ablation train their own 3D VGG: zhuang_study.py compares them with a VGG from scratch, not with this one.
TASKS = ('rpl', 'jigsaw', 'rotation', 'cpc', 'exemplar', 'mim')
TASKS2D = tuple(f'{t}-2d' for t in TASKS)                  # the same tasks on axial slices, with a 2D encoder
# candidate fine-tuning schedules, all at the same budget of steps: the anchors' (the whole network from the first step, with
# fit_one_cycle's learning-rate warm-up) and the paper's shape (Taleb et al.'s appendix: the encoder frozen for a warm-up, then a
# low rate; their 25 warm-up epochs and rate 1e-5 belong to far longer runs, so here a quarter of the steps and 1e-4); for an
# encoder saved with its U-Net decoder (masked image modelling), the anchors' way of fine-tuning the whole pretrained network,
# decoder included; then two more that `--protocols` can add: the library's default and the whole network at a lower rate. A
# `warmup` below 1 is a share of the epochs.
PROTOCOLS = {
    'whole network, lr 3e-3':               dict(mode='unfrozen', lr=3e-3),
    'paper: frozen 25 %, then lr 1e-4':     dict(mode='warmup', warmup=0.25, lr_mult=1, lr=1e-4),
    'whole network, pretrained decoder, lr 3e-3': dict(mode='unfrozen', lr=3e-3, decoder_weights='from-encoder'),
    'warm-up 2 epochs, encoder lr/10':      dict(mode='warmup', warmup=2, lr_mult=10, lr=3e-3),
    'whole network, lr 1e-3':               dict(mode='unfrozen', lr=1e-3),
    'whole network, lr 1e-2':               dict(mode='unfrozen', lr=1e-2),
    'whole network, pretrained decoder, lr 1e-2': dict(mode='unfrozen', lr=1e-2, decoder_weights='from-encoder'),
}
CANDIDATES = tuple(PROTOCOLS)[:3]
PROTOCOL_BUDGETS, PROTOCOL_SEEDS = (1,), (0, 1, 2)          # the protocol is chosen on these runs' validation Dice

def applicable(protocol:str, encoder)->bool:
    "Whether `protocol` can fine-tune the encoder file `encoder`: one that loads the pretrained decoder needs a file saved with one."
    return PROTOCOLS[protocol].get('decoder_weights') != 'from-encoder' or bool(load_encoder(encoder)[1].get('with_decoder'))

def schedule(protocol:str, steps:int, steps_per_epoch:int=25)->dict:
    "`finetune_run` settings of `protocol` at a budget of `steps`: a fractional warm-up becomes whole epochs (at least one)."
    kw = dict(PROTOCOLS[protocol])
    if 0 < kw.get('warmup', 1) < 1: kw['warmup'] = max(1, round(kw['warmup'] * steps / steps_per_epoch))
    return kw
PRECISION = 'bf16' if torch.cuda.is_available() else 'fp32'   # bf16 autocast on a GPU
COMMON = dict(n_classes=3, class_names=['anterior', 'posterior'], verbose=True)
# the BraTS sample: five classes scored as the regions WT/TC/ET; 48³ crops (the brain is about 70 × 85 × 70 voxels at 2 mm), two
# a batch, half of them centred on a tumour voxel; three folds so that every subject is tested once
BRATS = dict(n_classes=5, class_names=['necrosis', 'oedema', 'non-enhancing', 'enhancing'], regions=True, size=48, bs=2, fg_prob=0.5, verbose=True)
BRATS_FOLDS = [{'train': [i for i in range(6) if i not in (t, (t + 2) % 6, (t + 3) % 6)], 'valid': [(t + 2) % 6], 'test': [t, (t + 3) % 6]}
               for t in range(3)]

def setup():
    items = load_decathlon(get_dataset('hippocampus'))
    split = fixed_split(items, split='hippocampus')
    return items, split, load_scans(items, Preprocess(norm='zscore'))

def brats_setup():
    "The BraTS sample's six subjects, two channels (FLAIR, T1c), cropped to the brain and resampled to 2 mm; each channel standardised."
    from ssl3d_nb.io import load_subject_folders
    brats = load_subject_folders(get_dataset('brats2013-sample'), modalities=('Flair', 'T1c'), label='OTMultiClass')
    return load_scans(brats, Preprocess(crop_foreground=True, margin=2, spacing=2.0, norm=None))

def encoders(tasks):
    return {t: OUT/'encoders'/f'{t}.pth' for t in tasks if (OUT/'encoders'/f'{t}.pth').exists()}

def task_list(arg:str=None)->tuple:
    "The tasks `--tasks` names: all 3D tasks by default, '2d' for their 2D versions, else a comma-separated list (one dimension only)."
    tasks = TASKS if not arg else TASKS2D if arg == '2d' else tuple(arg.split(','))
    if len({t.endswith('-2d') for t in tasks}) > 1: raise ValueError(f"--tasks {arg}: 3D and 2D tasks go in separate runs (their scratch differs)")
    return tasks

def methods_for(tasks, fallback:str=None, scratch:str='scratch', **scratch_kw)->dict:
    "Scratch with its own schedule (`scratch_kw`: e.g. spatial_dims=2) and each task's encoder with its protocol, at the study's budget."
    base, (cname, cfg) = budget()[1], scratch_config()
    return {scratch_name(cname, scratch): {'encoder': None, **scratch_kw, **cfg},
            **{f'{t} · {proto}': {'encoder': str(OUT/'encoders'/f'{t}.pth'), **base, **schedule(proto, base['steps'])}
               for t, proto in protocols(tasks, fallback).items()}}

def random_path(folder, config:dict)->Path:
    "The untrained encoder of `config`'s architecture (one per architecture and dimension) that a frozen encoder is compared with."
    return Path(folder)/f"random-{config['arch']}{'-2d' if config.get('spatial_dims', 3) == 2 else ''}.pth"

def protocols(tasks, fallback:str=None)->dict:
    """Each task's fine-tuning schedule: the one the protocols stage chose on validation (a 2D task takes its 3D version's, where it
    applies to the 2D file), else `fallback`; a task with neither is left out, with a message."""
    name = budget()[0]
    pcsv, encs3d = OUT/f'protocols-{name}.csv', encoders(TASKS)
    chosen = best_protocol(pcsv, {t: tuple(c for c in CANDIDATES if applicable(c, p)) for t, p in encs3d.items()}) if pcsv.exists() else {}
    out = {}
    for t, p in encoders(tasks).items():
        proto = chosen.get(t.removesuffix('-2d'))
        if proto is None or not applicable(proto, p): proto = fallback
        if proto: out[t] = proto
        else: print(f"{t}: no protocol chosen yet (run the protocols stage, or give --protocol)", flush=True)
    return out

class Clock:
    def __init__(self, minutes): self.end = time.time() + 60 * minutes if minutes is not None else None   # --minutes 0: start nothing
    def out(self): return self.end is not None and time.time() > self.end

def runs(methods, scans, split, budgets, seeds, csv, clock, common=COMMON, **kw):
    "data_efficiency one (seed, budget) at a time, so that a time limit stops between runs."
    for seed in seeds:
        for b in budgets:
            if clock.out(): return print('time is up; run again to go on', flush=True)
            data_efficiency(methods, scans, split, budgets=(b,), seeds=(seed,), csv=csv, precision=PRECISION, **common, **kw)

def validation_scores(csv, budget:int=None)->tuple:
    "(mean over seeds, number of seeds) of each method's best validation Dice (`with_validation`; never the test column)."
    v = with_validation(csv)
    if budget is not None: v = v[v['budget'] == budget]
    return v.groupby('method')['valid'].mean(), v.groupby('method').size()

def best_protocol(csv, candidates=CANDIDATES, min_seeds:int=len(PROTOCOL_SEEDS))->dict:
    """Each method's schedule with the best validation Dice, averaged over seeds (never the test column); a method is given one
    only when every candidate (a tuple for all methods, or method → tuple) has run on at least `min_seeds` seeds."""
    need = (lambda m: candidates.get(m, ())) if isinstance(candidates, dict) else (lambda m: tuple(candidates))
    v, n = validation_scores(csv)
    df = pd.DataFrame({'method': [m.split(' · ')[0] for m in v.index], 'protocol': [m.split(' · ')[1] for m in v.index], 'valid': v.values, 'n': n.values})
    df = df[(df.n >= min_seeds) & pd.Series([p in need(m) for m, p in zip(df.method, df.protocol)], index=df.index, dtype=bool)]
    df = df[df.groupby('method')['protocol'].transform('size') == df.method.map(lambda m: len(need(m)))]
    return df.loc[df.groupby('method')['valid'].idxmax()].set_index('method')['protocol'].to_dict()

def scratch_config(budget:int=1, csv=None, min_seeds:int=3)->tuple:
    """(name, settings) of the scratch schedule with the best validation Dice in scratch_baseline.csv at `budget`, averaged over
    seeds; only schedules run with at least `min_seeds` seeds compete (one lucky seed does not choose)."""
    from scratch_baseline import CONFIGS, CSV
    v, n = validation_scores(csv or CSV, budget)
    v = v[n >= min_seeds]
    name = v.idxmax().split(' · ')[1]
    return name, CONFIGS[name]

def budget()->tuple:
    "The fine-tuning budget every method gets — the best scratch schedule's steps and augmentation — and its name (e.g. light-1600)."
    c = scratch_config()[1]
    return f"{c['augment']}-{c['steps']}", {'steps': c['steps'], 'augment': c['augment']}

def scratch_name(config:str, base:str='scratch')->str:
    "Scratch's name in the study's files when trained with scratch_baseline's schedule `config`: `base`, and its rate if not 3e-3."
    from scratch_baseline import CONFIGS
    lr = CONFIGS[config]['lr']
    return base if lr == 3e-3 else f'{base} · lr {lr:g}'

def reuse(csv:Path, src:Path, rename:dict, budgets=None, seeds=None):
    """Copy the runs of `src` whose method is a key of `rename` (and whose budget and seed are among `budgets`, `seeds` where given)
    into `csv` under its new name, with their histories; a run (method, budget, seed) already in `csv` is not copied again.
    For runs made by the same `data_efficiency` call with the same split, seeds and settings, which running again would repeat."""
    src = Path(src)
    runs, done = pd.read_csv(src), pd.read_csv(csv) if csv.exists() else pd.DataFrame(columns=['method', 'budget', 'seed'])
    have = set(zip(done['method'], done['budget'], done['seed']))
    pick = runs[runs.method.isin(list(rename)) & runs.budget.isin(budgets or runs.budget) & runs.seed.isin(seeds or runs.seed)]
    pick = pick.assign(method=pick.method.map(rename))
    pick = pick[[k not in have for k in zip(pick.method, pick.budget, pick.seed)]]
    if not len(pick): return
    h = pd.read_csv(history_path(src)).assign(method=lambda d: d.method.map(rename)).dropna(subset=['method'])
    _append_csv(csv, pick)
    _append_csv(history_path(csv), h.merge(pick[['method', 'budget', 'seed']], on=['method', 'budget', 'seed']))
    print(f"{len(pick)} runs taken from {src.name}: " + ', '.join(sorted(set(pick.method))), flush=True)

def reuse_scratch(config:str, csv:Path, src:Path=None):
    "Copy the scratch runs of schedule `config` from scratch_baseline.csv (and their histories) into `csv` as `scratch_name(config)`."
    from scratch_baseline import CSV
    reuse(csv, src or CSV, {f'scratch · {config}': scratch_name(config)})

def frozen_methods(encs:dict)->dict:
    """Each encoder of `encs` (task → file) and, once per architecture, the untrained encoder beside it (`random-ARCH.pth`,
    written by the pretrain stage), which must have the same configuration: the baseline a frozen encoder has to beat."""
    out = {}
    for t, p in encs.items():
        cfg = load_encoder(p)[0].config
        rnd = random_path(Path(p).parent, cfg)
        if not rnd.exists(): raise FileNotFoundError(f"{rnd}: no untrained {cfg['arch']} to compare {t} with (the pretrain stage writes it)")
        if load_encoder(rnd)[0].config != cfg: raise ValueError(f"{rnd}: its configuration differs from {p}'s; a frozen comparison needs the same network")
        out[t], out[f"random {cfg['arch']}"] = str(p), str(rnd)
    return out

def main(a):
    clock = Clock(a.minutes)
    tasks = task_list(a.tasks)
    if a.stage == 'brats':                                      # every method on the BraTS folds, with the study's budget
        name, methods = budget()[0], methods_for(tasks, a.protocol)
        bscans = brats_setup()
        for seed in range(a.seeds):                             # all folds of a seed before the next seed
            for k, fold in enumerate(BRATS_FOLDS):
                if k not in a.folds: continue                   # another process may be running the other folds
                runs(methods, bscans, fold, (len(fold['train']),), (seed,), OUT/'brats'/f'fold{k}-{name}.csv', clock, common=BRATS)
        return
    items, split, scans = setup()
    if a.stage == 'pretrain':
        pool = unlabeled([items[i] for i in split['pretrain']])
        for t in tasks:
            if clock.out(): break
            p = pretrain_encoder(t, pool, OUT/'encoders'/f'{t}.pth', steps=a.steps, checkpoint=OUT/'encoders'/f'{t}.ckpt', resume=True,
                                 precision=PRECISION)
            (OUT/'encoders'/f'{t}.ckpt').unlink(missing_ok=True)          # the encoder is written: its run checkpoint is spent
            net, meta = load_encoder(p)
            arch = net.config['arch']
            rnd = random_path(OUT/'encoders', net.config)
            if not rnd.exists(): save_encoder(build_encoder(net.config), rnd, task='random', preprocessing=meta.get('preprocessing'))
            print(t, 'done', flush=True)
        return
    name, base = budget()
    if a.stage == 'protocols':
        csv, cands = OUT/f'protocols-{name}.csv', a.protocols.split(';') if a.protocols else CANDIDATES
        eff = OUT/f'efficiency-{name}.csv'                     # the same runs, made by the efficiency stage, are not repeated
        # every schedule's rows, not only those of `cands`: a run naming one candidate must not leave the others' out of the choice
        if eff.exists(): reuse(csv, eff, {f'{t} · {p}': f'{t} · {p}' for t in tasks for p in PROTOCOLS}, budgets=PROTOCOL_BUDGETS, seeds=PROTOCOL_SEEDS)
        for pname in cands:
            methods = {f'{t} · {pname}': str(p) for t, p in encoders(tasks).items() if applicable(pname, p)}
            runs(methods, scans, split, PROTOCOL_BUDGETS, PROTOCOL_SEEDS, csv, clock, **base, **schedule(pname, base['steps']))
    elif a.stage == 'efficiency':
        pcsv, twod = OUT/f'protocols-{name}.csv', tasks[0].endswith('-2d')
        csv = OUT/f"efficiency{'2d' if twod else ''}-{name}.csv"
        if not twod: reuse_scratch(scratch_config()[0], csv)    # scratch's runs of this schedule are not made twice
        methods = methods_for(tasks, a.protocol, 'scratch-2d', spatial_dims=2) if twod else methods_for(tasks, a.protocol)
        # the protocol stage's runs of the schedule a method now uses are the same runs: not made twice
        if pcsv.exists() and not twod: reuse(csv, pcsv, {m: m for m in methods if not m.startswith('scratch')}, budgets=PROTOCOL_BUDGETS, seeds=PROTOCOL_SEEDS)
        runs(methods, scans, split, a.budgets, range(a.seeds), csv, clock)   # all methods of a seed and budget together
    elif a.stage == 'frozen':
        runs(frozen_methods(encoders(tasks)), scans, split, (2,), range(a.seeds), OUT/f'frozen-{name}.csv', clock, **base, mode='frozen', lr=3e-3)

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('stage', choices=('pretrain', 'protocols', 'efficiency', 'frozen', 'brats'))
    ap.add_argument('--minutes', type=float, default=None, help='start no new run after this many minutes')
    ap.add_argument('--steps', type=int, default=3000, help='pretraining steps (pretrain)')
    ap.add_argument('--budgets', default='1,2,5', help='labelled subjects (efficiency)')
    ap.add_argument('--protocol', default=None, choices=list(PROTOCOLS), help="a task's schedule where the protocols stage has not chosen one")
    ap.add_argument('--protocols', default=None, help='candidates separated by ";" (protocols; default: ' + ' and '.join(map(repr, CANDIDATES)).replace('%', '%%') + ')')
    ap.add_argument('--seeds', type=int, default=5, help='seeds 0 … N-1 (efficiency, frozen, brats)')
    ap.add_argument('--folds', default='0,1,2', help='the BraTS folds this process runs (brats)')
    ap.add_argument('--tasks', default=None, help="comma-separated tasks (default: the 3D tasks; '2d': their 2D versions)")
    a = ap.parse_args()
    a.budgets, a.folds = (tuple(int(b) for b in x.split(',')) for x in (a.budgets, a.folds))
    sys.path.insert(0, str(HERE))
    main(a)
