"""`ssl3d` as a user runs it: the main job on data_samples/, one clear line for each kind of bad input, and a
killed pretraining run resumed. (Each command's own refusals — used folders, changed settings, --help,
unknown commands — are checked in-process in nbs/90_cli.ipynb, without a torch import per check.)

Every bad input is a real scan spoiled in one way. For each: exit status 2, a single line on
stderr that names the file and the problem, no traceback — and the user's files unchanged.
"""
import gzip, hashlib, json, shutil, subprocess, time
from pathlib import Path
import nibabel as nib
import numpy as np
import pytest
from conftest import ROOT, BIN

SAMPLE = ROOT/'data_samples/colin27_subcortical'


def ssl3d(*args, cwd=None):
    return subprocess.run([str(BIN/'ssl3d'), *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd)


def digests(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(folder).rglob('*')) if p.is_file()}


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


def _img():
    img = nib.load(SAMPLE/'imagesTr/colin27_left.nii.gz')
    return img, np.asanyarray(img.dataobj)


def _decathlon(root, image=None, label=None, labels=None, listed=('a',)):
    "A Decathlon folder holding the sample scan and label, with optional replacements."
    (root/'imagesTr').mkdir(parents=True); (root/'labelsTr').mkdir()
    shutil.copy(SAMPLE/'imagesTr/colin27_left.nii.gz', root/'imagesTr/a.nii.gz')
    shutil.copy(SAMPLE/'labelsTr/colin27_left.nii.gz', root/'labelsTr/a.nii.gz')
    if image is not None: nib.save(image, root/'imagesTr/a.nii.gz')
    if label is not None: nib.save(label, root/'labelsTr/a.nii.gz')
    meta = json.loads((SAMPLE/'dataset.json').read_text())
    meta['training'] = [{'image': f'./imagesTr/{n}.nii.gz', 'label': f'./labelsTr/{n}.nii.gz'} for n in listed]
    if labels is not None: meta['labels'] = labels
    (root/'dataset.json').write_text(json.dumps(meta))
    return root


def _case(kind, tmp):
    "Make one bad input under `tmp`; return (path to pass to ssl3d, the file the error must name, the problem)."
    img, a = _img()
    lab = nib.load(SAMPLE/'labelsTr/colin27_left.nii.gz')
    if kind == 'missing': return tmp/'nowhere', 'nowhere', 'no such file or folder'
    if kind == 'empty folder': (tmp/'scans').mkdir(); return tmp/'scans', 'scans', 'contains no NIfTI files'
    d = tmp/'scans'; d.mkdir()
    if kind == 'empty file': (d/'a.nii.gz').touch(); return d, 'a.nii.gz', 'the file is empty'
    if kind == 'not nifti': (d/'a.nii.gz').write_text('hello'); return d, 'a.nii.gz', 'not a valid NIfTI file'
    if kind == 'truncated':
        (d/'a.nii.gz').write_bytes((SAMPLE/'imagesTr/colin27_left.nii.gz').read_bytes()[:30000]); return d, 'a.nii.gz', 'truncated or corrupt'
    if kind == 'corrupt':
        raw = bytearray(gzip.decompress((SAMPLE/'imagesTr/colin27_left.nii.gz').read_bytes()))
        (d/'a.nii').write_bytes(bytes(raw[:len(raw) // 2])); return d, 'a.nii', 'truncated or corrupt'
    if kind == 'nan':
        f = a.astype(np.float32); f[5, 5, 5] = np.nan; f[6, 6, 6] = np.inf
        nib.save(nib.Nifti1Image(f, img.affine), d/'a.nii.gz'); return d, 'a.nii.gz', 'contains 2 NaN or infinite voxels'
    if kind == '2d':
        nib.save(nib.Nifti1Image(a[:, :, 30], img.affine), d/'a.nii.gz'); return d, 'a.nii.gz', 'is not a 3D volume'
    if kind == 'label shape':
        l = np.asanyarray(lab.dataobj)[:-2]
        return _decathlon(d/'T', label=nib.Nifti1Image(l, lab.affine)), 'labelsTr/a.nii.gz', 'label shape (46, 83, 71) differs'
    if kind == 'label affine':
        aff = lab.affine.copy(); aff[:3, 3] += 2
        return _decathlon(d/'T', label=nib.Nifti1Image(np.asanyarray(lab.dataobj), aff)), 'labelsTr/a.nii.gz', 'label affine differs'
    if kind == 'label values':
        return _decathlon(d/'T', labels={'0': 'background', '1': 'hippocampus'}), 'labelsTr/a.nii.gz', 'label values [2, 3, 4, 5, 6, 7] are not among'
    if kind == 'listed but missing':
        return _decathlon(d/'T', listed=('a', 'b')), 'dataset.json', 'lists 2 files that do not exist'
    if kind == 'bad json':
        t = _decathlon(d/'T'); (t/'dataset.json').write_text('{"training": ['); return t, 'dataset.json', 'not valid JSON'
    raise ValueError(kind)


BAD = ['missing', 'empty folder', 'empty file', 'not nifti', 'truncated', 'corrupt', 'nan', '2d',
       'label shape', 'label affine', 'label values', 'listed but missing', 'bad json']


@pytest.mark.parametrize('kind', BAD)
def test_bad_input_gets_one_clear_line(kind, tmp_path):
    path, culprit, problem = _case(kind, tmp_path)
    before = digests(tmp_path)
    r = ssl3d('info', path)
    assert r.returncode == 2, f"{kind}: exit status {r.returncode}\n{r.stdout}\n{r.stderr}"
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('ssl3d: error: '), f"{kind}: not one error line:\n{r.stderr}"
    assert culprit in lines[0] and problem in lines[0], f"{kind}: {lines[0]!r} should name {culprit!r} and say {problem!r}"
    assert digests(tmp_path) == before, f"{kind}: the user's files were modified"


def test_constant_scan_is_not_an_error(tmp_path):
    "A constant scan (e.g. an empty acquisition) normalises to zeros instead of dividing by zero."
    img, a = _img()
    nib.save(nib.Nifti1Image(np.full(a.shape, 42, np.int16), img.affine), tmp_path/'flat.nii.gz')
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
        if ck.exists(): epoch = torch.load(ck, weights_only=False)['epoch']
    assert p.poll() is None, f"the run ended before it could be killed: {p.stderr.read().decode()[-500:]}"
    p.kill(); p.wait()
    assert epoch == 1 and not (out/'encoder.pth').exists()
    r = ssl3d(*PRETRAIN, '--out', out, '--resume')
    assert r.returncode == 0, r.stderr
    a, b = (torch.load(d/'encoder.pth', weights_only=False)['state_dict'] for d in (tmp_path/'whole', out))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (out/'history.csv').read_text() == (tmp_path/'whole/history.csv').read_text()
    assert json.loads((out/'config.json').read_text())['epochs'] == 4


TASK_ENCODERS = {'rubik': 'VGG3d', 'rubik-order': 'VGG3d', 'planar-reg2d': 'PlanarEncoder', 'planar-heatmap': 'PlanarEncoder', 'doersch': 'D3DCNN'}
ALL_TASKS = ['rotation', 'jigsaw', 'rpl', 'cpc', 'exemplar', 'rotation-2d', 'jigsaw-2d', 'rpl-2d', 'cpc-2d', 'exemplar-2d',
             'rubik', 'rubik-order', 'planar-reg2d', 'planar-heatmap', 'doersch']


@pytest.mark.parametrize('task', ALL_TASKS)
def test_every_task_pretrains_its_own_network(task, tmp_path):
    "`ssl3d pretrain --task NAME` for each of the 15 tasks (in-process, two steps): the encoder file holds the task's own network and its preset."
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
