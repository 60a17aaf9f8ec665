"""The report as text: a Markdown table, the sources cited, a one-line summary; and `run`."""

import ml_collections

from alexnet_jax import checkpoint as checkpoint_lib
from alexnet_jax import recipes
from alexnet_jax.conformance.rows import Row, report
from alexnet_jax.conformance.spec import reference_spec


def format_rows(rows: list[Row], reference: str = 'paper') -> str:
  """A Markdown table, readable as plain text too."""
  header = ('layer', 'property', reference, 'this model', 'status')
  cells = [header] + [(r.layer, r.item, r.reference,
                       r.measured + (f' ({r.note})' if r.note else ''), r.status) for r in rows]
  widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
  line = lambda c: '| ' + ' | '.join(s.ljust(w) for s, w in zip(c, widths)) + ' |'
  return '\n'.join([line(header), '|' + '|'.join('-' * (w + 2) for w in widths) + '|']
                   + [line(c) for c in cells[1:]])


def format_sources(rows: list[Row]) -> str:
  """Where the source says each value: one line per citation, naming its rows."""
  cited: dict[str, list[str]] = {}
  for r in rows:
    if r.source:
      cited.setdefault(r.source, []).append(f'{r.layer} {r.item}')
  return '\n'.join(f'- {", ".join(labels)}: {source}' for source, labels in cited.items())


def format_gaps(reference: str) -> str:
  """What the source does that no config key expresses (recipes.py's facts without a key)."""
  return '\n'.join(f'- {fact.value}: {fact.note} ({fact.source})'
                   for fact in reference_spec(reference).gaps)


def summary(rows: list[Row], reference: str = 'paper') -> str:
  title = reference_spec(reference).title
  differs = [f'{r.layer} {r.item}' for r in rows if r.status == 'DIFFERS']
  checked = sum(r.status != 'n/a' for r in rows)
  if not differs:
    return f'conformance: all {checked} checked rows match {title}.'
  return (f'conformance: {len(differs)} of {checked} checked rows differ from {title}: '
          + '; '.join(differs) + '.')


def exit_status(rows: list[Row]) -> int:
  return 0 if all(r.status != 'DIFFERS' for r in rows) else 1


def run(config: ml_collections.ConfigDict, checkpoint: str | None = None, title: str = '',
        reference: str = 'paper') -> int:
  """Prints the report; returns the exit status: 0 when no row differs, 1 otherwise."""
  params = checkpoint_lib.read_params(checkpoint) if checkpoint else None
  rows = report(config, params, reference=reference)
  source = f'checkpoint {checkpoint}' if checkpoint else 'freshly initialised'
  print(f'AlexNet conformance with {recipes.RECIPES[reference].title}: {title} ({source})\n')
  print(format_rows(rows, reference))
  print(f'\nSources ({recipes.RECIPES[reference].snapshot}):\n{format_sources(rows)}\n')
  gaps = format_gaps(reference)
  if gaps:
    print(f'Not expressible in a config, so not compared:\n{gaps}\n')
  print(summary(rows, reference))
  return exit_status(rows)
