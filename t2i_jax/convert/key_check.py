"""The one check every converter runs before placing a tensor: a checkpoint's names and shapes
against an explicit name table, reporting every problem at once (never only the first)."""

from collections.abc import Callable, Collection, Mapping, Sequence

Shape = tuple[int, ...]


def mismatches(
  found: Mapping[str, Shape],
  table: Mapping[str, tuple[str, str]],
  allowed: Callable[[str, str], Sequence[Shape]],
  ignored: Collection[str] = (),
) -> list[str]:
  """Lines naming every missing, unexpected and mis-shaped checkpoint key; empty when all fit.

  Args:
    found: {checkpoint name: shape} of the tensors present.
    table: {checkpoint name: (our '/'-joined param path, layout)}.
    allowed: (path, layout) -> the checkpoint shapes that fit that param, the usual one first
      (empty when the path is not one of the model's params).
    ignored: checkpoint names that may be present and are not converted.
  """
  missing = sorted(set(table) - set(found))
  unexpected = sorted(set(found) - set(table) - set(ignored))
  misshaped = []
  for name in sorted(set(table) & set(found)):
    shapes = tuple(allowed(*table[name]))
    if tuple(found[name]) not in shapes:
      want = shapes[0] if shapes else None
      misshaped.append(f"{name}: expected {want}, found {tuple(found[name])}")
  problems = []
  if missing:
    problems.append(f"missing keys ({len(missing)}): " + ", ".join(missing))
  if unexpected:
    problems.append(f"unexpected keys ({len(unexpected)}): " + ", ".join(unexpected))
  if misshaped:
    problems.append(f"mis-shaped keys ({len(misshaped)}): " + "; ".join(misshaped))
  return problems


def report(source: str, what: str, problems: Sequence[str]) -> str:
  """The error message: what did not match what, one problem per line."""
  return f"{source} does not match {what}:\n  " + "\n  ".join(problems)
