"""The one variant-table lookup every ``Model(*, variant=None, **kw)`` factory uses."""

from __future__ import annotations

from typing import Any, Mapping


def resolve(family: str, variants: Mapping[str, Mapping[str, Any]], variant: str | None, *,
            default: str, defaults: Mapping[str, Any] | None = None,
            overrides: Mapping[str, Any]) -> dict[str, Any]:
  """Returns a variant's settings with the caller's overrides applied.

  Args:
    family: model name for messages, e.g. ``'DnCNN'``.
    variants: the module's variant table ``{name: {field: value}}``.
    variant: requested variant, ``None`` for ``default``.
    default: the default variant name.
    defaults: fields every variant shares (the variant's own fields take precedence).
    overrides: the factory's ``**kw``; each must be a known field.

  Returns:
    ``{field: value}``: defaults, then the variant's fields, then the overrides.

  Raises:
    ValueError: unknown variant or override, listing the known ones.
  """
  variant = variant or default
  if variant not in variants:
    raise ValueError(f"Unknown {family} variant {variant!r}; known: {sorted(variants)}.")
  cfg = {**(defaults or {}), **variants[variant]}
  unknown = set(overrides) - set(cfg)
  if unknown:
    raise ValueError(f"Unknown {family} options {sorted(unknown)}; known: {sorted(cfg)}.")
  cfg.update(overrides)
  return cfg
