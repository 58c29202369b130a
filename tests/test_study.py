"The study scripts of issue 22 choose on validation subjects, never on test subjects."
import importlib.util, sys
import pandas as pd
from conftest import ROOT

RESULTS = ROOT/'nbs/reproductions/results'


def _load(name):
    sys.path.insert(0, str(RESULTS))
    spec = importlib.util.spec_from_file_location(name, RESULTS/f'{name}.py')
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    return m


def test_the_protocol_is_chosen_on_validation(tmp_path):
    study = _load('study')
    csv = tmp_path/'protocols.csv'
    # 'slow' wins on the test column, 'fast' on validation (best epoch of each seed, averaged over seeds): 'fast' must be chosen
    pd.DataFrame([{'method': f'rpl · {p}', 'budget': 1, 'seed': s, 'mean_dice': t} for p, t in (('fast', 0.5), ('slow', 0.9)) for s in (0, 1)]).to_csv(csv, index=False)
    hist = [{'method': f'rpl · {p}', 'budget': 1, 'seed': s, 'epoch': e, 'mean_dice': v}
            for p, vals in (('fast', (0.6, 0.8)), ('slow', (0.7, 0.75))) for s in (0, 1) for e, v in enumerate(vals)]
    pd.DataFrame(hist).to_csv(tmp_path/'protocols_history.csv', index=False)
    assert study.best_protocol(csv, ('fast', 'slow'), min_seeds=2) == {'rpl': 'fast'}
    assert study.best_protocol(csv, ('fast', 'slow'), min_seeds=3) == {}              # too few seeds: nothing is chosen yet
    assert study.best_protocol(csv, ('fast', 'slow', 'other'), min_seeds=2) == {}     # a candidate has not run: nothing is chosen yet
    assert study.best_protocol(csv, {'rpl': ('fast', 'slow'), 'mim': ('fast', 'slow', 'other')}, min_seeds=2) == {'rpl': 'fast'}
    assert study.best_protocol(csv, {'rpl': ('slow',)}, min_seeds=2) == {'rpl': 'slow'}   # only the candidates that apply compete


def test_the_pretrained_decoder_protocol_applies_only_where_there_is_one():
    study = _load('study')
    p = 'whole network, pretrained decoder, lr 3e-3'
    assert p in study.CANDIDATES
    assert study.applicable(p, RESULTS/'encoders'/'mim.pth') and not study.applicable(p, RESULTS/'encoders'/'rpl.pth')
    assert study.applicable('whole network, lr 3e-3', RESULTS/'encoders'/'rpl.pth')


def test_a_fractional_warm_up_is_a_share_of_the_epochs():
    study = _load('study')
    kw = study.schedule('paper: frozen 25 %, then lr 1e-4', 1600)
    assert kw['mode'] == 'warmup' and kw['warmup'] == 16                             # 64 epochs of 25 steps, a quarter frozen
    assert study.schedule('paper: frozen 25 %, then lr 1e-4', 40)['warmup'] == 1     # never none
    assert study.schedule('warm-up 2 epochs, encoder lr/10', 1600)['warmup'] == 2 and study.PROTOCOLS['paper: frozen 25 %, then lr 1e-4']['warmup'] == 0.25


def test_every_scratch_config_is_a_finetune_run_setting():
    from ssl3d_nb.finetune import AUGMENTS
    sb = _load('scratch_baseline')
    assert {c['augment'] for c in sb.CONFIGS.values()} <= set(AUGMENTS)
    assert set(sb.CONFIGS) >= {'light-400', 'light-1600', 'nnunet-400', 'nnunet-1600'}


def test_blendowski_transfer_keeps_atlases_and_tests_apart(tmp_path, monkeypatch):
    from ssl3d_nb.io import load_decathlon
    from ssl3d_nb.external import get_dataset
    from ssl3d_nb.preprocess import Preprocess
    from ssl3d_nb.data import load_scans
    from ssl3d_nb.knn import descriptor, dense_descriptors, few_shot_dice
    bs = _load('blendowski_study')
    scans = load_scans(load_decathlon(get_dataset('hippocampus'))[:4], Preprocess(norm='zscore'))
    csv = tmp_path/'transfer.csv'
    d = descriptor('gvdiff', seed=0)
    bs.transfer('GVDIFF', d, scans, csv)
    df = pd.read_csv(csv)
    # every test scan once per vote and number of atlases; a fold's tests are the other fold's atlases
    assert all(sorted(g) == sorted(s.subject for s in scans) for _, g in df.groupby(['vote', 'atlases'])['subject'])
    assert set(df[df.fold == 0].subject) == {s.subject for s in scans[2:]} and set(df[df.fold == 1].subject) == {s.subject for s in scans[:2]}
    assert len(df) == 2 * 9 * 4
    feats = [dense_descriptors(d, s.x) for s in scans]
    ref = few_shot_dice(feats, [s.label for s in scans], [0], [2, 3], 3, vote='prior')
    got = df[(df.vote == 'prior') & (df.atlases == 1) & (df.fold == 0)][['dice_anterior', 'dice_posterior']].values
    assert abs(got - ref.numpy()).max() < 1e-6


def test_the_scratch_schedule_is_chosen_on_validation_over_enough_seeds(tmp_path):
    study = _load('study')
    csv = tmp_path/'scratch_baseline.csv'
    # light-1600 is best on validation over three seeds; light-3200 has one, better, seed and must not be chosen; the test column is ignored
    rows = [('light-400', s, v) for s, v in ((0, 0.70), (1, 0.72), (2, 0.71))] + [('light-1600', s, v) for s, v in ((0, 0.75), (1, 0.74), (2, 0.76))] \
         + [('light-3200', 0, 0.90)]
    pd.DataFrame([{'method': f'scratch · {m}', 'budget': 1, 'seed': s, 'epoch': 0, 'mean_dice': v} for m, s, v in rows]).to_csv(tmp_path/'scratch_baseline_history.csv', index=False)
    pd.DataFrame([{'method': f'scratch · {m}', 'budget': 1, 'seed': s, 'mean_dice': 1 - v} for m, s, v in rows]).to_csv(csv, index=False)   # test column: reversed
    name, cfg = study.scratch_config(csv=csv)
    assert name == 'light-1600' and cfg['steps'] == 1600 and cfg['augment'] == 'light'
    assert study.scratch_config(csv=csv, min_seeds=1)[0] == 'light-3200'


def test_protocol_runs_are_reused_only_where_the_protocol_stage_runs(tmp_path):
    study = _load('study')
    src, csv = tmp_path/'efficiency.csv', tmp_path/'protocols.csv'
    m = 'rpl · whole network, lr 3e-3'
    pd.DataFrame([{'method': k, 'budget': b, 'seed': s, 'mean_dice': 0.5} for k in (m, 'scratch') for b in (1, 2) for s in range(5)]).to_csv(src, index=False)
    pd.DataFrame([{'method': k, 'budget': b, 'seed': s, 'epoch': 0, 'mean_dice': 0.4} for k in (m, 'scratch') for b in (1, 2) for s in range(5)]).to_csv(tmp_path/'efficiency_history.csv', index=False)
    study.reuse(csv, src, {m: m}, budgets=(1,), seeds=(0, 1, 2))
    got, h = pd.read_csv(csv), pd.read_csv(tmp_path/'protocols_history.csv')
    assert set(got.method) == {m} and got.budget.tolist() == [1, 1, 1] and got.seed.tolist() == [0, 1, 2]
    assert h[['method', 'budget', 'seed']].values.tolist() == got[['method', 'budget', 'seed']].values.tolist()


def test_scratch_runs_are_reused_once_with_their_histories(tmp_path):
    study = _load('study')
    src, csv = tmp_path/'scratch_baseline.csv', tmp_path/'efficiency-light-1600.csv'
    pd.DataFrame([{'method': f'scratch · {m}', 'budget': 1, 'seed': s, 'mean_dice': 0.5 + s / 10} for m in ('light-400', 'light-1600') for s in (0, 1)]).to_csv(src, index=False)
    pd.DataFrame([{'method': f'scratch · {m}', 'budget': 1, 'seed': s, 'epoch': e, 'mean_dice': 0.1 * e} for m in ('light-400', 'light-1600')
                  for s in (0, 1) for e in range(3)]).to_csv(tmp_path/'scratch_baseline_history.csv', index=False)
    pd.DataFrame([{'method': 'scratch', 'budget': 1, 'seed': 0, 'mean_dice': 0.5}]).to_csv(csv, index=False)   # seed 0 is there already
    study.reuse_scratch('light-1600', csv, src)
    study.reuse_scratch('light-1600', csv, src)                       # a second call adds nothing
    got = pd.read_csv(csv)
    assert got[['method', 'seed']].values.tolist() == [['scratch', 0], ['scratch', 1]] and got.mean_dice.tolist() == [0.5, 0.6]
    h = pd.read_csv(tmp_path/'efficiency-light-1600_history.csv')
    assert set(h.method) == {'scratch'} and h.seed.tolist() == [1, 1, 1]


def test_scratch_at_another_rate_keeps_the_budget_and_takes_a_name_of_its_own(tmp_path, monkeypatch):
    "The rate is scratch's own: the budget (steps, augmentation) and its files stay; scratch's runs at 1e-2 are never 'scratch'."
    study = _load('study')
    import scratch_baseline as sb
    monkeypatch.setattr(study, 'scratch_config', lambda *a, **k: ('light-1600-lr0.01', sb.CONFIGS['light-1600-lr0.01']))
    assert study.budget() == ('light-1600', {'steps': 1600, 'augment': 'light'})
    assert (study.scratch_name('light-1600'), study.scratch_name('light-1600-lr0.01', 'scratch-2d')) == ('scratch', 'scratch-2d · lr 0.01')
    src, csv = tmp_path/'scratch_baseline.csv', tmp_path/'efficiency-light-1600.csv'
    pd.DataFrame([{'method': f'scratch · {m}', 'budget': 1, 'seed': 0, 'mean_dice': d} for m, d in (('light-1600', 0.5), ('light-1600-lr0.01', 0.6))]).to_csv(src, index=False)
    pd.DataFrame([{'method': f'scratch · {m}', 'budget': 1, 'seed': 0, 'epoch': 0, 'mean_dice': 0.1} for m in ('light-1600', 'light-1600-lr0.01')]).to_csv(
        tmp_path/'scratch_baseline_history.csv', index=False)
    pd.DataFrame([{'method': 'scratch', 'budget': 1, 'seed': 0, 'mean_dice': 0.5}]).to_csv(csv, index=False)   # made at 3e-3
    study.reuse_scratch('light-1600-lr0.01', csv, src)
    assert pd.read_csv(csv)[['method', 'mean_dice']].values.tolist() == [['scratch', 0.5], ['scratch · lr 0.01', 0.6]]
    assert 'scratch · lr 0.01' in study.methods_for(())


def test_frozen_encoders_meet_an_untrained_twin(tmp_path):
    import shutil
    from ssl3d_nb.models import ResUNetEncoder, save_encoder, load_encoder
    study = _load('study')
    for t in ('rpl', 'mim', 'random-ResUNetEncoder'): shutil.copy(RESULTS/'encoders'/f'{t}.pth', tmp_path)
    m = study.frozen_methods({t: tmp_path/f'{t}.pth' for t in ('rpl', 'mim')})
    assert list(m) == ['rpl', 'random ResUNetEncoder', 'mim']          # one random encoder for the architecture both share
    assert load_encoder(m['random ResUNetEncoder'])[0].config == load_encoder(m['rpl'])[0].config
    other = tmp_path/'other'; other.mkdir(); shutil.copy(tmp_path/'rpl.pth', other)
    save_encoder(ResUNetEncoder(1, width_mult=0.5), other/'random-ResUNetEncoder.pth', task='random')   # a wider network
    try: study.frozen_methods({'rpl': other/'rpl.pth'}); raise AssertionError('a mismatched random encoder was accepted')
    except ValueError as e: assert 'random-ResUNetEncoder.pth' in str(e)


def test_zhuang_scratch_is_the_pretrained_vgg_untrained():
    from ssl3d_nb.models import VGG3d
    from ssl3d_nb.finetune import transfer_encoder
    zs = _load('zhuang_study')
    spec = zs.methods({})['scratch']
    fresh = transfer_encoder(None, arch=spec['arch'])[0]
    assert fresh.config == VGG3d(1, width_mult=zs.WIDTH).config


def _wiring(study, tmp_path, monkeypatch, **args):
    "Run `study.main` with `args` in `tmp_path`, recording each `runs` call instead of training."
    from argparse import Namespace
    calls = []
    monkeypatch.setattr(study, 'OUT', tmp_path)
    monkeypatch.setattr(study, 'setup', lambda: (None, None, None))
    monkeypatch.setattr(study, 'brats_setup', lambda: None)
    monkeypatch.setattr(study, 'runs', lambda methods, scans, split, budgets, seeds, csv, clock, **kw: calls.append(dict(methods=methods, split=split,
                        budgets=budgets, seeds=list(seeds), csv=csv, **kw)))
    study.main(Namespace(**{**dict(minutes=None, tasks=None, protocol=None, protocols=None, budgets=(1,), seeds=5, steps=None, folds=(0, 1, 2)), **args}))
    return calls


def test_2d_tasks_fine_tune_beside_a_2d_scratch_with_their_3d_protocols(tmp_path, monkeypatch):
    import shutil
    from ssl3d_nb.models import ResUNetEncoder, save_encoder
    study = _load('study')
    name = study.budget()[0]
    (tmp_path/'encoders').mkdir()
    for f in (f'protocols-{name}.csv', f'protocols-{name}_history.csv'): shutil.copy(RESULTS/f, tmp_path)   # rpl chose the whole network at 3e-3; mim its decoder
    for t in ('rpl', 'mim'):
        shutil.copy(RESULTS/'encoders'/f'{t}.pth', tmp_path/'encoders')
        save_encoder(ResUNetEncoder(1, width_mult=0.25, spatial_dims=2), tmp_path/'encoders'/f'{t}-2d.pth', task=f'{t}-2d')   # no decoder
    chosen = study.protocols(('rpl', 'mim'))
    assert chosen == {'rpl': 'whole network, lr 3e-3', 'mim': 'whole network, pretrained decoder, lr 3e-3'}
    [c] = _wiring(study, tmp_path, monkeypatch, stage='efficiency', tasks='2d', protocol='whole network, lr 1e-3', seeds=2)
    assert c['csv'] == tmp_path/f'efficiency2d-{name}.csv' and c['seeds'] == [0, 1] and c['budgets'] == (1,)
    assert c['methods'][study.scratch_name(study.scratch_config()[0], 'scratch-2d')] == {'encoder': None, 'spatial_dims': 2, **study.scratch_config()[1]}
    # rpl-2d takes rpl's protocol; mim's needs a saved decoder that mim-2d's file lacks, so it falls back to --protocol
    assert sorted(c['methods']) == sorted(['mim-2d · whole network, lr 1e-3', 'rpl-2d · whole network, lr 3e-3', study.scratch_name(study.scratch_config()[0], 'scratch-2d')])
    assert c['methods']['rpl-2d · whole network, lr 3e-3']['encoder'] == str(tmp_path/'encoders'/'rpl-2d.pth')
    assert not (tmp_path/f'efficiency-{name}.csv').exists()          # 3D scratch rows are not copied into the 2D study
    try: study.task_list('rpl,rpl-2d'); raise AssertionError('3D and 2D tasks were mixed in one run')
    except ValueError as e: assert 'separate runs' in str(e)
    assert study.random_path(tmp_path, load_cfg := {'arch': 'ResUNetEncoder', 'spatial_dims': 2}).name == 'random-ResUNetEncoder-2d.pth'
    assert study.random_path(tmp_path, {**load_cfg, 'spatial_dims': 3}).name == 'random-ResUNetEncoder.pth'


def test_brats_folds_test_every_subject_once_and_every_method_meets_them(tmp_path, monkeypatch):
    import shutil
    study = _load('study')
    for f in study.BRATS_FOLDS:
        assert not set(f['train']) & (set(f['valid']) | set(f['test'])) and not set(f['valid']) & set(f['test'])
        assert sorted(f['train'] + f['valid'] + f['test']) == list(range(6)) and len(f['train']) == 3
    assert sorted(i for f in study.BRATS_FOLDS for i in f['test']) == list(range(6))
    (tmp_path/'encoders').mkdir(); shutil.copy(RESULTS/'encoders'/'rpl.pth', tmp_path/'encoders')
    calls = _wiring(study, tmp_path, monkeypatch, stage='brats', tasks='rpl,jigsaw', protocol='whole network, lr 3e-3', seeds=2)
    name = study.budget()[0]
    assert [(c['csv'].name, c['seeds'], c['budgets']) for c in calls] == [(f'fold{k}-{name}.csv', [s], (3,)) for s in (0, 1) for k in range(3)]
    assert all(c['split'] == study.BRATS_FOLDS[i % 3] and c['common'] == study.BRATS for i, c in enumerate(calls))
    assert sorted(calls[0]['methods']) == sorted(['rpl · whole network, lr 3e-3', study.scratch_name(study.scratch_config()[0])])   # jigsaw: no encoder here
    calls = _wiring(study, tmp_path, monkeypatch, stage='brats', tasks='rpl', protocol='whole network, lr 3e-3', seeds=1, folds=(2, 0))
    assert [c['csv'].name for c in calls] == [f'fold0-{name}.csv', f'fold2-{name}.csv']   # only the folds asked for, in their order


def test_a_time_limit_of_zero_starts_nothing():
    study = _load('study')
    assert study.Clock(0).out() and study.Clock(-3).out()             # a job whose time is up, not one without a limit
    assert not study.Clock(None).out() and not study.Clock(5).out()
