"""Every bad input of issue 19, table-driven: the input, the command, the expected exit status and words.

Each case builds one spoiled input under a fresh folder and runs `ssl3d` in-process (`main(argv)`,
stdout and stderr captured), then checks what a user would see and what is left on disk:

- the exit status (2 for a refusal, 0 where the input is fine and the command says what it did);
- a refusal is exactly one line on stderr, `ssl3d: error: …`, holding the expected words, and no traceback;
- none of the user's files changed (checksums of everything the case made, before and after);
- a refused command created no output folder and wrote nothing;
- no planted pickle ran (it would have created `PWNED`).

The cases that need a real process — Ctrl-C, SIGTERM, a live lock, `torchrun` — are at the end.
"""
import contextlib, io, json, os, shutil, signal, socket, subprocess, time
from dataclasses import dataclass, field
from pathlib import Path
import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import ROOT, BIN, SAMPLE, dataset, ssl3d, digests, decathlon

BRAINS = ROOT/'data_samples/brains'


def run_main(*argv):
    "`ssl3d ARGV` in this process: (status, stdout, stderr)."
    from ssl3d_nb.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try: rc = main([str(a) for a in argv])
        except SystemExit as e: rc = e.code
    return rc, out.getvalue(), err.getvalue()


def sample_img():
    img = nib.load(SAMPLE/'imagesTr/colin27_left.nii.gz')
    return img, np.asanyarray(img.dataobj)


def sample_lab():
    lab = nib.load(SAMPLE/'labelsTr/colin27_left.nii.gz')
    return lab, np.asanyarray(lab.dataobj)


def scans_folder(root, *arrays_affines):
    root.mkdir(parents=True)
    for i, (a, aff) in enumerate(arrays_affines): nib.save(nib.Nifti1Image(a, aff), root/f'scan{i}.nii.gz')
    return root


class Planted:
    "A pickle that creates PWNED when it is unpickled: the stand-in for any code a crafted file could run."
    def __init__(self, where): self.where = str(where)
    def __reduce__(self): return (os.mkdir, (self.where,))


@dataclass
class Case:
    argv: list
    status: int = 2
    words: tuple = ()           # in the error line (status 2) or in stdout+stderr (status 0)
    out: Path = None            # an output folder the refusal must not create
    unchanged: Path = None      # a folder whose files must be byte for byte the same (default: the case's folder)
    absent: tuple = ()          # words that must not appear anywhere


@pytest.fixture(scope='module')
def made(tmp_path_factory):
    "Files several cases start from: a 1-channel RPL encoder, a 2-channel and a 2D encoder, a model fine-tuned on two subjects."
    from ssl3d_nb.models import ResUNetEncoder, save_encoder
    d = tmp_path_factory.mktemp('made')
    rc, _, err = run_main('pretrain', '--task', 'rpl', '--data', BRAINS, '--out', d/'pre', '--epochs', '1', '--steps', '1', '--bs', '2', '--size', '48')
    assert rc == 0, err
    save_encoder(ResUNetEncoder(2, width_mult=0.25), d/'enc2ch.pth', task='rpl', preprocessing={'norm': 'zscore'})
    save_encoder(ResUNetEncoder(1, width_mult=0.25, spatial_dims=2), d/'enc2d.pth', task='rpl-2d', preprocessing={'norm': 'zscore'})
    deca = decathlon(d/'deca')
    rc, _, err = run_main('finetune', '--data', deca, '--out', d/'ft', '--labeled', '1', '--valid', '1', '--epochs', '1', '--steps', '1',
                          '--size', '16', '--bs', '2')
    assert rc == 0, err
    return {'encoder': d/'pre/encoder.pth', 'run': d/'pre', 'enc2ch': d/'enc2ch.pth', 'enc2d': d/'enc2d.pth', 'model': d/'ft/model.pth', 'deca': deca}


PRE = ['--epochs', '1', '--steps', '1', '--bs', '2', '--size', '48']
FT = ['--labeled', '1', '--valid', '1', '--epochs', '1', '--steps', '1', '--size', '16', '--bs', '2']


# ---- the cases: each makes its input under `t` and says what must happen ----
def c_features_into_data(t, m):
    data = shutil.copytree(SAMPLE, t/'d')
    return Case(['features', '--encoder', 'gvdiff', '--data', data, '--out', data, '--force'], words=('lies inside the data folder',))

def c_force_user_config(t, m):
    (t/'h').mkdir(); (t/'h/config.json').write_text('{"mine": 1}'); (t/'h/history.csv').write_text('my,own\n')
    return Case(['pretrain', '--task', 'rpl', '--data', BRAINS, '--out', t/'h', '--force', *PRE], words=('config.json: was not written by ssl3d_nb',))

def c_out_is_data_no_force(t, m):
    data = shutil.copytree(BRAINS, t/'d')
    return Case(['pretrain', '--task', 'rpl', '--data', data, '--out', data, *PRE], words=('lies inside the data folder',), absent=('earlier run',))

def c_out_holds_encoder(t, m):
    run = shutil.copytree(m['run'], t/'run')
    return Case(['finetune', '--data', m['deca'], '--encoder', run/'encoder.pth', '--out', run, '--force', *FT], words=('an input of this run',))

def c_resume_planted(t, m):
    c = resume_with(t, m, lambda f: torch.save({'format': 'ssl3d_nb.run/1', 'model': Planted(t/'PWNED')}, f))
    c.words, c.absent = ('checkpoint.pth', 'never unpickles'), ('weights_only',); return c

def c_encoder_planted(t, m):
    torch.save({'format': 'ssl3d_nb.encoder/1', 'config': Planted(t/'PWNED')}, t/'enc.pth')
    return Case(['finetune', '--data', m['deca'], '--encoder', t/'enc.pth', '--out', t/'o', *FT], words=('enc.pth', 'never unpickles'), out=t/'o',
                absent=('weights_only',))


# ---- spoiled scans and dataset.json files, as `ssl3d info` reads them ----
def info(path, *words): return Case(['info', path], words=words)

def c_missing(t, m): return info(t/'nowhere', 'nowhere: no such file or folder')
def c_empty_folder(t, m): (t/'scans').mkdir(); return info(t/'scans', 'scans: contains no NIfTI files')
def c_empty_file(t, m): (t/'a.nii.gz').touch(); return info(t, 'a.nii.gz: the file is empty')
def c_not_nifti(t, m): (t/'a.nii.gz').write_text('hello'); return info(t, 'a.nii.gz: not a valid NIfTI file')
def c_truncated(t, m):
    (t/'a.nii.gz').write_bytes((SAMPLE/'imagesTr/colin27_left.nii.gz').read_bytes()[:30000]); return info(t, 'a.nii.gz: truncated or corrupt')
def c_corrupt(t, m):
    import gzip
    raw = gzip.decompress((SAMPLE/'imagesTr/colin27_left.nii.gz').read_bytes())
    (t/'a.nii').write_bytes(raw[:len(raw) // 2]); return info(t, 'a.nii: truncated or corrupt')
def c_2d(t, m):
    img, a = sample_img(); nib.save(nib.Nifti1Image(a[:, :, 30], img.affine), t/'a.nii.gz'); return info(t, 'a.nii.gz: is not a 3D volume')
def c_label_shape(t, m):
    lab, a = sample_lab(); return info(decathlon(t/'T', label=nib.Nifti1Image(a[:-2], lab.affine)), 'labelsTr/s0.nii.gz: label shape (46, 83, 71) differs')
def c_label_affine(t, m):
    lab, a = sample_lab(); aff = lab.affine.copy(); aff[:3, 3] += 2
    return info(decathlon(t/'T', label=nib.Nifti1Image(a, aff)), 'labelsTr/s0.nii.gz: label affine differs')
def c_label_values(t, m):
    return info(decathlon(t/'T', labels={'0': 'background', '1': 'hippocampus'}), 'labelsTr/s0.nii.gz: label values [2, 3, 4, 5, 6, 7] are not among')
def c_listed_but_missing(t, m):
    e = [{'image': f'./imagesTr/{n}.nii.gz', 'label': f'./labelsTr/{n}.nii.gz'} for n in ('s0', 'zz')]
    return info(decathlon(t/'T', entries=e), 'dataset.json: lists 2 files that do not exist')
def c_bad_json(t, m):
    d = decathlon(t/'T'); (d/'dataset.json').write_text('{"training": ['); return info(d, 'dataset.json: not valid JSON')

def c_json_parent_path(t, m):
    d = decathlon(t/'T', entries=[{'image': '../../etc/x.nii.gz', 'label': './labelsTr/s0.nii.gz'}])
    return Case(['info', d], words=("'../../etc/x.nii.gz' lies outside the dataset folder",))

def c_json_absolute_path(t, m):
    d = decathlon(t/'T', entries=[{'image': str(SAMPLE/'imagesTr/colin27_left.nii.gz'), 'label': './labelsTr/s0.nii.gz'}])
    return Case(['info', d], words=('lies outside the dataset folder',))

def c_labels_outside_json(t, m):
    lab, a = sample_lab()
    d = decathlon(t/'T', labels={'0': 'background', '1': 'hippocampus', '2': 'amygdala'})
    return Case(['finetune', '--data', d, '--out', t/'o', *FT], words=('label values [3, 4, 5, 6, 7] are not among',), out=t/'o')

def c_label_minus_one(t, m):
    lab, a = sample_lab()
    b = a.astype(np.int16); b[0, 0, 0] = -1
    d = decathlon(t/'T', label=nib.Nifti1Image(b, lab.affine))
    return Case(['finetune', '--data', d, '--out', t/'o', *FT], words=('label values [-1] are not among',), out=t/'o')

def two_channel(t):
    img, a = sample_img()
    d = decathlon(t/'T2', image=nib.Nifti1Image(np.stack([a, a], -1), img.affine), modality={'0': 'T1', '1': 'T1 again'})
    img2 = nib.load(d/'imagesTr/s1.nii.gz'); b = np.asanyarray(img2.dataobj)
    nib.save(nib.Nifti1Image(np.stack([b, b], -1), img2.affine), d/'imagesTr/s1.nii.gz')
    return d

def c_evaluate_channels(t, m):
    return Case(['evaluate', '--model', m['model'], '--data', two_channel(t), '--all'], words=('model.pth: takes scans of 1 channel, but those in',))

def c_features_channels(t, m):
    return Case(['features', '--encoder', m['enc2ch'], '--data', BRAINS, '--out', t/'o'], words=('enc2ch.pth: takes scans of 2 channels',), out=t/'o')

def c_one_channel_encoder_two_channel_data(t, m):
    return Case(['finetune', '--data', two_channel(t), '--encoder', m['encoder'], '--out', t/'o', *FT], status=0,
                words=('was pretrained on one channel; its first layer\'s weights are copied to each of the 2 channels',))

def resume_with(t, m, write):
    "The made run as if killed before its end (no encoder, the manifest's checksums not yet written), its checkpoint spoiled by `write`."
    run = shutil.copytree(m['run'], t/'run'); (run/'encoder.pth').unlink()
    man = json.loads((run/'.ssl3d-manifest.json').read_text()); man['files'] = dict.fromkeys(man['files'])
    (run/'.ssl3d-manifest.json').write_text(json.dumps(man))
    write(run/'checkpoint.pth')
    return Case(['pretrain', '--task', 'rpl', '--data', BRAINS, '--out', run, '--resume', *PRE])

def c_resume_truncated(t, m):
    c = resume_with(t, m, lambda f: f.write_bytes(f.read_bytes()[:5000])); c.words = ('checkpoint.pth: truncated, or not a PyTorch file',); return c

def c_resume_empty(t, m):
    c = resume_with(t, m, lambda f: f.write_bytes(b'')); c.words = ('checkpoint.pth: the file is empty',); return c

def c_resume_encoder_file(t, m):
    c = resume_with(t, m, lambda f: shutil.copy(m['encoder'], f)); c.words = ("checkpoint.pth: not an ssl3d_nb run checkpoint file",); return c

def c_resume_no_phase(t, m):
    def w(f):
        ck = torch.load(f, weights_only=True); ck.pop('phase'); torch.save(ck, f)
    c = resume_with(t, m, w); c.words = ("checkpoint.pth: its 'phase' is missing",); return c

def c_resume_other_network(t, m):
    def w(f):
        ck = torch.load(f, weights_only=True); ck['model'] = {k: v[..., :1] if v.ndim > 1 else v for k, v in ck['model'].items()}; torch.save(ck, f)
    c = resume_with(t, m, w); c.words = ("ssl3d: error: /", "checkpoint.pth: its weights do not fit this run's network",); c.absent = ('Exception occured',); return c

def c_resume_without_config(t, m):
    (t/'o').mkdir()
    return Case(['pretrain', '--task', 'rpl', '--data', BRAINS, '--out', t/'o', '--resume', *PRE], words=('holds no run to resume (no config.json)',))

def c_json_training_int(t, m):
    return Case(['info', decathlon(t/'T', entries=5)], words=("'training' must be a list of entries, not 5",))

def c_json_training_string(t, m):
    return Case(['info', decathlon(t/'T', entries='imagesTr')], words=("'training' must be a list of entries, not \"imagesTr\"",))

def c_json_image_int(t, m):
    return Case(['info', decathlon(t/'T', entries=[{'image': 5}])], words=("'training' entry 0's 'image' must be a path", 'not 5'))

def c_json_image_null(t, m):
    return Case(['info', decathlon(t/'T', entries=[{'image': None}])], words=("entry 0's 'image' must be a path", 'not null'))

def c_json_image_dict(t, m):
    return Case(['info', decathlon(t/'T', entries=[{'image': {}}])], words=("entry 0's 'image' must be a path", 'not {}'))

def c_json_empty_training(t, m):
    return Case(['info', decathlon(t/'T', entries=[])], words=("dataset.json: lists no scans",))

def c_json_duplicates(t, m):
    e = {'image': './imagesTr/s0.nii.gz', 'label': './labelsTr/s0.nii.gz'}
    return Case(['info', decathlon(t/'T', entries=[e, dict(e)])], words=('lists imagesTr/s0.nii.gz twice',))

def c_header_huge(t, m):
    hdr = nib.Nifti1Header(); hdr.set_data_shape((4000, 4000, 4000)); hdr.set_data_dtype(np.uint8)
    (t/'huge.nii').write_bytes(hdr.binaryblock + b'\0' * 4 + b'\0' * 1000)
    return Case(['info', t/'huge.nii'], words=('huge.nii: its header claims 4000×4000×4000 voxels', "more than this machine's memory"))

def c_header_zero_spacing(t, m):
    img, a = sample_img(); aff = img.affine.copy(); aff[:, 1] = 0
    bad = nib.Nifti1Image(a, None); bad.set_sform(aff, code=1); bad.set_qform(None, code=0)
    (t/'s').mkdir(); nib.save(bad, t/'s/scan0.nii.gz')
    return Case(['info', t/'s'], words=('scan0.nii.gz: its header\'s voxel-to-world matrix is degenerate',))

def crafted_model(t, m, change):
    ck = torch.load(m['model'], weights_only=True); change(ck); torch.save(ck, t/'m.pth')
    return Case(['evaluate', '--model', t/'m.pth', '--data', m['deca'], '--all'])

def c_model_unknown_key(t, m):
    c = crafted_model(t, m, lambda ck: ck['encoder'].update(colour='red')); c.words = ('m.pth: its configuration', 'does not describe a network'); return c

def c_model_no_state_dict(t, m):
    c = crafted_model(t, m, lambda ck: ck.pop('state_dict')); c.words = ("m.pth: its 'state_dict' is missing",); return c

def c_model_wrong_shapes(t, m):
    c = crafted_model(t, m, lambda ck: ck['state_dict'].update({k: v[:1] for k, v in list(ck['state_dict'].items())[:1]}))
    c.words = ('m.pth: its weights do not fit',); return c

def c_model_no_n_classes(t, m):
    c = crafted_model(t, m, lambda ck: ck.pop('n_classes')); c.words = ("m.pth: its 'n_classes' is missing (should be an int)",); return c

def c_model_string_config(t, m):
    c = crafted_model(t, m, lambda ck: ck.update(encoder='resunet')); c.words = ("m.pth: its 'encoder' is a str",); return c

def c_model_bad_decoder(t, m):
    c = crafted_model(t, m, lambda ck: ck.update(decoder='fancy')); c.words = ("m.pth: unknown decoder 'fancy'",); return c

def c_model_class_mismatch(t, m):
    d = decathlon(t/'T', labels={'0': 'background', '1': 'a', '2': 'b', '3': 'c', '4': 'd', '5': 'e', '6': 'f', '7': 'g', '8': 'h'})
    return Case(['evaluate', '--model', m['model'], '--data', d, '--all'], words=('model.pth: segments 8 classes', 'names 9'))

def c_model_empty(t, m):
    (t/'m.pth').write_bytes(b'')
    return Case(['evaluate', '--model', t/'m.pth', '--data', m['deca']], words=('m.pth: the file is empty',), absent=('()',))

def opt(*argv, words, out=None):
    return lambda t, m: Case([*argv], words=words, out=out and t/out)

c_steps_0 = opt('pretrain', '--task', 'rpl', '--data', BRAINS, '--out', 'o', '--steps', '0', words=('--steps must be a positive number, not 0',))
c_epochs_0 = opt('pretrain', '--task', 'rpl', '--data', BRAINS, '--out', 'o', '--epochs', '0', words=('--epochs must be a positive number, not 0',))
c_bs_0 = opt('pretrain', '--task', 'rpl', '--data', BRAINS, '--out', 'o', '--bs', '0', words=('--bs must be a positive number, not 0',))
c_size_0 = opt('pretrain', '--task', 'rpl', '--data', BRAINS, '--out', 'o', '--size', '0', words=('--size must be a positive number, not 0',))
c_lr_nan = opt('pretrain', '--task', 'rpl', '--data', BRAINS, '--out', 'o', '--lr', 'nan', words=('--lr must be a positive number, not nan',))
c_width_neg = opt('pretrain', '--task', 'rpl', '--data', BRAINS, '--out', 'o', '--width', '-1', words=('--width must be a positive number, not -1',))
c_info_spacing_0 = opt('info', BRAINS, '--spacing', '0', words=('--spacing must be a positive number, not 0',))
c_info_spacing_neg = opt('info', BRAINS, '--spacing', '-1', words=('--spacing must be a positive number, not -1',))
c_ft_size_5 = opt('finetune', '--data', SAMPLE, '--out', 'o', '--labeled', '1', '--size', '5', words=('multiple of 16; instead of 5, use 16 ',))
c_ft_valid_0 = opt('finetune', '--data', SAMPLE, '--out', 'o', '--labeled', '1', '--valid', '0', words=('--valid must be a positive number, not 0',))

def c_features_level_9(t, m):
    return Case(['features', '--encoder', m['encoder'], '--data', BRAINS, '--out', t/'o', '--level', '9'], words=('--level 9', 'has levels 0 … 4'), out=t/'o')

def c_features_2d(t, m):
    return Case(['features', '--encoder', m['enc2d'], '--data', BRAINS, '--out', t/'o'], words=('enc2d.pth: a 2D encoder',), out=t/'o')

def c_constant_scan(t, m):
    img, a = sample_img()
    return Case(['pretrain', '--task', 'rpl', '--data', scans_folder(t/'s', (np.zeros_like(a), img.affine), (a, img.affine)), '--out', t/'o', *PRE],
                words=('scan0.nii.gz: has one value in every voxel',), out=t/'o')

def c_tiny_scan(t, m):
    img, a = sample_img()
    return Case(['pretrain', '--task', 'rpl', '--data', scans_folder(t/'s', (a[:12, :12, :12], img.affine), (a, img.affine)), '--out', t/'o', *PRE],
                words=("scan0.nii.gz: 12×12×12 voxels; fit='resize' would stretch",), out=t/'o')

def c_time_series(t, m):
    img, a = sample_img()
    return Case(['pretrain', '--task', 'rpl', '--data', scans_folder(t/'s', (np.stack([a] * 5, -1), img.affine)), '--out', t/'o', *PRE],
                words=('scan0.nii.gz: holds 5 volumes along a 4th axis',), out=t/'o')

def c_images_labels_without_json(t, m):
    d = decathlon(t/'T'); (d/'dataset.json').unlink()
    return Case(['pretrain', '--task', 'rpl', '--data', d, '--out', t/'o', *PRE], words=('labelsTr/s', 'holds only 8 distinct values: a label map'), out=t/'o')

def c_raw_brats_folder(t, m):
    return Case(['pretrain', '--task', 'rpl', '--data', dataset('brats2013-sample'), '--out', t/'o', *PRE], words=('OTMultiClass.nii.gz: holds only', 'a label map or a mask'),
                out=t/'o', unchanged=t)

def c_symlinked_subfolder(t, m):
    (t/'scans').mkdir(); (t/'scans/brains').symlink_to(BRAINS)
    return Case(['info', t/'scans'], status=0, words=('3 scans (0 labelled)',))

def c_gzip_name_plain_file(t, m):
    s = t/'s'; s.mkdir()
    import gzip
    (s/'a.nii.gz').write_bytes(gzip.decompress((SAMPLE/'imagesTr/colin27_left.nii.gz').read_bytes())[:-10])
    return Case(['info', s], words=('a.nii.gz: not a valid NIfTI file', 'its name should end in .nii'), absent=('File the file',))

def c_nan_scan(t, m):
    img, a = sample_img(); f = a.astype(np.float32); f[1, 1, 1] = np.nan
    return Case(['info', scans_folder(t/'s', (f, img.affine))], words=('contains 1 NaN or infinite voxels',), absent=("nonfinite=",))

def c_both_resume_force(t, m):
    return Case(['pretrain', '--task', 'rpl', '--data', BRAINS, '--out', t/'o', '--resume', '--force', *PRE], words=('not both',), out=t/'o')

def c_evaluate_out_is_model(t, m):
    shutil.copy(m['model'], t/'model.pth')
    return Case(['evaluate', '--model', t/'model.pth', '--data', m['deca'], '--out', t/'model.pth', '--force', '--all'], words=('model.pth: is an input of this command',))

def c_decoder_weights_without_decoder(t, m):
    return Case(['finetune', '--data', m['deca'], '--encoder', m['encoder'], '--out', t/'o', '--decoder-weights', 'from-encoder', *FT],
                words=('pre/encoder.pth: holds no decoder; only masked image modelling (mim) pretrains one',), out=t/'o')

def c_decoder_weights_without_encoder(t, m):
    return Case(['finetune', '--data', m['deca'], '--out', t/'o', '--decoder-weights', 'from-encoder', *FT],
                words=('--decoder-weights from-encoder needs --encoder',), out=t/'o')

def c_decoder_weights_unknown(t, m):
    return Case(['finetune', '--data', m['deca'], '--out', t/'o', '--decoder_weights', 'pretrained', *FT],
                words=('--decoder-weights must be one of random, from-encoder',), out=t/'o')

def c_params_unknown(t, m):
    return Case(['pretrain', '--task', 'mim', '--data', BRAINS, '--out', t/'o', '--params', 'colour=red', *PRE],
                words=("mim: 'colour' is neither a training setting", 'nor a parameter of the task (spatial_dims, block, ratio, token)'), out=t/'o')

def c_params_malformed(t, m):
    return Case(['pretrain', '--task', 'mim', '--data', BRAINS, '--out', t/'o', '--params', 'ratio', *PRE], words=("--params: 'ratio' is not NAME=VALUE",), out=t/'o')

def c_resume_settings_never_started(t, m):
    "A refused command leaves nothing behind, so the corrected command is not refused as 'settings differ'."
    rc, _, _ = run_main('pretrain', '--task', 'rpl', '--data', BRAINS, '--out', t/'o', '--epochs', '0')
    assert rc == 2 and not (t/'o').exists()
    return Case(['pretrain', '--task', 'rpl', '--data', BRAINS, '--out', t/'o', *PRE], status=0, words=('encoder (ResUNetEncoder) written',))

CASES = {k[2:]: v for k, v in dict(globals()).items() if k.startswith('c_')}


@pytest.mark.parametrize('name', list(CASES))
def test_bad_input(name, made, tmp_path):
    t = tmp_path/'case'; t.mkdir()
    case = CASES[name](t, made)
    watch = case.unchanged or t
    before = digests(watch)
    rc, out, err = run_main(*case.argv)
    said = out + err
    assert rc == case.status, f"{name}: status {rc}, expected {case.status}\n{out[-1500:]}\n{err[-3000:]}"
    assert 'Traceback' not in said, f"{name}: a traceback\n{err[-3000:]}"
    if case.status == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith('ssl3d: error: '), f"{name}: not one error line:\n{err}"
        for w in case.words: assert w in lines[0], f"{name}: {lines[0]!r} should say {w!r}"
    else:
        for w in case.words: assert w in said, f"{name}: the output should say {w!r}:\n{said[-2000:]}"
    for w in case.absent: assert w not in said, f"{name}: should not say {w!r}: {err}"
    after = digests(watch)
    changed = {k for k in before if before[k] != after.get(k)}
    assert not changed, f"{name}: the user's files changed or vanished: {sorted(changed)}"
    if case.out is not None: assert not case.out.exists(), f"{name}: the refused command created {case.out}"
    assert not (t/'PWNED').exists(), f"{name}: a planted pickle ran"


def test_force_removes_only_what_ssl3d_wrote(made, tmp_path):
    "--force over an earlier run removes its files (those in the manifest) and leaves the user's notes."
    run = shutil.copytree(made['run'], tmp_path/'run')
    (run/'notes.txt').write_text('mine')
    rc, _, err = run_main('pretrain', '--task', 'rpl', '--data', BRAINS, '--out', run, '--force', *PRE, '--seed', '1')
    assert rc == 0, err
    assert (run/'notes.txt').read_text() == 'mine'
    assert json.loads((run/'config.json').read_text())['seed'] == 1
    files = json.loads((run/'.ssl3d-manifest.json').read_text())['files']
    assert set(files) == {'encoder.pth', 'config.json', 'history.csv', 'checkpoint.pth'} and all(files.values())
    assert not (run/'.ssl3d.lock').exists()


def test_disk_full_while_checkpointing(made, tmp_path, monkeypatch):
    "A full disk during the first checkpoint: one line naming the file, the partial file removed (torch writes into /dev/full)."
    import ssl3d_nb.models as models
    real = torch.save
    monkeypatch.setattr(models.torch, 'save', lambda obj, f, *a, **k: real(obj, '/dev/full', *a, **k) if str(f).endswith('checkpoint.pth.part') else real(obj, f, *a, **k))
    rc, out, err = run_main('pretrain', '--task', 'rpl', '--data', BRAINS, '--out', tmp_path/'o', *PRE)
    monkeypatch.setattr(models.torch, 'save', real)
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and 'checkpoint.pth: could not be written (no space left on the device' in lines[0] and 'partial file was removed' in lines[0], err
    assert not (tmp_path/'o/checkpoint.pth.part').exists() and not (tmp_path/'o/.ssl3d.lock').exists()


def test_feature_files_are_readable_by_others(made, tmp_path):
    rc, _, err = run_main('features', '--encoder', 'gvdiff', '--data', SAMPLE, '--out', tmp_path/'f', '--step', '8')
    assert rc == 0, err
    mode = (tmp_path/'f/colin27_left.nii.gz').stat().st_mode & 0o777
    umask = os.umask(0); os.umask(umask)
    assert mode == 0o666 & ~umask, oct(mode)


# ---- cases that need a real process ----
def test_live_lock_refuses_even_force(tmp_path):
    "A folder held by a live process is refused, --force included; once that process is gone its lock is stale and the run goes ahead."
    out = tmp_path/'o'; out.mkdir()
    holder = subprocess.Popen(['sleep', '60'])
    from ssl3d_nb.runs import _started
    lock = {'pid': holder.pid, 'host': socket.gethostname(), 'started': _started(holder.pid), 'command': 'ssl3d pretrain', 'since': 'now'}
    (out/'.ssl3d.lock').write_text(json.dumps(lock))
    try:
        rc, _, err = run_main('pretrain', '--task', 'rpl', '--data', BRAINS, '--out', out, '--force', *PRE)
        assert rc == 2 and f'in use by process {holder.pid}' in err and err.count('\n') == 1, err
    finally: holder.kill(); holder.wait()
    rc, _, err = run_main('pretrain', '--task', 'rpl', '--data', BRAINS, '--out', out, *PRE)
    assert rc == 0, err
    assert not (out/'.ssl3d.lock').exists()


@pytest.mark.parametrize('sig', ['SIGINT', 'SIGTERM'])
def test_interrupted_run_says_how_to_resume(sig, tmp_path):
    "Ctrl-C or SIGTERM after the first checkpoint: one line naming the checkpoint and the command that resumes; that command resumes and says from where."
    out = tmp_path/'o'
    argv = ['pretrain', '--task', 'rpl', '--data', str(BRAINS), '--out', str(out), '--epochs', '30', '--steps', '2', '--bs', '2', '--size', '48']
    # SIGINT as a terminal delivers it: a suite started in the background by a non-interactive shell passes SIGINT on ignored
    p = subprocess.Popen([str(BIN/'ssl3d'), *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        t0 = time.time()
        while not (out/'checkpoint.pth').exists() and p.poll() is None and time.time() - t0 < 240: time.sleep(0.1)
        assert p.poll() is None, p.stderr.read()[-2000:]
        p.send_signal(getattr(signal, sig))
        err = p.communicate(timeout=120)[1]
    finally:
        if p.poll() is None: p.kill(); p.wait()
    assert p.returncode == {'SIGINT': 130, 'SIGTERM': 143}[sig], err[-2000:]
    lines = [l for l in err.splitlines() if l.startswith('ssl3d:')]
    assert 'Traceback' not in err and len(lines) == 1, err[-3000:]
    how = {'SIGINT': 'Ctrl-C', 'SIGTERM': 'SIGTERM'}[sig]
    assert f'ssl3d: interrupted ({how}); {out}/checkpoint.pth holds the run after epoch' in lines[0], lines[0]
    again = lines[0].split('go on with: ')[1]
    assert again.endswith('--resume') and again.startswith('ssl3d pretrain')
    assert not (out/'.ssl3d.lock').exists()
    import shlex
    r = ssl3d(*shlex.split(again)[1:])
    assert r.returncode == 0, r.stderr[-2000:]
    assert f'resuming pretraining in {out} after epoch' in r.stdout and 'of 30' in r.stdout, r.stdout[:2000]


def test_torchrun_error_is_one_line_from_rank_0(tmp_path):
    "Under torchrun a refusal is printed once (rank 0), and every worker ends with status 2."
    r = subprocess.run([str(BIN/'torchrun'), '--standalone', '--nproc_per_node', '2', str(BIN/'ssl3d'), 'pretrain', '--task', 'rpl',
                        '--data', str(BRAINS), '--out', str(tmp_path/'o'), '--epochs', '0'], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert r.stderr.count('ssl3d: error: --epochs must be a positive number, not 0') == 1, r.stderr[-3000:]
    assert 'exitcode  : 2' in r.stderr, r.stderr[-3000:]
    assert not (tmp_path/'o').exists()


def test_a_refusing_worker_leaves_rank_0_time_to_say_why(tmp_path):
    """The race behind a flaky torchrun run: a worker other than rank 0 that refuses first would end first, and the launcher would
    stop rank 0 before it printed. Such a worker waits, silent, until the launcher stops it — then ends with the refusal's 2."""
    env = {**os.environ, 'RANK': '1', 'WORLD_SIZE': '2'}
    p = subprocess.Popen([str(BIN/'ssl3d'), 'pretrain', '--task', 'rpl', '--data', str(BRAINS), '--out', str(tmp_path/'o'), '--epochs', '0'],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4)
    assert p.poll() is None, p.stderr.read()
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    assert (p.returncode, out, err) == (2, '', '')
    assert not (tmp_path/'o').exists()


def test_nproc_error_is_one_line_and_status_2(tmp_path):
    "`ssl3d --nproc 2` starts the processes itself: a refusal is one line and the status is the workers' 2 (torchrun would say 1, with its own report)."
    r = ssl3d('--nproc', '2', 'pretrain', '--task', 'rpl', '--data', BRAINS, '--out', tmp_path/'o', '--epochs', '0')
    assert (r.returncode, r.stderr.strip()) == (2, 'ssl3d: error: --epochs must be a positive number, not 0'), r.stderr[-3000:]
    assert not (tmp_path/'o').exists()


def _stat(pid:int)->list:
    "The fields of /proc/PID/stat after the command name ([] once the process is gone)."
    try: return Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    except (OSError, IndexError): return []


def _children(pid:int)->list:
    return [int(d.name) for d in Path('/proc').iterdir() if d.name.isdigit() and (st := _stat(int(d.name))) and int(st[1]) == pid]


def _running(pid:int)->bool:
    st = _stat(pid); return bool(st) and st[0] != 'Z'


def test_workers_stop_when_torchrun_is_killed(tmp_path):
    "kill -9 of torchrun alone: its workers notice within seconds and stop, leaving a stale lock rather than training on into the folder."
    out = tmp_path/'o'
    p = subprocess.Popen([str(BIN/'torchrun'), '--standalone', '--nproc_per_node', '2', str(BIN/'ssl3d'), 'pretrain', '--task', 'rpl', '--data', str(BRAINS),
                          '--out', str(out), '--epochs', '300', '--steps', '2', '--bs', '2', '--size', '48'],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    workers = []
    try:
        t0 = time.time()
        while not (out/'checkpoint.pth').exists() and p.poll() is None and time.time() - t0 < 240: time.sleep(0.2)
        workers = _children(p.pid)
        assert p.poll() is None and len(workers) == 2, f"torchrun ended early or has {len(workers)} workers"
        p.kill(); p.wait()
        t0 = time.time()
        while any(map(_running, workers)) and time.time() - t0 < 60: time.sleep(0.5)
        alive = [w for w in workers if _running(w)]
        assert not alive, f"workers {alive} still run {time.time() - t0:.0f} s after torchrun was killed"
        print(f"workers gone {time.time() - t0:.1f} s after torchrun was killed")
        from ssl3d_nb.runs import lock_holder
        assert lock_holder(out) is None
    finally:
        if p.poll() is None: p.kill()
        for w in workers:
            if _running(w): os.kill(w, signal.SIGKILL)
