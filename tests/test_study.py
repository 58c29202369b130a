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
