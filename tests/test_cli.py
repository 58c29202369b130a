"""`ssl3d` as a user runs it: the main job on data_samples/, a constant scan, a killed pretraining run resumed,
and every task's own network. (Bad inputs, one per row, are the table of tests/test_bad_inputs.py; each
command's own refusals — used folders, changed settings, --help, unknown commands — are checked in-process
in nbs/90_cli.ipynb.)
"""
import json, subprocess, time
from pathlib import Path
import nibabel as nib
import numpy as np
import pytest
from conftest import ROOT, BIN, SAMPLE, ssl3d, digests, decathlon



def test_main_job_on_data_samples():
    before = digests(ROOT/'data_samples')
    r = ssl3d('info', ROOT/'data_samples')
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    rows = [l for l in lines if 'colin27' in l or 'inia19' in l]
    assert len(rows) == 5
    assert any('LAS' in l for l in rows) and any('0.5×0.5×0.5' in l for l in rows)
    assert 'Colin27 subcortical labels: 0 background, 1 hippocampus, 2 amygdala' in r.stdout
    assert '5 scans (2 labelled) in 2 folders' in r.stdout
    assert digests(ROOT/'data_samples') == before


def test_constant_scan_is_not_an_error(tmp_path):
    "A constant scan (e.g. an empty acquisition) normalises to zeros instead of dividing by zero."
    img = nib.load(SAMPLE/'imagesTr/colin27_left.nii.gz')
    nib.save(nib.Nifti1Image(np.full(img.shape, 42, np.int16), img.affine), tmp_path/'flat.nii.gz')
    r = ssl3d('info', tmp_path, '--norm', 'zscore')
    assert r.returncode == 0, r.stderr
    assert '42…42' in r.stdout and '0…0' in r.stdout and 'nan' not in r.stdout.lower()


PRETRAIN = ['pretrain', '--task', 'rpl', '--data', ROOT/'data_samples/brains', '--epochs', '4', '--steps', '6', '--bs', '2', '--size', '48']


def test_pretrain_killed_mid_run_resumes_to_the_same_encoder(tmp_path):
    "Kill a real `ssl3d pretrain` process after its second checkpoint; `--resume` must end where the unbroken run ends."
    import torch
    whole = ssl3d(*PRETRAIN, '--out', tmp_path/'whole')
    assert whole.returncode == 0, whole.stderr
    out = tmp_path/'killed'
    p = subprocess.Popen([str(BIN/'ssl3d'), *map(str, PRETRAIN), '--out', str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ck, t0, epoch = out/'checkpoint.pth', time.time(), -1
    while epoch < 1 and p.poll() is None and time.time() - t0 < 240:
        time.sleep(0.1)
        if ck.exists(): epoch = torch.load(ck, weights_only=True)['epoch']
    assert p.poll() is None, f"the run ended before it could be killed: {p.stderr.read().decode()[-500:]}"
    p.kill(); p.wait()
    assert epoch == 1 and not (out/'encoder.pth').exists()
    r = ssl3d(*PRETRAIN, '--out', out, '--resume')
    assert r.returncode == 0, r.stderr
    a, b = (torch.load(d/'encoder.pth', weights_only=True)['state_dict'] for d in (tmp_path/'whole', out))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (out/'history.csv').read_text() == (tmp_path/'whole/history.csv').read_text()
    assert json.loads((out/'config.json').read_text())['epochs'] == 4


TASK_ENCODERS = {'rubik': 'VGG3d', 'rubik-order': 'VGG3d', 'planar-reg2d': 'PlanarEncoder', 'planar-heatmap': 'PlanarEncoder', 'doersch': 'D3DCNN'}
ALL_TASKS = ['rotation', 'jigsaw', 'rpl', 'cpc', 'exemplar', 'rotation-2d', 'jigsaw-2d', 'rpl-2d', 'cpc-2d', 'exemplar-2d',
             'rubik', 'rubik-order', 'planar-reg2d', 'planar-heatmap', 'doersch', 'mim', 'mim-2d']


@pytest.mark.parametrize('task', ALL_TASKS)
def test_every_task_pretrains_its_own_network(task, tmp_path):
    "`ssl3d pretrain --task NAME` for each of the 17 tasks (in-process, two steps): the encoder file holds the task's own network and its preset."
    from ssl3d_nb.cli import main
    from ssl3d_nb.models import load_encoder
    from ssl3d_nb.tasks import TASKS
    rc = main(['pretrain', '--task', task, '--data', str(ROOT/'data_samples/brains'), '--out', str(tmp_path/'run'), '--epochs', '1', '--steps', '2', '--bs', '2'])
    assert rc == 0
    enc, meta = load_encoder(tmp_path/'run/encoder.pth')
    assert type(enc).__name__ == TASK_ENCODERS.get(task, 'ResUNetEncoder')          # DESIGN.md: 3D VGG for the Rubik's cube, Blendowski's networks, …
    assert getattr(enc, 'spatial_dims', 3) == (2 if task.endswith('-2d') else 3)
    _, settings = TASKS[task].setup('cpu', bs=2)
    assert {k: meta['settings'][k] for k in settings} == settings and meta['task'] == task
    assert meta['preprocessing']['norm'] == settings['norm']
    assert json.loads((tmp_path/'run/config.json').read_text())['norm'] == settings['norm']
    assert meta['with_decoder'] == task.startswith('mim')                               # masked image modelling saves its U-Net decoder too


def test_finetune_starts_the_decoder_from_masked_image_modelling(tmp_path):
    "ssl3d pretrain --task mim, then ssl3d finetune --decoder-weights from-encoder: every decoder tensor but the head starts as the file's (a learning rate of 1e-12 keeps it there); a random decoder does not."
    import torch
    from ssl3d_nb.cli import main
    from ssl3d_nb.models import load_decoder_state
    from ssl3d_nb.finetune import load_model
    assert main(['pretrain', '--task', 'mim', '--data', str(ROOT/'data_samples/brains'), '--out', str(tmp_path/'mim'), '--epochs', '1', '--steps', '2', '--bs', '2']) == 0
    state = load_decoder_state(tmp_path/'mim/encoder.pth')
    deca = decathlon(tmp_path/'deca')
    same = {}
    for dw in ('from-encoder', 'random'):
        assert main(['finetune', '--data', str(deca), '--encoder', str(tmp_path/'mim/encoder.pth'), '--out', str(tmp_path/dw), '--labeled', '1', '--valid', '1',
                     '--epochs', '1', '--steps', '1', '--size', '32', '--bs', '2', '--lr', '1e-12', '--mode', 'unfrozen', '--decoder-weights', dw]) == 0
        got = load_model(tmp_path/dw/'model.pth')[0].decoder.state_dict()
        same[dw] = all(torch.allclose(got[k], v, atol=1e-6) for k, v in state.items() if not k.startswith('head.'))
    assert same == {'from-encoder': True, 'random': False}


def test_predict_goes_on_past_a_bad_case(tmp_path):
    "ssl3d predict --tta --probabilities over three scans, one with two channels for a one-channel model: that case is one line, the others are written in their own space (label maps and class scores), status 2."
    import io, contextlib, shutil
    import numpy as np
    from ssl3d_nb.cli import main
    deca = decathlon(tmp_path/'deca')
    assert main(['finetune', '--data', str(deca), '--out', str(tmp_path/'ft'), '--labeled', '1', '--valid', '1', '--epochs', '1', '--steps', '1',
                 '--size', '16', '--bs', '2']) == 0
    scans = tmp_path/'scans'; scans.mkdir()
    for name in ('colin27_left', 'colin27_right'): shutil.copy(SAMPLE/f'imagesTr/{name}.nii.gz', scans/f'{name}.nii.gz')
    img = nib.load(SAMPLE/'imagesTr/colin27_left.nii.gz'); a = np.asanyarray(img.dataobj)
    nib.save(nib.Nifti1Image(np.stack([a, a], -1), img.affine), scans/'two_channels.nii.gz')
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(['predict', '--model', str(tmp_path/'ft/model.pth'), '--data', str(scans), '--out', str(tmp_path/'pred'), '--tta', '--probabilities'])
    lines = err.getvalue().strip().splitlines()
    assert rc == 2 and len(lines) == 2 and 'Traceback' not in err.getvalue(), err.getvalue()
    assert 'two_channels.nii.gz: holds 2 volumes along a 4th axis' in lines[0] and '1 of 3 cases failed (two_channels)' in lines[1]
    for name in ('colin27_left', 'colin27_right'):
        got, src = nib.load(tmp_path/f'pred/{name}.nii.gz'), nib.load(scans/f'{name}.nii.gz')
        assert got.shape == src.shape and np.allclose(got.affine, src.affine) and np.asanyarray(got.dataobj).dtype == np.uint8
        probs = np.asanyarray(nib.load(tmp_path/f'pred/{name}_probabilities.nii.gz').dataobj)
        assert probs.shape == (*src.shape, 8) and np.allclose(probs.sum(-1), 1, atol=1e-4) and (probs.argmax(-1) == np.asanyarray(got.dataobj)).all()
    assert [c['case'] for c in json.loads((tmp_path/'pred/predict.json').read_text())['cases']] == ['colin27_left', 'colin27_right']
    assert main(['predict', '--model', str(tmp_path/'ft/model.pth'), '--data', str(scans), '--out', str(scans)]) == 2      # never into the data


def test_help_and_usage_errors_do_not_import_torch():
    "`ssl3d --help`, a command's --help, a missing option and a path that names nothing answer without importing torch (2.6 s of the old 3.7 s here)."
    code = ("import sys, contextlib, io\nfrom ssl3d_nb.cli import main\n"
            "for argv in (['--help'], ['predict', '--help'], ['pretrain'], ['predict', '--model', 'nowhere.pth', '--data', 'x', '--out', 'y']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
            "        try: main(argv)\n"
            "        except SystemExit: pass\n"
            "print(sorted(m for m in ('torch', 'fastai', 'nibabel') if m in sys.modules))")
    r = subprocess.run([str(BIN/'python'), '-c', code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == '[]', (r.stdout, r.stderr[-2000:])
