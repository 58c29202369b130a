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
    assert study.best_protocol(csv) == {'rpl': 'fast'}


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
    name, cfg = study.scratch_config(csv=csv)
    assert name == 'light-1600' and cfg['steps'] == 1600 and cfg['augment'] == 'light'
    assert study.scratch_config(csv=csv, min_seeds=1)[0] == 'light-3200'


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
