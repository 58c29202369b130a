"""The documentation build, up to where Quarto takes over.

Quarto cannot be installed on every machine this suite runs on, so this test runs the stage
that can: nbdev's `refresh_quarto_yml` and `proc_nbs` (the processors that `nbdev_docs` runs,
including executing the `show_doc` cells), then an HTML render of the processed notebooks with
nbconvert. It checks that the pages hold every public function's rendered `show_doc` signature
and the notebooks' figures, that the configuration is in step with settings.ini, and that the
sidebar lists every notebook. On a machine with Quarto, `nbdev_docs` builds the real site.
"""
import importlib, inspect, json, re, subprocess
from pathlib import Path
import pytest, yaml
from conftest import ROOT, BIN, copy_project

def _module_notebooks() -> dict:
    "Notebook name -> the module it exports (its `#| default_exp`)."
    out = {}
    for nb in sorted((ROOT/'nbs').glob('*.ipynb')):
        src = '\n'.join(''.join(c['source']) for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'code')
        m = re.search(r'^#\|\s*default_exp\s+(\S+)', src, re.M)
        if m: out[nb.stem] = m.group(1)
    return out

MODULE_NBS = _module_notebooks()
FIGURE_NBS = [nb for nb, mod in MODULE_NBS.items() if mod not in ('cli', 'docs') and not mod.endswith('__init__')]   # every lesson shows its component on a real scan (the command line and the docs build are no lessons)


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "Processed notebooks and their HTML pages, built in a copy of the project."
    tmp = copy_project(tmp_path_factory.mktemp('docs'))
    code = ("from nbdev.quarto import refresh_quarto_yml\nfrom nbdev.serve import proc_nbs\nimport nbdev.doclinks\n"
            "refresh_quarto_yml(); nbdev.doclinks._build_modidx(); proc_nbs('nbs', n_workers=0)")
    r = subprocess.run([str(BIN/'python'), '-c', code], cwd=tmp, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"nbdev's notebook processing failed:\n{r.stderr[-5000:]}"
    # Quarto hides cells marked `#| echo: false` (nbdev marks the show_doc cells so); tell nbconvert the same.
    for nb in (tmp/'_proc').rglob('*.ipynb'):
        d = json.loads(nb.read_text())
        for c in d['cells']:
            if re.search(r'^#\|\s*echo:\s*false', ''.join(c['source']), re.M): c['metadata'].setdefault('tags', []).append('remove_input')
        nb.write_text(json.dumps(d))
    r = subprocess.run([str(BIN/'jupyter'), 'nbconvert', '--to', 'html', '--output-dir', str(tmp/'html'),
                        '--TagRemovePreprocessor.enabled=True', '--TagRemovePreprocessor.remove_input_tags=remove_input',
                        *map(str, sorted((tmp/'_proc').rglob('*.ipynb')))], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"nbconvert failed:\n{r.stderr[-5000:]}"
    return tmp


def test_config_in_step_with_settings(site):
    assert (site/'nbs/nbdev.yml').read_text() == (ROOT/'nbs/nbdev.yml').read_text(), \
        "nbs/nbdev.yml is out of step with settings.ini: nbdev regenerates it; commit the new one"
    q = yaml.safe_load((ROOT/'nbs/_quarto.yml').read_text())
    assert q['project']['type'] == 'website' and set(q['metadata-files']) == {'nbdev.yml', 'sidebar.yml'}
    assert (ROOT/'_quarto.yml').resolve() == (ROOT/'nbs/_quarto.yml').resolve()


def test_sidebar_lists_every_notebook():
    side = yaml.safe_load((ROOT/'nbs/sidebar.yml').read_text())['website']['sidebar']['contents']
    def entries(xs):
        for x in xs: yield from (entries(x['contents']) if isinstance(x, dict) else [x])
    listed = set(entries(side))
    nbs = {str(p.relative_to(ROOT/'nbs')) for p in (ROOT/'nbs').rglob('*.ipynb') if '_proc' not in p.parts and '.ipynb_checkpoints' not in p.parts}
    assert listed == nbs, f"sidebar.yml and nbs/ disagree: only in sidebar {listed - nbs}, only in nbs {nbs - listed}"


@pytest.mark.parametrize('nb,mod', MODULE_NBS.items())
def test_pages_hold_signatures(site, nb, mod):
    html = (site/'html'/f'{nb}.html').read_text()
    m = importlib.import_module(f'ssl3d_nb.{mod}'.removesuffix('.__init__'))
    public = [n for n in m.__all__ if (inspect.isfunction(getattr(m, n)) or inspect.isclass(getattr(m, n)))
              and getattr(getattr(m, n), '__module__', '') == m.__name__]
    assert public or mod.endswith('__init__'), f"{nb} exports no public function or class"
    for name in public:
        assert re.search(rf'<h3 id="{re.escape(name)}">{re.escape(name)}', html), f"{nb}.html lacks the show_doc of {name}"
        assert re.search(rf'<span class="(?:k|kd)">(?:def|class)</span>(?:\s|<span class="w">\s*</span>)*<span class="(?:nf|nc)">{re.escape(name)}</span>', html), \
            f"{nb}.html lacks the rendered signature of {name}"


def test_module_notebooks_found():
    assert {'core', 'io', 'grids', 'cli'} <= set(MODULE_NBS.values())


@pytest.mark.parametrize('nb', FIGURE_NBS)
def test_pages_hold_figures(site, nb):
    html = (site/'html'/f'{nb}.html').read_text()
    assert re.search(r'<img [^>]*src="data:image/png;base64,', html), f"{nb}.html shows no figure"
    assert 'show_doc(' not in re.sub(r'<[^>]+>', '', html), f"{nb}.html shows show_doc source that Quarto would hide"


REPRODUCTIONS = sorted(p.stem for p in (ROOT/'nbs/reproductions').glob('*.ipynb'))

@pytest.mark.parametrize('nb', REPRODUCTIONS)
def test_reproduction_pages_hold_results(site, nb):
    "A reproduction shows its measured figures and tables (its slow cells' outputs are kept)."
    html = (site/'html'/f'{nb}.html').read_text()
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', html)) >= 2, f"{nb}.html shows fewer than two figures"
    assert '<table' in html, f"{nb}.html shows no table"


def test_index_page(site):
    text = re.sub(r'<[^>]+>', '', (site/'html/index.html').read_text())
    assert 'make demo' in text and 'make test' in text


# What a reader of the pages must not meet (each check reads the committed notebooks, whose outputs the pages show).
ALL_NBS = sorted(p for p in (ROOT/'nbs').rglob('*.ipynb') if not any(part.startswith(('.', '_')) for part in p.relative_to(ROOT/'nbs').parts))

def _cells(nb):
    return json.loads(nb.read_text())['cells']

def _output_text(o):
    return ''.join(o.get('text', '')) + ''.join(''.join(v) for k, v in o.get('data', {}).items() if k.startswith('text/'))


@pytest.mark.parametrize('nb', ALL_NBS, ids=lambda p: str(p.relative_to(ROOT/'nbs')))
def test_notebook_reads_cleanly(nb):
    "No file outside the repository cited, no local path in an output, no stray matplotlib return value, no cell that rewrites the package."
    name = nb.relative_to(ROOT/'nbs')
    for c in _cells(nb):
        src = ''.join(c['source'])
        assert not re.search(r'\b(DESIGN|DATA|PAPERS|STYLE)\.md\b|\.\./shared\b', src), \
            f"{name} cell {c.get('id')} cites a file outside the repository: {src[:120]!r}"
        if c['cell_type'] != 'code': continue
        assert not re.search(r'nbdev_export\(', src), \
            f"{name} cell {c.get('id')} runs nbdev_export: running all cells would rewrite the package (run `nbdev_export` in a shell)"
        for o in c.get('outputs', []):
            text = _output_text(o)
            m = re.search(r'(?:/work/|/root/|/home/\w+/|/tmp/|/private/var/|[A-Z]:\\Users\\)\S*', text)
            assert not m, f"{name} cell {c.get('id')} shows a local path in its output: {m.group(0)!r}"
            if o['output_type'] == 'execute_result':
                plain = ''.join(o.get('data', {}).get('text/plain', ''))
                assert not re.match(r'\[?(?:Text\(|<Axes|<matplotlib|<Figure|<mpl_toolkits)', plain), \
                    f"{name} cell {c.get('id')} shows a stray return value {plain[:60]!r} (end the line with ';')"


DURATION = re.compile(r'\d[\d,.½]*\s*(?:s|seconds?|min|minutes?|hours?)\b|\b(?:a|one|two|three|half an?)\s+(?:second|minute|hour)s?\b|\bseconds\b')

@pytest.mark.parametrize('nb', ALL_NBS, ids=lambda p: str(p.relative_to(ROOT/'nbs')))
def test_slow_cells_say_how_long(nb):
    "A reader deciding whether to rerun a `#| slow` cell learns first how long it takes: the markdown just above it gives a duration."
    name, last_md = nb.relative_to(ROOT/'nbs'), ''
    for c in _cells(nb):
        src = ''.join(c['source'])
        if c['cell_type'] == 'markdown': last_md = src
        elif re.search(r'^#\|\s*slow', src, re.M):
            assert DURATION.search(last_md), f"{name} cell {c.get('id')} is slow, and the text above it does not say how long it takes"


@pytest.mark.parametrize('nb', sorted(MODULE_NBS))
def test_signatures_hold_no_raw_links(site, nb):
    "A name in backticks inside a signature's comment becomes a markdown link that the code block shows raw."
    html = (site/'html'/f'{nb}.html').read_text()
    for pre in re.findall(r'<pre>(.*?)</pre>', html, re.S):
        text = re.sub(r'<[^>]+>', '', pre)
        m = re.search(r'\[[^\]]*\]\(https?://[^)]*\)', text)
        assert not m, f"{nb}.html shows a raw markdown link in a code block: {m.group(0)!r}"


@pytest.mark.parametrize('nb,mod', MODULE_NBS.items())
def test_api_entries_in_source_order(site, nb, mod):
    "The API entries of a page follow the module's source (nbdev inserts those of one cell last first; `docs.show_docs_in_order` mends it)."
    html = (site/'html'/f'{nb}.html').read_text()
    m = importlib.import_module(f'ssl3d_nb.{mod}'.removesuffix('.__init__'))
    order = [n for n in m.__all__ if re.search(rf'<h3 id="{re.escape(n)}">', html)]
    found = sorted(order, key=lambda n: html.index(f'<h3 id="{n}">'))
    assert found == order, f"{nb}.html lists its API out of source order: {found} (source: {order})"
