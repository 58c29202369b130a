"""README.md is generated from nbs/index.ipynb (nbdev's `readme_nb`).

`nbdev_readme` needs Quarto; where it is missing, `python tests/test_readme.py` writes the same
content (markdown cells, code cells and their text outputs; hidden cells and `#|` directives left
out). The test checks content, not layout, so either tool's README passes.
"""
import json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cells():
    nb = json.loads((ROOT/'nbs/index.ipynb').read_text())
    for c in nb['cells']:
        src = ''.join(c['source'])
        if re.search(r'^#\|\s*hide', src, re.M): continue
        yield c, '\n'.join(l for l in src.splitlines() if not l.startswith('#|')).strip()


def render() -> str:
    parts = []
    for c, src in _cells():
        if c['cell_type'] == 'markdown': parts.append(src)
        elif c['cell_type'] == 'code' and src:
            parts.append(f"```python\n{src}\n```")
            for o in c.get('outputs', []):
                text = ''.join(o.get('text', o.get('data', {}).get('text/plain', '')))
                if text.strip(): parts.append(f"```\n{text.rstrip()}\n```")
    return '<!-- generated from nbs/index.ipynb: edit the notebook, then run `python tests/test_readme.py` (or nbdev_readme) -->\n\n' + '\n\n'.join(parts) + '\n'


def _words(s): return re.sub(r'\s+', ' ', s).strip()


def test_readme_in_step_with_index():
    readme = _words((ROOT/'README.md').read_text())
    for c, src in _cells():
        if c['cell_type'] != 'markdown' and c['cell_type'] != 'code': continue
        for para in re.split(r'\n\s*\n', src):
            if para.strip() and not para.startswith('> '):  # nbdev turns the `> summary` line into a description
                assert _words(para) in readme, f"README.md is out of step with nbs/index.ipynb; missing:\n{para}"


def test_readme_holds_the_two_commands():
    text = (ROOT/'README.md').read_text()
    assert 'make demo' in text and 'make test' in text
    ci = (ROOT/'.ci/run').read_text()
    assert re.search(r'^make test$', ci, re.M), ".ci/run must call exactly the README's test command"


if __name__ == '__main__':
    (ROOT/'README.md').write_text(render())
    print('README.md written', file=sys.stderr)
