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


def test_bad_options_and_bad_files_are_refused_without_torch(tmp_path):
    "A wrong option value, a damaged scan, a folder without labels, an output that is an input: the one line comes before torch or fastai is imported."
    (tmp_path/'bad.nii.gz').write_text('not a scan')
    brains, sub = ROOT/'data_samples/brains', ROOT/'data_samples/colin27_subcortical'
    cases = [(['pretrain', '--task', 'rpll', '--data', brains, '--out', tmp_path/'o'], "unknown task 'rpll'"),
             (['pretrain', '--task', 'rpl', '--precision', 'fp8', '--data', brains, '--out', tmp_path/'o'], '--precision must be one of'),
             (['pretrain', '--task', 'rpl', '--data', tmp_path, '--out', tmp_path/'o'], 'bad.nii.gz: not a valid NIfTI file'),
             (['finetune', '--data', brains, '--labeled', 1, '--out', tmp_path/'o'], 'holds no labelled scans'),
             (['finetune', '--data', sub, '--labeled', 1, '--mode', 'thawed', '--out', tmp_path/'o'], '--mode must be one of'),
             (['evaluate', '--model', tmp_path/'bad.nii.gz', '--data', sub], 'bad.nii.gz: truncated, or not a PyTorch file; not a usable ssl3d_nb model file'),
             (['info', sub, '--out', sub/'labelsTr/colin27_left.nii.gz'], 'is an input of this command'),
             (['finetune', '--data', sub, '--labeled', 1, '--size', 40, '--out', tmp_path/'o'], 'instead of 40, use 32 or 48'),
             (['predict', '--model', tmp_path/'bad.nii.gz', '--data', sub, '--out', tmp_path/'o', '--bs', 0], '--bs must be a positive number'),
             (['features', '--encoder', 'gvdiff', '--data', tmp_path/'bad.nii.gz', '--out', tmp_path/'o'], 'not a valid NIfTI file'),
             (['info', brains, '--norm', 'z'], '--norm must be one of'),
             (['demo', '--task', 'jigsw'], "unknown task 'jigsw'"),
             (['benchmark', '--tasks', 'rpl,cpcc'], "unknown task 'cpcc'")]
    code = ("import sys, json, contextlib, io\nfrom ssl3d_nb.cli import main\n"
            "err = io.StringIO()\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err): rc = main(sys.argv[1:])\n"
            "print(json.dumps([rc, err.getvalue(), sorted(m for m in ('torch', 'fastai') if m in sys.modules)]))")
    for argv, want in cases:                      # each in a fresh process: one command's imports must not serve the next
        r = subprocess.run([str(BIN/'python'), '-c', code, *map(str, argv)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (argv, r.stderr[-3000:])
        rc, err, imported = json.loads(r.stdout)
        assert rc == 2 and want in err and err.count('\n') == 1, (argv, rc, err)
        assert imported == [], (argv, imported)
    assert not (tmp_path/'o').exists()


def test_the_option_words_are_the_librarys():
    "cli.CHOICES answers typos before torch is imported; the library's own lists are the truth."
    from ssl3d_nb.cli import CHOICES
    from ssl3d_nb.tasks import TASKS
    from ssl3d_nb.parallel import PRECISIONS
    from ssl3d_nb.finetune import FINETUNE_MODES, DECODER_WEIGHTS
    from ssl3d_nb.preprocess import Preprocess
    assert sorted(CHOICES['task']) == sorted(TASKS)
    assert (CHOICES['precision'], CHOICES['mode'], CHOICES['decoder_weights']) == (PRECISIONS, FINETUNE_MODES, DECODER_WEIGHTS)
    from ssl3d_nb.finetune import AUGMENTS
    assert CHOICES['augment'] == (*AUGMENTS, 'none')
    for norm in CHOICES['norm']: Preprocess(norm=None if norm == 'none' else norm)     # each one a normalisation Preprocess knows


def _dice(a, b, k):
    "Dice of class k between two label arrays; NaN where neither holds it (as metrics.cm_scores)."
    import numpy as np
    s = (a == k).sum() + (b == k).sum()
    return 2 * ((a == k) & (b == k)).sum() / s if s else float('nan')


def test_predict_writes_each_scan_in_its_own_space(hippocampus, tmp_path):
    """The oracles of `ssl3d predict` on real scans. A model fine-tuned for a few steps on hippocampus MRI segments scans
    and the same scans stored in other axis orders (nibabel's `as_reoriented`, the affine adjusted): every label map has
    its file's shape and affine, and read back in RAS the maps of a scan and of its reoriented copy are the same voxels.
    On a Decathlon folder, the Dice of the written files against the label files equals what `ssl3d evaluate` reports."""
    import shutil
    import numpy as np
    deca = tmp_path/'hippo'; (deca/'imagesTr').mkdir(parents=True); (deca/'labelsTr').mkdir()
    meta = json.loads((hippocampus/'dataset.json').read_text())
    meta['training'] = sorted(meta['training'], key=lambda e: e['image'])[:6]
    for e in meta['training']:
        for k in ('image', 'label'): shutil.copy(hippocampus/e[k], deca/e[k])
    (deca/'dataset.json').write_text(json.dumps(meta))
    r = ssl3d('finetune', '--data', deca, '--out', tmp_path/'ft', '--labeled', 2, '--valid', 1, '--epochs', 3, '--steps', 8,
              '--size', 32, '--bs', 4, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    model = tmp_path/'ft/model.pth'

    scans = tmp_path/'scans'; scans.mkdir()
    orders = {'PSL': [[0, -1], [2, 1], [1, -1]], 'ASR': [[1, 1], [2, 1], [0, 1]], 'LPI': [[0, -1], [1, -1], [2, -1]]}   # new axis: (old axis, flip)
    cases = [Path(e['image']).name.replace('.nii.gz', '') for e in meta['training'][3:]]
    for case, (code, ornt) in zip(cases, orders.items()):
        img = nib.load(deca/f'imagesTr/{case}.nii.gz')
        nib.save(img, scans/f'{case}.nii.gz')
        moved = img.as_reoriented(np.array(ornt))
        assert ''.join(nib.aff2axcodes(moved.affine)) != ''.join(nib.aff2axcodes(img.affine))
        nib.save(moved, scans/f'{case}_{code}.nii.gz')
    r = ssl3d('predict', '--model', model, '--data', scans, '--out', tmp_path/'pred')
    assert r.returncode == 0, r.stderr[-2000:]
    for f in sorted(scans.glob('*.nii.gz')):
        src, got = nib.load(f), nib.load(tmp_path/'pred'/f.name)
        assert got.shape == src.shape and np.allclose(got.affine, src.affine), f.name
    found = 0
    for case, code in zip(cases, orders):
        a = np.asanyarray(nib.as_closest_canonical(nib.load(tmp_path/f'pred/{case}.nii.gz')).dataobj)
        b = np.asanyarray(nib.as_closest_canonical(nib.load(tmp_path/f'pred/{case}_{code}.nii.gz')).dataobj)
        assert np.array_equal(a, b), (case, code)
        found += (a > 0).sum()
    assert found > 0, 'the model segments nothing: the orientation oracle would hold trivially'

    r = ssl3d('evaluate', '--model', model, '--data', deca, '--out', tmp_path/'eval.json')
    assert r.returncode == 0, r.stderr[-2000:]
    ev = json.loads((tmp_path/'eval.json').read_text())
    r = ssl3d('predict', '--model', model, '--data', deca, '--out', tmp_path/'pred_deca')
    assert r.returncode == 0, r.stderr[-2000:]
    names = {int(k): v for k, v in meta['labels'].items() if int(k)}
    assert len(ev['subjects']) == 3
    for row in ev['subjects']:
        ours = np.asanyarray(nib.load(tmp_path/f"pred_deca/{row['scan']}.nii.gz").dataobj)
        truth = np.asanyarray(nib.load(deca/f"labelsTr/{row['scan']}.nii.gz").dataobj)
        for k, n in names.items():
            assert np.isclose(_dice(ours, truth, k), row[f'dice_{n}'], atol=1e-6, equal_nan=True), (row['scan'], n)
    assert max(row['mean_dice'] for row in ev['subjects']) > 0, 'all Dice 0: the comparison would hold trivially'


def test_predict_subject_folders(brats, tmp_path):
    """`ssl3d predict --modalities Flair,T1c` on BraTS subject folders: one label map per subject, on the grid of its first
    modality's file; a subject stored in another axis order gets the same label map once both are read in RAS."""
    import numpy as np, torch
    from ssl3d_nb.models import ResUNetEncoder3d
    from ssl3d_nb.finetune import SegModel, save_model
    torch.manual_seed(0)
    net = SegModel(ResUNetEncoder3d(in_channels=2, width_mult=0.125), n_classes=5)
    net.roi = (80, 80, 80)
    save_model(net, tmp_path/'model.pth', preprocessing={'norm': 'zscore'}, flip_axes=[0])
    data = tmp_path/'subjects'
    src = sorted(p for p in brats.iterdir() if p.is_dir())[0]
    (data/src.name).mkdir(parents=True); (data/'moved').mkdir()
    for m in ('Flair', 'T1c'):
        f = next(src.glob(f'{m}*.nii.gz'))
        img = nib.load(f)
        nib.save(img, data/src.name/f.name)
        nib.save(img.as_reoriented(np.array([[1, -1], [0, 1], [2, -1]])), data/'moved'/f.name)
    r = ssl3d('predict', '--model', tmp_path/'model.pth', '--data', data, '--modalities', 'Flair,T1c', '--out', tmp_path/'pred', timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    for case in (src.name, 'moved'):
        flair, got = nib.load(next((data/case).glob('Flair*'))), nib.load(tmp_path/f'pred/{case}.nii.gz')
        assert got.shape == flair.shape and np.allclose(got.affine, flair.affine), case
    a, b = (np.asanyarray(nib.as_closest_canonical(nib.load(tmp_path/f'pred/{c}.nii.gz')).dataobj) for c in (src.name, 'moved'))
    assert np.array_equal(a, b) and len(np.unique(a)) > 1
    rec = json.loads((tmp_path/'pred/predict.json').read_text())
    assert rec['modalities'] == 'Flair,T1c' and [c['case'] for c in rec['cases']] == sorted([src.name, 'moved']) and rec['failed'] == []


def test_pretrain_refuses_a_run_that_would_not_fit(tmp_path, capsys):
    "A batch of 64 at the paper's preset (about 600 GiB) is refused before anything is written, naming the card preset that fits; a card preset, accumulation and checkpointing run and are recorded."
    from ssl3d_nb.cli import main
    data = str(ROOT/'data_samples/brains')
    assert main(['pretrain', '--task', 'rotation', '--data', data, '--out', str(tmp_path/'big'), '--preset', 'paper', '--bs', '64']) != 0
    err = capsys.readouterr().err
    assert 'needs about' in err and '--preset paper-' in err and 'fits (' in err, err
    assert not (tmp_path/'big').exists()
    assert main(['pretrain', '--task', 'rpl', '--data', data, '--out', str(tmp_path/'card'), '--preset', 'paper-24g', '--width', '0.25',
                 '--bs', '2', '--size', '64', '--epochs', '1', '--steps', '1', '--accum', '2', '--checkpointing']) == 0
    cfg = json.loads((tmp_path/'card/config.json').read_text())
    assert (cfg['preset'], cfg['accum'], cfg['checkpointing'], cfg['size']) == ('paper-24g', 2, True, 64)    # what the command line sets wins
    assert 'estimated peak memory' in capsys.readouterr().out
