"""The documentation keeps up with the code: every relative link resolves, every config key of every experiment
is documented in README.md or docs/, and the README stays a page a newcomer reads."""
import glob
import os
import re

import pytest

from experiments import alexnet_imagenet
from experiments import fashion_mnist
from experiments import hidden_units
from tests.helpers import ROOT

PAGES = ['README.md'] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, 'docs', '**', '*.md'),
                                                                              recursive=True))


def text(page):
  with open(os.path.join(ROOT, page)) as f:
    return f.read()


@pytest.mark.parametrize('page', PAGES)
def test_every_relative_link_resolves(page):
  broken = [target for target in re.findall(r'\]\(([^)#\s]+)(?:#[^)]*)?\)', text(page))
            if '://' not in target and not os.path.exists(os.path.join(ROOT, os.path.dirname(page), target))]
  assert not broken, f'{page} links to missing files: {broken}'


def keys(d, prefix=''):
  for k, v in d.items():
    if isinstance(v, dict):
      yield from keys(v, f'{prefix}{k}.')
    else:
      yield prefix + k


@pytest.mark.parametrize('module,args', [(hidden_units, ()), (fashion_mnist, ('cnn',)), (fashion_mnist, ('mlp',)),
                                         (alexnet_imagenet, ('paper',)), (alexnet_imagenet, ('torchvision',)),
                                         (alexnet_imagenet, ('quick,narrow',))])
def test_every_config_key_is_documented(module, args):
  """A key counts as documented where a page names it in backticks, or its section as `section.*`."""
  docs = ''.join(text(p) for p in PAGES)
  config = module.get_config(*args)
  missing = [k for k in keys(config.to_dict()) if f'`{k}`' not in docs and f'`{k.split(".")[0]}.*`' not in docs]
  assert not missing, f'keys of {module.__name__}{args} that no page of README.md or docs/ names: {missing}'


def test_the_readme_is_short_and_links_every_docs_page():
  readme = text('README.md')
  assert len(readme.splitlines()) <= 220, 'README.md is for a newcomer: move details to docs/'
  top = [p for p in PAGES if p.count('/') == 1]  # docs/<topic>.md; deeper pages hang off those
  unlinked = [p for p in top if f'({p})' not in readme]
  assert not unlinked, f'docs pages the README does not link: {unlinked}'
